//! What the controllers know about how objects relate: the targeting index
//! plus the secondary indexes the caches do not keep (BundleDeployments by
//! bundle and by cluster, Bundles by GitRepo) and the targeting errors.
//!
//! Only the hub mutates it, one event at a time; workers read it.

use flotilla_api::{BundleDeployment, keys};
use flotilla_targeting::{ObjectKey, TargetError, TargetIndex};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Default)]
pub struct Topology {
    pub index: TargetIndex,
    /// Bundles whose targets could not be compiled. Their previous
    /// placements stay in the index; a bundle seen first with an error has
    /// none, and GC leaves its BundleDeployments alone.
    pub bundle_errors: HashMap<ObjectKey, TargetError>,
    /// Groups whose selector could not be compiled; same rule.
    pub group_errors: HashMap<ObjectKey, TargetError>,
    /// bundle -> cluster -> BundleDeployment.
    pub bds_by_bundle: HashMap<ObjectKey, BTreeMap<ObjectKey, ObjectKey>>,
    /// cluster -> BundleDeployments.
    pub bds_by_cluster: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// GitRepo -> its Bundles.
    pub bundles_by_repo: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
}

/// The (bundle, cluster) pair a BundleDeployment stands for, from the
/// labels the fan-out controller puts on it. None for objects it did not
/// create.
pub fn pair_of(bd: &BundleDeployment) -> Option<(ObjectKey, ObjectKey)> {
    let labels = bd.metadata.labels.as_ref()?;
    if labels.get(keys::MANAGED_BY).map(String::as_str) != Some(keys::MANAGED_BY_VALUE) {
        return None;
    }
    let bundle = ObjectKey::new(
        labels.get(keys::BUNDLE_NAMESPACE)?,
        labels.get(keys::BUNDLE_NAME)?,
    );
    let cluster = ObjectKey::new(
        labels.get(keys::CLUSTER_NAMESPACE)?,
        labels.get(keys::CLUSTER_NAME)?,
    );
    Some((bundle, cluster))
}

/// The management-cluster namespace holding a Cluster's BundleDeployments:
/// `cluster-<namespace>-<name>-<hash>`, a valid namespace name (at most 63
/// characters, no dots) that differs for every (namespace, name).
pub fn cluster_namespace(cluster: &ObjectKey) -> String {
    let digest = Sha256::digest(format!("{}/{}", cluster.namespace, cluster.name).as_bytes());
    let hash = &hex::encode(digest)[..8];
    let mut base: String = format!("cluster-{}-{}", cluster.namespace, cluster.name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(63 - 1 - hash.len());
    let base = base.trim_end_matches('-');
    format!("{base}-{hash}")
}

impl Topology {
    /// Whether GC must keep its hands off this bundle's deployments: its
    /// targets, or a group in its namespace, could not be evaluated.
    pub fn frozen(&self, bundle: &ObjectKey) -> bool {
        self.bundle_errors.contains_key(bundle)
            || self
                .group_errors
                .keys()
                .any(|g| g.namespace == bundle.namespace)
    }

    /// Whether this BundleDeployment no longer has a reason to exist.
    pub fn is_stale(&self, bundle: &ObjectKey, cluster: &ObjectKey) -> bool {
        !self.frozen(bundle) && !self.index.is_targeted(bundle, cluster)
    }

    pub fn track_bd(&mut self, key: &ObjectKey, pair: Option<&(ObjectKey, ObjectKey)>) {
        if let Some((bundle, cluster)) = pair {
            self.bds_by_bundle
                .entry(bundle.clone())
                .or_default()
                .insert(cluster.clone(), key.clone());
            self.bds_by_cluster
                .entry(cluster.clone())
                .or_default()
                .insert(key.clone());
        }
    }

    pub fn untrack_bd(&mut self, key: &ObjectKey, pair: Option<&(ObjectKey, ObjectKey)>) {
        let Some((bundle, cluster)) = pair else {
            return;
        };
        if let Some(m) = self.bds_by_bundle.get_mut(bundle) {
            if m.get(cluster) == Some(key) {
                m.remove(cluster);
            }
            if m.is_empty() {
                self.bds_by_bundle.remove(bundle);
            }
        }
        if let Some(s) = self.bds_by_cluster.get_mut(cluster) {
            s.remove(key);
            if s.is_empty() {
                self.bds_by_cluster.remove(cluster);
            }
        }
    }

    pub fn bds_of_bundle(&self, bundle: &ObjectKey) -> BTreeMap<ObjectKey, ObjectKey> {
        self.bds_by_bundle.get(bundle).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_namespaces_are_valid_distinct_and_stable() {
        let long = "x".repeat(200);
        let cases = [
            ObjectKey::new("fleet-default", "prod-eu"),
            ObjectKey::new("fleet-default", "prod.eu"),
            ObjectKey::new("fleet", "default-prod-eu"),
            ObjectKey::new("fleet-default", &long),
            ObjectKey::new("fleet-default", &format!("{long}y")),
        ];
        let names: Vec<String> = cases.iter().map(cluster_namespace).collect();
        for n in &names {
            assert!(n.len() <= 63, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
            assert!(!n.starts_with('-') && !n.ends_with('-'), "{n}");
        }
        let distinct: BTreeSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        assert!(
            names[0].starts_with("cluster-fleet-default-prod-eu-"),
            "{}",
            names[0]
        );
        assert_eq!(cluster_namespace(&cases[0]), names[0]);
    }
}
