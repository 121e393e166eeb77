//! The whole system in one process: a management API server, downstream
//! clusters, the controllers with their in-process agents, and (on embedded
//! servers) the readiness simulation. `flotilla dev` runs it on embedded
//! API servers; the e2e suite runs it on embedded servers or, given
//! kubeconfigs, on real clusters.
//!
//! Registration is idempotent and keeps what users changed: Clusters,
//! the `default` ClusterGroup and GitRepos are created only when missing;
//! the kubeconfig Secrets and the CRDs are applied every time (a restarted
//! embedded server may listen on another port).

use anyhow::{Context as _, bail};
use flotilla_api::k8s_openapi::ByteString;
use flotilla_api::k8s_openapi::api::core::v1::{Namespace, Secret};
use flotilla_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use flotilla_api::{Cluster, ClusterGroup, ClusterGroupSpec, ClusterSpec, keys};
use flotilla_apiserver::server::{kubeconfig, write_kubeconfig};
use flotilla_apiserver::{Config, Server};
use flotilla_controller::{Controller, ControllerArgs, KUBECONFIG_KEY};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The field manager of what the stack applies.
pub const FIELD_MANAGER: &str = "flotilla-dev";

/// A downstream cluster to register: its Cluster's name and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDef {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// `n` clusters named by environment: dev-1, staging-1, prod-1, dev-2, ...
/// labelled `env` and `region` (alternating eu-west-1 and us-east-1).
pub fn default_clusters(n: usize) -> Vec<ClusterDef> {
    const ENVS: [&str; 3] = ["dev", "staging", "prod"];
    const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];
    (0..n)
        .map(|i| {
            let env = ENVS[i % ENVS.len()];
            ClusterDef {
                name: format!("{env}-{}", i / ENVS.len() + 1),
                labels: BTreeMap::from([
                    ("env".to_owned(), env.to_owned()),
                    ("region".to_owned(), REGIONS[i % REGIONS.len()].to_owned()),
                ]),
            }
        })
        .collect()
}

/// One API server the stack talks to: embedded (served here) or external.
pub struct Endpoint {
    pub name: String,
    pub client: kube::Client,
    /// A kubeconfig file for kubectl.
    pub kubeconfig: PathBuf,
    /// The server's URL.
    pub url: String,
    served: Option<Served>,
}

struct Served {
    port: u16,
    _server: Server,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Endpoint {
    /// Serves a new embedded API server on 127.0.0.1, on `port` when it is
    /// free (0 or taken: any free port), durable in `data_dir` if given,
    /// and writes its kubeconfig to `kubeconfig_path`.
    pub async fn embedded(
        name: &str,
        port: u16,
        data_dir: Option<&Path>,
        kubeconfig_path: &Path,
    ) -> anyhow::Result<Self> {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(_) if port != 0 => tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?,
            Err(e) => return Err(e).context("binding 127.0.0.1"),
        };
        let addr = listener.local_addr()?;
        let server = match data_dir {
            Some(dir) => Server::durable(Config::default(), dir).with_context(|| {
                format!("opening the data of API server {name} in {}", dir.display())
            })?,
            None => Server::new(Config::default()),
        };
        let text = kubeconfig(&addr, None);
        write_kubeconfig(kubeconfig_path, &text)
            .with_context(|| format!("writing {}", kubeconfig_path.display()))?;
        let (stop, mut stopped) = watch::channel(false);
        let router = server.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        let client = client_from_text(&text).await?;
        Ok(Endpoint {
            name: name.to_owned(),
            client,
            kubeconfig: kubeconfig_path.to_owned(),
            url: format!("http://{addr}"),
            served: Some(Served {
                port: addr.port(),
                _server: server,
                stop,
                task,
            }),
        })
    }

    /// An existing cluster, reached through a kubeconfig file.
    pub async fn external(name: &str, kubeconfig_path: &Path) -> anyhow::Result<Self> {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig_path)
            .with_context(|| format!("reading kubeconfig {}", kubeconfig_path.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let url = config.cluster_url.to_string();
        Ok(Endpoint {
            name: name.to_owned(),
            client: kube::Client::try_from(config)?,
            kubeconfig: kubeconfig_path.to_owned(),
            url,
            served: None,
        })
    }

    /// The port of an embedded server.
    pub fn port(&self) -> Option<u16> {
        self.served.as_ref().map(|s| s.port)
    }

    /// The kubeconfig as one self-contained document (what a Secret
    /// holds): certificates and keys a file names by path are inlined.
    pub async fn kubeconfig_text(&self) -> anyhow::Result<String> {
        if self.served.is_some() {
            return Ok(std::fs::read_to_string(&self.kubeconfig)?);
        }
        let out = tokio::process::Command::new("kubectl")
            .args(["config", "view", "--flatten", "--minify", "--raw"])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .output()
            .await
            .context("running kubectl config view --flatten (is kubectl installed?)")?;
        if !out.status.success() {
            bail!(
                "kubectl config view --flatten {}: {}",
                self.kubeconfig.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Stops serving (embedded) after in-flight requests finish.
    pub async fn shutdown(self) {
        if let Some(served) = self.served {
            let _ = served.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), served.task).await;
        }
    }
}

async fn client_from_text(text: &str) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(text)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// The ports embedded servers listened on last time, so kubeconfigs stay
/// valid across restarts when the ports are still free.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Ports(BTreeMap<String, u16>);

/// A management server and one server per cluster, embedded, with their
/// kubeconfigs in `state_dir/kubeconfigs` and (when `durable`) their data
/// under `state_dir/apiservers`.
pub async fn embedded_endpoints(
    state_dir: &Path,
    durable: bool,
    clusters: &[ClusterDef],
) -> anyhow::Result<(Endpoint, Vec<Endpoint>)> {
    let ports_file = state_dir.join("ports.json");
    let mut ports: Ports = std::fs::read(&ports_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let kubeconfigs = state_dir.join("kubeconfigs");
    let data = |name: &str| durable.then(|| state_dir.join("apiservers").join(name));
    let start = |name: String, port: u16| {
        let data = data(&name);
        let path = kubeconfigs.join(format!("{name}.kubeconfig"));
        async move { Endpoint::embedded(&name, port, data.as_deref(), &path).await }
    };
    let management = start(
        "management".to_owned(),
        ports.0.get("management").copied().unwrap_or(0),
    )
    .await?;
    let mut downstream = Vec::new();
    for c in clusters {
        let port = ports.0.get(&c.name).copied().unwrap_or(0);
        downstream.push(start(c.name.clone(), port).await?);
    }
    for e in std::iter::once(&management).chain(&downstream) {
        if let Some(p) = e.port() {
            ports.0.insert(e.name.clone(), p);
        }
    }
    std::fs::write(&ports_file, serde_json::to_vec_pretty(&ports)?)?;
    Ok((management, downstream))
}

/// How the stack runs.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// The namespace of the Clusters, the ClusterGroup and the GitRepos.
    pub workspace: String,
    pub controller: ControllerArgs,
    /// Simulate workload readiness on embedded downstream servers, with
    /// this rollout time.
    pub simulate: Option<Duration>,
}

struct RunningController {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    ctx: Arc<flotilla_controller::Context>,
}

/// The system: management, clusters, controllers, simulation.
pub struct Stack {
    pub config: StackConfig,
    pub management: Endpoint,
    /// Each cluster with the server it runs on.
    pub clusters: Vec<(ClusterDef, Endpoint)>,
    controller: Option<RunningController>,
    simulations: Vec<tokio::task::JoinHandle<()>>,
}

impl Stack {
    pub fn new(
        config: StackConfig,
        management: Endpoint,
        clusters: Vec<(ClusterDef, Endpoint)>,
    ) -> Self {
        Stack {
            config,
            management,
            clusters,
            controller: None,
            simulations: Vec::new(),
        }
    }

    pub fn client(&self) -> &kube::Client {
        &self.management.client
    }

    /// The CRDs, the workspace and system namespaces, a kubeconfig Secret
    /// and a Cluster per downstream cluster, and the `default`
    /// ClusterGroup (every cluster).
    pub async fn register(&self) -> anyhow::Result<()> {
        let client = self.client();
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in flotilla_api::crds::all() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            crds.patch(&name, &apply, &Patch::Apply(&crd))
                .await
                .with_context(|| format!("applying CRD {name}"))?;
        }
        for crd in flotilla_api::crds::all() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            wait_established(&crds, &name).await?;
        }
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for ns in [
            self.config.workspace.as_str(),
            self.config.controller.lease_namespace.as_str(),
        ] {
            let obj = Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.to_owned()),
                    ..Default::default()
                },
                ..Default::default()
            };
            create_if_missing(&namespaces, &obj).await?;
        }
        let ws = &self.config.workspace;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ws);
        let clusters: Api<Cluster> = Api::namespaced(client.clone(), ws);
        for (def, endpoint) in &self.clusters {
            let secret_name = format!("{}-kubeconfig", def.name);
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(secret_name.clone()),
                    namespace: Some(ws.clone()),
                    labels: Some(BTreeMap::from([(
                        keys::MANAGED_BY.to_owned(),
                        keys::MANAGED_BY_VALUE.to_owned(),
                    )])),
                    ..Default::default()
                },
                type_: Some("Opaque".into()),
                data: Some(BTreeMap::from([(
                    KUBECONFIG_KEY.to_owned(),
                    ByteString(endpoint.kubeconfig_text().await?.into_bytes()),
                )])),
                ..Default::default()
            };
            let mut value = serde_json::to_value(&secret)?;
            value["apiVersion"] = "v1".into();
            value["kind"] = "Secret".into();
            secrets
                .patch(&secret_name, &apply, &Patch::Apply(&value))
                .await
                .with_context(|| format!("applying Secret {ws}/{secret_name}"))?;
            let mut cluster = Cluster::new(
                &def.name,
                ClusterSpec {
                    kube_config_secret: Some(secret_name.clone()),
                    ..Default::default()
                },
            );
            cluster.metadata.namespace = Some(ws.clone());
            cluster.metadata.labels = Some(def.labels.clone());
            if !create_if_missing(&clusters, &cluster).await? {
                // Registered before: keep its labels, point it at the Secret.
                let patch = serde_json::json!({"spec": {"kubeConfigSecret": secret_name}});
                clusters
                    .patch(&def.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
        let groups: Api<ClusterGroup> = Api::namespaced(client.clone(), ws);
        let mut group = ClusterGroup::new(
            keys::DEFAULT_CLUSTER_GROUP,
            ClusterGroupSpec {
                selector: Some(LabelSelector::default()),
            },
        );
        group.metadata.namespace = Some(ws.clone());
        create_if_missing(&groups, &group).await?;
        Ok(())
    }

    /// Starts the controllers (and with them the in-process agents) and
    /// waits until their caches synced.
    pub async fn start_controller(&mut self) -> anyhow::Result<()> {
        if self.controller.is_some() {
            bail!("the controller is already running");
        }
        let controller = Controller::new(self.client().clone(), self.config.controller.clone())
            .map_err(anyhow::Error::msg)?;
        let ctx = controller.context();
        let mut synced = controller.synced();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(controller.run(stop_rx));
        tokio::time::timeout(Duration::from_secs(60), synced.wait_for(|s| *s))
            .await
            .context("the controller's caches did not sync within 60s")?
            .context("the controller stopped before its caches synced")?;
        self.controller = Some(RunningController { stop, task, ctx });
        Ok(())
    }

    /// The running controller's metrics, as Prometheus text.
    pub fn controller_metrics(&self) -> Option<String> {
        self.controller.as_ref().map(|c| c.ctx.metrics.encode())
    }

    /// Where the running controller serves `/metrics`.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.controller.as_ref()?.ctx.http_addr.get().copied()
    }

    /// A clean stop: workers finish, the lease is released.
    pub async fn stop_controller(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.controller.take() {
            let _ = c.stop.send(true);
            c.task.await??;
        }
        Ok(())
    }

    /// A crash: the controller stops at once, mid-work.
    pub fn crash_controller(&mut self) {
        if let Some(c) = self.controller.take() {
            c.task.abort();
        }
    }

    /// Starts the readiness simulation on every embedded cluster, if
    /// configured.
    pub fn start_simulation(&mut self) {
        let Some(delay) = self.config.simulate else {
            return;
        };
        for (_, endpoint) in &self.clusters {
            if endpoint.served.is_some() {
                self.simulations.push(tokio::spawn(crate::simulate::run(
                    endpoint.client.clone(),
                    delay,
                )));
            }
        }
    }

    /// Simulates workload readiness on every downstream cluster, real ones
    /// too: for real API servers without nodes, where no kubelet ever makes
    /// a Deployment available (the e2e suite's opt-in). Not for clusters
    /// whose nodes run the workloads: the simulation and the real
    /// controllers would both write the status.
    pub fn start_simulation_everywhere(&mut self, delay: Duration) {
        for (_, endpoint) in &self.clusters {
            self.simulations.push(tokio::spawn(crate::simulate::run(
                endpoint.client.clone(),
                delay,
            )));
        }
    }

    /// Stops everything: controllers first, then the simulation, then the
    /// servers.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let stopped = self.stop_controller().await;
        for s in self.simulations.drain(..) {
            s.abort();
        }
        for (_, endpoint) in self.clusters {
            endpoint.shutdown().await;
        }
        self.management.shutdown().await;
        stopped
    }
}

/// Creates `obj` unless it exists; true when it was created.
pub async fn create_if_missing<K>(api: &Api<K>, obj: &K) -> anyhow::Result<bool>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e).with_context(|| {
            format!(
                "creating {} {}",
                K::kind(&Default::default()),
                obj.meta().name.clone().unwrap_or_default()
            )
        }),
    }
}

async fn wait_established(crds: &Api<CustomResourceDefinition>, name: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let crd = crds.get(name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("CRD {name} is not Established after 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_clusters_cycle_through_environments_and_regions() {
        let names: Vec<String> = default_clusters(5).into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["dev-1", "staging-1", "prod-1", "dev-2", "staging-2"]
        );
        let c = &default_clusters(3)[2];
        assert_eq!(c.labels["env"], "prod");
        assert_eq!(c.labels["region"], "eu-west-1");
        assert_eq!(default_clusters(3)[1].labels["region"], "us-east-1");
    }
}
