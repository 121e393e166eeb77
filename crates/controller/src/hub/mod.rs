//! The hub: the one task that turns watch events into queued work.
//!
//! What wakes what:
//!
//! | event | fan-out | gc | status |
//! |---|---|---|---|
//! | Cluster created, relabelled, deleted | bundles whose pairs changed; its namespace | BundleDeployments of untargeted pairs | its bundles, itself, its groups |
//! | Cluster `paused` flipped | its bundles | | |
//! | ClusterGroup selector/labels changed, deleted | bundles whose pairs changed | untargeted pairs | itself, the changed pairs |
//! | Bundle spec changed | itself | untargeted pairs | itself, its GitRepo or HelmOp |
//! | Bundle deleting or deleted | | untargeted pairs; its finalizer | its GitRepo or HelmOp |
//! | BundleDeployment created | | itself (a race with a targets edit) | its bundle, cluster, groups, GitRepo or HelmOp |
//! | BundleDeployment spec or status changed | its bundle, on a status change while its rollout waits | | its bundle, cluster, groups, GitRepo or HelmOp |
//! | BundleDeployment deleted | its bundle, if still targeted | its bundle's finalizer | its bundle, cluster, groups, GitRepo or HelmOp |
//! | cluster namespace created or deleted | the cluster's bundles; the namespace | | |
//! | GitRepo or HelmOp created | | | itself |
//! | GitRepo or HelmOp gone (even without its finalizer) | | its Bundles, if orphaned | |
//! | BundleDeployment spec edited by someone else | its bundle | | |
//!
//! A Content deleted (by hand) queues the GitRepos and HelmOps whose Bundles need it,
//! which recreate it.
//!
//! And for the GitRepo and HelmOp controllers (`owners.rs`): one created,
//! its generation changed, deleting, or (a GitRepo's) webhook annotation
//! moved; a Bundle it wants deleted or edited by someone else; the last
//! Bundle of a deleting one gone. The poller and the webhook receiver queue
//! GitRepos too (`gitpoll.rs`); a HelmOp polling a version range queues
//! itself.
//!
//! Status-only changes of Bundles, Clusters, ClusterGroups, GitRepos and HelmOps
//! (the status controller's own writes) wake nobody. A BundleDeployment
//! spec change (the fan-out's own write) wakes the status controller, never
//! the fan-out, plus one cheap GC check when it is created.

mod owners;

use crate::cache::{Delta, Feed};
use crate::topology::{cluster_namespace, pair_of};
use crate::{Context, FanoutKey, GcKey, StatusKey};
use flotilla_api::k8s_openapi::api::core::v1::Namespace;
use flotilla_api::{
    Bundle, BundleDeployment, Cluster, ClusterGroup, Content, GitRepo, HelmOp, keys,
};
use flotilla_targeting::{ChangeKind, Changes, ObjectKey};
use futures::{Stream, StreamExt};
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

pub enum Event {
    Cluster(Box<watcher::Event<Cluster>>),
    Group(Box<watcher::Event<ClusterGroup>>),
    Bundle(Box<watcher::Event<Bundle>>),
    Bd(Box<watcher::Event<BundleDeployment>>),
    GitRepo(Box<watcher::Event<GitRepo>>),
    HelmOp(Box<watcher::Event<HelmOp>>),
    Namespace(Box<watcher::Event<Namespace>>),
    Content(Box<watcher::Event<PartialObjectMeta<Content>>>),
}

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, watcher::Error>> + Send>>;

/// One watch per kind, merged. Events are boxed: objects differ a lot in
/// size and most of the time only one is in flight.
pub fn watches(client: &kube::Client) -> Vec<EventStream> {
    fn watch<K, F>(api: Api<K>, config: watcher::Config, wrap: F) -> EventStream
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K::DynamicType: Default,
        F: Fn(watcher::Event<K>) -> Event + Send + 'static,
    {
        Box::pin(
            watcher(api, config)
                .default_backoff()
                .map(move |e| {
                    if let Err(error) = &e {
                        tracing::warn!(kind = %K::kind(&Default::default()), %error, "watch failed; retrying with backoff");
                    }
                    e.map(&wrap)
                }),
        )
    }
    let all = watcher::Config::default;
    vec![
        watch(Api::all(client.clone()), all(), |e| {
            Event::Cluster(Box::new(e))
        }),
        watch(Api::all(client.clone()), all(), |e| {
            Event::Group(Box::new(e))
        }),
        watch(Api::all(client.clone()), all(), |e| {
            Event::Bundle(Box::new(e))
        }),
        watch(Api::all(client.clone()), all(), |e| Event::Bd(Box::new(e))),
        watch(Api::all(client.clone()), all(), |e| {
            Event::GitRepo(Box::new(e))
        }),
        watch(Api::all(client.clone()), all(), |e| {
            Event::HelmOp(Box::new(e))
        }),
        watch(
            Api::all(client.clone()),
            all().labels(&format!(
                "{},{}",
                keys::CLUSTER_NAME,
                keys::CLUSTER_NAMESPACE
            )),
            |e| Event::Namespace(Box::new(e)),
        ),
        // Contents are large and only their existence matters here: a
        // metadata-only watch.
        watch(
            Api::<PartialObjectMeta<Content>>::all(client.clone()),
            all(),
            |e| Event::Content(Box::new(e)),
        ),
    ]
}

pub struct Hub {
    ctx: Arc<Context>,
    clusters: Feed<Cluster>,
    groups: Feed<ClusterGroup>,
    bundles: Feed<Bundle>,
    bds: Feed<BundleDeployment>,
    gitrepos: Feed<GitRepo>,
    helmops: Feed<HelmOp>,
    namespaces: Feed<Namespace>,
    contents: Feed<PartialObjectMeta<Content>>,
}

fn deleting<K: kube::Resource>(o: &K) -> bool {
    o.meta().deletion_timestamp.is_some()
}

impl Hub {
    pub fn new(ctx: Arc<Context>) -> Self {
        Hub {
            clusters: Feed::new(Arc::clone(&ctx.clusters)),
            groups: Feed::new(Arc::clone(&ctx.groups)),
            bundles: Feed::new(Arc::clone(&ctx.bundles)),
            bds: Feed::new(Arc::clone(&ctx.bds)),
            gitrepos: Feed::new(Arc::clone(&ctx.gitrepos)),
            helmops: Feed::new(Arc::clone(&ctx.helmops)),
            namespaces: Feed::new(Arc::clone(&ctx.namespaces)),
            contents: Feed::new(Arc::clone(&ctx.contents)),
            ctx,
        }
    }

    /// Consumes the watches until they end (they do not, short of a
    /// shutdown that drops this future).
    pub async fn run(
        mut self,
        mut events: impl Stream<Item = Result<Event, watcher::Error>> + Unpin,
    ) {
        while let Some(event) = events.next().await {
            // Errors are logged, with their kind, where the stream is made.
            if let Ok(event) = event {
                self.handle(event);
            }
        }
    }

    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Cluster(e) => {
                for d in self.clusters.apply(*e) {
                    self.on_cluster(d);
                }
            }
            Event::Group(e) => {
                for d in self.groups.apply(*e) {
                    self.on_group(d);
                }
            }
            Event::Bundle(e) => {
                for d in self.bundles.apply(*e) {
                    self.on_bundle(d);
                }
            }
            Event::Bd(e) => {
                for d in self.bds.apply(*e) {
                    self.on_bd(d);
                }
            }
            Event::GitRepo(e) => {
                for d in self.gitrepos.apply(*e) {
                    self.on_gitrepo(d);
                }
            }
            Event::HelmOp(e) => {
                for d in self.helmops.apply(*e) {
                    self.on_helmop(d);
                }
            }
            Event::Namespace(e) => {
                for d in self.namespaces.apply(*e) {
                    self.on_namespace(d);
                }
            }
            Event::Content(e) => {
                for d in self.contents.apply(*e) {
                    self.on_content(d);
                }
            }
        }
        if !*self.ctx.synced.borrow() && self.all_synced() {
            tracing::info!(
                clusters = self.ctx.clusters.len(),
                bundles = self.ctx.bundles.len(),
                bundle_deployments = self.ctx.bds.len(),
                "caches synced"
            );
            self.ctx.metrics.set_synced(true);
            self.ctx.synced.send_replace(true);
        }
    }

    fn all_synced(&self) -> bool {
        self.clusters.synced()
            && self.groups.synced()
            && self.bundles.synced()
            && self.bds.synced()
            && self.gitrepos.synced()
            && self.helmops.synced()
            && self.namespaces.synced()
            && self.contents.synced()
    }

    fn fanout(&self, key: FanoutKey, trigger: &'static str) {
        self.ctx.fanout.add(key, trigger);
    }

    fn gc(&self, key: GcKey, trigger: &'static str) {
        self.ctx.gc.add(key, trigger);
    }

    fn status(&self, key: StatusKey, trigger: &'static str) {
        self.ctx.status.add(key, trigger);
    }

    /// A cluster's status and its groups'.
    fn cluster_status(&self, cluster: &ObjectKey, trigger: &'static str) {
        self.status(StatusKey::Cluster(cluster.clone()), trigger);
        for g in self.ctx.topo().index.groups_of(cluster) {
            self.status(StatusKey::Group(g), trigger);
        }
    }

    /// Queues the work a batch of targeting changes implies.
    fn route(&self, changes: Changes, trigger: &'static str) {
        if changes.is_empty() {
            return;
        }
        let mut bundles = BTreeSet::new();
        let mut clusters = BTreeSet::new();
        {
            let topo = self.ctx.topo();
            for pair in &changes.pairs {
                match pair.kind {
                    ChangeKind::Untargeted => {
                        if let Some(bd) = topo
                            .bds_by_bundle
                            .get(&pair.bundle)
                            .and_then(|m| m.get(&pair.cluster))
                        {
                            self.gc(GcKey::Deployment(bd.clone()), trigger);
                        }
                    }
                    ChangeKind::Targeted | ChangeKind::Customized => {
                        self.fanout(FanoutKey::Bundle(pair.bundle.clone()), trigger);
                    }
                }
                bundles.insert(pair.bundle.clone());
                clusters.insert(pair.cluster.clone());
            }
        }
        for b in &bundles {
            self.bundle_status(b, trigger);
        }
        for c in &clusters {
            self.cluster_status(c, trigger);
        }
    }

    fn on_cluster(&mut self, delta: Delta<Cluster>) {
        match delta {
            Delta::Upsert { old, new } => {
                let key = ObjectKey::of(&new.metadata);
                if old.as_ref().is_none_or(|o| {
                    o.spec.kube_config_secret != new.spec.kube_config_secret
                        || o.spec.kube_config_secret_namespace
                            != new.spec.kube_config_secret_namespace
                        || deleting(&**o) != deleting(&*new)
                }) {
                    self.ctx.agents_changed.notify_one();
                }
                if deleting(&*new) {
                    self.cluster_gone(&key);
                    return;
                }
                let relabelled = old
                    .as_ref()
                    .is_none_or(|o| o.metadata.labels != new.metadata.labels);
                let paused_flipped = old
                    .as_ref()
                    .is_some_and(|o| o.spec.paused != new.spec.paused);
                if old.is_none() {
                    self.fanout(FanoutKey::Cluster(key.clone()), "cluster");
                    self.cluster_status(&key, "cluster");
                }
                if relabelled {
                    let before: BTreeSet<ObjectKey> =
                        self.ctx.topo().index.groups_of(&key).into_iter().collect();
                    let changes = self
                        .ctx
                        .topo
                        .write()
                        .expect("topology lock")
                        .index
                        .apply_cluster(&new);
                    let after: BTreeSet<ObjectKey> =
                        self.ctx.topo().index.groups_of(&key).into_iter().collect();
                    for g in before.symmetric_difference(&after) {
                        self.status(StatusKey::Group(g.clone()), "cluster");
                    }
                    self.route(changes, "cluster");
                }
                if paused_flipped {
                    for b in self.ctx.topo().index.bundles_of(&key) {
                        self.fanout(FanoutKey::Bundle(b), "cluster");
                    }
                }
                // What templated values read changed: the bundles that use
                // them are planned again (their deploymentIDs may move).
                let inputs_changed = old.as_ref().is_some_and(|o| {
                    o.metadata.labels != new.metadata.labels
                        || o.metadata.annotations != new.metadata.annotations
                        || o.spec.template_values != new.spec.template_values
                });
                if inputs_changed && !paused_flipped {
                    for b in self.ctx.topo().index.bundles_of(&key) {
                        let templated = self.ctx.bundles.get(&b).is_some_and(|b| {
                            flotilla_targeting::values::uses_cluster(&b.spec.options)
                                || b.spec
                                    .target_customizations
                                    .iter()
                                    .any(|c| flotilla_targeting::values::uses_cluster(&c.options))
                        });
                        if templated {
                            self.fanout(FanoutKey::Bundle(b), "cluster-values");
                        }
                    }
                }
            }
            Delta::Removed(old) => {
                self.ctx.agents_changed.notify_one();
                self.cluster_gone(&ObjectKey::of(&old.metadata));
            }
        }
    }

    fn cluster_gone(&mut self, key: &ObjectKey) {
        let groups = self.ctx.topo().index.groups_of(key);
        let changes = self
            .ctx
            .topo
            .write()
            .expect("topology lock")
            .index
            .delete_cluster(key);
        for g in groups {
            self.status(StatusKey::Group(g), "cluster-deleted");
        }
        self.route(changes, "cluster-deleted");
        self.fanout(FanoutKey::Cluster(key.clone()), "cluster-deleted");
    }

    fn on_group(&mut self, delta: Delta<ClusterGroup>) {
        match delta {
            Delta::Upsert { old, new } => {
                let key = ObjectKey::of(&new.metadata);
                if deleting(&*new) {
                    self.group_gone(&key);
                    return;
                }
                if old
                    .as_ref()
                    .is_some_and(|o| o.spec == new.spec && o.metadata.labels == new.metadata.labels)
                {
                    return;
                }
                let result = self
                    .ctx
                    .topo
                    .write()
                    .expect("topology lock")
                    .index
                    .apply_group(&new);
                match result {
                    Ok(changes) => {
                        let cleared = self
                            .ctx
                            .topo
                            .write()
                            .expect("topology lock")
                            .group_errors
                            .remove(&key)
                            .is_some();
                        self.route(changes, "group");
                        if cleared {
                            self.recheck_namespace(&key.namespace, "group");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(group = %key, error = %e, "cluster group selector refused; its members stay as they were");
                        self.ctx
                            .topo
                            .write()
                            .expect("topology lock")
                            .group_errors
                            .insert(key.clone(), e);
                    }
                }
                self.status(StatusKey::Group(key), "group");
            }
            Delta::Removed(old) => self.group_gone(&ObjectKey::of(&old.metadata)),
        }
    }

    fn group_gone(&mut self, key: &ObjectKey) {
        let (changes, cleared) = {
            let mut topo = self.ctx.topo.write().expect("topology lock");
            (
                topo.index.delete_group(key),
                topo.group_errors.remove(key).is_some(),
            )
        };
        self.route(changes, "group-deleted");
        if cleared {
            self.recheck_namespace(&key.namespace, "group-deleted");
        }
    }

    /// After a targeting error clears, GC looks again at every deployment
    /// it left alone meanwhile.
    fn recheck_namespace(&self, namespace: &str, trigger: &'static str) {
        let topo = self.ctx.topo();
        for (bundle, bds) in &topo.bds_by_bundle {
            if &*bundle.namespace == namespace {
                for bd in bds.values() {
                    self.gc(GcKey::Deployment(bd.clone()), trigger);
                }
            }
        }
    }

    fn on_bundle(&mut self, delta: Delta<Bundle>) {
        match delta {
            Delta::Upsert { old, new } => {
                let key = ObjectKey::of(&new.metadata);
                self.track_owner(&key, old.as_deref(), Some(&new));
                self.bundle_for_owner(&key, old.as_deref(), Some(&new));
                if deleting(&*new) {
                    self.bundle_gone(&key, "bundle-deleted");
                    self.gc(GcKey::Bundle(key), "bundle-deleted");
                    return;
                }
                let has_finalizer = new
                    .metadata
                    .finalizers
                    .as_ref()
                    .is_some_and(|f| f.iter().any(|f| f == keys::BUNDLE_FINALIZER));
                if !has_finalizer {
                    self.fanout(FanoutKey::Bundle(key.clone()), "finalizer");
                }
                if old.as_ref().is_some_and(|o| o.spec == new.spec) {
                    return;
                }
                let result = self
                    .ctx
                    .topo
                    .write()
                    .expect("topology lock")
                    .index
                    .apply_bundle(&new);
                match result {
                    Ok(changes) => {
                        let cleared = self
                            .ctx
                            .topo
                            .write()
                            .expect("topology lock")
                            .bundle_errors
                            .remove(&key)
                            .is_some();
                        self.route(changes, "bundle");
                        if cleared {
                            for bd in self.ctx.topo().bds_of_bundle(&key).into_values() {
                                self.gc(GcKey::Deployment(bd), "bundle");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(bundle = %key, error = %e, "bundle targets refused; its deployments stay as they are");
                        self.ctx
                            .topo
                            .write()
                            .expect("topology lock")
                            .bundle_errors
                            .insert(key.clone(), e);
                    }
                }
                self.fanout(FanoutKey::Bundle(key.clone()), "bundle");
                self.bundle_status(&key, "bundle");
            }
            Delta::Removed(old) => {
                let key = ObjectKey::of(&old.metadata);
                self.bundle_gone(&key, "bundle-deleted");
                self.track_owner(&key, Some(&old), None);
                self.bundle_for_owner(&key, Some(&old), None);
            }
        }
    }

    fn bundle_gone(&mut self, key: &ObjectKey, trigger: &'static str) {
        self.ctx
            .deployment_write_errors
            .lock()
            .expect("write errors lock")
            .remove(key);
        let changes = {
            let mut topo = self.ctx.topo.write().expect("topology lock");
            topo.bundle_errors.remove(key);
            topo.index.delete_bundle(key)
        };
        self.ctx
            .rollout_waiting
            .lock()
            .expect("rollout lock")
            .remove(key);
        self.route(changes, trigger);
        // Deployments of a bundle the index never placed (its targets were
        // refused from the start) are stale too.
        for bd in self.ctx.topo().bds_of_bundle(key).into_values() {
            self.gc(GcKey::Deployment(bd), trigger);
        }
    }

    fn on_bd(&mut self, delta: Delta<BundleDeployment>) {
        match delta {
            Delta::Upsert { old, new } => {
                let key = ObjectKey::of(&new.metadata);
                let pair = pair_of(&new);
                let old_pair = old.as_deref().and_then(pair_of);
                let moved = old.is_none() || old_pair != pair;
                if moved {
                    let mut topo = self.ctx.topo.write().expect("topology lock");
                    topo.untrack_bd(&key, old_pair.as_ref());
                    topo.track_bd(&key, pair.as_ref());
                }
                let Some((bundle, cluster)) = pair else {
                    return;
                };
                if moved {
                    self.gc(GcKey::Deployment(key.clone()), "bundledeployment");
                }
                // Its state depends on both: the spec (deploymentID,
                // staged, paused) the fan-out writes and the status the
                // agent writes.
                // An edit by someone else: the fan-out puts its spec back.
                let spec_changed = old.as_ref().is_some_and(|o| o.spec != new.spec);
                if spec_changed && crate::fanout::edited_by_others(&self.ctx, &key, &new) {
                    self.fanout(FanoutKey::Bundle(bundle.clone()), "bundledeployment-edited");
                }
                if old
                    .as_ref()
                    .is_none_or(|o| o.status != new.status || o.spec != new.spec)
                {
                    self.bundle_status(&bundle, "bundledeployment");
                    self.cluster_status(&cluster, "bundledeployment");
                    let waiting = self
                        .ctx
                        .rollout_waiting
                        .lock()
                        .expect("rollout lock")
                        .contains(&bundle);
                    let status_changed = old.as_ref().is_some_and(|o| o.status != new.status);
                    if waiting && status_changed {
                        self.fanout(FanoutKey::Bundle(bundle), "rollout");
                    }
                }
            }
            Delta::Removed(old) => {
                let key = ObjectKey::of(&old.metadata);
                self.ctx
                    .fanout_specs
                    .lock()
                    .expect("fanout specs lock")
                    .remove(&key);
                let Some((bundle, cluster)) = pair_of(&old) else {
                    return;
                };
                let still_targeted = {
                    let mut topo = self.ctx.topo.write().expect("topology lock");
                    topo.untrack_bd(&key, Some(&(bundle.clone(), cluster.clone())));
                    topo.index.is_targeted(&bundle, &cluster)
                };
                self.bundle_status(&bundle, "bundledeployment-deleted");
                self.cluster_status(&cluster, "bundledeployment-deleted");
                let bundle_deleting = self.ctx.bundles.get(&bundle).is_some_and(|b| deleting(&*b));
                if bundle_deleting {
                    self.gc(GcKey::Bundle(bundle), "bundledeployment-deleted");
                } else if still_targeted {
                    self.fanout(FanoutKey::Bundle(bundle), "bundledeployment-deleted");
                }
            }
        }
    }

    fn on_namespace(&mut self, delta: Delta<Namespace>) {
        let (ns, created) = match &delta {
            Delta::Upsert { old, new } => (new, old.is_none()),
            Delta::Removed(old) => (old, false),
        };
        let Some(labels) = ns.metadata.labels.as_ref() else {
            return;
        };
        let (Some(cns), Some(cname)) = (
            labels.get(keys::CLUSTER_NAMESPACE),
            labels.get(keys::CLUSTER_NAME),
        ) else {
            return;
        };
        let cluster = ObjectKey::new(cns, cname);
        if ns.metadata.name.as_deref() != Some(cluster_namespace(&cluster).as_str()) {
            return;
        }
        match delta {
            Delta::Upsert { .. } if created => {
                for b in self.ctx.topo().index.bundles_of(&cluster) {
                    self.fanout(FanoutKey::Bundle(b), "namespace");
                }
            }
            Delta::Upsert { .. } => {}
            Delta::Removed(_) => self.fanout(FanoutKey::Cluster(cluster), "namespace-deleted"),
        }
    }
}
