//! Compiling a generated 2,000-file repository, and re-hashing it after one
//! file changed.
//!
//! Prints `BENCH <name> <value> <unit>` lines (medians over the runs):
//! - compiling the whole repository (parse, validate, hash, per bundle);
//! - recompiling the one bundle whose file changed (what the GitRepo
//!   controller does, keyed by git tree id);
//! - recompiling the whole repository after the change.
//!
//! Run: `cargo bench -p flotilla-bundle --bench compile` (`-- --runs N`).

use flotilla_api::{GitTarget, TargetCriteria};
use flotilla_bundle::compile::compile_dir;
use flotilla_bundle::ignore::FleetIgnore;
use flotilla_bundle::{CompileInput, Limits, RepoTree, compile_repo};
use std::time::{Duration, Instant};

const BUNDLES: usize = 20;
const FILES_PER_BUNDLE: usize = 100;

fn manifest(bundle: usize, file: usize, generation: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{bundle}-{file}\n  labels:\n    app: app-{bundle}-{file}\n    generation: \"{generation}\"\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: app-{bundle}-{file}\n  template:\n    metadata:\n      labels:\n        app: app-{bundle}-{file}\n    spec:\n      containers:\n      - name: main\n        image: registry.example.com/team-{bundle}/app-{file}:1.{generation}.0\n        ports:\n        - containerPort: 8080\n        env:\n        - name: MODE\n          value: production\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: app-{bundle}-{file}\nspec:\n  selector:\n    app: app-{bundle}-{file}\n  ports:\n  - port: 80\n    targetPort: 8080\n"
    )
}

fn repo() -> RepoTree {
    let mut tree = RepoTree::new();
    for b in 0..BUNDLES {
        tree.insert_file(
            &format!("apps/team-{b}/fleet.yaml"),
            format!("defaultNamespace: team-{b}\nlabels: {{team: t{b}}}\ntargetCustomizations:\n- name: prod\n  clusterSelector: {{matchLabels: {{env: prod}}}}\n  namespaceLabels: {{tier: gold}}\n"),
        );
        for f in 0..FILES_PER_BUNDLE - 1 {
            tree.insert_file(&format!("apps/team-{b}/app-{f:03}.yaml"), manifest(b, f, 0));
        }
    }
    tree
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .map(|v| v.parse().expect("--runs takes a number"))
        .unwrap_or(15);
    let targets = vec![GitTarget {
        name: None,
        criteria: TargetCriteria {
            cluster_group: Some("default".into()),
            ..Default::default()
        },
    }];
    let paths = vec!["apps".to_string()];
    let input = CompileInput {
        repo_name: "bench",
        paths: &paths,
        targets: &targets,
        limits: Limits::default(),
        deadline: None,
    };
    let mut tree = repo();
    let files = tree.paths().count();

    let mut full = Vec::new();
    let mut before = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        before = compile_repo(&tree, &input).expect("compiles");
        full.push(start.elapsed());
    }
    println!("BENCH bundle_compile_{files}_files {:.2} ms", median(full));

    // One file changes: only its bundle's content id may change.
    tree.insert_file("apps/team-7/app-042.yaml", manifest(7, 42, 1));
    let ignore = FleetIgnore::from_tree(&tree).expect("the ignore files read");
    let mut one = Vec::new();
    let mut changed = None;
    for _ in 0..runs {
        let start = Instant::now();
        changed = compile_dir(&tree, "apps/team-7", &[], &ignore, &input).expect("compiles");
        one.push(start.elapsed());
    }
    let changed = changed.expect("a bundle");
    let old = before
        .iter()
        .find(|b| b.dir == "apps/team-7")
        .expect("bundle");
    assert_ne!(
        old.spec.content_id, changed.spec.content_id,
        "the change reaches the content id"
    );
    println!("BENCH bundle_rehash_changed_bundle {:.3} ms", median(one));

    let mut again = Vec::new();
    let mut after = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        after = compile_repo(&tree, &input).expect("compiles");
        again.push(start.elapsed());
    }
    let differing = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.spec.content_id != b.spec.content_id)
        .count();
    assert_eq!(differing, 1, "exactly one bundle's content changed");
    println!(
        "BENCH bundle_recompile_repo_after_one_change {:.2} ms",
        median(again)
    );
    println!("BENCH bundle_bundles_changed_after_one_file {differing} count");
}
