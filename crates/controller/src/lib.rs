//! Flotilla's controllers, on the management cluster:
//! - **fan-out**: Bundle -> one BundleDeployment per targeted cluster, through
//!   the rollout strategy; it also creates each Cluster's namespace;
//! - **gc**: deletes a BundleDeployment the moment its (bundle, cluster)
//!   pair stops being targeted, and releases a deleted Bundle once its
//!   BundleDeployments are gone;
//! - **status**: aggregates BundleDeployment status into Bundle, Cluster,
//!   ClusterGroup, GitRepo and HelmOp status;
//! - **gitrepo** and **helmop**: a repository's commit, or a Helm chart,
//!   becomes Bundles and Content.
//!
//! What wakes them: one hub task watches Clusters, ClusterGroups, Bundles,
//! BundleDeployments, GitRepos, HelmOps and the cluster namespaces into shared
//! caches, feeds the incremental targeting index, and queues exactly the
//! keys each event concerns (see `hub.rs`). No controller runs on a timer,
//! and none is woken by a write that changes nothing it reads: a
//! BundleDeployment's spec (the fan-out's own write) wakes only GC, and
//! status writes wake nobody. The one periodic task is the GC safety sweep,
//! which only counts and reports.
//!
//! Every replica watches and keeps its caches warm; only the one holding
//! the Lease runs workers, so only the leader writes.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod agents;
mod bundles;
pub mod cache;
mod chart_access;
pub mod config;
pub mod events;
mod fanout;
mod gc;
pub mod gitpoll;
pub mod gitrepo;
pub mod helmop;
mod hub;
pub mod rollout;
mod status;
pub mod topology;

pub use agents::KUBECONFIG_KEY;
pub use config::ControllerArgs;
pub use flotilla_runtime::{Metrics, metrics, queue};
pub use flotilla_targeting::ObjectKey;
pub use topology::cluster_namespace;

use crate::cache::Cache;
use crate::queue::Queue;
use crate::topology::Topology;
use flotilla_api::k8s_openapi::api::core::v1::Namespace;
use flotilla_api::{Bundle, BundleDeployment, Cluster, ClusterGroup, Content, GitRepo, HelmOp};
use kube::core::PartialObjectMeta;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// Field manager of the status controller's server-side applies.
pub const STATUS_FIELD_MANAGER: &str = "flotilla-status";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{verb} {kind} {name}: {source}")]
    Write {
        verb: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A GitRepo's source could not be read; retried with backoff.
    #[error("gitrepo {name}: {message}")]
    Source { name: String, message: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FanoutKey {
    Bundle(ObjectKey),
    /// A Cluster's namespace.
    Cluster(ObjectKey),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GcKey {
    /// Is this BundleDeployment still targeted?
    Deployment(ObjectKey),
    /// Can this deleted Bundle's finalizer go? Is this Bundle's GitRepo
    /// gone (it was deleted without its finalizer)?
    Bundle(ObjectKey),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StatusKey {
    Bundle(ObjectKey),
    Cluster(ObjectKey),
    Group(ObjectKey),
    GitRepo(ObjectKey),
    HelmOp(ObjectKey),
}

/// Everything the controllers share.
pub struct Context {
    pub client: kube::Client,
    pub args: ControllerArgs,
    pub clusters: Arc<Cache<Cluster>>,
    pub groups: Arc<Cache<ClusterGroup>>,
    pub bundles: Arc<Cache<Bundle>>,
    pub bds: Arc<Cache<BundleDeployment>>,
    pub gitrepos: Arc<Cache<GitRepo>>,
    pub helmops: Arc<Cache<HelmOp>>,
    pub namespaces: Arc<Cache<Namespace>>,
    /// Which Contents exist (metadata only: their bytes are not kept).
    pub contents: Arc<Cache<PartialObjectMeta<Content>>>,
    pub topo: RwLock<Topology>,
    pub fanout: Arc<Queue<FanoutKey>>,
    pub gc: Arc<Queue<GcKey>>,
    pub status: Arc<Queue<StatusKey>>,
    pub gitrepo: Arc<Queue<ObjectKey>>,
    pub helmop: Arc<Queue<ObjectKey>>,
    pub git: gitrepo::GitState,
    pub(crate) helm: helmop::HelmOpState,
    pub metrics: Arc<Metrics>,
    /// Kubernetes Events for operators (rate limited; see `events`).
    pub events: Arc<events::Events>,
    /// Bundles with a rollout in progress: a BundleDeployment's status
    /// change may let more clusters move, so it wakes the fan-out.
    pub rollout_waiting: Mutex<HashSet<ObjectKey>>,
    /// Bundles whose last fan-out had a BundleDeployment write refused, and
    /// why: the status controller shows it on the Bundle.
    pub deployment_write_errors: Mutex<HashMap<ObjectKey, String>>,
    /// Bundles whose templated values failed on some clusters: bundle ->
    /// cluster -> why. Those pairs show ErrApplied.
    pub value_errors: Mutex<HashMap<ObjectKey, std::collections::BTreeMap<ObjectKey, String>>>,
    /// A digest of the spec the fan-out last wrote or found right, per
    /// BundleDeployment: an event whose spec differs was an edit by
    /// someone else, and wakes the fan-out to put it back.
    pub fanout_specs: Mutex<HashMap<ObjectKey, [u64; 2]>>,
    /// Where `/metrics` is served, once bound.
    pub http_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Where webhooks are received, once bound.
    pub webhook_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Poked by the hub when a Cluster's agent may need starting or stopping.
    pub agents_changed: tokio::sync::Notify,
    /// Refused webhooks are logged at most this often.
    pub(crate) webhook_refusals: flotilla_runtime::throttle::Throttle,
    synced: watch::Sender<bool>,
    leading: watch::Sender<bool>,
}

impl Context {
    fn new(client: kube::Client, args: ControllerArgs) -> Self {
        let metrics = Arc::new(Metrics::new());
        let mirrors = flotilla_git::Mirrors::new(args.git_dir.clone(), args.git_timeout);
        // Chart archives are cached by digest beside the mirrors.
        let charts = flotilla_charts::Resolver::new(args.git_dir.join("charts"), args.git_timeout)
            .with_index_ttl(args.chart_index_ttl);
        let connections = args.git_connections;
        let events = Arc::new(events::Events::new(client.clone(), Arc::clone(&metrics)));
        Context {
            events,
            client,
            args,
            clusters: Default::default(),
            groups: Default::default(),
            bundles: Default::default(),
            bds: Default::default(),
            gitrepos: Default::default(),
            helmops: Default::default(),
            namespaces: Default::default(),
            contents: Default::default(),
            topo: RwLock::new(Topology::default()),
            fanout: Arc::new(Queue::new("fanout", Arc::clone(&metrics))),
            gc: Arc::new(Queue::new("gc", Arc::clone(&metrics))),
            status: Arc::new(Queue::new("status", Arc::clone(&metrics))),
            gitrepo: Arc::new(Queue::new("gitrepo", Arc::clone(&metrics))),
            helmop: Arc::new(Queue::new("helmop", Arc::clone(&metrics))),
            git: gitrepo::GitState::new(mirrors, charts, connections),
            helm: Default::default(),
            metrics,
            rollout_waiting: Mutex::new(HashSet::new()),
            deployment_write_errors: Mutex::new(HashMap::new()),
            value_errors: Mutex::new(HashMap::new()),
            fanout_specs: Mutex::new(HashMap::new()),
            http_addr: std::sync::OnceLock::new(),
            webhook_addr: std::sync::OnceLock::new(),
            agents_changed: tokio::sync::Notify::new(),
            webhook_refusals: flotilla_runtime::throttle::Throttle::new(
                std::time::Duration::from_secs(10),
            ),
            synced: watch::channel(false).0,
            leading: watch::channel(false).0,
        }
    }

    /// True while this replica leads.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    pub fn topo(&self) -> std::sync::RwLockReadGuard<'_, Topology> {
        self.topo.read().expect("topology lock")
    }
}

mod run;
pub use run::Controller;

pub(crate) use flotilla_runtime::finalizers_patch;
