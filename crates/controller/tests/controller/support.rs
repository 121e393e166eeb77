//! An embedded API server with Flotilla's CRDs, controllers started on it,
//! and fake agents that stand in for the real ones.

use flotilla_api::k8s_openapi::api::core::v1::Namespace;
use flotilla_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use flotilla_api::{
    Bundle, BundleDeployment, BundleSpec, BundleTarget, Cluster, ClusterGroup, ClusterGroupSpec,
    ClusterSpec, TargetCriteria, keys,
};
use flotilla_apiserver::http::HttpConfig;
use flotilla_apiserver::{Config, Server};
use flotilla_controller::{Context, Controller, ControllerArgs};
use futures::StreamExt;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

pub const NS: &str = "fleet-default";

pub struct Env {
    /// Kept alive for the test's duration.
    pub _server: Server,
    pub client: kube::Client,
}

/// A server with the CRDs and the workspace and lease namespaces.
pub async fn env() -> Env {
    let server = Server::new(Config {
        http: HttpConfig {
            bookmark_interval: Duration::from_secs(5),
            ..HttpConfig::default()
        },
        history: 0,
    });
    let client = kube::Client::new(server.router(), "default");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in flotilla_api::crds::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [NS, "flotilla-system"] {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    Env {
        _server: server,
        client,
    }
}

/// Settings for tests: no leader election, an ephemeral metrics port.
pub fn args() -> ControllerArgs {
    ControllerArgs {
        leader_elect: false,
        http_addr: "127.0.0.1:0".parse().unwrap(),
        // The tests read local repositories.
        allow_file_repos: true,
        ..ControllerArgs::default()
    }
}

pub struct Running {
    pub ctx: Arc<Context>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// A clean stop: the lease is released.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap().unwrap();
    }

    /// A crash: everything stops at once and the lease is left to expire.
    pub fn crash(self) {
        self.task.abort();
    }

    pub fn metric(&self, name: &str, label: Option<&str>) -> f64 {
        flotilla_controller::metrics::sum_samples(&self.ctx.metrics.encode(), name, label)
    }

    pub fn ctx_leading(&self) -> watch::Receiver<bool> {
        self.ctx.leading()
    }

    pub fn reconciles(&self) -> f64 {
        self.metric("flotilla_reconciles_total", None)
    }

    pub fn writes(&self) -> f64 {
        self.metric("flotilla_api_writes_total", None)
    }
}

/// Starts a controller and waits until its caches synced.
pub async fn start(client: &kube::Client, args: ControllerArgs) -> Running {
    let controller = Controller::new(client.clone(), args).unwrap();
    let ctx = controller.context();
    let mut synced = controller.synced();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(controller.run(stop_rx));
    tokio::time::timeout(Duration::from_secs(20), synced.wait_for(|s| *s))
        .await
        .expect("caches sync")
        .unwrap();
    Running { ctx, stop, task }
}

pub use flotilla_apiserver::testing::eventually;

pub fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
    l.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn match_labels(l: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(l)),
        match_expressions: None,
    }
}

pub fn cluster(name: &str, l: &[(&str, &str)]) -> Cluster {
    let mut c = Cluster::new(name, ClusterSpec::default());
    c.metadata.namespace = Some(NS.into());
    c.metadata.labels = Some(labels(l));
    c
}

pub fn group(name: &str, selector: LabelSelector) -> ClusterGroup {
    let mut g = ClusterGroup::new(
        name,
        ClusterGroupSpec {
            selector: Some(selector),
        },
    );
    g.metadata.namespace = Some(NS.into());
    g
}

pub fn selector_target(l: &[(&str, &str)]) -> BundleTarget {
    BundleTarget {
        criteria: TargetCriteria {
            cluster_selector: Some(match_labels(l)),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn group_target(group: &str) -> BundleTarget {
    BundleTarget {
        criteria: TargetCriteria {
            cluster_group: Some(group.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn bundle(name: &str, content: &str, targets: Vec<BundleTarget>) -> Bundle {
    let mut b = Bundle::new(
        name,
        BundleSpec {
            content_id: format!("s-{content}"),
            targets,
            ..Default::default()
        },
    );
    b.metadata.namespace = Some(NS.into());
    b
}

pub async fn create<K>(client: &kube::Client, obj: &K) -> K
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), obj).await.unwrap()
}

pub async fn merge_patch<K>(client: &kube::Client, name: &str, patch: serde_json::Value) -> K
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), NS);
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap()
}

/// Every BundleDeployment as (cluster, bundle) -> uid.
pub async fn deployments(client: &kube::Client) -> BTreeMap<(String, String), String> {
    let api: Api<BundleDeployment> = Api::all(client.clone());
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|bd| bd.metadata.deletion_timestamp.is_none())
        .map(|bd| {
            let l = bd.metadata.labels.clone().unwrap_or_default();
            (
                (l[keys::CLUSTER_NAME].clone(), l[keys::BUNDLE_NAME].clone()),
                bd.metadata.uid.clone().unwrap(),
            )
        })
        .collect()
}

pub fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(c, b)| (c.to_string(), b.to_string()))
        .collect()
}

/// Waits until the BundleDeployments are exactly `want` (cluster, bundle).
pub async fn wait_for_pairs(
    client: &kube::Client,
    want: &BTreeSet<(String, String)>,
) -> BTreeMap<(String, String), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = deployments(client).await;
        let have: BTreeSet<(String, String)> = now.keys().cloned().collect();
        if &have == want {
            return now;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("deployments are {have:?}, want {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stands in for the agents: marks each BundleDeployment applied at its
/// deploymentID, ready and unmodified, and optionally holds the agent's
/// finalizer, releasing it (as after pruning) on deletion.
pub struct FakeAgents {
    pub ready: Arc<AtomicBool>,
    /// While false, deleted deployments keep the agent's finalizer.
    pub release: Arc<AtomicBool>,
    pub released: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAgents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn fake_agents(client: &kube::Client, hold_finalizer: bool) -> FakeAgents {
    let ready = Arc::new(AtomicBool::new(true));
    let released = Arc::new(AtomicU64::new(0));
    let release = Arc::new(AtomicBool::new(true));
    let (r, rel, may_release) = (
        Arc::clone(&ready),
        Arc::clone(&released),
        Arc::clone(&release),
    );
    let client = client.clone();
    let task = tokio::spawn(async move {
        let all: Api<BundleDeployment> = Api::all(client.clone());
        let mut pending: BTreeMap<(String, String), BundleDeployment> = BTreeMap::new();
        let mut events = watcher(all, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(bd)) => {
                        let key = (bd.metadata.namespace.clone().unwrap(), bd.metadata.name.clone().unwrap());
                        pending.insert(key, bd);
                    }
                    Some(Err(_)) => continue,
                    None => return,
                },
                _ = tick.tick() => {}
            }
            let keys: Vec<_> = pending.keys().cloned().collect();
            for key in keys {
                let bd = pending[&key].clone();
                let api: Api<BundleDeployment> = Api::namespaced(client.clone(), &key.0);
                let finalizers = bd.metadata.finalizers.clone().unwrap_or_default();
                let has = finalizers
                    .iter()
                    .any(|f| f == keys::BUNDLE_DEPLOYMENT_FINALIZER);
                if bd.metadata.deletion_timestamp.is_some() {
                    if has && !may_release.load(Ordering::SeqCst) {
                        continue;
                    }
                    if has {
                        let rest: Vec<&String> = finalizers
                            .iter()
                            .filter(|f| *f != keys::BUNDLE_DEPLOYMENT_FINALIZER)
                            .collect();
                        let _ = api
                            .patch(
                                &key.1,
                                &PatchParams::default(),
                                &Patch::Merge(&json!({"metadata": {"finalizers": rest}})),
                            )
                            .await;
                        rel.fetch_add(1, Ordering::SeqCst);
                    }
                    pending.remove(&key);
                    continue;
                }
                if hold_finalizer && !has {
                    let mut f = finalizers.clone();
                    f.push(keys::BUNDLE_DEPLOYMENT_FINALIZER.into());
                    let _ = api
                        .patch(
                            &key.1,
                            &PatchParams::default(),
                            &Patch::Merge(&json!({"metadata": {"finalizers": f}})),
                        )
                        .await;
                }
                if !r.load(Ordering::SeqCst) {
                    continue;
                }
                let id = bd.spec.deployment_id.clone();
                let st = bd.status.clone().unwrap_or_default();
                if !id.is_empty()
                    && (st.applied_deployment_id != id || !st.ready || !st.non_modified)
                {
                    let _ = api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&json!({
                        "status": {"appliedDeploymentID": id, "ready": true, "nonModified": true}
                    }))).await;
                }
                pending.remove(&key);
            }
        }
    });
    FakeAgents {
        ready,
        release,
        released,
        task,
    }
}

/// The Events about the object `name` in the test namespace, as
/// (reason, note), oldest first.
pub async fn events_for(client: &kube::Client, name: &str) -> Vec<(String, String)> {
    let api: Api<flotilla_api::k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), NS);
    let mut events: Vec<_> = api
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    events.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
    events
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Waits for an Event about `name` with `reason`; returns its note.
pub async fn wait_event(client: &kube::Client, name: &str, reason: &str) -> String {
    eventually(&format!("a {reason} event for {name}"), || async {
        events_for(client, name)
            .await
            .into_iter()
            .find(|(r, _)| r == reason)
            .map(|(_, n)| n)
    })
    .await
}
