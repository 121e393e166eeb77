//! Chart benchmark. Prints `BENCH <name> <value> <unit>` lines.
//!
//! ```text
//! cargo bench -p flotilla-charts --bench charts -- [--samples 10] [--templates 40]
//! ```
//!
//! A bundle whose `fleet.yaml` names a chart in a Helm repository on
//! 127.0.0.1 (testdata/chart-server/serve.py; the chart is
//! testdata/charts/guestbook with `--templates` more templates of about
//! 2 KB), compiled and its chart resolved and vendored as the GitRepo
//! controller does it, median of `--samples`:
//! - first: an empty cache (the index and the archive downloaded);
//! - cached: a new resolver on the warm cache directory, as after a
//!   restart (the index read, the archive not downloaded);
//! - warm: the same resolver again (the index within its TTL: no network).

use flotilla_api::{GitTarget, TargetCriteria};
use flotilla_bundle::{CompileInput, Limits, RepoTree, compile_repo};
use flotilla_charts::testing::{ChartServer, ServerOptions, TempDir};
use flotilla_charts::{Access, Resolver, resolve_bundle};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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

/// The guestbook chart with `extra` more templates.
fn chart(extra: usize) -> Vec<u8> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/charts/guestbook");
    let (_, base) = flotilla_charts::testing::package_dir(&dir, "1.2.3");
    let files = flotilla_charts::archive::extract("guestbook", &base, Default::default()).unwrap();
    let mut owned: Vec<(String, Vec<u8>)> = files.files.into_iter().collect();
    for i in 0..extra {
        let data: String = (0..40)
            .map(|k| format!("  key-{k}: {{{{ .Values.image | quote }}}}-{i}-{k}\n"))
            .collect();
        owned.push((
            format!("templates/extra-{i}.yaml"),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-{i}\ndata:\n{data}")
                .into_bytes(),
        ));
    }
    let refs: Vec<(&str, &[u8])> = owned
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    flotilla_charts::archive::package("guestbook", &refs)
}

fn main() {
    let samples = flag("--samples", 10).max(1);
    let templates = flag("--templates", 40);
    let server = ChartServer::start(ServerOptions::default());
    let archive = chart(templates);
    server.publish("guestbook", "1.2.3", &archive, true);
    server.publish("guestbook", "1.1.0", &chart(0), true);
    let mut tree = RepoTree::new();
    tree.insert_file(
        "app/fleet.yaml",
        format!(
            "defaultNamespace: shop\nhelm:\n  repo: {}\n  chart: guestbook\n  version: ^1.1\n  values:\n    replicas: 2\n",
            server.url()
        ),
    );
    let targets = vec![GitTarget {
        name: None,
        criteria: TargetCriteria {
            cluster_group: Some("default".into()),
            ..Default::default()
        },
    }];
    let paths = vec!["app".to_string()];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let none = |_: &flotilla_charts::ChartSource| Access::default();
    let compile = |resolver: &Resolver| {
        let start = Instant::now();
        let bundles = compile_repo(
            &tree,
            &CompileInput {
                repo_name: "shop",
                paths: &paths,
                targets: &targets,
                limits: Limits::default(),
                deadline: None,
            },
        )
        .unwrap();
        let (out, vendored) = runtime
            .block_on(resolve_bundle(
                resolver,
                &bundles[0],
                Limits::default(),
                &none,
            ))
            .unwrap();
        assert_eq!(vendored[0].version, "1.2.3");
        assert!(out.content.files.len() > templates);
        start.elapsed().as_secs_f64() * 1000.0
    };

    let mut first = Vec::new();
    let mut downloads = 0;
    for _ in 0..samples {
        let cache = TempDir::new("flotilla-bench-charts");
        let r = Resolver::new(cache.path(), Duration::from_secs(10));
        first.push(compile(&r));
        downloads += r.stats.downloads.load(Ordering::Relaxed);
    }
    let warm_dir = TempDir::new("flotilla-bench-charts-warm");
    compile(&Resolver::new(warm_dir.path(), Duration::from_secs(10)));
    let mut cached = Vec::new();
    let mut cached_downloads = 0;
    for _ in 0..samples {
        let r = Resolver::new(warm_dir.path(), Duration::from_secs(10));
        cached.push(compile(&r));
        cached_downloads += r.stats.downloads.load(Ordering::Relaxed);
    }
    let r = Resolver::new(warm_dir.path(), Duration::from_secs(10));
    compile(&r);
    let mut warm = Vec::new();
    for _ in 0..samples {
        warm.push(compile(&r));
    }
    println!(
        "# a {}-byte chart archive ({} templates), {samples} samples each",
        archive.len(),
        templates + 3
    );
    bench("chart_compile_first_p50", median(first), "ms");
    bench(
        "chart_compile_first_downloads",
        downloads as f64 / samples as f64,
        "per_compile",
    );
    bench("chart_compile_cached_p50", median(cached), "ms");
    bench(
        "chart_compile_cached_downloads",
        cached_downloads as f64 / samples as f64,
        "per_compile",
    );
    bench("chart_compile_warm_p50", median(warm), "ms");
    bench(
        "chart_compile_warm_network_calls",
        (r.stats.index_fetches.load(Ordering::Relaxed) - 1
            + r.stats.downloads.load(Ordering::Relaxed)) as f64
            / samples as f64,
        "per_compile",
    );
}
