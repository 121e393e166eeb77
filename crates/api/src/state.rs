//! The state of one bundle on one cluster, ranked as Fleet ranks it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// Where one BundleDeployment stands. Summaries report the worst state, so
/// the order matters: [`BundleState::rank`] gives it, worst highest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BundleState {
    /// Deployed, and every resource is ready.
    Ready,
    /// Deployed, but some resources are not ready yet.
    NotReady,
    /// The agent has the BundleDeployment but has not applied it yet.
    WaitApplied,
    /// The agent tried to apply it and the downstream cluster refused.
    ErrApplied,
    /// The desired deployment differs from the applied one (for example, the
    /// bundle is paused or the agent has not caught up).
    OutOfSync,
    /// Held back by the controller, for example by the rollout strategy.
    Pending,
    /// Deployed and ready, but a resource drifted from what was applied.
    Modified,
}

impl BundleState {
    /// Every state, worst first.
    pub const ALL_WORST_FIRST: [BundleState; 7] = [
        BundleState::ErrApplied,
        BundleState::WaitApplied,
        BundleState::NotReady,
        BundleState::OutOfSync,
        BundleState::Modified,
        BundleState::Pending,
        BundleState::Ready,
    ];

    /// Higher is worse: ErrApplied > WaitApplied > NotReady > OutOfSync >
    /// Modified > Pending > Ready.
    pub const fn rank(self) -> u8 {
        match self {
            BundleState::ErrApplied => 7,
            BundleState::WaitApplied => 6,
            BundleState::NotReady => 5,
            BundleState::OutOfSync => 4,
            BundleState::Modified => 3,
            BundleState::Pending => 2,
            BundleState::Ready => 1,
        }
    }

    /// The state a name (`Ready`, `ErrApplied`, ...) spells.
    pub fn parse(s: &str) -> Option<BundleState> {
        Self::ALL_WORST_FIRST
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    /// The worse of two states.
    pub fn worst(self, other: BundleState) -> BundleState {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    /// The name used on the wire and in printer columns.
    pub const fn as_str(self) -> &'static str {
        match self {
            BundleState::Ready => "Ready",
            BundleState::NotReady => "NotReady",
            BundleState::WaitApplied => "WaitApplied",
            BundleState::ErrApplied => "ErrApplied",
            BundleState::OutOfSync => "OutOfSync",
            BundleState::Pending => "Pending",
            BundleState::Modified => "Modified",
        }
    }
}

/// States order by rank, so `max()` over states is the worst one.
impl Ord for BundleState {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for BundleState {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for BundleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::BundleState::{self, *};

    #[test]
    fn ranking_table() {
        // (a, b, the worse of the two)
        let table = [
            (ErrApplied, WaitApplied, ErrApplied),
            (WaitApplied, NotReady, WaitApplied),
            (NotReady, OutOfSync, NotReady),
            (OutOfSync, Modified, OutOfSync),
            (Modified, Pending, Modified),
            (Pending, Ready, Pending),
            (Ready, ErrApplied, ErrApplied),
            (Ready, Ready, Ready),
        ];
        for (a, b, worse) in table {
            assert_eq!(a.worst(b), worse, "{a} vs {b}");
            assert_eq!(b.worst(a), worse, "{b} vs {a}");
            assert_eq!(a.max(b), worse, "Ord agrees for {a} vs {b}");
        }
    }

    #[test]
    fn all_worst_first_is_strictly_descending() {
        let ranks: Vec<u8> = BundleState::ALL_WORST_FIRST
            .iter()
            .map(|s| s.rank())
            .collect();
        assert!(ranks.windows(2).all(|w| w[0] > w[1]), "{ranks:?}");
    }

    #[test]
    fn wire_names_round_trip() {
        for state in BundleState::ALL_WORST_FIRST {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            let back: BundleState = serde_json::from_str(&json).unwrap();
            assert_eq!(back, state);
        }
    }
}
