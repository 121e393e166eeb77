//! A bundle's targets, restrictions and customizations, compiled, and the
//! verdict for one cluster.
//!
//! The rules, as in Fleet:
//! 1. When `targetRestrictions` is set, the cluster must match one of them.
//! 2. The first entry of `targets` that matches decides; none means no.
//!    If that entry says `doNotDeploy`, no.
//! 3. Customizations: the first match (or, in `AllMatches` mode, every
//!    match in order). A chosen customization with `doNotDeploy` means no.

use crate::TargetError;
use crate::criteria::{ClusterFacts, CompiledCriteria, Criterion};
use flotilla_api::{BundleSpec, TargetCriteria, TargetCustomizationMode};
use std::hash::{Hash, Hasher};

#[derive(Clone, Debug)]
struct Entry {
    name: Option<String>,
    criteria: CompiledCriteria,
    do_not_deploy: bool,
    /// Identifies a customization's content, so a pair whose customization
    /// changed can be told from one whose did not.
    fingerprint: u64,
}

/// A bundle's targeting, validated once per Bundle change.
#[derive(Clone, Debug)]
pub struct CompiledBundle {
    targets: Vec<Entry>,
    restrictions: Vec<Entry>,
    customizations: Vec<Entry>,
    mode: TargetCustomizationMode,
    source_fingerprint: u64,
}

/// The outcome for a targeted cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Verdict {
    /// Index of the `targets` entry that matched.
    pub target: usize,
    /// Equal for two clusters exactly when the same customization content
    /// applies to both.
    pub customization: u64,
}

impl CompiledBundle {
    pub fn compile(spec: &BundleSpec) -> Result<Self, TargetError> {
        Ok(CompiledBundle {
            targets: compile_entries(
                "targets",
                spec.targets
                    .iter()
                    .map(|t| (&t.name, &t.criteria, t.do_not_deploy, 0)),
            )?,
            restrictions: compile_entries(
                "targetRestrictions",
                spec.target_restrictions
                    .iter()
                    .map(|t| (&t.name, &t.criteria, false, 0)),
            )?,
            customizations: compile_entries(
                "targetCustomizations",
                spec.target_customizations
                    .iter()
                    .map(|c| (&c.name, &c.criteria, c.do_not_deploy, fingerprint_json(c))),
            )?,
            mode: spec.target_customization_mode,
            source_fingerprint: targeting_fingerprint(spec),
        })
    }

    /// Changes exactly when a field that targeting reads changes, so that
    /// status-only and content-only Bundle updates cost nothing.
    pub fn source_fingerprint(&self) -> u64 {
        self.source_fingerprint
    }

    /// Whether any entry looks at cluster groups.
    pub fn uses_groups(&self) -> bool {
        self.targets
            .iter()
            .chain(&self.restrictions)
            .chain(&self.customizations)
            .any(|e| e.criteria.has_group_criteria())
    }

    /// The criteria of each target entry, for narrowing the candidates.
    pub fn target_criteria(&self) -> impl Iterator<Item = &CompiledCriteria> {
        self.targets.iter().map(|e| &e.criteria)
    }

    /// Whether the bundle goes to this cluster, and with which customization.
    pub fn evaluate(&self, cluster: &dyn ClusterFacts) -> Option<Verdict> {
        if !self.restrictions.is_empty()
            && !self
                .restrictions
                .iter()
                .any(|r| r.criteria.matches(cluster))
        {
            return None;
        }
        let target = self
            .targets
            .iter()
            .position(|t| t.criteria.matches(cluster))?;
        if self.targets[target].do_not_deploy {
            return None;
        }
        let mut customization = FNV_OFFSET;
        for i in self.matching_customizations(cluster) {
            let c = &self.customizations[i];
            if c.do_not_deploy {
                return None;
            }
            customization = (customization ^ c.fingerprint).wrapping_mul(FNV_PRIME);
        }
        Some(Verdict {
            target,
            customization,
        })
    }

    /// Indexes of the customizations that apply to this cluster, in the
    /// order they are merged.
    pub fn matching_customizations(&self, cluster: &dyn ClusterFacts) -> Vec<usize> {
        let mut matching = self
            .customizations
            .iter()
            .enumerate()
            .filter(|(_, c)| c.criteria.matches(cluster))
            .map(|(i, _)| i);
        match self.mode {
            TargetCustomizationMode::FirstMatch => matching.next().into_iter().collect(),
            TargetCustomizationMode::AllMatches => matching.collect(),
        }
    }

    /// Why the bundle does or does not go to this cluster.
    pub fn explain(&self, cluster: &dyn ClusterFacts) -> Explanation {
        let outcome = |list: &[Entry], i: usize| EntryOutcome {
            index: i,
            name: list[i].name.clone(),
            mismatch: list[i].criteria.check(cluster).err(),
        };
        let restrictions: Vec<EntryOutcome> = (0..self.restrictions.len())
            .map(|i| outcome(&self.restrictions, i))
            .collect();
        let mut targets = Vec::new();
        for i in 0..self.targets.len() {
            let o = outcome(&self.targets, i);
            let matched = o.mismatch.is_none();
            targets.push(o);
            if matched {
                break;
            }
        }
        let customizations: Vec<EntryOutcome> = (0..self.customizations.len())
            .map(|i| outcome(&self.customizations, i))
            .collect();
        let chosen = self.matching_customizations(cluster);
        let decision =
            if !restrictions.is_empty() && restrictions.iter().all(|r| r.mismatch.is_some()) {
                Decision::Restricted
            } else {
                match targets.last() {
                    Some(t) if t.mismatch.is_none() => {
                        if self.targets[t.index].do_not_deploy {
                            Decision::TargetSaysDoNotDeploy(t.index)
                        } else if let Some(&i) = chosen
                            .iter()
                            .find(|&&i| self.customizations[i].do_not_deploy)
                        {
                            Decision::CustomizationSaysDoNotDeploy(i)
                        } else {
                            Decision::Deploy {
                                target: t.index,
                                customizations: chosen.clone(),
                            }
                        }
                    }
                    _ => Decision::NoTargetMatched,
                }
            };
        Explanation {
            restrictions,
            targets,
            customizations,
            decision,
        }
    }
}

/// One entry's result for one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryOutcome {
    pub index: usize,
    pub name: Option<String>,
    /// `None` when the entry matched.
    pub mismatch: Option<Criterion>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Deploy {
        target: usize,
        customizations: Vec<usize>,
    },
    /// Restrictions are set and the cluster matches none of them.
    Restricted,
    NoTargetMatched,
    TargetSaysDoNotDeploy(usize),
    CustomizationSaysDoNotDeploy(usize),
}

/// The whole reasoning for one (bundle, cluster) pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub restrictions: Vec<EntryOutcome>,
    /// Evaluated in order, up to and including the first match.
    pub targets: Vec<EntryOutcome>,
    pub customizations: Vec<EntryOutcome>,
    pub decision: Decision,
}

impl Explanation {
    pub fn deploys(&self) -> bool {
        matches!(self.decision, Decision::Deploy { .. })
    }
}

/// Compiles a list of entries; errors name the list and the index.
fn compile_entries<'a>(
    list: &str,
    entries: impl Iterator<Item = (&'a Option<String>, &'a TargetCriteria, bool, u64)>,
) -> Result<Vec<Entry>, TargetError> {
    entries
        .enumerate()
        .map(|(i, (name, criteria, do_not_deploy, fingerprint))| {
            Ok(Entry {
                name: name.clone(),
                criteria: CompiledCriteria::compile(criteria, &format!("{list}[{i}]"))?,
                do_not_deploy,
                fingerprint,
            })
        })
        .collect()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fingerprint_json<T: flotilla_api::serde::Serialize>(value: &T) -> u64 {
    let bytes = flotilla_api::serde_json::to_vec(value).unwrap_or_default();
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn targeting_fingerprint(spec: &BundleSpec) -> u64 {
    fingerprint_json(&(
        &spec.targets,
        &spec.target_restrictions,
        &spec.target_customizations,
        spec.target_customization_mode,
    ))
}
