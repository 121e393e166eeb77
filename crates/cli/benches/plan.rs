//! `flotilla plan` benchmark. Prints `BENCH <name> <value> <unit>` lines.
//!
//! ```text
//! cargo bench -p flotilla --bench plan -- [--bundles 50] [--clusters 100] [--samples 5]
//! ```
//!
//! A generated repository of `--bundles` Helm bundles whose values are
//! templated per cluster (labels, annotations, templateValues, a sprig
//! function, a key template), planned for `--clusters` clusters: compile,
//! targeting, each pair's templated values and deploymentID. Median of
//! `--samples`. Then one cluster's manifests (`--cluster X -o yaml`), every
//! bundle rendered by the real Helm engine (testdata/helm-shim/helm).

use flotilla::plan::{Output, PlanArgs, plan};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn flag(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench(name: &str, value: f64, unit: &str) {
    println!("BENCH {name} {:.3} {unit}", value + 0.0);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn main() {
    let bundles = flag("--bundles", 50);
    let clusters = flag("--clusters", 100);
    let samples = flag("--samples", 5).max(1);
    let root = std::env::temp_dir().join(format!("flotilla-bench-plan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let repo = root.join("repo");
    for b in 0..bundles {
        let dir = repo.join(format!("apps/app-{b:03}"));
        write(
            &dir.join("Chart.yaml"),
            &format!("apiVersion: v2\nname: app-{b:03}\nversion: 1.0.0\n"),
        );
        write(
            &dir.join("templates/settings.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  values.json: {{ toJson .Values | quote }}\n",
        );
        write(
            &dir.join("fleet.yaml"),
            &format!(
                "defaultNamespace: app-{b:03}\nhelm:\n  values:\n    region: ${{ .ClusterLabels.region }}\n    name: ${{ .ClusterName | upper }}\n    owner: ${{ index .ClusterAnnotations \"example.com/owner\" }}\n    replicas: ${{ .ClusterValues.replicas }}\n    ${{ .ClusterLabels.env }}-only: true\n    env: global.fleet.clusterLabels.env\n    nested:\n      list: [{{zone: \"${{ .ClusterLabels.region }}-a\"}}, 1, 2]\ntargetCustomizations:\n- name: prod\n  clusterSelector: {{matchLabels: {{env: prod}}}}\n  helm:\n    values: {{tier: gold}}\n"
            ),
        );
    }
    let mut fleet = String::from(
        "apiVersion: flotilla.dev/v1alpha1\nkind: ClusterGroup\nmetadata: {name: default, namespace: fleet-default}\nspec: {selector: {}}\n",
    );
    for c in 0..clusters {
        let env = ["dev", "test", "prod"][c % 3];
        fleet.push_str(&format!(
            "---\napiVersion: flotilla.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c-{c:03}\n  namespace: fleet-default\n  labels: {{env: {env}, region: region-{}}}\n  annotations: {{example.com/owner: team-{}}}\nspec:\n  templateValues: {{replicas: {}}}\n",
            c % 7,
            c % 5,
            1 + c % 4
        ));
    }
    let fleet_file = root.join("fleet.yaml");
    write(&fleet_file, &fleet);
    let shim = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/helm-shim/helm");
    let args = PlanArgs {
        repo_dir: repo.clone(),
        paths: vec![],
        clusters: fleet_file.clone(),
        cluster: None,
        explain: false,
        output: Output::Json,
        namespace: "fleet-default".into(),
        max_manifest_bytes: 1 << 20,
        max_bundle_bytes: 16 << 20,
        chart_cache: Some(root.join("charts")),
        helm_ca_file: None,
        helm_insecure_skip_tls_verify: false,
        helm: Some(shim),
        helm_repo_url_regex: None,
    };
    let mut times = Vec::new();
    let mut pairs = 0;
    for _ in 0..samples {
        let start = Instant::now();
        let out = plan(&args).expect("plan");
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        assert!(rows.iter().all(|r| r.get("valuesError").is_none()));
        pairs = rows.len();
    }
    let p50 = median(times);
    println!(
        "# {bundles} templated Helm bundles x {clusters} clusters = {pairs} pairs, {samples} samples"
    );
    bench(
        &format!("plan_templated_{bundles}x{clusters}_p50"),
        p50,
        "ms",
    );
    bench(
        "plan_templated_per_pair_p50",
        p50 * 1000.0 / pairs.max(1) as f64,
        "us",
    );
    let start = Instant::now();
    let one = plan(&PlanArgs {
        cluster: Some("c-002".into()),
        output: Output::Yaml,
        ..args
    })
    .expect("one cluster's manifests");
    let secs = start.elapsed().as_secs_f64();
    assert!(one.matches("kind: ConfigMap").count() == bundles, "{one}");
    bench(
        &format!("plan_one_cluster_manifests_{bundles}_bundles"),
        secs,
        "s",
    );
    let _ = std::fs::remove_dir_all(&root);
}
