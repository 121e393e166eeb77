//! The e2e harness: a whole Flotilla system per scenario, driven the way
//! users drive it (commits, kubectl, `flotilla status`).
//!
//! Embedded: a management API server and three downstream ones (dev-1,
//! staging-1, prod-1) in process, with simulated workload readiness.
//!
//! Real clusters: set [`MANAGEMENT_ENV`] to the management cluster's
//! kubeconfig and [`DOWNSTREAM_ENV`] to three downstream kubeconfigs
//! (comma-separated: the dev, staging and prod cluster). The controllers
//! run in the test process against them; each scenario works in its own
//! workspace namespace and downstream namespace and removes them at the
//! end. Scenarios run one at a time there.

use flotilla::stack::{ClusterDef, Endpoint, Stack, StackConfig, default_clusters};
use flotilla_api::k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use flotilla_api::{BundleDeployment, Cluster, GitRepo, GitRepoSpec, keys};
use flotilla_controller::ControllerArgs;
use flotilla_git::testing::{TempDir, TestRepo};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

pub use flotilla_apiserver::testing::eventually_within;

/// The management cluster's kubeconfig, for the real-cluster runs.
pub const MANAGEMENT_ENV: &str = "FLOTILLA_E2E_MANAGEMENT_KUBECONFIG";
/// Three downstream kubeconfigs, comma-separated: dev, staging, prod.
pub const DOWNSTREAM_ENV: &str = "FLOTILLA_E2E_DOWNSTREAM_KUBECONFIGS";

/// The clusters every scenario has, with their labels.
pub const CLUSTERS: [&str; 3] = ["dev-1", "staging-1", "prod-1"];

/// One scenario's whole system.
pub struct Fixture {
    pub stack: Stack,
    /// The namespace of this scenario's Clusters and GitRepos.
    pub workspace: String,
    /// The downstream namespace this scenario's bundles deploy to.
    pub target_ns: String,
    pub repo: TestRepo,
    /// How long to wait for an outcome.
    pub patience: Duration,
    pub real: bool,
    _dir: TempDir,
    _serial: Option<tokio::sync::MutexGuard<'static, ()>>,
}

fn skip(scenario: &str, why: &str) {
    // Straight to stderr: libtest captures print! output, not this.
    let _ = writeln!(
        std::io::stderr(),
        "e2e {scenario} on real clusters: skipped: {why}"
    );
}

/// Opt-in readiness simulation on real clusters without nodes.
pub const SIMULATE_ENV: &str = "FLOTILLA_E2E_SIMULATE_READINESS";

/// Whether `FLOTILLA_E2E_SIMULATE_READINESS` asks for the simulation:
/// `1`/`true` yes, unset, empty, `0`/`false` no, anything else an error.
pub fn simulate_on_real(value: Option<&str>) -> Result<bool, String> {
    match value.map(str::trim) {
        None | Some("" | "0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err(format!(
            "{SIMULATE_ENV} must be 1, true, 0 or false, not {other:?}"
        )),
    }
}

/// The real clusters' kubeconfigs, when the environment names them.
pub fn real_clusters() -> Result<(PathBuf, Vec<PathBuf>), String> {
    let management = std::env::var_os(MANAGEMENT_ENV)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{MANAGEMENT_ENV} is not set (see e2e/README.md)"))?;
    let downstream = std::env::var(DOWNSTREAM_ENV)
        .map_err(|_| format!("{DOWNSTREAM_ENV} is not set (see e2e/README.md)"))?;
    let downstream: Vec<PathBuf> = downstream
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| PathBuf::from(s.trim()))
        .collect();
    if downstream.len() != CLUSTERS.len() {
        return Err(format!(
            "{DOWNSTREAM_ENV} names {} kubeconfigs; the scenarios need 3 (dev, staging, prod)",
            downstream.len()
        ));
    }
    Ok((PathBuf::from(management), downstream))
}

fn controller_args(dir: &TempDir) -> ControllerArgs {
    ControllerArgs {
        leader_elect: false,
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        git_dir: dir.path().join("git-mirrors"),
        // The scenarios' repositories are local.
        allow_file_repos: true,
        // The real Helm v4 engine renders charts (helm-python-sdk).
        helm: Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/helm-shim/helm"),
        ),
        ..ControllerArgs::default()
    }
}

impl Fixture {
    /// The scenario on embedded API servers.
    pub async fn embedded(scenario: &str) -> Fixture {
        let dir = TempDir::new(&format!("flotilla-e2e-{scenario}"));
        let defs = default_clusters(CLUSTERS.len());
        let (management, downstream) =
            flotilla::stack::embedded_endpoints(dir.path(), false, &defs)
                .await
                .expect("embedded API servers");
        Self::start(
            scenario,
            dir,
            management,
            defs.into_iter().zip(downstream).collect(),
            false,
            None,
        )
        .await
    }

    /// The scenario on the real clusters named by the environment, or None
    /// (with the reason printed) when it names none.
    pub async fn real(scenario: &str) -> Option<Fixture> {
        let (management, downstream) = match real_clusters() {
            Ok(k) => k,
            Err(why) => {
                skip(scenario, &why);
                return None;
            }
        };
        static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let serial = SERIAL.lock().await;
        let dir = TempDir::new(&format!("flotilla-e2e-{scenario}"));
        let mgmt = Endpoint::external("management", &management)
            .await
            .expect("the management kubeconfig");
        let mut clusters = Vec::new();
        for (def, path) in default_clusters(CLUSTERS.len())
            .into_iter()
            .zip(&downstream)
        {
            let e = Endpoint::external(&def.name, path)
                .await
                .unwrap_or_else(|e| panic!("downstream kubeconfig {}: {e:#}", path.display()));
            clusters.push((def, e));
        }
        Some(Self::start(scenario, dir, mgmt, clusters, true, Some(serial)).await)
    }

    async fn start(
        scenario: &str,
        dir: TempDir,
        management: Endpoint,
        clusters: Vec<(ClusterDef, Endpoint)>,
        real: bool,
        serial: Option<tokio::sync::MutexGuard<'static, ()>>,
    ) -> Fixture {
        let slug = scenario.replace('_', "-");
        let slug = &slug[..slug.len().min(40)];
        let workspace = format!("e2e-{slug}");
        let target_ns = format!("e2e-{slug}-app");
        let mut stack = Stack::new(
            StackConfig {
                workspace: workspace.clone(),
                controller: controller_args(&dir),
                simulate: (!real).then_some(Duration::from_millis(200)),
            },
            management,
            clusters,
        );
        stack.register().await.expect("registering the clusters");
        stack.start_simulation();
        if real {
            let asked = simulate_on_real(std::env::var(SIMULATE_ENV).ok().as_deref())
                .unwrap_or_else(|e| panic!("{e}"));
            if asked {
                stack.start_simulation_everywhere(Duration::from_millis(200));
            }
        }
        stack
            .start_controller()
            .await
            .expect("the controller starts");
        let repo = TestRepo::init(&dir.path().join("repo"), "main");
        Fixture {
            stack,
            workspace,
            target_ns,
            repo,
            patience: if real {
                Duration::from_secs(180)
            } else {
                Duration::from_secs(45)
            },
            real,
            _dir: dir,
            _serial: serial,
        }
    }

    pub fn client(&self) -> &kube::Client {
        self.stack.client()
    }

    /// The client of one downstream cluster.
    pub fn downstream(&self, cluster: &str) -> &kube::Client {
        &self
            .stack
            .clusters
            .iter()
            .find(|(d, _)| d.name == cluster)
            .unwrap_or_else(|| panic!("no cluster {cluster}"))
            .1
            .client
    }

    /// Runs kubectl against the management cluster; panics unless it
    /// succeeds. Returns stdout.
    pub async fn kubectl(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.stack.management.kubeconfig)
            .args(args)
            .output()
            .await
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// An `app` bundle: a ConfigMap `settings` with `version`, and
    /// optionally a Deployment, in this scenario's namespace.
    pub fn write_app(&self, dir: &str, version: &str, deployment: bool) {
        self.repo.write(
            &format!("{dir}/fleet.yaml"),
            &format!("defaultNamespace: {}\n", self.target_ns),
        );
        self.repo.write(
            &format!("{dir}/settings.yaml"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings-{dir}\ndata:\n  version: \"{version}\"\n"
            ),
        );
        if deployment {
            self.repo.write(
                &format!("{dir}/deployment.yaml"),
                &deployment_yaml(dir, true),
            );
        }
    }

    /// Creates a GitRepo on the scenario's repository, polled every second.
    pub async fn create_gitrepo(&self, name: &str, targets: serde_json::Value) -> GitRepo {
        let mut spec: GitRepoSpec = serde_json::from_value(serde_json::json!({
            "repo": self.repo.url(),
            "branch": "main",
            "pollingInterval": "1s",
            "targets": targets,
        }))
        .expect("a GitRepo spec");
        spec.repo = self.repo.url();
        let mut repo = GitRepo::new(name, spec);
        repo.metadata.namespace = Some(self.workspace.clone());
        let api: Api<GitRepo> = Api::namespaced(self.client().clone(), &self.workspace);
        api.create(&PostParams::default(), &repo)
            .await
            .expect("creating the GitRepo")
    }

    pub async fn gitrepo(&self, name: &str) -> Option<GitRepo> {
        let api: Api<GitRepo> = Api::namespaced(self.client().clone(), &self.workspace);
        api.get_opt(name).await.expect("reading the GitRepo")
    }

    /// This scenario's live BundleDeployments by (cluster, bundle).
    pub async fn deployments(&self) -> BTreeMap<(String, String), BundleDeployment> {
        by_pair(self.all_deployments().await)
    }

    /// Every BundleDeployment of this scenario, deleting ones included.
    pub async fn all_deployments(&self) -> Vec<BundleDeployment> {
        let api: Api<BundleDeployment> = Api::all(self.client().clone());
        api.list(&ListParams::default().labels(&format!(
            "{}={}",
            keys::BUNDLE_NAMESPACE,
            self.workspace
        )))
        .await
        .expect("listing BundleDeployments")
        .items
    }

    /// Waits until the BundleDeployments are exactly `want`, each Ready
    /// at its current deployment.
    pub async fn wait_ready(
        &self,
        want: &[(&str, &str)],
    ) -> BTreeMap<(String, String), BundleDeployment> {
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(c, b)| (c.to_string(), b.to_string()))
            .collect();
        let what = format!("BundleDeployments exactly {want:?}, all Ready");
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            // One list: the live ones and the deleting ones from one snapshot.
            let all = self.all_deployments().await;
            let total = all.len();
            let now = by_pair(all);
            let ready = now
                .values()
                .all(|bd| bd.state() == flotilla_api::BundleState::Ready);
            if now.keys().eq(want.iter()) && ready && total == want.len() {
                return now;
            }
            if tokio::time::Instant::now() > deadline {
                let seen: Vec<_> = now.iter().map(|(k, bd)| (k, bd.state().as_str())).collect();
                panic!(
                    "timed out waiting for {what}; last seen {seen:?} ({total} including deleting)"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ConfigMap `name` in this scenario's namespace on `cluster`.
    pub async fn configmap(&self, cluster: &str, name: &str) -> Option<ConfigMap> {
        let api: Api<ConfigMap> =
            Api::namespaced(self.downstream(cluster).clone(), &self.target_ns);
        api.get_opt(name)
            .await
            .expect("reading a downstream ConfigMap")
    }

    /// Waits until `check` holds.
    pub async fn eventually<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        eventually_within(what, self.patience, check).await
    }

    pub async fn label_cluster(&self, cluster: &str, label: &str) {
        self.kubectl(&[
            "-n",
            &self.workspace,
            "label",
            "cluster",
            cluster,
            label,
            "--overwrite",
        ])
        .await;
    }

    /// Removes what the scenario created: its GitRepos (the agents prune
    /// downstream), Clusters and namespaces.
    pub async fn cleanup(mut self) {
        let repos: Api<GitRepo> = Api::namespaced(self.client().clone(), &self.workspace);
        let _ = repos
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let patience = self.patience;
        let settled = tokio::time::timeout(patience, async {
            while !self.all_deployments().await.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if settled.is_err() {
            let _ = writeln!(
                std::io::stderr(),
                "cleanup: BundleDeployments are still being removed"
            );
        }
        let clusters: Api<Cluster> = Api::namespaced(self.client().clone(), &self.workspace);
        let _ = clusters
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        if self.real {
            let namespaces: Api<Namespace> = Api::all(self.client().clone());
            let _ = namespaces
                .delete(&self.workspace, &DeleteParams::default())
                .await;
            for (_, e) in &self.stack.clusters {
                let downstream: Api<Namespace> = Api::all(e.client.clone());
                let _ = downstream
                    .delete(&self.target_ns, &DeleteParams::default())
                    .await;
            }
        }
        let _ = self.stack.stop_controller().await;
        let Fixture { stack, .. } = self;
        let _ = stack.shutdown().await;
    }
}

/// The live (not deleting) BundleDeployments by (cluster, bundle).
fn by_pair(all: Vec<BundleDeployment>) -> BTreeMap<(String, String), BundleDeployment> {
    all.into_iter()
        .filter(|bd| bd.metadata.deletion_timestamp.is_none())
        .map(|bd| {
            let l = bd.metadata.labels.clone().unwrap_or_default();
            (
                (l[keys::CLUSTER_NAME].clone(), l[keys::BUNDLE_NAME].clone()),
                bd,
            )
        })
        .collect()
}

/// A Deployment; `ready: false` never becomes ready (the simulation skips
/// it, and a real cluster cannot pull its image).
pub fn deployment_yaml(name: &str, ready: bool) -> String {
    let (image, annotation) = if ready {
        ("registry.k8s.io/pause:3.10", String::new())
    } else {
        (
            "registry.invalid/flotilla-e2e/never:0",
            format!(
                "  annotations:\n    {}: \"false\"\n",
                flotilla::simulate::SIMULATE_READY
            ),
        )
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n{annotation}spec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: main\n        image: {image}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulation_opt_in_is_explicit() {
        for (v, want) in [
            (None, Ok(false)),
            (Some(""), Ok(false)),
            (Some("0"), Ok(false)),
            (Some("false"), Ok(false)),
            (Some("1"), Ok(true)),
            (Some(" true "), Ok(true)),
        ] {
            assert_eq!(simulate_on_real(v), want, "{v:?}");
        }
        assert_eq!(
            simulate_on_real(Some("yes")),
            Err("FLOTILLA_E2E_SIMULATE_READINESS must be 1, true, 0 or false, not \"yes\"".into())
        );
    }
}
