//! Object storage: JSON objects keyed by resource, namespace and name, one
//! strictly increasing resourceVersion for every write, and a bounded
//! history of events for watchers.
//!
//! The HTTP layer owns API semantics (uids, generation, defaults,
//! finalizers); the store only versions and remembers. It sits behind the
//! [`Store`] trait so that a durable implementation can replace
//! [`MemoryStore`].

use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::sync::broadcast;

/// A resource type: its API group ("" for core) and plural name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub group: String,
    pub resource: String,
}

impl ResourceKey {
    pub fn new(group: &str, resource: &str) -> Self {
        ResourceKey {
            group: group.to_owned(),
            resource: resource.to_owned(),
        }
    }
}

/// One object's address. Cluster-scoped objects have no namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub resource: ResourceKey,
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change, as watchers see it.
#[derive(Clone, Debug)]
pub struct Event {
    pub resource_version: u64,
    pub kind: EventType,
    pub key: ObjectKey,
    /// The object after the change (before it, for a deletion), carrying
    /// this event's resourceVersion.
    pub object: Arc<Value>,
    /// The object before a modification, so that a filtered watch can
    /// tell when an object starts or stops matching.
    pub previous: Option<Arc<Value>>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("already exists")]
    AlreadyExists,
    #[error("not found")]
    NotFound,
    /// The caller's resourceVersion is not the stored one.
    #[error(
        "the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict,
    /// The requested version is older than the kept history.
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
}

/// A watch: the events after the requested version, then live ones.
pub struct Watch {
    pub backlog: Vec<Event>,
    pub live: broadcast::Receiver<Event>,
}

pub trait Store: Send + Sync + 'static {
    fn get(&self, key: &ObjectKey) -> Option<Arc<Value>>;
    /// Objects of a resource (in one namespace, or all), sorted by
    /// namespace and name, and the version the list is consistent at.
    fn list(&self, resource: &ResourceKey, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64);
    fn create(&self, key: &ObjectKey, object: Value) -> Result<Arc<Value>, StoreError>;
    /// Replaces an object. With `expected_version`, refuses a stale write.
    fn update(
        &self,
        key: &ObjectKey,
        object: Value,
        expected_version: Option<u64>,
    ) -> Result<Arc<Value>, StoreError>;
    fn delete(
        &self,
        key: &ObjectKey,
        expected_version: Option<u64>,
    ) -> Result<Arc<Value>, StoreError>;
    /// Events after `version` (0: none, only live ones), and live ones after
    /// that, with nothing lost or repeated in between.
    fn watch(&self, version: u64) -> Result<Watch, StoreError>;
    fn current_version(&self) -> u64;
    /// Every object, and the version the snapshot is consistent at.
    fn snapshot(&self) -> (Vec<(ObjectKey, Arc<Value>)>, u64);
    /// How many objects are stored.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How many past events a watcher can resume from by default.
pub const DEFAULT_HISTORY: usize = 10_000;

struct Inner {
    version: u64,
    objects: BTreeMap<ObjectKey, Arc<Value>>,
    history: VecDeque<Event>,
}

/// An in-memory store.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    history_limit: usize,
    events: broadcast::Sender<Event>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }
}

impl MemoryStore {
    pub fn with_history(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(history_limit.max(1024));
        MemoryStore {
            inner: Mutex::new(Inner {
                version: 0,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
            }),
            history_limit: history_limit.max(1),
            events,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // mutation is a single insert or remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stamps the next version on `object`, records and publishes the event.
    fn commit(
        &self,
        inner: &mut Inner,
        kind: EventType,
        key: &ObjectKey,
        mut object: Value,
        previous: Option<Arc<Value>>,
    ) -> Arc<Value> {
        inner.version += 1;
        set_resource_version(&mut object, inner.version);
        let object = Arc::new(object);
        let event = Event {
            resource_version: inner.version,
            kind,
            key: key.clone(),
            object: object.clone(),
            previous,
        };
        if inner.history.len() == self.history_limit {
            inner.history.pop_front();
        }
        inner.history.push_back(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
        object
    }
}

/// The stored object, provided it exists and (when the caller names one)
/// is at the expected version.
fn current_at(
    inner: &Inner,
    key: &ObjectKey,
    expected_version: Option<u64>,
) -> Result<Arc<Value>, StoreError> {
    let current = inner.objects.get(key).ok_or(StoreError::NotFound)?;
    if let Some(expected) = expected_version
        && resource_version(current) != Some(expected)
    {
        return Err(StoreError::Conflict);
    }
    Ok(current.clone())
}

pub fn set_resource_version(object: &mut Value, version: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(version.to_string()));
    }
}

/// The stored version of an object, if it carries one.
pub fn resource_version(object: &Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

impl Store for MemoryStore {
    fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        self.lock().objects.get(key).cloned()
    }

    fn list(&self, resource: &ResourceKey, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let start = ObjectKey {
            resource: resource.clone(),
            namespace: namespace.map(str::to_owned),
            name: String::new(),
        };
        let items = inner
            .objects
            .range(start..)
            .take_while(|(k, _)| {
                &k.resource == resource
                    && (namespace.is_none() || k.namespace.as_deref() == namespace)
            })
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.version)
    }

    fn create(&self, key: &ObjectKey, object: Value) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        if inner.objects.contains_key(key) {
            return Err(StoreError::AlreadyExists);
        }
        let stored = self.commit(&mut inner, EventType::Added, key, object, None);
        inner.objects.insert(key.clone(), stored.clone());
        Ok(stored)
    }

    fn update(
        &self,
        key: &ObjectKey,
        object: Value,
        expected_version: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let previous = current_at(&inner, key, expected_version)?;
        let stored = self.commit(&mut inner, EventType::Modified, key, object, Some(previous));
        inner.objects.insert(key.clone(), stored.clone());
        Ok(stored)
    }

    fn delete(
        &self,
        key: &ObjectKey,
        expected_version: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let last = (*current_at(&inner, key, expected_version)?).clone();
        inner.objects.remove(key);
        Ok(self.commit(&mut inner, EventType::Deleted, key, last, None))
    }

    fn watch(&self, version: u64) -> Result<Watch, StoreError> {
        let inner = self.lock();
        // Subscribing under the lock: no event can slip between the backlog
        // and the live stream.
        let live = self.events.subscribe();
        if version == 0 || version >= inner.version {
            return Ok(Watch {
                backlog: Vec::new(),
                live,
            });
        }
        let oldest = inner
            .history
            .front()
            .map(|e| e.resource_version)
            .unwrap_or(inner.version + 1);
        // Resuming from `version` needs every event after it.
        if version + 1 < oldest {
            return Err(StoreError::Gone {
                requested: version,
                oldest,
            });
        }
        let backlog = inner
            .history
            .iter()
            .filter(|e| e.resource_version > version)
            .cloned()
            .collect();
        Ok(Watch { backlog, live })
    }

    fn current_version(&self) -> u64 {
        self.lock().version
    }

    fn snapshot(&self) -> (Vec<(ObjectKey, Arc<Value>)>, u64) {
        let inner = self.lock();
        let all = inner
            .objects
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (all, inner.version)
    }

    fn len(&self) -> usize {
        self.lock().objects.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            resource: ResourceKey::new("", "configmaps"),
            namespace: Some(ns.into()),
            name: name.into(),
        }
    }

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
    }

    #[test]
    fn versions_increase_strictly_across_resources() {
        let s = MemoryStore::default();
        let a = s.create(&key("a", "x"), cm("x")).unwrap();
        let b = s.create(&key("b", "x"), cm("x")).unwrap();
        let a2 = s.update(&key("a", "x"), cm("x"), None).unwrap();
        let versions: Vec<u64> = [&a, &b, &a2]
            .iter()
            .map(|o| resource_version(o).unwrap())
            .collect();
        assert_eq!(versions, [1, 2, 3]);
        assert_eq!(s.current_version(), 3);
    }

    #[test]
    fn create_update_delete_semantics() {
        let s = MemoryStore::default();
        s.create(&key("a", "x"), cm("x")).unwrap();
        assert_eq!(
            s.create(&key("a", "x"), cm("x")).unwrap_err(),
            StoreError::AlreadyExists
        );
        assert_eq!(
            s.update(&key("a", "y"), cm("y"), None).unwrap_err(),
            StoreError::NotFound
        );
        assert_eq!(
            s.update(&key("a", "x"), cm("x"), Some(7)).unwrap_err(),
            StoreError::Conflict
        );
        let updated = s.update(&key("a", "x"), cm("x"), Some(1)).unwrap();
        assert_eq!(resource_version(&updated), Some(2));
        assert_eq!(
            s.delete(&key("a", "x"), Some(1)).unwrap_err(),
            StoreError::Conflict
        );
        let gone = s.delete(&key("a", "x"), Some(2)).unwrap();
        assert_eq!(
            resource_version(&gone),
            Some(3),
            "the deletion event carries its own version"
        );
        assert!(s.get(&key("a", "x")).is_none());
        assert_eq!(
            s.delete(&key("a", "x"), None).unwrap_err(),
            StoreError::NotFound
        );
    }

    #[test]
    fn list_by_namespace_is_sorted_and_versioned() {
        let s = MemoryStore::default();
        for (ns, n) in [("b", "2"), ("a", "9"), ("a", "1"), ("b", "1")] {
            s.create(&key(ns, n), cm(n)).unwrap();
        }
        let other = ObjectKey {
            resource: ResourceKey::new("", "secrets"),
            namespace: Some("a".into()),
            name: "s".into(),
        };
        s.create(&other, cm("s")).unwrap();
        let (all, rv) = s.list(&ResourceKey::new("", "configmaps"), None);
        assert_eq!(all.len(), 4);
        assert_eq!(rv, 5);
        let (in_a, _) = s.list(&ResourceKey::new("", "configmaps"), Some("a"));
        let names: Vec<&str> = in_a
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["1", "9"]);
    }

    #[tokio::test]
    async fn watch_resumes_from_a_version_without_gaps() {
        let s = MemoryStore::default();
        s.create(&key("a", "1"), cm("1")).unwrap();
        s.create(&key("a", "2"), cm("2")).unwrap();
        let mut w = s.watch(1).unwrap();
        let backlog: Vec<(u64, EventType)> = w
            .backlog
            .iter()
            .map(|e| (e.resource_version, e.kind))
            .collect();
        assert_eq!(backlog, [(2, EventType::Added)]);
        s.delete(&key("a", "1"), None).unwrap();
        let live = w.live.recv().await.unwrap();
        assert_eq!((live.resource_version, live.kind), (3, EventType::Deleted));
        assert_eq!(live.object["metadata"]["name"], "1");
    }

    #[test]
    fn too_old_versions_are_gone() {
        let s = MemoryStore::with_history(3);
        for i in 0..6 {
            s.create(&key("a", &i.to_string()), cm("x")).unwrap();
        }
        // History holds versions 4..=6: resuming after 3 still works.
        assert_eq!(s.watch(3).unwrap().backlog.len(), 3);
        match s.watch(2) {
            Err(StoreError::Gone {
                requested: 2,
                oldest: 4,
            }) => {}
            other => panic!("{:?}", other.map(|w| w.backlog.len())),
        }
        assert!(
            s.watch(6).unwrap().backlog.is_empty(),
            "up to date: nothing to replay"
        );
    }
}
