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
