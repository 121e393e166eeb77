//! CRD generation. `flotilla crds` prints these; the chart holds a copy that a
//! test keeps in sync.

use crate::{Bundle, BundleDeployment, Cluster, ClusterGroup, Content, GitRepo, HelmOp};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_core::CustomResourceExt;

/// Every Flotilla CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        GitRepo::crd(),
        HelmOp::crd(),
        Bundle::crd(),
        BundleDeployment::crd(),
        Content::crd(),
        Cluster::crd(),
        ClusterGroup::crd(),
    ]
}

/// One CRD as YAML.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    // The CRD types are plain data; serializing them cannot fail.
    serde_saphyr::to_string(crd).expect("a CRD serializes to YAML")
}

/// The file name a CRD is stored under in the chart.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// Every CRD as one multi-document YAML stream.
pub fn all_yaml() -> String {
    all()
        .iter()
        .map(|crd| format!("---\n{}", to_yaml(crd)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn chart_crd_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/flotilla/crds")
    }

    /// The chart must ship exactly what the types generate. To refresh it:
    /// `cargo run -p flotilla -- crds --out-dir charts/flotilla/crds`.
    #[test]
    fn chart_crds_are_up_to_date() {
        let dir = chart_crd_dir();
        let mut expected_files = Vec::new();
        for crd in all() {
            let name = file_name(&crd);
            let path = dir.join(&name);
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == to_yaml(&crd),
                "{} is out of date; run `cargo run -p flotilla -- crds --out-dir charts/flotilla/crds`",
                path.display()
            );
            expected_files.push(name);
        }
        let mut present: Vec<String> = std::fs::read_dir(&dir)
            .expect("chart CRD dir")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        present.sort();
        expected_files.sort();
        assert_eq!(
            present,
            expected_files,
            "stale CRD files in {}",
            dir.display()
        );
    }

    #[test]
    fn every_kind_but_content_has_status_and_columns() {
        for crd in all() {
            let name = crd.metadata.name.clone().unwrap();
            assert!(name.ends_with(".flotilla.dev"), "{name}");
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, "v1alpha1");
            assert!(version.served && version.storage);
            let has_status = version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some();
            let is_content = crd.spec.names.kind == "Content";
            assert_eq!(has_status, !is_content, "{name}: status subresource");
            assert_eq!(
                crd.spec.scope,
                if is_content { "Cluster" } else { "Namespaced" },
                "{name}"
            );
            let columns = version.additional_printer_columns.as_ref().unwrap();
            assert!(columns.len() >= 2, "{name}: printer columns");
        }
    }

    #[test]
    fn printer_columns_answer_the_users_question() {
        let columns = |kind: &str| -> Vec<(String, String)> {
            let crd = all()
                .into_iter()
                .find(|c| c.spec.names.kind == kind)
                .unwrap();
            crd.spec.versions[0]
                .additional_printer_columns
                .clone()
                .unwrap()
                .into_iter()
                .map(|c| (c.name, c.json_path))
                .collect()
        };
        let has = |kind: &str, path: &str| {
            assert!(
                columns(kind).iter().any(|(_, p)| p == path),
                "{kind} lacks a column for {path}: {:?}",
                columns(kind)
            )
        };
        // Redacted: spec.repo may carry a password.
        has("GitRepo", ".status.display.repo");
        has("GitRepo", ".status.commit");
        has("GitRepo", ".status.display.readyClusters");
        has("GitRepo", ".status.display.state");
        has("Bundle", ".status.display.readyClusters");
        has("Bundle", ".status.display.state");
        has(
            "BundleDeployment",
            ".metadata.labels.flotilla\\.dev/cluster",
        );
        has("BundleDeployment", ".status.display.state");
        has("BundleDeployment", ".status.ready");
        has("Cluster", ".status.display.readyBundles");
        has("Cluster", ".status.agent.lastSeen");
        has("ClusterGroup", ".status.display.readyClusters");
    }

    /// A null selector and `{}` mean different things, so the schema must let
    /// an empty selector object through and accept null.
    #[test]
    fn selectors_are_nullable_objects() {
        let crd = serde_json::to_value(GitRepo::crd()).unwrap();
        let target = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["targets"]["items"]["properties"];
        for field in ["clusterSelector", "clusterGroupSelector"] {
            assert_eq!(
                target[field]["type"], "object",
                "{field}: {}",
                target[field]
            );
            assert_eq!(target[field]["nullable"], true, "{field}");
        }
        assert_eq!(target["clusterName"]["type"], "string");
    }

    #[test]
    fn helm_values_keep_unknown_fields() {
        let crd = serde_json::to_value(Bundle::crd()).unwrap();
        let values = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["helm"]["properties"]["values"];
        assert_eq!(
            values["x-kubernetes-preserve-unknown-fields"], true,
            "{values}"
        );
    }
}
