//! Deployment options: what a Bundle says about how to deploy, which target
//! customizations may override per cluster.
//!
//! Field names are Fleet's, so a `fleet.yaml` maps onto them one to one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How to deploy a bundle on one cluster. A Bundle carries the defaults, a
/// target customization overrides them, and a BundleDeployment carries the
/// result for its cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleDeploymentOptions {
    /// Namespace for namespaced resources that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_namespace: Option<String>,
    /// Forces every namespaced resource into this namespace; cluster-scoped
    /// resources are refused when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<KustomizeOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmOptions>,
    /// Service account the agent impersonates downstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Bump to force a redeployment of unchanged content.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub force_sync_generation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yaml: Option<YamlOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<DiffOptions>,
    /// Keep the deployed resources when the bundle leaves the cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_resources: bool,
    /// Delete the bundle's CustomResourceDefinitions (and so every object
    /// of their kinds) when it leaves the cluster. Off, as in Fleet: CRDs
    /// stay.
    #[serde(
        default,
        rename = "deleteCRDResources",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub delete_crd_resources: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<IgnoreOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_drift: Option<CorrectDrift>,
    /// Labels added to namespaces the agent creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// Annotations added to namespaces the agent creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_annotations: Option<BTreeMap<String, String>>,
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KustomizeOptions {
    /// Directory holding the `kustomization.yaml`, relative to the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmOptions {
    /// A chart name in `repo`, a path inside the bundle, or an OCI reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// The Helm repository URL to fetch `chart` from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// Values passed to the chart. Customizations merge into these deeply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserve_unknown_object")]
    pub values: Option<serde_json::Value>,
    /// Values files inside the bundle, applied in order before `values`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Values read in the downstream cluster, when the chart is rendered
    /// there (merged over `values`, in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_from: Vec<ValuesFrom>,
    /// Templates rendered per cluster, each read as YAML and set as the
    /// top-level value of its key (over `values`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_values: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub take_ownership: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_history: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_jobs: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub atomic: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_pre_process: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_dns: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_schema_validation: bool,
    /// Use the chart's `charts/` directory as it is: its dependencies are
    /// not resolved when the bundle is compiled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_dependency_update: bool,
}

impl BundleDeploymentOptions {
    /// Empty strings (and a zero timeout) mean "unset", as Fleet reads
    /// them: `helm: {chart: "", repo: "", version: ""}` is no chart, and a
    /// customization's `namespace: ""` keeps the bundle's.
    pub fn normalize(&mut self) {
        fn unset(s: &mut Option<String>) {
            if s.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *s = None;
            }
        }
        unset(&mut self.default_namespace);
        unset(&mut self.namespace);
        unset(&mut self.service_account);
        if let Some(h) = self.helm.as_mut() {
            unset(&mut h.chart);
            unset(&mut h.repo);
            unset(&mut h.version);
            unset(&mut h.release_name);
            if h.timeout_seconds == Some(0) {
                h.timeout_seconds = None;
            }
        }
        if let Some(k) = self.kustomize.as_mut() {
            unset(&mut k.dir);
            if k.dir.is_none() {
                self.kustomize = None;
            }
        }
    }
}

/// One source of `helm.valuesFrom`: a key of a ConfigMap or a Secret in
/// the downstream cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValuesFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
}

/// `name`, `namespace` (default: the release's namespace) and `key`
/// (default: `values.yaml`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct YamlOptions {
    /// Names of folders under `overlays/` that replace or patch base files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overlays: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiffOptions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compare_patches: Vec<ComparePatch>,
}

/// Fields of matching resources that drift detection ignores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComparePatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<PatchOperation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_pointers: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchOperation {
    /// Usually `remove`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IgnoreOptions {
    /// Conditions (as key/value maps, e.g. `{type: Progressing}`) that do not
    /// make a resource non-ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorrectDrift {
    /// Re-apply resources that drifted from what was applied.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_fail_history: bool,
}

/// A bundle that must be Ready on the same cluster first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Selects bundles by their labels instead of by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The states that count as ready for this dependency (default: only
    /// Ready), as Fleet's `acceptedStates`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_states: Vec<String>,
}

/// How a bundle change rolls out across its clusters (Fleet semantics).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// Clusters that may be unavailable before the rollout pauses. Default 100%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Partitions that may be unavailable before the rollout pauses. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable_partitions: Option<IntOrString>,
    /// Size of the automatic partitions. Default 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_partition_size: Option<IntOrString>,
    /// Clusters that may receive a new deployment at once. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<Partition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Partition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    #[serde(flatten)]
    pub criteria: crate::target::TargetCriteria,
}
