//! Object storage: JSON objects keyed by resource, namespace and name, one
//! strictly increasing resourceVersion for every write, and a bounded
//! history of events for watchers.
//!
//! The HTTP layer owns API semantics (uids, generation, defaults,
//! finalizers); the store only versions and remembers. Objects live in
//! memory; with a data directory ([`MemoryStore::open`]) every write is
//! also logged and fsync'd before it is acknowledged (see [`crate::wal`]).

use crate::wal::{Wal, write_snapshot};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The write could not be made durable; nothing changed.
    #[error("storage error: {0}")]
    Unavailable(String),
    /// The object is larger than one stored object may be (etcd's limit).
    #[error("etcdserver: request is too large ({size} bytes, limit {limit})")]
    TooLarge { size: usize, limit: usize },
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
    wal: Option<Wal>,
}

/// An in-memory store, optionally backed by a log on disk.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    history_limit: usize,
    events: broadcast::Sender<Event>,
    /// A snapshot is being written in the background.
    snapshotting: Arc<AtomicBool>,
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
                wal: None,
            }),
            history_limit: history_limit.max(1),
            events,
            snapshotting: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A durable store in `dir`: recovers what is there (logging what it
    /// had to repair), then logs every write. A snapshot is taken every
    /// `snapshot_every` writes.
    pub fn open(dir: &Path, history_limit: usize, snapshot_every: u64) -> std::io::Result<Self> {
        let (wal, recovered) = Wal::open(dir, snapshot_every)?;
        for warning in &recovered.warnings {
            tracing::warn!(dir = %dir.display(), "{warning}");
        }
        let store = Self::with_history(history_limit);
        {
            let mut inner = store.lock();
            inner.version = recovered.version;
            inner.objects = recovered.objects;
            let skip = recovered.events.len().saturating_sub(store.history_limit);
            inner.history = recovered.events.into_iter().skip(skip).collect();
            inner.wal = Some(wal);
        }
        tracing::info!(
            dir = %dir.display(),
            version = store.current_version(),
            objects = store.len(),
            "recovered the store"
        );
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // mutation is a single insert or remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stamps the next version on `object`, logs it (when durable), then
    /// records and publishes the event. A failed log write changes nothing.
    fn commit(
        &self,
        inner: &mut Inner,
        kind: EventType,
        key: &ObjectKey,
        mut object: Value,
        previous: Option<Arc<Value>>,
    ) -> Result<Arc<Value>, StoreError> {
        let version = inner.version + 1;
        set_resource_version(&mut object, version);
        if kind != EventType::Deleted {
            // What etcd would be asked to store.
            let size = serde_json::to_vec(&object).map_or(usize::MAX, |b| b.len());
            if size > crate::limits::MAX_OBJECT_BYTES {
                return Err(StoreError::TooLarge {
                    size,
                    limit: crate::limits::MAX_OBJECT_BYTES,
                });
            }
        }
        if let Some(wal) = inner.wal.as_mut() {
            wal.append(version, kind, key, &object).map_err(|e| {
                tracing::error!(error = %e, "could not log a write");
                StoreError::Unavailable(e.to_string())
            })?;
        }
        inner.version = version;
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
        Ok(object)
    }

    /// After a write is applied: when the log segment is long enough,
    /// starts a new one and writes a snapshot in the background.
    fn maybe_snapshot(&self, inner: &mut Inner) {
        let version = inner.version;
        let Some(wal) = inner.wal.as_mut() else {
            return;
        };
        if !wal.snapshot_due() || self.snapshotting.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = wal.rotate(version + 1) {
            tracing::error!(error = %e, "could not start a new log segment");
            self.snapshotting.store(false, Ordering::Release);
            return;
        }
        let dir = wal.dir().to_owned();
        let objects: Vec<(ObjectKey, Arc<Value>)> = inner
            .objects
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let busy = self.snapshotting.clone();
        std::thread::spawn(move || {
            match write_snapshot(&dir, version, &objects) {
                Ok(()) => tracing::debug!(version, objects = objects.len(), "snapshot written"),
                // The log still holds everything; the next snapshot retries.
                Err(e) => tracing::error!(error = %e, version, "could not write a snapshot"),
            }
            busy.store(false, Ordering::Release);
        });
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
        let stored = self.commit(&mut inner, EventType::Added, key, object, None)?;
        inner.objects.insert(key.clone(), stored.clone());
        self.maybe_snapshot(&mut inner);
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
        let stored = self.commit(&mut inner, EventType::Modified, key, object, Some(previous))?;
        inner.objects.insert(key.clone(), stored.clone());
        self.maybe_snapshot(&mut inner);
        Ok(stored)
    }

    fn delete(
        &self,
        key: &ObjectKey,
        expected_version: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let last = (*current_at(&inner, key, expected_version)?).clone();
        let gone = self.commit(&mut inner, EventType::Deleted, key, last, None)?;
        inner.objects.remove(key);
        self.maybe_snapshot(&mut inner);
        Ok(gone)
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

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "flotilla-store-{tag}-{}-{}",
            std::process::id(),
            crate::meta::random_u64()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// The log segments of a data directory, oldest first.
    fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut all: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn a_durable_store_recovers_objects_versions_and_history() {
        let dir = temp_dir("recover");
        {
            let s = MemoryStore::open(&dir, 100, 1000).unwrap();
            s.create(&key("a", "1"), cm("1")).unwrap();
            s.create(&key("a", "2"), cm("2")).unwrap();
            s.update(
                &key("a", "1"),
                json!({"metadata": {"name": "1"}, "data": {"x": "y"}}),
                Some(1),
            )
            .unwrap();
            s.delete(&key("a", "2"), None).unwrap();
        }
        let s = MemoryStore::open(&dir, 100, 1000).unwrap();
        assert_eq!(s.current_version(), 4);
        assert_eq!(s.len(), 1);
        assert_eq!(s.get(&key("a", "1")).unwrap()["data"]["x"], "y");
        assert_eq!(resource_version(&s.get(&key("a", "1")).unwrap()), Some(3));
        // A watcher that saw version 1 gets what it missed.
        let w = s.watch(1).unwrap();
        let missed: Vec<(u64, EventType)> = w
            .backlog
            .iter()
            .map(|e| (e.resource_version, e.kind))
            .collect();
        assert_eq!(
            missed,
            [
                (2, EventType::Added),
                (3, EventType::Modified),
                (4, EventType::Deleted)
            ]
        );
        assert!(
            w.backlog[1].previous.is_some(),
            "a modification keeps its previous state"
        );
        // Versions keep increasing after the restart.
        let next = s.create(&key("a", "3"), cm("3")).unwrap();
        assert_eq!(resource_version(&next), Some(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A value the reader refuses (here, nested past serde_json's limit,
    /// as a store written before depth was bounded could hold) no longer
    /// bricks the store: it is quarantined, said so, and everything else
    /// loads, from the log and from a snapshot alike.
    #[test]
    fn an_unreadable_record_is_quarantined_and_the_store_opens() {
        let deep = |levels: usize| {
            let mut v = json!("x");
            for _ in 0..levels {
                v = json!({ "a": v });
            }
            json!({"metadata": {"name": "deep"}, "data": v})
        };
        for (snapshot_every, deep_last) in [(1000, false), (2, false), (1000, true)] {
            let dir = temp_dir("quarantine");
            let deep_rv;
            {
                let s = MemoryStore::open(&dir, 100, snapshot_every).unwrap();
                s.create(&key("a", "before"), cm("1")).unwrap();
                if !deep_last {
                    deep_rv = resource_version(&s.create(&key("a", "deep"), deep(200)).unwrap());
                    s.create(&key("a", "after"), cm("2")).unwrap();
                    s.create(&key("a", "last"), cm("3")).unwrap();
                } else {
                    s.create(&key("a", "after"), cm("2")).unwrap();
                    s.create(&key("a", "last"), cm("3")).unwrap();
                    deep_rv = resource_version(&s.create(&key("a", "deep"), deep(200)).unwrap());
                }
                for _ in 0..200 {
                    if !s.snapshotting.load(Ordering::Acquire) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            let s = MemoryStore::open(&dir, 100, 1000).expect("the store opens");
            for name in ["before", "after", "last"] {
                assert!(
                    s.get(&key("a", name)).is_some(),
                    "{name} ({snapshot_every})"
                );
            }
            assert!(s.get(&key("a", "deep")).is_none());
            let quarantined: Vec<_> = std::fs::read_dir(dir.join("quarantine"))
                .expect("a quarantine directory")
                .collect();
            assert!(!quarantined.is_empty(), "{snapshot_every}");
            // Writes go on after it, and no version is handed out twice.
            let next = s.create(&key("a", "new"), cm("4")).unwrap();
            assert!(
                resource_version(&next) > deep_rv,
                "{snapshot_every} {deep_last}"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn objects_over_the_etcd_limit_are_refused() {
        let s = MemoryStore::default();
        let big = json!({"metadata": {"name": "big"}, "data": {"x": "y".repeat(crate::limits::MAX_OBJECT_BYTES)}});
        assert!(matches!(
            s.create(&key("a", "big"), big),
            Err(StoreError::TooLarge { .. })
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn snapshots_bound_the_log_and_recovery_uses_them() {
        let dir = temp_dir("snap");
        {
            let s = MemoryStore::open(&dir, 10, 5).unwrap();
            for i in 0..23 {
                s.create(&key("a", &i.to_string()), cm("x")).unwrap();
            }
            // Background snapshots finish.
            for _ in 0..200 {
                if !s.snapshotting.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let snaps = files.iter().filter(|f| f.ends_with(".snap")).count();
        let logs = files.iter().filter(|f| f.ends_with(".wal")).count();
        assert_eq!(snaps, 1, "older snapshots are removed: {files:?}");
        assert!(
            logs <= 2,
            "segments before the snapshot are removed: {files:?}"
        );
        let s = MemoryStore::open(&dir, 10, 5).unwrap();
        assert_eq!((s.len(), s.current_version()), (23, 23));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_dropped_and_the_rest_loads() {
        use std::io::Write;
        let dir = temp_dir("torn");
        {
            let s = MemoryStore::open(&dir, 100, 1000).unwrap();
            s.create(&key("a", "1"), cm("1")).unwrap();
            s.create(&key("a", "2"), cm("2")).unwrap();
        }
        let log = segments(&dir).pop().unwrap();
        let len = std::fs::metadata(&log).unwrap().len();
        // A crash in the middle of the second record.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(len - 7)
            .unwrap();
        let s = MemoryStore::open(&dir, 100, 1000).unwrap();
        assert_eq!((s.len(), s.current_version()), (1, 1));
        assert!(s.get(&key("a", "1")).is_some());
        let v = s.create(&key("a", "3"), cm("3")).unwrap();
        assert_eq!(resource_version(&v), Some(2));
        drop(s);
        // Garbage appended after good records is dropped too.
        let log = segments(&dir).pop().unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"\x13\x00\x00\x00garbage")
            .unwrap();
        let s = MemoryStore::open(&dir, 100, 1000).unwrap();
        assert_eq!((s.len(), s.current_version()), (2, 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corruption_before_the_end_of_the_log_refuses_to_start() {
        let dir = temp_dir("corrupt");
        {
            let s = MemoryStore::open(&dir, 100, 1000).unwrap();
            s.create(&key("a", "1"), cm("1")).unwrap();
        }
        // A restart opens a second segment; damage the first one.
        {
            let s = MemoryStore::open(&dir, 100, 1000).unwrap();
            s.create(&key("a", "2"), cm("2")).unwrap();
        }
        let first = segments(&dir).remove(0);
        let mut bytes = std::fs::read(&first).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        std::fs::write(&first, bytes).unwrap();
        let err = MemoryStore::open(&dir, 100, 1000).err().expect("refused");
        assert!(
            err.to_string().contains("before the end of the log"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
