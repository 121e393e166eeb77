//! Wiring: the BundleDeployment watch that decides who to wake, the worker
//! pool, and the contact loop.

use crate::downstream::Downstream;
use crate::reconcile::{self, Deployed};
use crate::{Error, Wake};
use flotilla_api::{BundleDeployment, BundleState, Cluster, keys};
use flotilla_bundle::Tools;
use flotilla_runtime::{Metrics, Queue, run_workers};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Where an agent deploys and how.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Cluster this agent serves: its name and namespace (workspace).
    /// Its `status.agent.lastSeen` records the agent's contact.
    pub cluster_name: String,
    pub cluster_workspace: String,
    /// The management-cluster namespace holding its BundleDeployments.
    pub cluster_namespace: String,
    /// Reconciles at once (`--agent-workers`).
    pub workers: usize,
    /// How often the agent records its contact (`--agent-contact-interval`).
    pub contact_interval: Duration,
    /// The downstream namespace holding the inventory parents.
    pub inventory_namespace: String,
    /// How long a CRD may take to be Established.
    pub crd_timeout: Duration,
    pub tools: Tools,
}

impl AgentConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1024).contains(&self.workers) {
            return Err(format!(
                "agent workers must be between 1 and 1024, got {}",
                self.workers
            ));
        }
        if self.contact_interval < Duration::from_secs(1) {
            return Err("the agent contact interval must be at least 1s".into());
        }
        if self.cluster_namespace.is_empty() {
            return Err("the agent needs its cluster namespace".into());
        }
        if self.inventory_namespace.is_empty() {
            return Err("the agent needs an inventory namespace".into());
        }
        Ok(())
    }
}

fn rv(bd: &BundleDeployment) -> u64 {
    bd.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What an event must change to wake its BundleDeployment: not its status,
/// which the agent writes itself.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    generation: Option<i64>,
    deleting: bool,
    finalized: bool,
}

impl Seen {
    fn of(bd: &BundleDeployment) -> Self {
        Seen {
            generation: bd.metadata.generation,
            deleting: bd.metadata.deletion_timestamp.is_some(),
            finalized: bd
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == keys::BUNDLE_DEPLOYMENT_FINALIZER),
        }
    }
}

pub(crate) struct Inner {
    pub mgmt: kube::Client,
    pub down: Arc<Downstream>,
    pub config: AgentConfig,
    pub metrics: Arc<Metrics>,
    pub queue: Arc<Queue<String>>,
    pub bds: RwLock<HashMap<String, Arc<BundleDeployment>>>,
    seen: Mutex<HashMap<String, (Seen, BundleState)>>,
    /// What the agent knows it deployed, per BundleDeployment.
    pub deployed: Mutex<HashMap<String, Arc<Deployed>>>,
    /// What the agent's last write of each BundleDeployment returned.
    written: Mutex<HashMap<String, Arc<BundleDeployment>>>,
    synced: watch::Sender<bool>,
}

impl Inner {
    pub fn wrote(&self, kind: &str, verb: &'static str) {
        self.metrics
            .agent_write(&self.config.cluster_name, kind, verb);
    }

    /// The newest version known of a BundleDeployment: the watch's, or
    /// the agent's own last write when the watch has not caught up, so a
    /// reconcile right after a status write never acts on the old status.
    pub fn bd(&self, name: &str) -> Option<Arc<BundleDeployment>> {
        let cached = self.bds.read().expect("bds lock").get(name).cloned()?;
        let written = self
            .written
            .lock()
            .expect("written lock")
            .get(name)
            .cloned();
        match written {
            Some(w) if rv(&w) > rv(&cached) && w.metadata.uid == cached.metadata.uid => Some(w),
            _ => Some(cached),
        }
    }

    /// Remembers the object a write returned.
    pub fn record(&self, bd: BundleDeployment) {
        if let Some(name) = bd.metadata.name.clone() {
            self.written
                .lock()
                .expect("written lock")
                .insert(name, Arc::new(bd));
        }
    }

    pub fn all_bds(&self) -> Vec<Arc<BundleDeployment>> {
        self.bds
            .read()
            .expect("bds lock")
            .values()
            .cloned()
            .collect()
    }

    /// Applies one BundleDeployment event to the cache and wakes whoever
    /// it concerns.
    fn observe(&self, bd: Option<BundleDeployment>, name: &str) {
        let (now, state) = match bd {
            Some(bd) => {
                let seen = (Seen::of(&bd), bd.state());
                self.bds
                    .write()
                    .expect("bds lock")
                    .insert(name.to_owned(), Arc::new(bd));
                (Some(seen.0), Some(seen.1))
            }
            None => {
                self.bds.write().expect("bds lock").remove(name);
                self.deployed.lock().expect("deployed lock").remove(name);
                self.written.lock().expect("written lock").remove(name);
                (None, None)
            }
        };
        let before = {
            let mut seen = self.seen.lock().expect("seen lock");
            match (&now, &state) {
                (Some(n), Some(s)) => seen.insert(name.to_owned(), (n.clone(), *s)),
                _ => seen.remove(name),
            }
        };
        if now.is_some() && before.as_ref().map(|b| &b.0) != now.as_ref() {
            self.queue.add(name.to_owned(), "bundledeployment");
        }
        if before.map(|b| b.1) != state {
            let all = self.all_bds();
            for other in &all {
                if reconcile::depends_on(other, name, &all) {
                    let other = other.metadata.name.clone().unwrap_or_default();
                    self.queue.add(other, "dependency");
                }
            }
        }
    }
}

/// One cluster's agent. Nothing runs until [`Agent::run`].
pub struct Agent {
    inner: Arc<Inner>,
}

impl Agent {
    /// `mgmt` reaches the management cluster (the cluster namespace is
    /// enough), `downstream` the cluster to deploy to.
    pub fn new(
        mgmt: kube::Client,
        downstream: kube::Client,
        config: AgentConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        config.validate()?;
        let queue = Arc::new(Queue::new("agent", Arc::clone(&metrics)));
        let down = Arc::new(Downstream::new(
            downstream,
            config.cluster_name.clone(),
            Arc::clone(&metrics),
            Wake(Arc::clone(&queue)),
        ));
        Ok(Agent {
            inner: Arc::new(Inner {
                mgmt,
                down,
                config,
                metrics,
                queue,
                bds: RwLock::default(),
                seen: Mutex::default(),
                deployed: Mutex::default(),
                written: Mutex::default(),
                synced: watch::channel(false).0,
            }),
        })
    }

    /// True once the BundleDeployments have been listed.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.inner.synced.subscribe()
    }

    /// Runs until `active`'s sender is dropped. Workers and contact writes
    /// run while `active` is true (this replica leads); the watch keeps
    /// the cache warm either way.
    pub async fn run(self, active: watch::Receiver<bool>) {
        let inner = self.inner;
        let cfg = &inner.config;
        tracing::info!(
            cluster = %cfg.cluster_name,
            namespace = %cfg.cluster_namespace,
            workers = cfg.workers,
            "agent started"
        );
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(watch_bds(Arc::clone(&inner)));
        {
            let inner2 = Arc::clone(&inner);
            tasks.spawn(run_workers(
                Arc::clone(&inner.queue),
                cfg.workers,
                active.clone(),
                move |name: String, _t| reconcile::reconcile(Arc::clone(&inner2), name),
            ));
        }
        tasks.spawn(contact_loop(Arc::clone(&inner), active.clone()));
        // The workers return once `active`'s sender is gone; stop the rest.
        let mut closed = active.clone();
        while closed.changed().await.is_ok() {}
        tasks.shutdown().await;
        tracing::info!(cluster = %inner.config.cluster_name, "agent stopped");
    }
}

async fn watch_bds(inner: Arc<Inner>) {
    let api: Api<BundleDeployment> =
        Api::namespaced(inner.mgmt.clone(), &inner.config.cluster_namespace);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Option<Vec<String>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = Some(Vec::new()),
            Ok(watcher::Event::InitApply(bd) | watcher::Event::Apply(bd)) => {
                let name = bd.metadata.name.clone().unwrap_or_default();
                if let Some(l) = listing.as_mut() {
                    l.push(name.clone());
                }
                inner.observe(Some(bd), &name);
            }
            Ok(watcher::Event::Delete(bd)) => {
                let name = bd.metadata.name.clone().unwrap_or_default();
                inner.observe(None, &name);
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = listing.take() {
                    let gone: Vec<String> = inner
                        .bds
                        .read()
                        .expect("bds lock")
                        .keys()
                        .filter(|k| !listed.contains(k))
                        .cloned()
                        .collect();
                    for name in gone {
                        inner.observe(None, &name);
                    }
                }
                inner.synced.send_replace(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, namespace = %inner.config.cluster_namespace, "BundleDeployment watch failed; retrying");
            }
        }
    }
}

/// Records the agent's contact on its Cluster, at the contact interval:
/// the only periodic write, counted apart.
async fn contact_loop(inner: Arc<Inner>, mut active: watch::Receiver<bool>) {
    if inner.config.cluster_name.is_empty() {
        return;
    }
    let clusters: Api<Cluster> =
        Api::namespaced(inner.mgmt.clone(), &inner.config.cluster_workspace);
    let mut tick = tokio::time::interval(inner.config.contact_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = active.changed() => {
                if r.is_err() {
                    return;
                }
                // Leading again: report at once, then at the interval.
                tick.reset_immediately();
                continue;
            }
        }
        if !*active.borrow() {
            continue;
        }
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let patch = serde_json::json!({"status": {"agent": {"lastSeen": now}}});
        match clusters
            .patch_status(
                &inner.config.cluster_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => inner.metrics.agent_contact(&inner.config.cluster_name),
            Err(e) => {
                let e: Error = e.into();
                tracing::warn!(cluster = %inner.config.cluster_name, error = %e, "contact not recorded");
            }
        }
    }
}
