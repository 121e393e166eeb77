//! HelmOp: a Helm chart deployed without Git, as Fleet's HelmOp. Its spec
//! is a Bundle's (the chart in `helm`, targets, customizations), plus how
//! the chart source is reached and how often a version range is resolved
//! again. The HelmOp controller resolves the chart, stores it in a Content
//! and writes one Bundle of the same name.

use crate::bundle::BundleSpec;
use crate::summary::BundleSummary;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Helm chart from a repository, an OCI registry or an archive URL,
/// deployed to the clusters its targets match.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "HelmOp",
    namespaced,
    status = "HelmOpStatus",
    category = "flotilla",
    doc = "A Helm chart deployed without Git: resolved from its repository, registry or URL, and deployed to the clusters its targets match.",
    crates(kube_core = "::kube_core"),
    printcolumn = r#"{"name":"Repo","type":"string","jsonPath":".status.display.repo"}"#,
    printcolumn = r#"{"name":"Chart","type":"string","jsonPath":".spec.helm.chart"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"BundleDeployments-Ready","type":"string","jsonPath":".status.display.readyClusters"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.display.state"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.display.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HelmOpSpec {
    /// The Bundle this HelmOp makes: `helm` names the chart (`repo` +
    /// `chart` + `version`, an `oci://` reference, or an archive URL);
    /// targets, customizations and options as on a Bundle. `contentId` is
    /// the controller's to set.
    #[serde(flatten)]
    pub bundle: BundleSpec,
    /// Labels of the Bundle (for `dependsOn` selectors).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How often a version range is resolved again, as a Go duration
    /// (`0` or unset: only when the HelmOp changes). Not used for an exact
    /// version or an archive URL, which cannot move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<String>,
    /// Secret with the chart source's credentials: `username` and
    /// `password` (or a token as `password`), `cacerts` (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_secret_name: Option<String>,
    #[serde(
        default,
        rename = "insecureSkipTLSVerify",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub insecure_skip_tls_verify: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmOpStatus {
    #[serde(default)]
    pub observed_generation: i64,
    /// The chart version deployed (resolved from `helm.version`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// `sha256:<hex>` of the chart archive deployed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default)]
    pub ready_clusters: u32,
    #[serde(default)]
    pub desired_ready_clusters: u32,
    #[serde(default)]
    pub summary: BundleSummary,
    #[serde(default)]
    pub display: HelmOpDisplay,
    /// kstatus conditions: Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmOpDisplay {
    /// The chart source as it may be shown: no userinfo, no query
    /// credentials.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repo: String,
    /// "ready/desired" clusters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ready_clusters: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
}
