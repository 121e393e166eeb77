//! Cluster and ClusterGroup: the downstream clusters and named sets of them.

use crate::summary::BundleSummary;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many names in [`ClusterGroupStatus::non_ready_clusters`].
pub const MAX_NON_READY_CLUSTERS: usize = 10;

/// One downstream cluster. Its labels drive targeting.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    category = "flotilla",
    doc = "One downstream cluster; its labels drive targeting.",
    crates(kube_core = "::kube_core"),
    printcolumn = r#"{"name":"Bundles-Ready","type":"string","jsonPath":".status.display.readyBundles"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.display.state"}"#,
    printcolumn = r#"{"name":"Last-Seen","type":"date","jsonPath":".status.agent.lastSeen"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","priority":1,"jsonPath":".status.namespace"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Stop deploying to this cluster; its BundleDeployments stay as they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// A Secret (key `value`) holding a kubeconfig for the cluster. When set,
    /// the controller runs this cluster's agent in process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config_secret: Option<String>,
    /// Namespace of `kubeConfigSecret`; defaults to the Cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config_secret_namespace: Option<String>,
    /// Values for templated Helm values (`${ .ClusterValues.x }`), as
    /// Fleet's `templateValues`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserve_unknown_object")]
    pub template_values: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The namespace of the management cluster that holds this cluster's
    /// BundleDeployments.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default)]
    pub agent: AgentStatus,
    #[serde(default)]
    pub summary: BundleSummary,
    #[serde(default)]
    pub display: ClusterDisplay,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// When the agent last reported. Written at the agent's contact interval;
    /// the only periodic write in the system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDisplay {
    /// "ready/desired" bundles on this cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ready_bundles: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
}

/// A named set of clusters, chosen by a label selector. A null selector
/// selects nothing; `{}` selects every cluster of the namespace.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "ClusterGroup",
    namespaced,
    status = "ClusterGroupStatus",
    category = "flotilla",
    doc = "A named set of clusters, chosen by a label selector.",
    crates(kube_core = "::kube_core"),
    printcolumn = r#"{"name":"Clusters-Ready","type":"string","jsonPath":".status.display.readyClusters"}"#,
    printcolumn = r#"{"name":"Bundles-Ready","type":"string","jsonPath":".status.display.readyBundles"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.display.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterGroupSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterGroupStatus {
    #[serde(default)]
    pub cluster_count: u32,
    #[serde(default)]
    pub non_ready_cluster_count: u32,
    /// Bounded by [`MAX_NON_READY_CLUSTERS`], sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_ready_clusters: Vec<String>,
    #[serde(default)]
    pub summary: BundleSummary,
    #[serde(default)]
    pub display: ClusterGroupDisplay,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterGroupDisplay {
    /// "ready/total" clusters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ready_clusters: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ready_bundles: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample fleet under `testdata/` is what `flotilla plan --clusters`
    /// reads; every document must parse into its typed kind.
    #[test]
    fn sample_fleet_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/clusters.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        let (mut clusters, mut groups) = (Vec::new(), Vec::new());
        for doc in docs {
            match doc["kind"].as_str() {
                Some("Cluster") => clusters.push(serde_json::from_value::<Cluster>(doc).unwrap()),
                Some("ClusterGroup") => {
                    groups.push(serde_json::from_value::<ClusterGroup>(doc).unwrap())
                }
                other => panic!("unexpected kind {other:?}"),
            }
        }
        assert_eq!(clusters.len(), 4);
        assert_eq!(groups.len(), 2);
        let default = groups
            .iter()
            .find(|g| g.metadata.name.as_deref() == Some("default"));
        assert_eq!(
            default.unwrap().spec.selector,
            Some(LabelSelector::default()),
            "`selector: {{}}` must survive as an empty selector"
        );
        let prod_us = &clusters[3];
        assert_eq!(
            prod_us.metadata.labels.as_ref().unwrap()["region"],
            "us-east-1"
        );
    }
}
