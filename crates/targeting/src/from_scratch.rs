//! Targeting computed from nothing: every bundle against every cluster.
//!
//! This is what `flotilla plan` uses on a handful of clusters, and the
//! oracle the incremental index is checked against.

use crate::bundle_targets::{CompiledBundle, Verdict};
use crate::criteria::ClusterFacts;
use crate::selector::{Labels, Selector};
use crate::{ObjectKey, TargetError};
use flotilla_api::{Bundle, Cluster, ClusterGroup};
use std::collections::BTreeMap;

/// Every targeted (bundle, cluster) pair and its verdict.
pub type Placements = BTreeMap<(ObjectKey, ObjectKey), Verdict>;

/// A cluster with its groups resolved, for evaluation outside the index.
#[derive(Clone, Debug)]
pub struct ResolvedCluster {
    pub key: ObjectKey,
    pub labels: Labels,
    /// (group name, group labels) of every group the cluster is in.
    pub groups: Vec<(String, Labels)>,
}

impl ClusterFacts for ResolvedCluster {
    fn name(&self) -> &str {
        &self.key.name
    }
    fn labels(&self) -> &Labels {
        &self.labels
    }
    fn any_group(&self, f: &mut dyn FnMut(&str, &Labels) -> bool) -> bool {
        self.groups.iter().any(|(n, l)| f(n, l))
    }
}

/// Resolves each cluster's group memberships. A group whose selector is
/// invalid is reported and has no members.
pub fn resolve_clusters(
    clusters: &[Cluster],
    groups: &[ClusterGroup],
) -> (Vec<ResolvedCluster>, Vec<(ObjectKey, TargetError)>) {
    let mut errors = Vec::new();
    let compiled: Vec<(ObjectKey, Labels, Option<Selector>)> = groups
        .iter()
        .filter_map(|g| {
            let key = ObjectKey::of(&g.metadata);
            match g.spec.selector.as_ref().map(Selector::compile).transpose() {
                Ok(sel) => Some((key, g.metadata.labels.clone().unwrap_or_default(), sel)),
                Err(e) => {
                    errors.push((key, TargetError::new("spec.selector", e.0)));
                    None
                }
            }
        })
        .collect();
    let resolved = clusters
        .iter()
        .map(|c| {
            let key = ObjectKey::of(&c.metadata);
            let labels = c.metadata.labels.clone().unwrap_or_default();
            let groups = compiled
                .iter()
                .filter(|(gk, _, sel)| {
                    gk.namespace == key.namespace
                        && sel.as_ref().is_some_and(|s| s.matches(&labels))
                })
                .map(|(gk, gl, _)| (gk.name.to_string(), gl.clone()))
                .collect();
            ResolvedCluster {
                key,
                labels,
                groups,
            }
        })
        .collect();
    (resolved, errors)
}

/// Every targeted (bundle, cluster) pair. Bundles with invalid targeting
/// are reported and target nothing.
pub fn placements_from_scratch(
    clusters: &[Cluster],
    groups: &[ClusterGroup],
    bundles: &[Bundle],
) -> (Placements, Vec<(ObjectKey, TargetError)>) {
    let (resolved, mut errors) = resolve_clusters(clusters, groups);
    let mut out = BTreeMap::new();
    for bundle in bundles {
        let bkey = ObjectKey::of(&bundle.metadata);
        let compiled = match CompiledBundle::compile(&bundle.spec) {
            Ok(c) => c,
            Err(e) => {
                errors.push((bkey, e));
                continue;
            }
        };
        for cluster in resolved
            .iter()
            .filter(|c| c.key.namespace == bkey.namespace)
        {
            if let Some(v) = compiled.evaluate(cluster) {
                out.insert((bkey.clone(), cluster.key.clone()), v);
            }
        }
    }
    (out, errors)
}
