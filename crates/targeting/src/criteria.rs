//! One target entry's criteria, and what a cluster looks like to them.

use crate::TargetError;
use crate::selector::{Labels, Selector};
use flotilla_api::TargetCriteria;
use std::fmt;

/// The label holding the name Rancher shows for a cluster; `clusterName`
/// matches it too.
pub const DISPLAY_NAME_LABEL: &str = "management.cattle.io/cluster-display-name";

/// What targeting needs to know about a cluster: its name, its labels and
/// the groups it is in (with their labels).
pub trait ClusterFacts {
    fn name(&self) -> &str;
    fn labels(&self) -> &Labels;
    /// Calls `f` on each group the cluster belongs to, stopping at the first
    /// `true`; returns whether any call returned `true`.
    fn any_group(&self, f: &mut dyn FnMut(&str, &Labels) -> bool) -> bool;
}

/// The criterion that kept an entry from matching, for `plan --explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion {
    /// The entry sets no criterion, so it matches nothing.
    NoCriteria,
    ClusterName,
    ClusterSelector,
    ClusterGroup,
    ClusterGroupSelector,
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Criterion::NoCriteria => "the entry sets no criteria",
            Criterion::ClusterName => "clusterName differs",
            Criterion::ClusterSelector => "clusterSelector does not match the cluster's labels",
            Criterion::ClusterGroup => "the cluster is not in that clusterGroup",
            Criterion::ClusterGroupSelector => {
                "no group of the cluster matches clusterGroupSelector"
            }
        })
    }
}

/// Validated criteria. Empty strings count as unset, as in Fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledCriteria {
    pub cluster_name: Option<String>,
    pub cluster_selector: Option<Selector>,
    pub cluster_group: Option<String>,
    pub cluster_group_selector: Option<Selector>,
}

impl CompiledCriteria {
    /// `field` names the entry in errors, e.g. `targets[2]`.
    pub fn compile(c: &TargetCriteria, field: &str) -> Result<Self, TargetError> {
        let compile = |s: &Option<_>, name: &str| {
            s.as_ref()
                .map(Selector::compile)
                .transpose()
                .map_err(|e| TargetError::new(format!("{field}.{name}"), e.0))
        };
        Ok(CompiledCriteria {
            cluster_name: c.cluster_name.clone().filter(|s| !s.is_empty()),
            cluster_selector: compile(&c.cluster_selector, "clusterSelector")?,
            cluster_group: c.cluster_group.clone().filter(|s| !s.is_empty()),
            cluster_group_selector: compile(&c.cluster_group_selector, "clusterGroupSelector")?,
        })
    }

    pub fn has_group_criteria(&self) -> bool {
        self.cluster_group.is_some() || self.cluster_group_selector.is_some()
    }

    /// Every criterion that is set must match; an entry with none matches
    /// nothing. Group criteria must hold for one and the same group.
    pub fn check(&self, cluster: &dyn ClusterFacts) -> Result<(), Criterion> {
        if self.cluster_name.is_none()
            && self.cluster_selector.is_none()
            && !self.has_group_criteria()
        {
            return Err(Criterion::NoCriteria);
        }
        // As Fleet: the name, or the display name Rancher gives the cluster.
        if let Some(name) = &self.cluster_name
            && name != cluster.name()
            && cluster.labels().get(DISPLAY_NAME_LABEL) != Some(name)
        {
            return Err(Criterion::ClusterName);
        }
        if let Some(sel) = &self.cluster_selector
            && !sel.matches(cluster.labels())
        {
            return Err(Criterion::ClusterSelector);
        }
        if self.has_group_criteria() {
            let mut name_seen = false;
            let mut in_any = false;
            let mut check = |group: &str, labels: &Labels| {
                let name_ok = self.cluster_group.as_deref().is_none_or(|g| g == group);
                name_seen |= name_ok;
                name_ok
                    && self
                        .cluster_group_selector
                        .as_ref()
                        .is_none_or(|s| s.matches(labels))
            };
            let mut found = cluster.any_group(&mut |group, labels| {
                in_any = true;
                check(group, labels)
            });
            // A cluster in no group is judged against an empty one, as in
            // Fleet: `clusterGroupSelector: {}` or a NotIn matches it.
            if !in_any {
                found = check("", &Labels::new());
            }
            if !found {
                return Err(if self.cluster_group.is_some() && !name_seen {
                    Criterion::ClusterGroup
                } else {
                    Criterion::ClusterGroupSelector
                });
            }
        }
        Ok(())
    }

    pub fn matches(&self, cluster: &dyn ClusterFacts) -> bool {
        self.check(cluster).is_ok()
    }
}
