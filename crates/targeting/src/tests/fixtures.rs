//! Builders for Clusters, ClusterGroups and Bundles.

use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement,
};
use flotilla_api::kube_core::ObjectMeta;
use flotilla_api::{
    Bundle, BundleSpec, BundleTarget, Cluster, ClusterGroup, ClusterGroupSpec, ClusterSpec,
    GitTarget, TargetCriteria, TargetCustomization,
};
use std::collections::BTreeMap;

pub const NS: &str = "fleet-default";

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(ns: &str, name: &str, l: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        labels: (!l.is_empty()).then(|| labels(l)),
        ..Default::default()
    }
}

pub fn cluster(name: &str, l: &[(&str, &str)]) -> Cluster {
    cluster_in(NS, name, l)
}

pub fn cluster_in(ns: &str, name: &str, l: &[(&str, &str)]) -> Cluster {
    Cluster {
        metadata: meta(ns, name, l),
        spec: ClusterSpec::default(),
        status: None,
    }
}

pub fn group(name: &str, l: &[(&str, &str)], selector: Option<LabelSelector>) -> ClusterGroup {
    group_in(NS, name, l, selector)
}

pub fn group_in(
    ns: &str,
    name: &str,
    l: &[(&str, &str)],
    selector: Option<LabelSelector>,
) -> ClusterGroup {
    ClusterGroup {
        metadata: meta(ns, name, l),
        spec: ClusterGroupSpec { selector },
        status: None,
    }
}

pub fn bundle(name: &str, spec: BundleSpec) -> Bundle {
    Bundle {
        metadata: meta(NS, name, &[]),
        spec,
        status: None,
    }
}

pub fn match_labels(l: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(l)),
        match_expressions: None,
    }
}

pub fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
    LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }]),
    }
}

pub fn everything() -> LabelSelector {
    LabelSelector::default()
}

/// Criteria builder: `crit().selector(..).group(..)`.
#[derive(Clone, Default)]
pub struct Crit(pub TargetCriteria);

pub fn crit() -> Crit {
    Crit::default()
}

impl Crit {
    pub fn name(mut self, n: &str) -> Self {
        self.0.cluster_name = Some(n.into());
        self
    }
    pub fn selector(mut self, s: LabelSelector) -> Self {
        self.0.cluster_selector = Some(s);
        self
    }
    pub fn group(mut self, g: &str) -> Self {
        self.0.cluster_group = Some(g.into());
        self
    }
    pub fn group_selector(mut self, s: LabelSelector) -> Self {
        self.0.cluster_group_selector = Some(s);
        self
    }
    pub fn target(self) -> BundleTarget {
        BundleTarget {
            criteria: self.0,
            ..Default::default()
        }
    }
    pub fn do_not_deploy(self) -> BundleTarget {
        BundleTarget {
            criteria: self.0,
            do_not_deploy: true,
            ..Default::default()
        }
    }
    pub fn restriction(self) -> GitTarget {
        GitTarget {
            criteria: self.0,
            ..Default::default()
        }
    }
    pub fn customize(self, name: &str) -> TargetCustomization {
        TargetCustomization {
            name: Some(name.into()),
            criteria: self.0,
            ..Default::default()
        }
    }
}

pub fn targets(t: Vec<BundleTarget>) -> BundleSpec {
    BundleSpec {
        targets: t,
        ..Default::default()
    }
}
