//! Targeting index at fleet scale: 10,000 clusters, 1,000 bundles.
//!
//! Prints `BENCH <name> <value> <unit>` lines:
//! - the time to build the index from scratch;
//! - median and p99 to apply one cluster label change;
//! - median and p99 to apply one bundle target change.
//!
//! Run: `cargo bench -p flotilla-targeting --bench target_index`
//! (`-- --clusters N --bundles M --iterations K` to resize).

use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement,
};
use flotilla_api::kube_core::ObjectMeta;
use flotilla_api::{
    Bundle, BundleSpec, BundleTarget, Cluster, ClusterGroup, ClusterGroupSpec, ClusterSpec,
    TargetCriteria, TargetCustomization,
};
use flotilla_targeting::TargetIndex;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NS: &str = "fleet-default";
const ENVS: [&str; 3] = ["dev", "staging", "prod"];
const REGIONS: [&str; 12] = [
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ap-south-1",
    "ap-northeast-1",
    "ap-southeast-1",
    "sa-east-1",
    "ca-central-1",
];
const PROVIDERS: [&str; 4] = ["aws", "gcp", "azure", "onprem"];
const TIERS: [&str; 3] = ["gold", "silver", "bronze"];
const TEAMS: usize = 50;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

fn meta(name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(NS.into()),
        name: Some(name.into()),
        labels: Some(labels),
        ..Default::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn cluster_labels(rng: &mut Rng) -> BTreeMap<String, String> {
    let env = match rng.below(10) {
        0..=2 => "dev",
        3..=4 => "staging",
        _ => "prod",
    };
    let team = format!("team-{}", rng.below(TEAMS));
    let mut l = labels(&[
        ("env", env),
        ("region", rng.pick(&REGIONS)),
        ("provider", rng.pick(&PROVIDERS)),
        ("tier", rng.pick(&TIERS)),
    ]);
    l.insert("team".into(), team);
    l
}

fn cluster(i: usize, labels: BTreeMap<String, String>) -> Cluster {
    Cluster {
        metadata: meta(&format!("cluster-{i:05}"), labels),
        spec: ClusterSpec::default(),
        status: None,
    }
}

fn groups() -> Vec<ClusterGroup> {
    let mut out = vec![group("default", &[], LabelSelector::default())];
    for env in ENVS {
        out.push(group(
            &format!("env-{env}"),
            &[("kind", "env")],
            sel(&[("env", env)]),
        ));
    }
    for region in REGIONS {
        let geo = &region[..2];
        out.push(group(
            &format!("region-{region}"),
            &[("kind", "region"), ("geo", geo)],
            sel(&[("region", region)]),
        ));
    }
    for p in PROVIDERS {
        out.push(group(
            &format!("provider-{p}"),
            &[("kind", "provider")],
            sel(&[("provider", p)]),
        ));
    }
    out
}

fn group(name: &str, l: &[(&str, &str)], selector: LabelSelector) -> ClusterGroup {
    ClusterGroup {
        metadata: meta(name, labels(l)),
        spec: ClusterGroupSpec {
            selector: Some(selector),
        },
        status: None,
    }
}

fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(pairs)),
        match_expressions: None,
    }
}

fn target(criteria: TargetCriteria) -> BundleTarget {
    BundleTarget {
        criteria,
        ..Default::default()
    }
}

/// A realistic mix: platform bundles everywhere, apps by env and region,
/// a few by group, set-based expressions, single clusters and teams.
fn bundle_targets(rng: &mut Rng, clusters: usize) -> Vec<BundleTarget> {
    let by_selector = |s| TargetCriteria {
        cluster_selector: Some(s),
        ..Default::default()
    };
    let by_group = |g: String| TargetCriteria {
        cluster_group: Some(g),
        ..Default::default()
    };
    match rng.below(100) {
        0..=9 => vec![target(by_group("default".into()))],
        10..=39 => vec![target(by_selector(sel(&[("env", rng.pick(&ENVS))])))],
        40..=64 => vec![target(by_selector(sel(&[
            ("env", rng.pick(&ENVS)),
            ("region", rng.pick(&REGIONS)),
        ])))],
        65..=74 => vec![
            target(by_group(format!("region-{}", rng.pick(&REGIONS)))),
            target(by_group(format!("region-{}", rng.pick(&REGIONS)))),
        ],
        75..=84 => vec![target(by_selector(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "region".into(),
                    operator: "In".into(),
                    values: Some((0..3).map(|_| rng.pick(&REGIONS).to_string()).collect()),
                },
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["dev".into()]),
                },
            ]),
        }))],
        85..=89 => vec![target(TargetCriteria {
            cluster_name: Some(format!("cluster-{:05}", rng.below(clusters))),
            ..Default::default()
        })],
        90..=94 => vec![target(by_selector(sel(&[(
            "team",
            &format!("team-{}", rng.below(TEAMS)),
        )])))],
        _ => vec![target(TargetCriteria {
            cluster_group_selector: Some(sel(&[("geo", "eu")])),
            cluster_selector: Some(sel(&[("tier", "gold")])),
            ..Default::default()
        })],
    }
}

fn bundle(i: usize, rng: &mut Rng, clusters: usize) -> Bundle {
    let mut spec = BundleSpec {
        targets: bundle_targets(rng, clusters),
        ..Default::default()
    };
    if rng.below(3) == 0 {
        let mut prod = TargetCustomization {
            name: Some("prod".into()),
            criteria: TargetCriteria {
                cluster_selector: Some(sel(&[("env", "prod")])),
                ..Default::default()
            },
            ..Default::default()
        };
        prod.options.default_namespace = Some("app-prod".into());
        spec.target_customizations.push(prod);
    }
    Bundle {
        metadata: meta(&format!("bundle-{i:04}"), BTreeMap::new()),
        spec,
        status: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("BENCH {name}_p50 {:.4} ms", ms(percentile(&samples, 0.5)));
    println!("BENCH {name}_p99 {:.4} ms", ms(percentile(&samples, 0.99)));
}

fn main() {
    let n_clusters = arg("--clusters", 10_000);
    let n_bundles = arg("--bundles", 1_000);
    let iterations = arg("--iterations", 2_000);
    let mut rng = Rng(0x5eed_f107_111a);

    let clusters: Vec<Cluster> = (0..n_clusters)
        .map(|i| cluster(i, cluster_labels(&mut rng)))
        .collect();
    let bundles: Vec<Bundle> = (0..n_bundles)
        .map(|i| bundle(i, &mut rng, n_clusters))
        .collect();
    let groups = groups();

    let start = Instant::now();
    let mut index = TargetIndex::new();
    for c in &clusters {
        index.apply_cluster(c);
    }
    for g in &groups {
        index.apply_group(g).expect("valid group");
    }
    for b in &bundles {
        index.apply_bundle(b).expect("valid bundle");
    }
    let build = start.elapsed();
    let pairs = index.all_placements().len();
    println!(
        "BENCH targeting_build_{n_clusters}x{n_bundles} {:.3} s",
        build.as_secs_f64()
    );
    println!("BENCH targeting_targeted_pairs {pairs} count");

    // One cluster label change: move a random cluster to another env or region.
    let mut samples = Vec::with_capacity(iterations);
    let mut changed_pairs = 0usize;
    for _ in 0..iterations {
        let i = rng.below(n_clusters);
        let mut labels = clusters[i].metadata.labels.clone().unwrap_or_default();
        if rng.below(2) == 0 {
            labels.insert("env".into(), rng.pick(&ENVS).into());
        } else {
            labels.insert("region".into(), rng.pick(&REGIONS).into());
        }
        let relabelled = cluster(i, labels);
        let start = Instant::now();
        let changes = index.apply_cluster(&relabelled);
        samples.push(start.elapsed());
        changed_pairs += changes.pairs.len();
    }
    report("targeting_cluster_label_change", samples);
    println!(
        "BENCH targeting_cluster_label_change_pairs_mean {:.1} count",
        changed_pairs as f64 / iterations as f64
    );

    // One bundle target change: give a random bundle new targets from the mix.
    let mut samples = Vec::with_capacity(iterations);
    let mut changed_pairs = 0usize;
    for _ in 0..iterations {
        let i = rng.below(n_bundles);
        let mut b = bundles[i].clone();
        b.spec.targets = bundle_targets(&mut rng, n_clusters);
        let start = Instant::now();
        let changes = index.apply_bundle(&b).expect("valid bundle");
        samples.push(start.elapsed());
        changed_pairs += changes.pairs.len();
    }
    report("targeting_bundle_target_change", samples);
    println!(
        "BENCH targeting_bundle_target_change_pairs_mean {:.1} count",
        changed_pairs as f64 / iterations as f64
    );
}
