//! Rollout planning for one bundle: which clusters move to the newest
//! deployment now and which wait. Pure: no client, no I/O.
//!
//! Fleet's semantics:
//! - Clusters are split into partitions: the bundle's `partitions` (a
//!   cluster joins the first whose criteria it matches; clusters matching
//!   none form a last partition, `unpartitioned`, where Fleet would never
//!   deploy them), or, with no partitions and at least 200 clusters, chunks
//!   of `autoPartitionSize` (default 25%); otherwise one partition, `All`.
//! - At most `maxNew` (default 50) BundleDeployments are created per pass;
//!   the caller runs another pass for the rest.
//! - A cluster moves to the staged deployment while the bundle has fewer
//!   than `maxUnavailable` (default 100%) unavailable clusters and its
//!   partition fewer than its own `maxUnavailable`. A cluster that is
//!   already unavailable may always move.
//! - Partitions are visited in order; once more than
//!   `maxUnavailablePartitions` (default 0) partitions have more unavailable
//!   clusters than they allow, later partitions wait.
//! - A paused bundle or cluster never moves: it stays at its deployment
//!   with the new one staged (OutOfSync).
//!
//! "Unavailable" is Fleet's: not yet applied at its deployment, or not ready.

use flotilla_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use flotilla_api::{BundleState, BundleSummary, PartitionStatus, RolloutStrategy};

pub const DEFAULT_MAX_NEW: u32 = 50;
pub const AUTO_PARTITION_THRESHOLD: usize = 200;

/// A cluster's BundleDeployment as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    pub deployment_id: String,
    pub applied_id: String,
    pub ready: bool,
}

impl Current {
    fn unavailable(&self) -> bool {
        self.applied_id != self.deployment_id || !self.ready
    }
}

#[derive(Clone, Debug)]
pub struct Target {
    /// A display name, used only in partition names.
    pub name: String,
    /// Index of the first `partitions` entry this cluster matches.
    pub partition: Option<usize>,
    pub paused: bool,
    pub desired_id: String,
    pub current: Option<Current>,
    /// The state to count in partition summaries.
    pub state: BundleState,
}

/// What to do with one cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// No BundleDeployment yet, and none is created in this pass.
    Wait,
    /// Keep (or create with) the current deployment; stage the desired one.
    Stage,
    /// Deploy the desired deployment.
    Promote,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutStatus {
    pub unavailable: u32,
    pub max_unavailable: u32,
    pub unavailable_partitions: u32,
    pub max_unavailable_partitions: u32,
    pub partitions: Vec<PartitionStatus>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// One step per target, in the order given.
    pub steps: Vec<Step>,
    pub status: RolloutStatus,
}

impl Plan {
    /// Whether some cluster is still held back (not paused) or has no
    /// BundleDeployment yet: the rollout needs another pass once
    /// deployments become ready.
    pub fn waiting(&self, targets: &[Target]) -> bool {
        self.steps
            .iter()
            .zip(targets)
            .any(|(s, t)| *s == Step::Wait || (*s == Step::Stage && !t.paused))
    }

    /// Whether this pass left clusters without a BundleDeployment because
    /// it reached `maxNew`: the caller runs another pass at once.
    pub fn deferred_creations(&self, targets: &[Target], max_new: u32) -> bool {
        let created = self
            .steps
            .iter()
            .zip(targets)
            .filter(|(s, t)| t.current.is_none() && **s != Step::Wait)
            .count();
        created as u32 >= max_new
            && self
                .steps
                .iter()
                .zip(targets)
                .any(|(s, t)| t.current.is_none() && *s == Step::Wait)
    }
}

/// Fleet's `limit`: the first value set, as a count or a percentage of
/// `count` (rounded down, at least 1), or `default`.
pub fn limit(
    count: usize,
    value: Option<&IntOrString>,
    default: &IntOrString,
    field: &str,
) -> Result<u32, String> {
    if count == 0 {
        return Ok(1);
    }
    match value.unwrap_or(default) {
        IntOrString::Int(n) if *n >= 0 => Ok(*n as u32),
        IntOrString::Int(n) => Err(format!("{field}: {n} must not be negative")),
        IntOrString::String(s) => {
            if let Ok(n) = s.parse::<u32>() {
                return Ok(n);
            }
            let pct = s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|p| p.is_finite())
                .ok_or_else(|| {
                    format!("{field}: {s:?} must be a number or a percentage such as \"25%\"")
                })?;
            if pct <= 0.0 {
                return Ok(1);
            }
            Ok(((count as f64 * pct) as u64 / 100).max(1) as u32)
        }
    }
}

fn pct(s: &str) -> IntOrString {
    IntOrString::String(s.to_owned())
}

/// Checks the strategy's values without planning anything.
pub fn validate(rollout: &RolloutStrategy) -> Result<(), String> {
    let probe = 1000;
    limit(
        probe,
        rollout.max_unavailable.as_ref(),
        &pct("100%"),
        "rolloutStrategy.maxUnavailable",
    )?;
    limit(
        probe,
        rollout.max_unavailable_partitions.as_ref(),
        &IntOrString::Int(0),
        "rolloutStrategy.maxUnavailablePartitions",
    )?;
    limit(
        probe,
        rollout.auto_partition_size.as_ref(),
        &pct("25%"),
        "rolloutStrategy.autoPartitionSize",
    )?;
    for (i, p) in rollout.partitions.iter().enumerate() {
        limit(
            probe,
            p.max_unavailable.as_ref(),
            &pct("100%"),
            &format!("rolloutStrategy.partitions[{i}].maxUnavailable"),
        )?;
    }
    Ok(())
}

struct Partition {
    name: String,
    members: Vec<usize>,
    max_unavailable: u32,
}

fn partitions(rollout: &RolloutStrategy, targets: &[Target]) -> Result<Vec<Partition>, String> {
    let global = rollout.max_unavailable.as_ref();
    let hundred = pct("100%");
    let mut out = Vec::new();
    if !rollout.partitions.is_empty() {
        for (i, def) in rollout.partitions.iter().enumerate() {
            let members: Vec<usize> = (0..targets.len())
                .filter(|&t| targets[t].partition == Some(i))
                .collect();
            let max = limit(
                members.len(),
                def.max_unavailable.as_ref().or(global),
                &hundred,
                &format!("rolloutStrategy.partitions[{i}].maxUnavailable"),
            )?;
            out.push(Partition {
                name: def.name.clone().unwrap_or_else(|| format!("partition-{i}")),
                members,
                max_unavailable: max,
            });
        }
        let rest: Vec<usize> = (0..targets.len())
            .filter(|&t| targets[t].partition.is_none())
            .collect();
        if !rest.is_empty() {
            let max = limit(
                rest.len(),
                global,
                &hundred,
                "rolloutStrategy.maxUnavailable",
            )?;
            out.push(Partition {
                name: "unpartitioned".into(),
                members: rest,
                max_unavailable: max,
            });
        }
        return Ok(out);
    }
    let auto_disabled = matches!(rollout.auto_partition_size, Some(IntOrString::Int(n)) if n <= 0);
    if auto_disabled || targets.len() < AUTO_PARTITION_THRESHOLD {
        let max = limit(
            targets.len(),
            global,
            &hundred,
            "rolloutStrategy.maxUnavailable",
        )?;
        out.push(Partition {
            name: "All".into(),
            members: (0..targets.len()).collect(),
            max_unavailable: max,
        });
        return Ok(out);
    }
    let size = limit(
        targets.len(),
        rollout.auto_partition_size.as_ref(),
        &pct("25%"),
        "rolloutStrategy.autoPartitionSize",
    )?
    .max(1) as usize;
    let mut start = 0;
    while start < targets.len() {
        let end = (start + size).min(targets.len());
        let max = limit(
            end - start,
            global,
            &hundred,
            "rolloutStrategy.maxUnavailable",
        )?;
        out.push(Partition {
            name: format!("Partition {start} - {end}"),
            members: (start..end).collect(),
            max_unavailable: max,
        });
        start = end;
    }
    Ok(out)
}

/// Plans one pass. `targets` must come in a stable order (the caller sorts
/// them by cluster), so that the same inputs always give the same plan.
pub fn plan(rollout: &RolloutStrategy, targets: &[Target]) -> Result<Plan, String> {
    let max_new = rollout.max_new.unwrap_or(DEFAULT_MAX_NEW);
    let parts = partitions(rollout, targets)?;
    let mut status = RolloutStatus {
        max_unavailable: limit(
            targets.len(),
            rollout.max_unavailable.as_ref(),
            &pct("100%"),
            "rolloutStrategy.maxUnavailable",
        )?,
        max_unavailable_partitions: limit(
            parts.len(),
            rollout.max_unavailable_partitions.as_ref(),
            &IntOrString::Int(0),
            "rolloutStrategy.maxUnavailablePartitions",
        )?,
        ..Default::default()
    };
    // What each target will be after this pass.
    let mut next: Vec<Option<Current>> = targets.iter().map(|t| t.current.clone()).collect();
    status.unavailable = next.iter().flatten().filter(|c| c.unavailable()).count() as u32;
    let mut steps = vec![Step::Wait; targets.len()];
    let mut created = 0u32;
    let mut stopped = false;

    for part in &parts {
        let mut part_status = PartitionStatus {
            name: part.name.clone(),
            count: part.members.len() as u32,
            max_unavailable: part.max_unavailable,
            ..Default::default()
        };
        if stopped {
            // Held back: existing deployments see the new one staged.
            for &t in &part.members {
                if let Some(cur) = &next[t] {
                    steps[t] = if cur.deployment_id == targets[t].desired_id {
                        Step::Promote
                    } else {
                        Step::Stage
                    };
                }
            }
        } else {
            let mut part_unavailable = part
                .members
                .iter()
                .filter(|&&t| next[t].as_ref().is_some_and(Current::unavailable))
                .count() as u32;
            for &t in &part.members {
                if next[t].is_none() {
                    if created >= max_new {
                        continue;
                    }
                    created += 1;
                    // A new deployment: unavailable until applied.
                    next[t] = Some(Current {
                        deployment_id: String::new(),
                        applied_id: String::new(),
                        ready: false,
                    });
                }
                steps[t] = Step::Stage;
                let target = &targets[t];
                let cur = next[t].as_mut().expect("staged above");
                if target.paused || cur.deployment_id == target.desired_id {
                    if cur.deployment_id == target.desired_id {
                        steps[t] = Step::Promote;
                    }
                    continue;
                }
                let was_unavailable = cur.unavailable();
                let budget = (status.unavailable < status.max_unavailable
                    && part_unavailable < part.max_unavailable)
                    || was_unavailable;
                if budget {
                    if !was_unavailable {
                        status.unavailable += 1;
                        part_unavailable += 1;
                    }
                    cur.deployment_id = target.desired_id.clone();
                    cur.ready = cur.ready && cur.applied_id == cur.deployment_id;
                    steps[t] = Step::Promote;
                }
            }
        }
        part_status.unavailable = part
            .members
            .iter()
            .filter(|&&t| next[t].as_ref().is_some_and(Current::unavailable))
            .count() as u32;
        let mut summary = BundleSummary::default();
        for &t in &part.members {
            let state = match steps[t] {
                Step::Wait => BundleState::Pending,
                _ => targets[t].state,
            };
            summary.add(state, &targets[t].name, "");
        }
        part_status.summary = summary;
        if !stopped && part_status.unavailable > part_status.max_unavailable {
            status.unavailable_partitions += 1;
        }
        if status.unavailable_partitions > status.max_unavailable_partitions {
            stopped = true;
        }
        status.partitions.push(part_status);
    }
    Ok(Plan { steps, status })
}

#[cfg(test)]
mod tests;
