//! End-to-end figures of the whole system as `flotilla dev` runs it: the
//! controllers and one real in-process agent per cluster, embedded API
//! servers over TCP, simulated workload readiness (no delay).
//!
//! cargo bench -p flotilla-e2e --bench e2e -- [--clusters 10] [--samples 10]
//!
//! - `e2e_gitrepo_to_ready`: a new GitRepo (one bundle: a ConfigMap and a
//!   Deployment, every cluster) until every BundleDeployment is Ready;
//!   median of the samples.
//! - `e2e_targets_edit_to_pruned_p50/p99`: a merge patch of the GitRepo
//!   targets to the prod clusters until the ConfigMap is gone downstream
//!   on every other cluster (the agents pruned it).
//! - `e2e_targets_restore_to_deployed_p50`: the targets back to every
//!   cluster until the ConfigMap is back everywhere.
//! - `e2e_commit_to_deployed_p50/p99`: a commit until its new value is on
//!   every cluster, polling every 1 s (the smallest interval).

#[path = "../../crates/controller/benches/common/mod.rs"]
mod common;

use common::{bench, flags, percentile};
use flotilla::stack::{Stack, StackConfig, default_clusters, embedded_endpoints};
use flotilla_api::k8s_openapi::api::core::v1::ConfigMap;
use flotilla_api::{BundleDeployment, BundleState, GitRepo, GitRepoSpec, keys};
use flotilla_controller::ControllerArgs;
use flotilla_git::testing::{TempDir, TestRepo};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};

const WS: &str = "bench";
const NS: &str = "bench-app";

fn write_app(repo: &TestRepo, version: u32) {
    repo.write("app/fleet.yaml", &format!("defaultNamespace: {NS}\n"));
    repo.write(
        "app/settings.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  version: \"{version}\"\n"),
    );
    repo.write(
        "app/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n",
    );
}

async fn until(mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check().await {
        assert!(Instant::now() < deadline, "a benchmark step timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn versions(stack: &Stack) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for (_, e) in &stack.clusters {
        let cms: Api<ConfigMap> = Api::namespaced(e.client.clone(), NS);
        out.push(
            cms.get_opt("settings")
                .await
                .ok()
                .flatten()
                .and_then(|c| c.data?.get("version").cloned()),
        );
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut clusters = 10usize;
    let mut samples = 10usize;
    for (k, v) in flags() {
        match k.as_str() {
            "--clusters" => clusters = v.parse().expect("--clusters N"),
            "--samples" => samples = v.parse().expect("--samples N"),
            _ => {}
        }
    }
    let dir = TempDir::new("flotilla-e2e-bench");
    let defs = default_clusters(clusters);
    let prod: Vec<bool> = defs.iter().map(|d| d.labels["env"] == "prod").collect();
    let (management, downstream) = embedded_endpoints(dir.path(), false, &defs)
        .await
        .expect("servers");
    let mut stack = Stack::new(
        StackConfig {
            workspace: WS.into(),
            controller: ControllerArgs {
                leader_elect: false,
                http_addr: "127.0.0.1:0".parse().unwrap(),
                git_dir: dir.path().join("git"),
                allow_file_repos: true,
                ..ControllerArgs::default()
            },
            simulate: Some(Duration::ZERO),
        },
        management,
        defs.into_iter().zip(downstream).collect(),
    );
    stack.register().await.expect("register");
    stack.start_simulation();
    stack.start_controller().await.expect("controller");
    let client = stack.client().clone();
    let repos: Api<GitRepo> = Api::namespaced(client.clone(), WS);
    let bds: Api<BundleDeployment> = Api::all(client.clone());

    // A new GitRepo until Ready everywhere, on a fresh repository each time.
    let mut to_ready = Vec::new();
    for i in 0..samples.min(5) {
        let repo = TestRepo::init(&dir.path().join(format!("r{i}")), "main");
        write_app(&repo, 1);
        repo.commit("app");
        let name = format!("g{i}");
        let mut gr = GitRepo::new(
            &name,
            GitRepoSpec {
                repo: repo.url(),
                branch: Some("main".into()),
                polling_interval: Some("1s".into()),
                ..Default::default()
            },
        );
        gr.metadata.namespace = Some(WS.into());
        let t = Instant::now();
        repos.create(&PostParams::default(), &gr).await.unwrap();
        let selector = format!("{}={name}", keys::REPO_NAME);
        until(async || {
            let list = bds
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items;
            list.len() == clusters && list.iter().all(|b| b.state() == BundleState::Ready)
        })
        .await;
        to_ready.push(t.elapsed().as_secs_f64());
        if i + 1 < samples.min(5) {
            repos.delete(&name, &Default::default()).await.unwrap();
            until(async || {
                bds.list(&ListParams::default().labels(&selector))
                    .await
                    .unwrap()
                    .items
                    .is_empty()
            })
            .await;
        }
    }
    let last = format!("g{}", samples.min(5) - 1);
    bench("e2e_clusters", clusters as f64, "clusters");
    bench("e2e_gitrepo_to_ready", percentile(&mut to_ready, 0.5), "s");

    // Target edits: prod only, then every cluster again.
    let mut pruned = Vec::new();
    let mut restored = Vec::new();
    for _ in 0..samples {
        let t = Instant::now();
        let patch =
            json!({"spec": {"targets": [{"clusterSelector": {"matchLabels": {"env": "prod"}}}]}});
        repos
            .patch(&last, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        until(async || {
            versions(&stack)
                .await
                .iter()
                .zip(&prod)
                .all(|(v, p)| v.is_some() == *p)
        })
        .await;
        pruned.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let patch = json!({"spec": {"targets": []}});
        repos
            .patch(&last, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        until(async || versions(&stack).await.iter().all(Option::is_some)).await;
        restored.push(t.elapsed().as_secs_f64());
    }
    bench(
        "e2e_targets_edit_to_pruned_p50",
        percentile(&mut pruned, 0.5),
        "s",
    );
    bench(
        "e2e_targets_edit_to_pruned_p99",
        percentile(&mut pruned, 0.99),
        "s",
    );
    bench(
        "e2e_targets_restore_to_deployed_p50",
        percentile(&mut restored, 0.5),
        "s",
    );

    // Commits, picked up by polling every second.
    let repo = TestRepo::init(&dir.path().join(format!("r{}", samples.min(5) - 1)), "main");
    let mut commits = Vec::new();
    for i in 0..samples {
        let version = 100 + i as u32;
        write_app(&repo, version);
        let t = Instant::now();
        repo.commit(&format!("v{version}"));
        let want = version.to_string();
        until(async || {
            versions(&stack)
                .await
                .iter()
                .all(|v| v.as_deref() == Some(want.as_str()))
        })
        .await;
        commits.push(t.elapsed().as_secs_f64());
    }
    bench(
        "e2e_commit_to_deployed_p50",
        percentile(&mut commits, 0.5),
        "s",
    );
    bench(
        "e2e_commit_to_deployed_p99",
        percentile(&mut commits, 0.99),
        "s",
    );
    stack.shutdown().await.unwrap();
}
