//! kstatus-style conditions: Ready, Reconciling and Stalled.
//!
//! `lastTransitionTime` moves only when a condition's status flips, so
//! re-asserting the same condition produces byte-identical status and no
//! write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The object is in its desired state.
pub const READY: &str = "Ready";
/// A controller is working towards the desired state.
pub const RECONCILING: &str = "Reconciling";
/// Progress is blocked until the user changes something.
pub const STALLED: &str = "Stalled";
/// On a BundleDeployment, set by the agent: False with the API's message
/// when a resource was rejected (the ErrApplied state).
pub const DEPLOYED: &str = "Deployed";

/// On a GitRepo or HelmOp, set by its own controller: True when the latest
/// source (commit, chart) compiled into Bundles; Unknown while fetching or
/// retrying a failure that may pass; False when stalled until the user
/// changes something. The status controller derives Ready, Reconciling and
/// Stalled from it, the Bundles and the clusters.
pub const SYNCED: &str = "Synced";

/// Sets a condition with any status (`True`, `False`, `Unknown`), keeping
/// its transition time when the status did not change.
pub fn set_synced(
    conditions: &mut Vec<Condition>,
    status: &str,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: &Time,
) -> bool {
    set_status(
        conditions,
        SYNCED,
        status,
        reason,
        message,
        observed_generation,
        now,
    )
}

/// A condition to assert; [`set_condition`] fills in the transition time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: &'a str,
    pub observed_generation: Option<i64>,
}

/// Sets a condition in `conditions`, keeping its transition time when the
/// status did not change. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate<'_>,
    now: &Time,
) -> bool {
    let status = if update.status { "True" } else { "False" };
    set_status(
        conditions,
        update.type_,
        status,
        update.reason,
        update.message,
        update.observed_generation,
        now,
    )
}

fn set_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: &Time,
) -> bool {
    let message = crate::summary::truncate(message, 1024);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            let before = existing.clone();
            if existing.status != status {
                existing.last_transition_time = now.clone();
                existing.status = status.to_owned();
            }
            existing.reason = reason.to_owned();
            existing.message = message;
            existing.observed_generation = observed_generation;
            *existing != before
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation,
                last_transition_time: now.clone(),
            });
            true
        }
    }
}

/// Removes a condition. Returns whether it was there.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

/// The condition of this type, if present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn ready(status: bool, message: &str) -> ConditionUpdate<'_> {
        ConditionUpdate {
            type_: READY,
            status,
            reason: "Test",
            message,
            observed_generation: Some(1),
        }
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut conds = Vec::new();
        assert!(set_condition(&mut conds, ready(false, "waiting"), &at(10)));
        assert!(
            !set_condition(&mut conds, ready(false, "waiting"), &at(20)),
            "same again: no change"
        );
        assert_eq!(conds[0].last_transition_time, at(10));
        assert!(set_condition(
            &mut conds,
            ready(false, "still waiting"),
            &at(30)
        ));
        assert_eq!(
            conds[0].last_transition_time,
            at(10),
            "message only: no transition"
        );
        assert!(set_condition(&mut conds, ready(true, "done"), &at(40)));
        assert_eq!(conds[0].last_transition_time, at(40));
        assert!(is_true(&conds, READY));
        assert!(remove_condition(&mut conds, READY));
        assert!(!remove_condition(&mut conds, READY));
    }
}
