//! The incremental targeting index.
//!
//! It answers "what changed for whom" after one Cluster, ClusterGroup or
//! Bundle event, without recomputing the whole fleet:
//! - a cluster event re-evaluates that cluster against the bundles of its
//!   namespace: O(bundles);
//! - a bundle event evaluates the bundle against the clusters its targets
//!   can possibly match, found through an inverted label index: O(clusters)
//!   at worst, far less for narrow selectors;
//! - a group event re-evaluates the clusters whose membership changed
//!   against the bundles that look at groups.
//!
//! Invalid input (a bad selector) is refused with an error and leaves the
//! index as it was, so a typo never untargets what is deployed.

use crate::bundle_targets::{CompiledBundle, Verdict};
use crate::criteria::{ClusterFacts, CompiledCriteria};
use crate::from_scratch::Placements;
use crate::selector::{Labels, Requirement, Selector};
use crate::slab::{Id, IdMap, IdSet, Slab};
use crate::{ObjectKey, TargetError};
use flotilla_api::{Bundle, Cluster, ClusterGroup};
use std::collections::HashMap;
use std::sync::Arc;

/// How one (bundle, cluster) pair changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// The cluster now gets the bundle.
    Targeted,
    /// The cluster no longer gets the bundle: its BundleDeployment is stale.
    Untargeted,
    /// Still targeted, but a different customization applies.
    Customized,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PairChange {
    pub bundle: ObjectKey,
    pub cluster: ObjectKey,
    pub kind: ChangeKind,
}

/// The pairs one event changed, in no particular order: sorting thousands
/// of pairs would cost more than computing them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub pairs: Vec<PairChange>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn of_kind(&self, kind: ChangeKind) -> impl Iterator<Item = &PairChange> {
        self.pairs.iter().filter(move |p| p.kind == kind)
    }

    /// The pairs sorted by bundle then cluster, for stable output.
    pub fn sorted(mut self) -> Vec<PairChange> {
        self.pairs.sort();
        self.pairs
    }
}

#[derive(Debug)]
struct ClusterEntry {
    key: ObjectKey,
    labels: Labels,
    /// Groups this cluster is a member of.
    groups: Vec<Id>,
}

#[derive(Debug)]
struct GroupEntry {
    key: ObjectKey,
    labels: Labels,
    selector: Option<Selector>,
    members: IdSet,
}

#[derive(Debug)]
struct BundleEntry {
    key: ObjectKey,
    compiled: CompiledBundle,
    placements: IdMap<Verdict>,
}

/// Everything in one namespace: clusters, groups and bundles only see each
/// other within it.
#[derive(Debug, Default)]
struct Workspace {
    clusters: IdSet,
    clusters_by_name: HashMap<Arc<str>, Id>,
    groups: IdSet,
    groups_by_name: HashMap<Arc<str>, Id>,
    bundles: IdSet,
    /// label key -> label value -> clusters carrying it.
    postings: HashMap<String, HashMap<String, IdSet>>,
}

/// A cluster as targeting sees it, borrowed from the index.
struct ClusterView<'a> {
    entry: &'a ClusterEntry,
    groups: &'a Slab<GroupEntry>,
}

impl ClusterFacts for ClusterView<'_> {
    fn name(&self) -> &str {
        &self.entry.key.name
    }
    fn labels(&self) -> &Labels {
        &self.entry.labels
    }
    fn any_group(&self, f: &mut dyn FnMut(&str, &Labels) -> bool) -> bool {
        self.entry.groups.iter().any(|&g| {
            let g = self.groups.get(g);
            f(&g.key.name, &g.labels)
        })
    }
}

/// Which customizations apply to one targeted pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Index of the matching entry of the bundle's `targets`.
    pub target: usize,
    /// Indexes into the bundle's `targetCustomizations`, in merge order.
    pub customizations: Vec<usize>,
}

#[derive(Debug, Default)]
pub struct TargetIndex {
    clusters: Slab<ClusterEntry>,
    cluster_ids: HashMap<ObjectKey, Id>,
    groups: Slab<GroupEntry>,
    group_ids: HashMap<ObjectKey, Id>,
    bundles: Slab<BundleEntry>,
    bundle_ids: HashMap<ObjectKey, Id>,
    workspaces: HashMap<Arc<str>, Workspace>,
}

impl TargetIndex {
    pub fn new() -> Self {
        Self::default()
    }

    // ----- events -------------------------------------------------------

    /// A Cluster was created or changed. Only its labels matter here.
    pub fn apply_cluster(&mut self, cluster: &Cluster) -> Changes {
        let key = ObjectKey::of(&cluster.metadata);
        let labels = cluster.metadata.labels.clone().unwrap_or_default();
        let ws = self.workspaces.entry(key.namespace.clone()).or_default();
        let id = match self.cluster_ids.get(&key) {
            Some(&id) => {
                let entry = self.clusters.get_mut(id);
                if entry.labels == labels {
                    return Changes::default();
                }
                unpost(ws, id, &entry.labels);
                entry.labels = labels;
                id
            }
            None => {
                let id = self.clusters.insert(ClusterEntry {
                    key: key.clone(),
                    labels,
                    groups: Vec::new(),
                });
                self.cluster_ids.insert(key.clone(), id);
                ws.clusters.insert(id);
                ws.clusters_by_name.insert(key.name.clone(), id);
                id
            }
        };
        let entry = self.clusters.get_mut(id);
        post(ws, id, &entry.labels);

        // Group membership: O(groups in the namespace).
        entry.groups.clear();
        for &g in &ws.groups {
            let group = self.groups.get_mut(g);
            let member = group
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(&entry.labels));
            if member {
                group.members.insert(id);
                entry.groups.push(g);
            } else {
                group.members.remove(&id);
            }
        }
        entry.groups.sort_unstable();

        let bundles: Vec<Id> = ws.bundles.iter().copied().collect();
        let mut changes = Changes::default();
        self.reevaluate(id, &bundles, &mut changes);
        changes
    }

    /// A Cluster was deleted: every bundle it had is untargeted.
    pub fn delete_cluster(&mut self, key: &ObjectKey) -> Changes {
        let Some(id) = self.cluster_ids.remove(key) else {
            return Changes::default();
        };
        let entry = self.clusters.remove(id).expect("live id");
        let ws = self
            .workspaces
            .get_mut(&*key.namespace)
            .expect("workspace of a live cluster");
        unpost(ws, id, &entry.labels);
        ws.clusters.remove(&id);
        ws.clusters_by_name.remove(&*key.name);
        for &g in &entry.groups {
            self.groups.get_mut(g).members.remove(&id);
        }
        let mut changes = Changes::default();
        for &b in &ws.bundles {
            let bundle = self.bundles.get_mut(b);
            if bundle.placements.remove(&id).is_some() {
                changes.pairs.push(PairChange {
                    bundle: bundle.key.clone(),
                    cluster: key.clone(),
                    kind: ChangeKind::Untargeted,
                });
            }
        }
        changes
    }

    /// A ClusterGroup was created or changed. A bad selector is refused and
    /// the group keeps its previous members.
    pub fn apply_group(&mut self, group: &ClusterGroup) -> Result<Changes, TargetError> {
        let key = ObjectKey::of(&group.metadata);
        let selector = group
            .spec
            .selector
            .as_ref()
            .map(Selector::compile)
            .transpose()
            .map_err(|e| TargetError::new("spec.selector", e.0))?;
        let labels = group.metadata.labels.clone().unwrap_or_default();
        let ws = self.workspaces.entry(key.namespace.clone()).or_default();
        let (id, old_members, labels_changed) = match self.group_ids.get(&key) {
            Some(&id) => {
                let g = self.groups.get_mut(id);
                if g.selector == selector && g.labels == labels {
                    return Ok(Changes::default());
                }
                let labels_changed = g.labels != labels;
                g.labels = labels;
                g.selector = selector;
                (id, std::mem::take(&mut g.members), labels_changed)
            }
            None => {
                let id = self.groups.insert(GroupEntry {
                    key: key.clone(),
                    labels,
                    selector,
                    members: IdSet::default(),
                });
                self.group_ids.insert(key.clone(), id);
                ws.groups.insert(id);
                ws.groups_by_name.insert(key.name.clone(), id);
                (id, IdSet::default(), false)
            }
        };

        let new_members: IdSet = match &self.groups.get(id).selector {
            None => IdSet::default(),
            Some(sel) => selector_candidates(ws, sel)
                .map(|c| c.into_iter().collect::<Vec<_>>())
                .unwrap_or_else(|| ws.clusters.iter().copied().collect())
                .into_iter()
                .filter(|&c| sel.matches(&self.clusters.get(c).labels))
                .collect(),
        };
        let affected: Vec<Id> = if labels_changed {
            old_members.union(&new_members).copied().collect()
        } else {
            old_members
                .symmetric_difference(&new_members)
                .copied()
                .collect()
        };
        for &c in old_members.difference(&new_members) {
            self.clusters.get_mut(c).groups.retain(|&g| g != id);
        }
        for &c in new_members.difference(&old_members) {
            let groups = &mut self.clusters.get_mut(c).groups;
            let pos = groups.partition_point(|&g| g < id);
            groups.insert(pos, id);
        }
        self.groups.get_mut(id).members = new_members;

        let bundles = self.group_bundles(&key.namespace);
        let mut changes = Changes::default();
        for c in affected {
            self.reevaluate(c, &bundles, &mut changes);
        }
        Ok(changes)
    }

    /// A ClusterGroup was deleted: its members leave it.
    pub fn delete_group(&mut self, key: &ObjectKey) -> Changes {
        let Some(id) = self.group_ids.remove(key) else {
            return Changes::default();
        };
        let group = self.groups.remove(id).expect("live id");
        let ws = self
            .workspaces
            .get_mut(&*key.namespace)
            .expect("workspace of a live group");
        ws.groups.remove(&id);
        ws.groups_by_name.remove(&*key.name);
        for &c in &group.members {
            self.clusters.get_mut(c).groups.retain(|&g| g != id);
        }
        let bundles = self.group_bundles(&key.namespace);
        let mut changes = Changes::default();
        for &c in &group.members {
            self.reevaluate(c, &bundles, &mut changes);
        }
        changes
    }

    /// A Bundle was created or changed. A bad selector is refused and the
    /// bundle keeps its previous targets.
    pub fn apply_bundle(&mut self, bundle: &Bundle) -> Result<Changes, TargetError> {
        let key = ObjectKey::of(&bundle.metadata);
        let compiled = CompiledBundle::compile(&bundle.spec)?;
        let ws = self.workspaces.entry(key.namespace.clone()).or_default();
        let id = match self.bundle_ids.get(&key) {
            Some(&id) => {
                if self.bundles.get(id).compiled.source_fingerprint()
                    == compiled.source_fingerprint()
                {
                    return Ok(Changes::default());
                }
                id
            }
            None => {
                let id = self.bundles.insert(BundleEntry {
                    key: key.clone(),
                    compiled: compiled.clone(),
                    placements: IdMap::default(),
                });
                self.bundle_ids.insert(key.clone(), id);
                ws.bundles.insert(id);
                id
            }
        };

        let mut placements = IdMap::default();
        let mut evaluate = |c: Id| {
            let view = ClusterView {
                entry: self.clusters.get(c),
                groups: &self.groups,
            };
            if let Some(v) = compiled.evaluate(&view) {
                placements.insert(c, v);
            }
        };
        match bundle_candidates(ws, &self.groups, &compiled) {
            Some(candidates) => candidates.into_iter().for_each(&mut evaluate),
            None => ws.clusters.iter().copied().for_each(&mut evaluate),
        }

        let entry = self.bundles.get_mut(id);
        let mut changes = Changes::default();
        for (&c, new) in &placements {
            if let Some(kind) = change_kind(entry.placements.get(&c), Some(new)) {
                changes.pairs.push(PairChange {
                    bundle: key.clone(),
                    cluster: self.clusters.get(c).key.clone(),
                    kind,
                });
            }
        }
        for &c in entry.placements.keys() {
            if !placements.contains_key(&c) {
                changes.pairs.push(PairChange {
                    bundle: key.clone(),
                    cluster: self.clusters.get(c).key.clone(),
                    kind: ChangeKind::Untargeted,
                });
            }
        }
        entry.placements = placements;
        entry.compiled = compiled;
        Ok(changes)
    }

    /// A Bundle was deleted: every cluster it had is untargeted.
    pub fn delete_bundle(&mut self, key: &ObjectKey) -> Changes {
        let Some(id) = self.bundle_ids.remove(key) else {
            return Changes::default();
        };
        let entry = self.bundles.remove(id).expect("live id");
        if let Some(ws) = self.workspaces.get_mut(&*key.namespace) {
            ws.bundles.remove(&id);
        }
        let pairs = entry
            .placements
            .keys()
            .map(|&c| PairChange {
                bundle: key.clone(),
                cluster: self.clusters.get(c).key.clone(),
                kind: ChangeKind::Untargeted,
            })
            .collect();
        Changes { pairs }
    }

    // ----- queries ------------------------------------------------------

    /// Whether the cluster currently gets the bundle. The GC controller
    /// deletes a BundleDeployment exactly when this is false.
    pub fn is_targeted(&self, bundle: &ObjectKey, cluster: &ObjectKey) -> bool {
        match (self.bundle_ids.get(bundle), self.cluster_ids.get(cluster)) {
            (Some(b), Some(c)) => self.bundles.get(*b).placements.contains_key(c),
            _ => false,
        }
    }

    /// The clusters that get this bundle, sorted.
    pub fn clusters_of(&self, bundle: &ObjectKey) -> Vec<ObjectKey> {
        let Some(&b) = self.bundle_ids.get(bundle) else {
            return Vec::new();
        };
        let mut out: Vec<ObjectKey> = self
            .bundles
            .get(b)
            .placements
            .keys()
            .map(|&c| self.clusters.get(c).key.clone())
            .collect();
        out.sort();
        out
    }

    /// The bundles this cluster gets, sorted.
    pub fn bundles_of(&self, cluster: &ObjectKey) -> Vec<ObjectKey> {
        let Some(&c) = self.cluster_ids.get(cluster) else {
            return Vec::new();
        };
        let Some(ws) = self.workspaces.get(&*cluster.namespace) else {
            return Vec::new();
        };
        let mut out: Vec<ObjectKey> = ws
            .bundles
            .iter()
            .map(|&b| self.bundles.get(b))
            .filter(|b| b.placements.contains_key(&c))
            .map(|b| b.key.clone())
            .collect();
        out.sort();
        out
    }

    /// Which target entry and customizations apply to a targeted pair.
    pub fn placement(&self, bundle: &ObjectKey, cluster: &ObjectKey) -> Option<Placement> {
        let b = self.bundles.get(*self.bundle_ids.get(bundle)?);
        let c = *self.cluster_ids.get(cluster)?;
        let verdict = b.placements.get(&c)?;
        let view = ClusterView {
            entry: self.clusters.get(c),
            groups: &self.groups,
        };
        Some(Placement {
            target: verdict.target,
            customizations: b.compiled.matching_customizations(&view),
        })
    }

    /// Every targeted pair with its verdict. For tests and audits: it walks
    /// the whole index.
    pub fn all_placements(&self) -> Placements {
        self.bundle_ids
            .values()
            .map(|&b| self.bundles.get(b))
            .flat_map(|b| {
                b.placements
                    .iter()
                    .map(|(&c, v)| ((b.key.clone(), self.clusters.get(c).key.clone()), *v))
            })
            .collect()
    }

    /// The clusters of a group, sorted. Empty for an unknown group.
    pub fn group_members(&self, group: &ObjectKey) -> Vec<ObjectKey> {
        let Some(&g) = self.group_ids.get(group) else {
            return Vec::new();
        };
        let mut out: Vec<ObjectKey> = self
            .groups
            .get(g)
            .members
            .iter()
            .map(|&c| self.clusters.get(c).key.clone())
            .collect();
        out.sort();
        out
    }

    /// The groups a cluster is in, sorted.
    pub fn groups_of(&self, cluster: &ObjectKey) -> Vec<ObjectKey> {
        let Some(&c) = self.cluster_ids.get(cluster) else {
            return Vec::new();
        };
        let mut out: Vec<ObjectKey> = self
            .clusters
            .get(c)
            .groups
            .iter()
            .map(|&g| self.groups.get(g).key.clone())
            .collect();
        out.sort();
        out
    }

    /// Whether a known cluster matches some criteria (its labels, its name
    /// and its groups), e.g. a rollout partition's. False for an unknown
    /// cluster.
    pub fn cluster_matches(&self, cluster: &ObjectKey, criteria: &CompiledCriteria) -> bool {
        let Some(&c) = self.cluster_ids.get(cluster) else {
            return false;
        };
        let view = ClusterView {
            entry: self.clusters.get(c),
            groups: &self.groups,
        };
        criteria.matches(&view)
    }

    pub fn cluster_count(&self) -> usize {
        self.clusters.len()
    }

    pub fn bundle_count(&self) -> usize {
        self.bundles.len()
    }

    // ----- internals ----------------------------------------------------

    /// Re-evaluates one cluster against some bundles, recording changes.
    fn reevaluate(&mut self, cluster: Id, bundles: &[Id], changes: &mut Changes) {
        let view = ClusterView {
            entry: self.clusters.get(cluster),
            groups: &self.groups,
        };
        for &b in bundles {
            let bundle = self.bundles.get_mut(b);
            let new = bundle.compiled.evaluate(&view);
            let old = match new {
                Some(v) => bundle.placements.insert(cluster, v),
                None => bundle.placements.remove(&cluster),
            };
            if let Some(kind) = change_kind(old.as_ref(), new.as_ref()) {
                changes.pairs.push(PairChange {
                    bundle: bundle.key.clone(),
                    cluster: view.entry.key.clone(),
                    kind,
                });
            }
        }
    }

    /// Bundles of a namespace whose targeting looks at groups.
    fn group_bundles(&self, namespace: &str) -> Vec<Id> {
        self.workspaces
            .get(namespace)
            .map(|ws| {
                ws.bundles
                    .iter()
                    .copied()
                    .filter(|&b| self.bundles.get(b).compiled.uses_groups())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn change_kind(old: Option<&Verdict>, new: Option<&Verdict>) -> Option<ChangeKind> {
    match (old, new) {
        (None, Some(_)) => Some(ChangeKind::Targeted),
        (Some(_), None) => Some(ChangeKind::Untargeted),
        (Some(a), Some(b)) if a.customization != b.customization => Some(ChangeKind::Customized),
        _ => None,
    }
}

fn post(ws: &mut Workspace, id: Id, labels: &Labels) {
    for (k, v) in labels {
        ws.postings
            .entry(k.clone())
            .or_default()
            .entry(v.clone())
            .or_default()
            .insert(id);
    }
}

fn unpost(ws: &mut Workspace, id: Id, labels: &Labels) {
    for (k, v) in labels {
        if let Some(values) = ws.postings.get_mut(k) {
            if let Some(ids) = values.get_mut(v) {
                ids.remove(&id);
                if ids.is_empty() {
                    values.remove(v);
                }
            }
            if values.is_empty() {
                ws.postings.remove(k);
            }
        }
    }
}

/// The clusters a bundle's targets could match, or `None` for "any cluster
/// of the namespace".
fn bundle_candidates(
    ws: &Workspace,
    groups: &Slab<GroupEntry>,
    bundle: &CompiledBundle,
) -> Option<IdSet> {
    let mut all = IdSet::default();
    for criteria in bundle.target_criteria() {
        all.extend(criteria_candidates(ws, groups, criteria)?);
    }
    Some(all)
}

/// A superset of the clusters these criteria match, or `None` when no
/// criterion narrows the search. Picks the smallest candidate list.
fn criteria_candidates(
    ws: &Workspace,
    groups: &Slab<GroupEntry>,
    c: &CompiledCriteria,
) -> Option<Vec<Id>> {
    if c.cluster_name.is_none()
        && c.cluster_selector.is_none()
        && c.cluster_group.is_none()
        && c.cluster_group_selector.is_none()
    {
        return Some(Vec::new());
    }
    if let Some(name) = &c.cluster_name {
        // By name, or by the display-name label.
        let mut ids: Vec<Id> = ws
            .clusters_by_name
            .get(name.as_str())
            .copied()
            .into_iter()
            .collect();
        if let Some(set) = ws
            .postings
            .get(crate::criteria::DISPLAY_NAME_LABEL)
            .and_then(|values| values.get(name.as_str()))
        {
            let by_name = ids.first().copied();
            ids.extend(set.iter().copied().filter(|id| Some(*id) != by_name));
        }
        return Some(ids);
    }
    let mut best: Option<Vec<Id>> = None;
    let mut offer = |candidate: Vec<Id>| {
        if best.as_ref().is_none_or(|b| candidate.len() < b.len()) {
            best = Some(candidate);
        }
    };
    if let Some(group) = &c.cluster_group {
        offer(
            ws.groups_by_name
                .get(group.as_str())
                .map(|&g| groups.get(g).members.iter().copied().collect())
                .unwrap_or_default(),
        );
    } else if let Some(sel) = &c.cluster_group_selector
        // One that matches an empty group matches clusters in no group:
        // the groups do not narrow the search then.
        && !sel.matches(&Labels::new())
    {
        let mut members = IdSet::default();
        for &g in &ws.groups {
            let g = groups.get(g);
            if sel.matches(&g.labels) {
                members.extend(g.members.iter().copied());
            }
        }
        offer(members.into_iter().collect());
    }
    if let Some(sel) = &c.cluster_selector
        && let Some(ids) = selector_candidates(ws, sel)
    {
        offer(ids);
    }
    best
}

/// A superset of the clusters a selector matches, from its most selective
/// `In` or `Exists` requirement, or `None` when it has neither.
fn selector_candidates(ws: &Workspace, sel: &Selector) -> Option<Vec<Id>> {
    let lists = |r: &Requirement| -> Option<Vec<&IdSet>> {
        match r {
            Requirement::In(k, vs) => Some(
                ws.postings
                    .get(k)
                    .map(|values| vs.iter().filter_map(|v| values.get(v)).collect())
                    .unwrap_or_default(),
            ),
            Requirement::Exists(k) => Some(
                ws.postings
                    .get(k)
                    .map(|values| values.values().collect())
                    .unwrap_or_default(),
            ),
            Requirement::NotIn(..) | Requirement::DoesNotExist(_) => None,
        }
    };
    let best = sel
        .requirements()
        .iter()
        .filter_map(lists)
        .min_by_key(|sets| sets.iter().map(|s| s.len()).sum::<usize>())?;
    // The sets of one requirement are disjoint (one value per key), so
    // concatenating them has no duplicates.
    Some(best.into_iter().flat_map(|s| s.iter().copied()).collect())
}
