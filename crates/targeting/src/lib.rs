//! Which clusters a bundle targets, with which customization, and the
//! incremental index that answers "what changed for whom" after a Cluster,
//! ClusterGroup or Bundle event.
//!
//! Also the per-cluster Helm values (`values`: Fleet's `${ }` templates).
//!
//! Pure: no client, no I/O, no async. Matching follows Fleet:
//! - within one target entry, every criterion that is set must match, and an
//!   entry that sets none matches nothing;
//! - `clusterSelector: {}` matches every cluster, a null selector is ignored;
//! - entries are tried in order and the first match wins;
//! - `clusterGroup` names a group of the same namespace, and
//!   `clusterGroupSelector` matches groups by their labels; a cluster may be
//!   in several groups and all are tried;
//! - `targetRestrictions` are an allow-list;
//! - an invalid selector is an error on its object, never "match all".

#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

mod bundle_targets;
mod criteria;
mod customize;
mod from_scratch;
mod index;
mod selector;
mod slab;
mod sprig;
pub mod values;

pub use bundle_targets::{CompiledBundle, Decision, EntryOutcome, Explanation, Verdict};
pub use criteria::{ClusterFacts, CompiledCriteria, Criterion, DISPLAY_NAME_LABEL};
pub use customize::{merge_options, merge_values, resolve_options};
pub use from_scratch::{Placements, ResolvedCluster, placements_from_scratch, resolve_clusters};
pub use index::{ChangeKind, Changes, PairChange, Placement, TargetIndex};
pub use selector::{Labels, Requirement, Selector, SelectorError};

use flotilla_api::kube_core::ObjectMeta;
use flotilla_api::{GitTarget, TargetCriteria, keys};
use std::fmt;
use std::sync::Arc;

/// Namespace and name of a namespaced object. Cheap to clone: the index
/// hands out one per changed pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of(meta: &ObjectMeta) -> Self {
        ObjectKey::new(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Targeting that cannot be evaluated: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetError {
    /// Path of the offending field, e.g. `targets[1].clusterSelector`.
    pub field: String,
    pub message: String,
}

impl TargetError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        TargetError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for TargetError {}

/// The targets a GitRepo's bundles get: its own, or the cluster group named
/// `default` when it names none.
pub fn effective_targets(gitrepo_targets: &[GitTarget]) -> Vec<GitTarget> {
    if gitrepo_targets.is_empty() {
        vec![GitTarget {
            name: Some(keys::DEFAULT_CLUSTER_GROUP.to_owned()),
            criteria: TargetCriteria {
                cluster_group: Some(keys::DEFAULT_CLUSTER_GROUP.to_owned()),
                ..Default::default()
            },
        }]
    } else {
        gitrepo_targets.to_vec()
    }
}

#[cfg(test)]
mod tests;
