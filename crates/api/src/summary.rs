//! Per-state counts with a bounded list of what is not ready.
//!
//! The same summary sits in Bundle, GitRepo, Cluster and ClusterGroup status.
//! It holds no timestamps and its list is sorted and bounded, so the same
//! inputs always serialize to the same bytes: the status controller can
//! compare before writing, and a summary never grows with the fleet.

use crate::state::BundleState;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many entries are kept in [`BundleSummary::non_ready_resources`].
pub const MAX_NON_READY: usize = 10;
/// Messages longer than this are cut, so one chatty error cannot bloat status.
pub const MAX_MESSAGE_LEN: usize = 512;

/// Counts of BundleDeployments per state, and the worst few of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleSummary {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_ready: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wait_applied: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub err_applied: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub out_of_sync: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub modified: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending: u32,
    /// BundleDeployments that are Ready.
    #[serde(default)]
    pub ready: u32,
    /// BundleDeployments that should be Ready: every one counted here.
    #[serde(default)]
    pub desired_ready: u32,
    /// The worst non-ready BundleDeployments, at most [`MAX_NON_READY`],
    /// worst state first, then by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_ready_resources: Vec<NonReadyResource>,
}

/// One BundleDeployment that is not Ready, named by the summary's owner (for
/// a Bundle summary the cluster, for a Cluster summary the bundle).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NonReadyResource {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_state: Option<BundleState>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl BundleSummary {
    /// Counts one BundleDeployment. Non-ready ones may enter the bounded list;
    /// the result does not depend on the order of the calls.
    pub fn add(&mut self, state: BundleState, name: &str, message: &str) {
        *self.count_mut(state) += 1;
        self.desired_ready += 1;
        if state != BundleState::Ready {
            self.offer(NonReadyResource {
                name: name.to_owned(),
                bundle_state: Some(state),
                message: truncate(message, MAX_MESSAGE_LEN),
            });
        }
    }

    /// Adds another summary's counts and non-ready entries into this one.
    pub fn merge(&mut self, other: &BundleSummary) {
        for state in BundleState::ALL_WORST_FIRST {
            *self.count_mut(state) += other.count(state);
        }
        self.desired_ready += other.desired_ready;
        for item in &other.non_ready_resources {
            self.offer(item.clone());
        }
    }

    /// How many BundleDeployments are in `state`.
    pub fn count(&self, state: BundleState) -> u32 {
        match state {
            BundleState::Ready => self.ready,
            BundleState::NotReady => self.not_ready,
            BundleState::WaitApplied => self.wait_applied,
            BundleState::ErrApplied => self.err_applied,
            BundleState::OutOfSync => self.out_of_sync,
            BundleState::Pending => self.pending,
            BundleState::Modified => self.modified,
        }
    }

    fn count_mut(&mut self, state: BundleState) -> &mut u32 {
        match state {
            BundleState::Ready => &mut self.ready,
            BundleState::NotReady => &mut self.not_ready,
            BundleState::WaitApplied => &mut self.wait_applied,
            BundleState::ErrApplied => &mut self.err_applied,
            BundleState::OutOfSync => &mut self.out_of_sync,
            BundleState::Pending => &mut self.pending,
            BundleState::Modified => &mut self.modified,
        }
    }

    /// The worst state counted, or `None` for an empty summary.
    pub fn worst_state(&self) -> Option<BundleState> {
        BundleState::ALL_WORST_FIRST
            .into_iter()
            .find(|s| self.count(*s) > 0)
    }

    /// "ready/desired", as printer columns show it.
    pub fn ready_display(&self) -> String {
        format!("{}/{}", self.ready, self.desired_ready)
    }

    /// Keeps the list sorted worst-first and bounded.
    fn offer(&mut self, item: NonReadyResource) {
        let key = |r: &NonReadyResource| {
            (
                std::cmp::Reverse(r.bundle_state.map(BundleState::rank).unwrap_or(0)),
                r.name.clone(),
            )
        };
        let pos = self
            .non_ready_resources
            .partition_point(|r| key(r) <= key(&item));
        if pos < MAX_NON_READY {
            self.non_ready_resources.insert(pos, item);
            self.non_ready_resources.truncate(MAX_NON_READY);
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use BundleState::*;

    #[test]
    fn counts_every_state_and_desired() {
        let mut s = BundleSummary::default();
        let items = [
            (Ready, "a"),
            (Ready, "b"),
            (NotReady, "c"),
            (ErrApplied, "d"),
            (Pending, "e"),
            (Modified, "f"),
            (OutOfSync, "g"),
            (WaitApplied, "h"),
        ];
        for (state, name) in items {
            s.add(state, name, "");
        }
        assert_eq!(s.ready, 2);
        assert_eq!(s.desired_ready, 8);
        for state in [
            NotReady,
            ErrApplied,
            Pending,
            Modified,
            OutOfSync,
            WaitApplied,
        ] {
            assert_eq!(s.count(state), 1, "{state}");
        }
        assert_eq!(s.worst_state(), Some(ErrApplied));
        assert_eq!(s.ready_display(), "2/8");
        let names: Vec<&str> = s
            .non_ready_resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["d", "h", "c", "g", "f", "e"], "worst state first");
    }

    #[test]
    fn list_is_bounded_and_independent_of_order() {
        let mut forward = BundleSummary::default();
        let mut backward = BundleSummary::default();
        let names: Vec<String> = (0..100).map(|i| format!("cluster-{i:03}")).collect();
        for (i, n) in names.iter().enumerate() {
            let state = if i % 7 == 0 { ErrApplied } else { NotReady };
            forward.add(state, n, "boom");
        }
        for (i, n) in names.iter().enumerate().rev() {
            let state = if i % 7 == 0 { ErrApplied } else { NotReady };
            backward.add(state, n, "boom");
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.non_ready_resources.len(), MAX_NON_READY);
        assert_eq!(forward.not_ready + forward.err_applied, 100);
        // 0, 7, ..., 63 are ErrApplied: the ten worst are exactly those.
        assert!(
            forward
                .non_ready_resources
                .iter()
                .all(|r| r.bundle_state == Some(ErrApplied))
        );
        assert_eq!(forward.non_ready_resources[0].name, "cluster-000");
    }

    #[test]
    fn merge_equals_adding_everything_to_one() {
        let mut a = BundleSummary::default();
        let mut b = BundleSummary::default();
        let mut all = BundleSummary::default();
        for i in 0..30 {
            let state = BundleState::ALL_WORST_FIRST[i % 7];
            let name = format!("n{i}");
            if i % 2 == 0 { &mut a } else { &mut b }.add(state, &name, "m");
            all.add(state, &name, "m");
        }
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let mut s = BundleSummary::default();
        s.add(ErrApplied, "x", &long);
        let msg = &s.non_ready_resources[0].message;
        assert!(msg.len() <= MAX_MESSAGE_LEN, "{}", msg.len());
        assert!(msg.ends_with("..."));
        assert_eq!(truncate("short", 10), "short");
    }

    #[test]
    fn empty_summary_serializes_small() {
        let json = serde_json::to_value(BundleSummary::default()).unwrap();
        assert_eq!(json, serde_json::json!({"ready": 0, "desiredReady": 0}));
    }
}
