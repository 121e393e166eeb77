//! BundleDeployment: one bundle on one cluster, in the cluster's namespace.

use crate::options::{BundleDeploymentOptions, BundleRef, CorrectDrift};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many entries in `nonReadyStatus` and `modifiedStatus`.
pub const MAX_RESOURCE_STATUSES: usize = 10;

/// What the agent of one cluster should deploy. `deploymentID` changes
/// exactly when the content or this cluster's options change.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "BundleDeployment",
    namespaced,
    status = "BundleDeploymentStatus",
    category = "flotilla",
    doc = "One bundle on one cluster: what that cluster's agent applies, and how it went.",
    crates(kube_core = "::kube_core"),
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".metadata.labels.flotilla\\.dev/cluster"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.display.state"}"#,
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Deployment","type":"string","priority":1,"jsonPath":".spec.deploymentID"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.display.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BundleDeploymentSpec {
    /// The deployment the agent must apply: `s-<content sha256>:<options hash>`.
    #[serde(
        default,
        rename = "deploymentID",
        skip_serializing_if = "String::is_empty"
    )]
    pub deployment_id: String,
    /// The Content holding the manifests of `deploymentID`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content_id: String,
    /// This cluster's options, customizations already applied.
    #[serde(default)]
    pub options: BundleDeploymentOptions,
    /// The newest deployment, which a rollout or a pause may hold back.
    #[serde(
        default,
        rename = "stagedDeploymentID",
        skip_serializing_if = "String::is_empty"
    )]
    pub staged_deployment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_options: Option<BundleDeploymentOptions>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<BundleRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_drift: Option<CorrectDrift>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleDeploymentStatus {
    /// The deployment the agent last applied successfully.
    #[serde(
        default,
        rename = "appliedDeploymentID",
        skip_serializing_if = "String::is_empty"
    )]
    pub applied_deployment_id: String,
    /// Every applied resource is ready.
    #[serde(default)]
    pub ready: bool,
    /// No applied resource drifted.
    #[serde(default)]
    pub non_modified: bool,
    /// Bounded by [`MAX_RESOURCE_STATUSES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_ready_status: Vec<NonReadyStatus>,
    /// Bounded by [`MAX_RESOURCE_STATUSES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modified_status: Vec<ModifiedStatus>,
    #[serde(default)]
    pub display: BundleDeploymentDisplay,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleDeploymentDisplay {
    /// A [`crate::BundleState`] name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl BundleDeployment {
    /// This deployment's state, as Fleet ranks it:
    /// - not yet at its `deploymentID`: ErrApplied when the agent reports
    ///   the `Deployed` condition False, WaitApplied otherwise;
    /// - applied but not ready: NotReady;
    /// - a newer deployment is staged but held back: OutOfSync when the
    ///   bundle or cluster is paused, Pending when a rollout holds it;
    /// - drifted: Modified;
    /// - otherwise Ready.
    pub fn state(&self) -> crate::BundleState {
        use crate::BundleState;
        let (spec, status) = (&self.spec, self.status.as_ref());
        let applied = status.map(|s| s.applied_deployment_id.as_str());
        let held_back = !spec.staged_deployment_id.is_empty()
            && spec.staged_deployment_id != spec.deployment_id;
        let held = if spec.paused {
            BundleState::OutOfSync
        } else {
            BundleState::Pending
        };
        if spec.deployment_id.is_empty() {
            return held;
        }
        if applied != Some(spec.deployment_id.as_str()) {
            let failed = status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == crate::condition::DEPLOYED && c.status == "False")
            });
            return if failed {
                BundleState::ErrApplied
            } else {
                BundleState::WaitApplied
            };
        }
        let status = status.expect("applied implies a status");
        if !status.ready {
            BundleState::NotReady
        } else if held_back {
            held
        } else if !status.non_modified {
            BundleState::Modified
        } else {
            BundleState::Ready
        }
    }

    /// The message to show next to a non-ready state.
    pub fn state_message(&self) -> String {
        let Some(status) = &self.status else {
            return String::new();
        };
        if !status.display.message.is_empty() {
            return status.display.message.clone();
        }
        if let Some(c) = status
            .conditions
            .iter()
            .find(|c| c.status == "False" && !c.message.is_empty())
        {
            return c.message.clone();
        }
        match status.non_ready_status.first() {
            Some(r) => format!("{} {} not ready: {}", r.kind, r.name, r.message),
            None => String::new(),
        }
    }
}

/// A resource that is applied but not ready.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NonReadyStatus {
    pub kind: String,
    pub api_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A resource that differs from what was applied: missing, extra or patched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModifiedStatus {
    pub kind: String,
    pub api_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
    /// A short description of what differs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub patch: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BundleState::{self, *};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn bd(
        id: &str,
        staged: &str,
        paused: bool,
        status: Option<(&str, bool, bool, bool)>,
    ) -> BundleDeployment {
        let mut bd = BundleDeployment::new(
            "b",
            BundleDeploymentSpec {
                deployment_id: id.into(),
                staged_deployment_id: staged.into(),
                paused,
                ..Default::default()
            },
        );
        bd.status = status.map(
            |(applied, ready, non_modified, failed)| BundleDeploymentStatus {
                applied_deployment_id: applied.into(),
                ready,
                non_modified,
                conditions: if failed {
                    vec![Condition {
                        type_: "Deployed".into(),
                        status: "False".into(),
                        reason: "Error".into(),
                        message: "rejected".into(),
                        observed_generation: None,
                        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                    }]
                } else {
                    vec![]
                },
                ..Default::default()
            },
        );
        bd
    }

    #[test]
    fn state_table() {
        let table: [(BundleDeployment, BundleState); 10] = [
            (bd("a", "a", false, None), WaitApplied),
            (
                bd("a", "a", false, Some(("", false, false, false))),
                WaitApplied,
            ),
            (
                bd("a", "a", false, Some(("", false, false, true))),
                ErrApplied,
            ),
            (
                bd("a", "a", false, Some(("a", false, true, false))),
                NotReady,
            ),
            (bd("a", "b", false, Some(("a", true, true, false))), Pending),
            (
                bd("a", "b", true, Some(("a", true, true, false))),
                OutOfSync,
            ),
            (
                bd("a", "a", false, Some(("a", true, false, false))),
                Modified,
            ),
            (bd("a", "a", false, Some(("a", true, true, false))), Ready),
            (bd("", "b", true, None), OutOfSync),
            (bd("", "b", false, None), Pending),
        ];
        for (i, (bd, want)) in table.iter().enumerate() {
            assert_eq!(bd.state(), *want, "row {i}");
        }
    }

    #[test]
    fn state_message_prefers_display_then_failed_condition() {
        let failed = bd("a", "a", false, Some(("", false, false, true)));
        assert_eq!(failed.state_message(), "rejected");
        assert_eq!(bd("a", "a", false, None).state_message(), "");
    }
}
