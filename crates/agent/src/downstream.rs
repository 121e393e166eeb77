//! The downstream cluster as the agent sees it: discovery, the live
//! objects it applied (watched, one watch per kind, by label), and the
//! writes it makes there.
//!
//! The live map is fed by the watches and by the agent's own write
//! responses, newest resourceVersion first. A watch event carrying the
//! resourceVersion the agent just wrote changes nothing and wakes nobody:
//! that is what keeps the agent from reconciling its own applies.

use crate::inventory::{Member, ObjKey};
use crate::{Error, Wake};
use flotilla_api::keys;
use flotilla_runtime::Metrics;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// One kind as the API serves it.
#[derive(Clone, Debug)]
pub struct Resource {
    pub api: ApiResource,
    pub namespaced: bool,
}

/// (group, version, kind).
pub type Gvk = (String, String, String);

pub fn gvk_of(member: &Member) -> Gvk {
    (
        member.key.group.clone(),
        member.version.clone(),
        member.key.kind.clone(),
    )
}

/// The field manager of namespace labels and annotations.
pub const NAMESPACE_METADATA_MANAGER: &str = "flotilla-agent-namespace-metadata";

pub struct Downstream {
    pub client: kube::Client,
    cluster: String,
    metrics: Arc<Metrics>,
    wake: Wake,
    resources: Mutex<HashMap<Gvk, Resource>>,
    live: RwLock<HashMap<ObjKey, Arc<Value>>>,
    /// Kinds watched, each with "has listed once".
    watches: Mutex<HashMap<Gvk, watch::Receiver<bool>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    namespaces: Mutex<HashSet<String>>,
    /// The namespace metadata last applied, per namespace (labels,
    /// annotations), so that an unchanged one is not written again.
    namespace_metadata: Mutex<HashMap<String, String>>,
}

impl Drop for Downstream {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
    }
}

fn rv(v: &Value) -> Option<u64> {
    v.pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

impl Downstream {
    pub fn new(client: kube::Client, cluster: String, metrics: Arc<Metrics>, wake: Wake) -> Self {
        Downstream {
            client,
            cluster,
            metrics,
            wake,
            resources: Mutex::default(),
            live: RwLock::default(),
            watches: Mutex::default(),
            tasks: Mutex::default(),
            namespaces: Mutex::default(),
            namespace_metadata: Mutex::default(),
        }
    }

    fn wrote(&self, kind: &str, verb: &'static str) {
        self.metrics.agent_write(&self.cluster, kind, verb);
    }

    /// The API resource serving a kind, from discovery (cached).
    pub async fn resolve(&self, gvk: &Gvk) -> Result<Resource, String> {
        if let Some(r) = self.resources.lock().expect("resources lock").get(gvk) {
            return Ok(r.clone());
        }
        let (group, version, kind) = gvk;
        let (api, caps) = kube::discovery::pinned_kind(
            &self.client,
            &GroupVersionKind::gvk(group, version, kind),
        )
        .await
        .map_err(|e| {
            let gv = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            format!("the cluster does not serve {kind} in {gv}: {e}")
        })?;
        let resource = Resource {
            api,
            namespaced: caps.scope == Scope::Namespaced,
        };
        self.resources
            .lock()
            .expect("resources lock")
            .insert(gvk.clone(), resource.clone());
        Ok(resource)
    }

    /// Kinds already known to be cluster-scoped, as (group, kind).
    pub fn cluster_scoped(&self) -> std::collections::BTreeSet<(String, String)> {
        self.resources
            .lock()
            .expect("resources lock")
            .iter()
            .filter(|(_, r)| !r.namespaced)
            .map(|((g, _, k), _)| (g.clone(), k.clone()))
            .collect()
    }

    fn api(&self, r: &Resource, namespace: &str) -> Api<DynamicObject> {
        if r.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &r.api)
        } else {
            Api::all_with(self.client.clone(), &r.api)
        }
    }

    pub fn live(&self, key: &ObjKey) -> Option<Arc<Value>> {
        self.live.read().expect("live lock").get(key).cloned()
    }

    /// Records an object unless a newer version is already known. Returns
    /// whether anything changed.
    fn upsert(&self, obj: Value) -> bool {
        let Some(member) = Member::of(&obj) else {
            return false;
        };
        let mut live = self.live.write().expect("live lock");
        if let Some(have) = live.get(&member.key) {
            match (rv(have), rv(&obj)) {
                (Some(a), Some(b)) if b <= a => return false,
                _ => {}
            }
        }
        live.insert(member.key, Arc::new(obj));
        true
    }

    fn remove(&self, key: &ObjKey) -> bool {
        self.live.write().expect("live lock").remove(key).is_some()
    }

    /// Starts watching a kind (labelled objects only) unless it is watched
    /// already, and waits until its first list is in the live map.
    pub async fn watch(self: &Arc<Self>, gvk: &Gvk) -> Result<(), String> {
        let existing = self.watches.lock().expect("watches lock").get(gvk).cloned();
        let mut synced = match existing {
            Some(rx) => rx,
            None => {
                let resource = self.resolve(gvk).await?;
                let (tx, rx) = watch::channel(false);
                let mut watches = self.watches.lock().expect("watches lock");
                // Another worker may have started it meanwhile.
                match watches.get(gvk) {
                    Some(rx) => rx.clone(),
                    None => {
                        watches.insert(gvk.clone(), rx.clone());
                        let task = tokio::spawn(watch_kind(Arc::downgrade(self), resource, tx));
                        self.tasks.lock().expect("tasks lock").push(task);
                        rx
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), synced.wait_for(|s| *s))
            .await
            .map_err(|_| format!("watching {}: no list within 30s", gvk.2))?
            .map_err(|_| "the agent is stopping".to_owned())?;
        Ok(())
    }

    /// Server-side apply with the agent's field manager, forced.
    pub async fn apply(&self, obj: &Value) -> Result<Arc<Value>, String> {
        let member = Member::of(obj).ok_or("an object without apiVersion, kind or name")?;
        let r = self.resolve(&gvk_of(&member)).await?;
        let api = self.api(&r, &member.key.namespace);
        let params = PatchParams::apply(keys::AGENT_FIELD_MANAGER).force();
        let applied = match api
            .patch(&member.key.name, &params, &Patch::Apply(obj))
            .await
        {
            Ok(o) => o,
            Err(e) => {
                if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    // Its namespace may have been deleted: check again next time.
                    self.namespaces
                        .lock()
                        .expect("ns lock")
                        .remove(&member.key.namespace);
                }
                return Err(api_message(e));
            }
        };
        self.wrote(&member.key.kind, "apply");
        let value = serde_json::to_value(&applied).expect("objects serialize");
        self.upsert(value);
        Ok(self.live(&member.key).expect("just recorded"))
    }

    /// The object as the cluster has it now (not the watch's copy).
    pub async fn get(&self, member: &Member) -> Result<Option<Value>, Error> {
        let r = match self.resolve(&gvk_of(member)).await {
            Ok(r) => r,
            Err(_) => return Ok(None),
        };
        let api = self.api(&r, &member.key.namespace);
        Ok(api
            .get_opt(&member.key.name)
            .await?
            .map(|o| serde_json::to_value(&o).expect("objects serialize")))
    }

    /// Waits until an object is gone (a deleted hook, before it is made
    /// again), at most `timeout`.
    pub async fn wait_gone(&self, member: &Member, timeout: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.get(member).await?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Failed(format!(
                    "{} was not deleted within {}s",
                    member.key,
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.remove(&member.key);
        Ok(())
    }

    /// Deletes an object the agent applied, guarded by its uid, and only
    /// while it still carries `applyset` as its part-of label (and is not
    /// `helm.sh/resource-policy: keep`).
    pub async fn delete(&self, member: &Member, applyset: &str) -> Result<(), Error> {
        let r = match self.resolve(&gvk_of(member)).await {
            Ok(r) => r,
            // The kind is gone (its CRD was pruned): so is the object.
            Err(_) => return Ok(()),
        };
        let api = self.api(&r, &member.key.namespace);
        let live = match api.get_opt(&member.key.name).await? {
            Some(o) => o,
            None => {
                self.remove(&member.key);
                return Ok(());
            }
        };
        let ours = live
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(keys::PART_OF))
            .is_some_and(|v| v == applyset);
        if !ours {
            tracing::info!(object = %member.key, "not pruned: it no longer belongs to this deployment");
            return Ok(());
        }
        let kept = live
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::hooks::RESOURCE_POLICY))
            .is_some_and(|p| p.trim() == "keep");
        if kept {
            tracing::info!(object = %member.key, "not pruned: helm.sh/resource-policy is keep");
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: live.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match api.delete(&member.key.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        self.wrote(&member.key.kind, "delete");
        tracing::info!(object = %member.key, "pruned");
        Ok(())
    }

    /// Creates a namespace the objects need, unless it exists.
    pub async fn ensure_namespace(
        &self,
        name: &str,
        labels: Option<&std::collections::BTreeMap<String, String>>,
        annotations: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<(), Error> {
        if self.namespaces.lock().expect("ns lock").contains(name) {
            return Ok(());
        }
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        if api.get_opt(name).await?.is_none() {
            let ns = k8s_openapi::api::core::v1::Namespace {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    labels: labels.cloned(),
                    annotations: annotations.cloned(),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&PostParams::default(), &ns).await {
                Ok(_) => {
                    self.wrote("Namespace", "create");
                    tracing::info!(namespace = name, "namespace created");
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.namespaces
            .lock()
            .expect("ns lock")
            .insert(name.to_owned());
        Ok(())
    }

    /// Sets a namespace's `namespaceLabels` and `namespaceAnnotations`, as
    /// Fleet's agent does: a server-side apply by its own field manager,
    /// so it owns only the keys it declares (others' keys stay, keys it no
    /// longer declares go). `pod-security.kubernetes.io/` labels are never
    /// set. Written only when what it declares changed.
    pub async fn apply_namespace_metadata(
        &self,
        name: &str,
        labels: Option<&std::collections::BTreeMap<String, String>>,
        annotations: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<(), Error> {
        if labels.is_none() && annotations.is_none() {
            return Ok(());
        }
        let labels: Option<std::collections::BTreeMap<String, String>> = labels.map(|l| {
            l.iter()
                .filter(|(k, _)| {
                    let refused = k.starts_with("pod-security.kubernetes.io/");
                    if refused {
                        tracing::warn!(namespace = name, label = %k, "namespaceLabels: pod-security labels are not set");
                    }
                    !refused
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        let mut metadata = serde_json::json!({"name": name});
        if let Some(l) = &labels {
            metadata["labels"] = serde_json::json!(l);
        }
        if let Some(a) = annotations {
            metadata["annotations"] = serde_json::json!(a);
        }
        let body =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata});
        let digest = body.to_string();
        if self
            .namespace_metadata
            .lock()
            .expect("namespace metadata lock")
            .get(name)
            == Some(&digest)
        {
            return Ok(());
        }
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        api.patch(
            name,
            &PatchParams::apply(NAMESPACE_METADATA_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        self.wrote("Namespace", "apply-metadata");
        tracing::info!(namespace = name, "namespace labels and annotations applied");
        self.namespace_metadata
            .lock()
            .expect("namespace metadata lock")
            .insert(name.to_owned(), digest);
        Ok(())
    }

    /// Waits until a CRD is Established, then forgets what discovery said
    /// about its group so its kinds resolve.
    pub async fn wait_established(&self, name: &str, timeout: Duration) -> Result<(), String> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let crd = api.get_opt(name).await.map_err(api_message)?;
            let established = crd.as_ref().is_some_and(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
            });
            if established {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "CustomResourceDefinition {name} not Established after {}s",
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The parent ConfigMap of an inventory, if any.
    pub async fn get_parent(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::ConfigMap>, Error> {
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?)
    }

    pub async fn apply_parent(
        &self,
        parent: &k8s_openapi::api::core::v1::ConfigMap,
    ) -> Result<(), Error> {
        let ns = parent.metadata.namespace.as_deref().unwrap_or_default();
        let name = parent.metadata.name.as_deref().unwrap_or_default();
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), ns);
        let params = PatchParams::apply(keys::AGENT_FIELD_MANAGER).force();
        api.patch(name, &params, &Patch::Apply(parent)).await?;
        self.wrote("ConfigMap", "inventory");
        Ok(())
    }

    pub async fn delete_parent(&self, namespace: &str, name: &str) -> Result<(), Error> {
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), namespace);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                self.wrote("ConfigMap", "inventory");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The API's own message for a rejected write.
pub fn api_message(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
        other => other.to_string(),
    }
}

/// Keeps one kind's labelled objects in the live map. An object whose
/// resourceVersion the map already has (the agent's own write) wakes
/// nobody; any other change wakes the BundleDeployment it belongs to.
async fn watch_kind(
    downstream: std::sync::Weak<Downstream>,
    resource: Resource,
    synced: watch::Sender<bool>,
) {
    let api: Api<DynamicObject> = Api::all_with(
        match downstream.upgrade() {
            Some(d) => d.client.clone(),
            None => return,
        },
        &resource.api,
    );
    let config = watcher::Config::default().labels(keys::BUNDLE_DEPLOYMENT);
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listing: Option<HashSet<ObjKey>> = None;
    while let Some(event) = events.next().await {
        let Some(d) = downstream.upgrade() else {
            return;
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(kind = %resource.api.kind, error = %e, "downstream watch failed; retrying");
                continue;
            }
        };
        match event {
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                let value = serde_json::to_value(&obj).expect("objects serialize");
                let owner = owner_of(&value);
                if let (Some(seen), Some(m)) = (listing.as_mut(), Member::of(&value)) {
                    seen.insert(m.key);
                }
                // The first list only fills the map: whoever started the
                // watch is waiting for it and looks next.
                let first = !*synced.borrow();
                if d.upsert(value)
                    && !first
                    && let Some(owner) = owner
                {
                    d.wake.wake(owner, "downstream");
                }
            }
            watcher::Event::Delete(obj) => {
                let value = serde_json::to_value(&obj).expect("objects serialize");
                if let Some(m) = Member::of(&value)
                    && d.remove(&m.key)
                    && let Some(owner) = owner_of(&value)
                {
                    d.wake.wake(owner, "downstream");
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = listing.take() {
                    // Objects of this kind that vanished while the watch was down.
                    let gone: Vec<(ObjKey, Option<String>)> = d
                        .live
                        .read()
                        .expect("live lock")
                        .iter()
                        .filter(|(k, v)| {
                            k.group == resource.api.group
                                && k.kind == resource.api.kind
                                && !seen.contains(*k)
                                && v.get("apiVersion").and_then(Value::as_str)
                                    == Some(resource.api.api_version.as_str())
                        })
                        .map(|(k, v)| (k.clone(), owner_of(v)))
                        .collect();
                    for (key, owner) in gone {
                        d.remove(&key);
                        if let Some(owner) = owner {
                            d.wake.wake(owner, "downstream");
                        }
                    }
                }
                synced.send_replace(true);
            }
        }
    }
}

/// The BundleDeployment an object was applied for, from its label.
fn owner_of(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/labels")?
        .get(keys::BUNDLE_DEPLOYMENT)?
        .as_str()
        .map(str::to_owned)
}
