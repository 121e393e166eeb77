//! Which clusters a GitRepo or Bundle deploys to. The matching rules live in
//! the `targeting` crate; these are only the shapes.

use crate::options::BundleDeploymentOptions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The four ways to pick clusters. Within one entry every criterion that is
/// set must match; an entry that sets none matches nothing. A null selector
/// is not set, while `{}` is set and matches everything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetCriteria {
    /// A cluster by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Clusters by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    /// A ClusterGroup by name, in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_group: Option<String>,
    /// ClusterGroups by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_group_selector: Option<LabelSelector>,
}

/// A GitRepo target; also a Bundle's target restriction.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitTarget {
    /// A name for display and `plan --explain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub criteria: TargetCriteria,
}

/// An entry of a Bundle's `targets`: clusters matching the first entry that
/// matches get the bundle, unless that entry says `doNotDeploy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub criteria: TargetCriteria,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_deploy: bool,
}

/// A `fleet.yaml` target customization: options that override the bundle's
/// for the clusters it matches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetCustomization {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub criteria: TargetCriteria,
    /// Matching clusters do not get the bundle at all.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_deploy: bool,
    #[serde(flatten)]
    pub options: BundleDeploymentOptions,
}

/// How target customizations combine for one cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TargetCustomizationMode {
    /// The first matching entry applies (Fleet's behaviour).
    #[default]
    FirstMatch,
    /// Every matching entry applies, in order; later entries win.
    AllMatches,
}

impl From<&GitTarget> for BundleTarget {
    fn from(t: &GitTarget) -> Self {
        BundleTarget {
            name: t.name.clone(),
            criteria: t.criteria.clone(),
            do_not_deploy: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{}` and null must survive a round trip as different values: one
    /// matches every cluster, the other is ignored.
    #[test]
    fn empty_and_null_selectors_stay_distinct() {
        let empty: GitTarget = serde_json::from_str(r#"{"clusterSelector": {}}"#).unwrap();
        let null: GitTarget = serde_json::from_str(r#"{"clusterSelector": null}"#).unwrap();
        assert_eq!(
            empty.criteria.cluster_selector,
            Some(LabelSelector::default())
        );
        assert_eq!(null.criteria.cluster_selector, None);
        let back = serde_json::to_value(&empty).unwrap();
        assert_eq!(back, serde_json::json!({"clusterSelector": {}}));
    }

    #[test]
    fn customization_flattens_fleet_fields() {
        let yaml = serde_json::json!({
            "name": "prod",
            "clusterSelector": {"matchLabels": {"env": "prod"}},
            "doNotDeploy": false,
            "defaultNamespace": "shop",
            "helm": {"values": {"replicas": 3}},
        });
        let c: TargetCustomization = serde_json::from_value(yaml).unwrap();
        assert_eq!(c.options.default_namespace.as_deref(), Some("shop"));
        assert_eq!(
            c.options.helm.unwrap().values,
            Some(serde_json::json!({"replicas": 3}))
        );
        assert!(c.criteria.cluster_selector.is_some());
    }
}
