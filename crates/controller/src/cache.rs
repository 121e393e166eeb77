//! Watch-fed caches shared by every controller.
//!
//! Each cache is a reflector store that also reports, per event, the object
//! it replaced. The hub needs that previous version to tell a spec change
//! from a status-only change, which is what keeps controllers from waking on
//! writes that do not concern them.
//!
//! A re-list (after a watch expired) never empties the cache: objects are
//! upserted as they arrive, and only once the list is complete are the ones
//! it did not contain reported as removed.

use flotilla_targeting::ObjectKey;
use kube::Resource;
use kube::runtime::watcher;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// One change to a cache.
#[derive(Debug)]
pub enum Delta<K> {
    Upsert { old: Option<Arc<K>>, new: Arc<K> },
    Removed(Arc<K>),
}

pub struct Cache<K> {
    map: RwLock<HashMap<ObjectKey, Arc<K>>>,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Resource> Cache<K> {
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.map.read().expect("cache lock").get(key).cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.map
            .read()
            .expect("cache lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn keys(&self) -> Vec<ObjectKey> {
        self.map
            .read()
            .expect("cache lock")
            .keys()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn upsert(&self, obj: K) -> Option<Delta<K>> {
        let key = ObjectKey::of(obj.meta());
        let new = Arc::new(obj);
        let old = self
            .map
            .write()
            .expect("cache lock")
            .insert(key, Arc::clone(&new));
        if let Some(old) = &old
            && old.meta().resource_version == new.meta().resource_version
            && old.meta().resource_version.is_some()
        {
            // The same version again, as a re-list repeats it.
            return None;
        }
        Some(Delta::Upsert { old, new })
    }

    fn remove(&self, key: &ObjectKey) -> Option<Delta<K>> {
        self.map
            .write()
            .expect("cache lock")
            .remove(key)
            .map(Delta::Removed)
    }
}

/// Turns one watcher's events into cache updates and deltas.
pub struct Feed<K> {
    cache: Arc<Cache<K>>,
    /// Keys seen since the current re-list began.
    relisting: Option<HashSet<ObjectKey>>,
    synced: bool,
}

impl<K: Resource> Feed<K> {
    pub fn new(cache: Arc<Cache<K>>) -> Self {
        Feed {
            cache,
            relisting: None,
            synced: false,
        }
    }

    /// Whether this watch has completed its first list.
    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn apply(&mut self, event: watcher::Event<K>) -> Vec<Delta<K>> {
        match event {
            watcher::Event::Apply(obj) => self.cache.upsert(obj).into_iter().collect(),
            watcher::Event::Delete(obj) => self
                .cache
                .remove(&ObjectKey::of(obj.meta()))
                .into_iter()
                .collect(),
            watcher::Event::Init => {
                self.relisting = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(obj) => {
                if let Some(seen) = &mut self.relisting {
                    seen.insert(ObjectKey::of(obj.meta()));
                }
                self.cache.upsert(obj).into_iter().collect()
            }
            watcher::Event::InitDone => {
                self.synced = true;
                let Some(seen) = self.relisting.take() else {
                    return Vec::new();
                };
                self.cache
                    .keys()
                    .into_iter()
                    .filter(|k| !seen.contains(k))
                    .filter_map(|k| self.cache.remove(&k))
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(deltas: &[Delta<ConfigMap>]) -> Vec<String> {
        deltas
            .iter()
            .map(|d| match d {
                Delta::Upsert { old, new } => format!(
                    "upsert {} (had {})",
                    new.metadata.name.as_deref().unwrap(),
                    old.is_some()
                ),
                Delta::Removed(o) => format!("removed {}", o.metadata.name.as_deref().unwrap()),
            })
            .collect()
    }

    #[test]
    fn relist_keeps_objects_until_done_then_reports_the_missing() {
        let cache = Arc::new(Cache::default());
        let mut feed = Feed::new(Arc::clone(&cache));
        assert!(feed.apply(watcher::Event::Init).is_empty());
        feed.apply(watcher::Event::InitApply(cm("a", "1")));
        feed.apply(watcher::Event::InitApply(cm("b", "2")));
        assert!(!feed.synced());
        assert!(feed.apply(watcher::Event::InitDone).is_empty());
        assert!(feed.synced());

        // The watch expires; the re-list no longer has `a`.
        feed.apply(watcher::Event::Init);
        assert_eq!(cache.len(), 2, "a re-list never empties the cache");
        let same = feed.apply(watcher::Event::InitApply(cm("b", "2")));
        assert!(same.is_empty(), "an unchanged version is no event");
        let changed = feed.apply(watcher::Event::InitApply(cm("c", "3")));
        assert_eq!(names(&changed), ["upsert c (had false)"]);
        assert_eq!(cache.len(), 3);
        let done = feed.apply(watcher::Event::InitDone);
        assert_eq!(names(&done), ["removed a"]);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn apply_reports_the_previous_version() {
        let cache = Arc::new(Cache::default());
        let mut feed = Feed::new(Arc::clone(&cache));
        feed.apply(watcher::Event::Apply(cm("a", "1")));
        let d = feed.apply(watcher::Event::Apply(cm("a", "2")));
        match &d[..] {
            [
                Delta::Upsert {
                    old: Some(old),
                    new,
                },
            ] => {
                assert_eq!(old.metadata.resource_version.as_deref(), Some("1"));
                assert_eq!(new.metadata.resource_version.as_deref(), Some("2"));
            }
            other => panic!("unexpected {}", names(other).join(",")),
        }
        let gone = feed.apply(watcher::Event::Delete(cm("a", "3")));
        assert_eq!(names(&gone), ["removed a"]);
        assert!(cache.is_empty());
    }
}
