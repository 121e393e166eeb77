//! The server's own controllers, as one background task fed by the
//! store's event stream:
//! - garbage collection by ownerReferences (Background, Foreground and
//!   Orphan propagation; dangling references are dropped);
//! - namespace deletion, which removes a namespace's contents before the
//!   namespace itself;
//! - CRD deletion, which removes the CRD's objects before the CRD.
//!
//! What wakes it: every store event. What it computes: the owners and
//! dependents the event affects, batched. What it writes: deletions and
//! finalizer removals through [`Api`], so finalizers are honoured.

use crate::api::{
    Api, CRD_CLEANUP, DeleteOptions, FOREGROUND, ListOptions, NAMESPACE_FINALIZER, ORPHAN,
    Propagation,
};
use crate::store::{Event, EventType, ObjectKey};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// Events handled per batch at most.
const BATCH: usize = 1024;

pub fn spawn(api: Arc<Api>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut gc = Collector::new(api.clone());
            if !gc.run().await {
                return;
            }
            tracing::warn!("garbage collector fell behind the event stream; resynchronising");
        }
    })
}

struct Collector {
    api: Arc<Api>,
    /// Owner uid → its dependents.
    dependents: HashMap<String, BTreeSet<ObjectKey>>,
    /// Object → the owner uids it names.
    owners_of: HashMap<ObjectKey, Vec<String>>,
    by_uid: HashMap<String, ObjectKey>,
}

#[derive(Default)]
struct Dirty {
    owners: BTreeSet<ObjectKey>,
    dependents: BTreeSet<ObjectKey>,
}

fn uid(o: &Value) -> Option<&str> {
    o.pointer("/metadata/uid").and_then(Value::as_str)
}

fn owner_refs(o: &Value) -> &[Value] {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn deleting(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp").is_some()
}

fn has_finalizer(o: &Value, f: &str) -> bool {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|x| x == f))
}

impl Collector {
    fn new(api: Arc<Api>) -> Self {
        Collector {
            api,
            dependents: HashMap::new(),
            owners_of: HashMap::new(),
            by_uid: HashMap::new(),
        }
    }

    /// Runs until the store goes away (false) or the stream lags (true).
    async fn run(&mut self) -> bool {
        let (all, version) = self.api.store.snapshot();
        let mut dirty = Dirty::default();
        for (key, obj) in &all {
            self.index(key, Some(obj));
            if deleting(obj) {
                dirty.owners.insert(key.clone());
            }
            if !owner_refs(obj).is_empty() {
                dirty.dependents.insert(key.clone());
            }
        }
        let mut watch = match self.api.store.watch(version) {
            Ok(w) => w,
            Err(_) => return true,
        };
        for event in std::mem::take(&mut watch.backlog) {
            self.observe(&event, &mut dirty);
        }
        self.reconcile(dirty);
        loop {
            let mut dirty = Dirty::default();
            match watch.live.recv().await {
                Ok(event) => self.observe(&event, &mut dirty),
                Err(RecvError::Lagged(_)) => return true,
                Err(RecvError::Closed) => return false,
            }
            for _ in 0..BATCH {
                match watch.live.try_recv() {
                    Ok(event) => self.observe(&event, &mut dirty),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(_)) => return true,
                    Err(TryRecvError::Closed) => return false,
                }
            }
            self.reconcile(dirty);
        }
    }

    fn index(&mut self, key: &ObjectKey, obj: Option<&Value>) {
        if let Some(old) = self.owners_of.remove(key) {
            for owner in old {
                if let Some(set) = self.dependents.get_mut(&owner) {
                    set.remove(key);
                    if set.is_empty() {
                        self.dependents.remove(&owner);
                    }
                }
            }
        }
        let Some(obj) = obj else {
            return;
        };
        if let Some(u) = uid(obj) {
            self.by_uid.insert(u.to_owned(), key.clone());
        }
        let owners: Vec<String> = owner_refs(obj)
            .iter()
            .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_owned))
            .collect();
        for owner in &owners {
            self.dependents
                .entry(owner.clone())
                .or_default()
                .insert(key.clone());
        }
        if !owners.is_empty() {
            self.owners_of.insert(key.clone(), owners);
        }
    }

    fn observe(&mut self, event: &Event, dirty: &mut Dirty) {
        let obj = &*event.object;
        if event.kind != EventType::Deleted {
            self.index(&event.key, Some(obj));
            if deleting(obj) {
                dirty.owners.insert(event.key.clone());
            }
            if !owner_refs(obj).is_empty() {
                dirty.dependents.insert(event.key.clone());
            }
            return;
        }
        let owners = self.owners_of.get(&event.key).cloned().unwrap_or_default();
        self.index(&event.key, None);
        if let Some(u) = uid(obj) {
            if self.by_uid.get(u) == Some(&event.key) {
                self.by_uid.remove(u);
            }
            if let Some(deps) = self.dependents.get(u) {
                dirty.dependents.extend(deps.iter().cloned());
            }
        }
        // An owner waiting in foreground deletion may now be done.
        for owner in owners {
            if let Some(k) = self.by_uid.get(&owner) {
                dirty.owners.insert(k.clone());
            }
        }
        // A terminating namespace or CRD may now be empty.
        if let Some(ns) = &event.key.namespace {
            dirty.owners.insert(ObjectKey {
                resource: crate::store::ResourceKey::new("", "namespaces"),
                namespace: None,
                name: ns.clone(),
            });
        }
        if let Some(crd) = self.type_of(&event.key).and_then(|t| t.crd) {
            dirty.owners.insert(ObjectKey {
                resource: crate::store::ResourceKey::new(
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                ),
                namespace: None,
                name: crd,
            });
        }
    }

    fn reconcile(&mut self, dirty: Dirty) {
        for key in &dirty.owners {
            self.reconcile_owner(key);
        }
        for key in &dirty.dependents {
            self.reconcile_dependent(key);
        }
    }

    /// The served type an object is stored under.
    fn type_of(&self, key: &ObjectKey) -> Option<crate::registry::ResourceType> {
        self.api
            .registry
            .by_resource(&key.resource.group, &key.resource.resource)
    }

    fn delete(&self, key: &ObjectKey, propagation: Propagation) {
        let Some(rt) = self.type_of(key) else {
            return;
        };
        let opts = DeleteOptions {
            propagation: Some(propagation),
            ..Default::default()
        };
        match self
            .api
            .delete(&rt, key.namespace.as_deref(), &key.name, &opts)
        {
            Ok(_) => {
                tracing::debug!(resource = %key.resource.resource, namespace = ?key.namespace, name = %key.name, "garbage collected")
            }
            Err(e) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(resource = %key.resource.resource, name = %key.name, error = %e, "garbage collection failed")
            }
        }
    }

    fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) {
        let Some(rt) = self.type_of(key) else {
            return;
        };
        if let Err(e) =
            self.api
                .remove_finalizer(&rt, key.namespace.as_deref(), &key.name, finalizer)
        {
            tracing::warn!(name = %key.name, finalizer, error = %e, "removing a finalizer failed");
        }
    }

    /// Is the owner a reference names still there (same uid)? `None` when
    /// its kind is unknown: then nothing is decided.
    fn owner_present(&self, dependent: &ObjectKey, r: &Value) -> Option<(bool, Option<Value>)> {
        let api_version = r.get("apiVersion").and_then(Value::as_str)?;
        let kind = r.get("kind").and_then(Value::as_str)?;
        let name = r.get("name").and_then(Value::as_str)?;
        let want = r.get("uid").and_then(Value::as_str)?;
        let rt = self.api.registry.find_kind(api_version, kind)?;
        let key = Api::key(&rt, dependent.namespace.as_deref(), name);
        let owner = self.api.store.get(&key);
        let present = owner.as_deref().and_then(uid) == Some(want);
        Some((present, owner.filter(|_| present).map(|o| (*o).clone())))
    }

    fn reconcile_dependent(&self, key: &ObjectKey) {
        let Some(obj) = self.api.store.get(key) else {
            return;
        };
        let refs = owner_refs(&obj);
        if refs.is_empty() {
            return;
        }
        let mut absent = Vec::new();
        let mut present = 0;
        let mut owner_in_foreground = false;
        for r in refs {
            match self.owner_present(key, r) {
                Some((true, owner)) => {
                    present += 1;
                    if let Some(o) = owner {
                        owner_in_foreground |= deleting(&o) && has_finalizer(&o, FOREGROUND);
                    }
                }
                Some((false, _)) => absent.push(r.get("uid").cloned()),
                None => present += 1,
            }
        }
        if present == 0 {
            if !deleting(&obj) {
                self.delete(key, Propagation::Background);
            }
        } else if !absent.is_empty() {
            self.drop_refs(key, |r| absent.contains(&r.get("uid").cloned()));
        } else if owner_in_foreground && !deleting(&obj) {
            self.delete(key, Propagation::Foreground);
        }
    }

    fn drop_refs(&self, key: &ObjectKey, drop: impl Fn(&Value) -> bool) {
        let Some(rt) = self.type_of(key) else {
            return;
        };
        let result = self
            .api
            .modify(&rt, key.namespace.as_deref(), &key.name, |o| {
                let Some(refs) = o
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                else {
                    return false;
                };
                let before = refs.len();
                refs.retain(|r| !drop(r));
                let changed = refs.len() != before;
                if refs.is_empty() {
                    o["metadata"]
                        .as_object_mut()
                        .map(|m| m.remove("ownerReferences"));
                }
                changed
            });
        if let Err(e) = result {
            tracing::warn!(name = %key.name, error = %e, "dropping owner references failed");
        }
    }

    fn reconcile_owner(&self, key: &ObjectKey) {
        let Some(obj) = self.api.store.get(key) else {
            return;
        };
        if !deleting(&obj) {
            return;
        }
        let owner_uid = uid(&obj).unwrap_or_default().to_owned();
        let deps: Vec<ObjectKey> = self
            .dependents
            .get(&owner_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        if has_finalizer(&obj, ORPHAN) {
            for d in &deps {
                self.drop_refs(d, |r| {
                    r.get("uid").and_then(Value::as_str) == Some(&owner_uid)
                });
            }
            self.remove_finalizer(key, ORPHAN);
            return;
        }
        if has_finalizer(&obj, FOREGROUND) {
            let live: Vec<&ObjectKey> = deps
                .iter()
                .filter(|d| self.api.store.get(d).is_some())
                .collect();
            if live.is_empty() {
                self.remove_finalizer(key, FOREGROUND);
            } else {
                for d in live {
                    if self.api.store.get(d).is_some_and(|o| !deleting(&o)) {
                        self.delete(d, Propagation::Foreground);
                    }
                }
            }
            return;
        }
        let is = |group: &str, resource: &str| {
            key.resource.group == group && key.resource.resource == resource
        };
        if is("", "namespaces") {
            let mut remaining = 0;
            for rt in self
                .api
                .registry
                .resources()
                .into_iter()
                .filter(|t| t.namespaced)
            {
                let Ok((items, _, _)) =
                    self.api.list(&rt, Some(&key.name), &ListOptions::default())
                else {
                    continue;
                };
                remaining += items.len();
                for item in items.iter().filter(|o| !deleting(o)) {
                    let name = item["metadata"]["name"].as_str().unwrap_or_default();
                    self.delete(
                        &Api::key(&rt, Some(&key.name), name),
                        Propagation::Background,
                    );
                }
            }
            if remaining == 0 {
                self.remove_finalizer(key, NAMESPACE_FINALIZER);
            }
        } else if is("apiextensions.k8s.io", "customresourcedefinitions")
            && has_finalizer(&obj, CRD_CLEANUP)
        {
            let mut remaining = 0;
            let types = self.api.registry.resources();
            for rt in types.iter().filter(|t| t.crd.as_deref() == Some(&key.name)) {
                let Ok((items, _, _)) = self.api.list(rt, None, &ListOptions::default()) else {
                    continue;
                };
                remaining += items.len();
                for item in items.iter().filter(|o| !deleting(o)) {
                    let name = item["metadata"]["name"].as_str().unwrap_or_default();
                    let ns = item.pointer("/metadata/namespace").and_then(Value::as_str);
                    self.delete(&Api::key(rt, ns, name), Propagation::Background);
                }
            }
            if remaining == 0 {
                self.remove_finalizer(key, CRD_CLEANUP);
            }
        }
    }
}
