//! Bundle: one deployable unit compiled from one path of one commit.

use crate::options::{BundleDeploymentOptions, BundleRef, RolloutStrategy};
use crate::summary::BundleSummary;
use crate::target::{BundleTarget, GitTarget, TargetCustomization, TargetCustomizationMode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to deploy (a Content, by sha256) and where (targets, restrictions and
/// customizations). The fan-out controller turns it into BundleDeployments.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Bundle",
    namespaced,
    status = "BundleStatus",
    category = "flotilla",
    doc = "One deployable unit compiled from one path of one commit, and the clusters it targets.",
    crates(kube_core = "::kube_core"),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.display.readyClusters"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.display.state"}"#,
    printcolumn = r#"{"name":"Content","type":"string","priority":1,"jsonPath":".spec.contentId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BundleSpec {
    #[serde(flatten)]
    pub options: BundleDeploymentOptions,
    /// The Content holding the manifests: `s-<sha256>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content_id: String,
    /// Keep deploying what is deployed; new content shows as OutOfSync.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_strategy: Option<RolloutStrategy>,
    /// Clusters to deploy to; the first matching entry decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<BundleTarget>,
    /// An allow-list: when set, a cluster must also match one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_restrictions: Vec<GitTarget>,
    /// Per-cluster overrides of the options above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_customizations: Vec<TargetCustomization>,
    #[serde(default)]
    pub target_customization_mode: TargetCustomizationMode,
    /// Bundles that must be Ready on a cluster before this one is applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<BundleRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleStatus {
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub summary: BundleSummary,
    #[serde(default)]
    pub display: BundleDisplay,
    /// BundleDeployments that are not ready or not yet at the new deployment.
    #[serde(default)]
    pub unavailable: u32,
    #[serde(default)]
    pub unavailable_partitions: u32,
    #[serde(default)]
    pub max_unavailable: u32,
    #[serde(default)]
    pub max_unavailable_partitions: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionStatus>,
    /// kstatus conditions: Ready, Reconciling, Stalled (e.g. a bad selector).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleDisplay {
    /// "ready/desired" BundleDeployments.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ready_clusters: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub count: u32,
    #[serde(default)]
    pub max_unavailable: u32,
    #[serde(default)]
    pub unavailable: u32,
    #[serde(default)]
    pub summary: BundleSummary,
}
