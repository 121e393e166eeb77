//! CRD generation. `flotilla crds` prints these; the chart holds a copy that a
//! test keeps in sync.

use crate::{Bundle, BundleDeployment, Cluster, ClusterGroup, Content, GitRepo, HelmOp};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_core::CustomResourceExt;

/// Every Flotilla CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        GitRepo::crd(),
        HelmOp::crd(),
        Bundle::crd(),
        BundleDeployment::crd(),
        Content::crd(),
        Cluster::crd(),
        ClusterGroup::crd(),
    ]
    .into_iter()
    .map(known_formats_only)
    .map(conditions_keyed_by_type)
    .collect()
}

/// Every `conditions` list is a map keyed by `type`, as Kubernetes' own
/// are (`x-kubernetes-list-type: map`). Without it a real server treats
/// the list as atomic: two field managers that each apply their own
/// conditions (a GitRepo's controller its `Synced`, the status controller
/// Ready, Reconciling and Stalled) would replace each other's on every
/// write.
fn conditions_keyed_by_type(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(props)) = map.get_mut("properties")
                    && let Some(serde_json::Value::Object(conds)) = props.get_mut("conditions")
                    && conds.get("type").and_then(|t| t.as_str()) == Some("array")
                    && conds
                        .get("items")
                        .and_then(|i| i.get("required"))
                        .and_then(|r| r.as_array())
                        .is_some_and(|r| r.iter().any(|k| k == "type"))
                {
                    conds.insert("x-kubernetes-list-type".into(), "map".into());
                    conds.insert(
                        "x-kubernetes-list-map-keys".into(),
                        serde_json::json!(["type"]),
                    );
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(&crd).expect("a CRD serializes to JSON");
    walk(&mut v);
    serde_json::from_value(v).expect("a CRD with keyed conditions is still a CRD")
}

/// schemars names Rust's unsigned integers `format: uint32` (and `uint8`,
/// `uint16`, `uint64`, `uint`), which kube-apiserver does not know: it
/// stores them but `kubectl apply` prints `Warning: unrecognized format
/// "uint32"`. Such a schema keeps `type: integer` and its `minimum: 0`,
/// loses the format and, for the sized ones, gains the type's `maximum`.
fn known_formats_only(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                let max = match map.get("format").and_then(|f| f.as_str()) {
                    Some("uint8") => Some(Some(u64::from(u8::MAX))),
                    Some("uint16") => Some(Some(u64::from(u16::MAX))),
                    Some("uint32") => Some(Some(u64::from(u32::MAX))),
                    Some("uint64" | "uint") => Some(None),
                    _ => None,
                };
                if let Some(max) = max {
                    map.remove("format");
                    if let Some(max) = max {
                        map.entry("maximum").or_insert_with(|| max.into());
                    }
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(&crd).expect("a CRD serializes to JSON");
    walk(&mut v);
    serde_json::from_value(v).expect("a CRD without unsigned formats is still a CRD")
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
    fn schemas_use_only_formats_kube_apiserver_knows() {
        // kube-apiserver's supported formats for CRD schemas (plus the
        // integer and number formats it accepts without a warning).
        const KNOWN: &[&str] = &[
            "int32",
            "int64",
            "float",
            "double",
            "byte",
            "binary",
            "date",
            "date-time",
            "duration",
            "password",
            "uuid",
            "uri",
            "email",
            "hostname",
            "ipv4",
            "ipv6",
            "cidr",
            "mac",
        ];
        let yaml = all_yaml();
        for line in yaml.lines() {
            if let Some(f) = line.trim().strip_prefix("format: ") {
                assert!(KNOWN.contains(&f), "unrecognized format {f:?} in a CRD");
            }
        }
        assert!(
            yaml.contains("maximum: 4294967295"),
            "u32 fields keep their range"
        );
    }

    #[test]
    fn every_conditions_list_is_keyed_by_type() {
        fn walk(v: &serde_json::Value, found: &mut usize) {
            if let Some(map) = v.as_object() {
                // kstatus conditions (items with a required `type`), not
                // other lists of that name (`ignore.conditions`).
                if let Some(c) = map
                    .get("properties")
                    .and_then(|p| p.get("conditions"))
                    .filter(|c| {
                        c.pointer("/items/required")
                            .and_then(|r| r.as_array())
                            .is_some_and(|r| r.iter().any(|k| k == "type"))
                    })
                {
                    assert_eq!(c["x-kubernetes-list-type"], "map", "{c}");
                    assert_eq!(c["x-kubernetes-list-map-keys"], serde_json::json!(["type"]));
                    *found += 1;
                }
                map.values().for_each(|v| walk(v, found));
            } else if let Some(items) = v.as_array() {
                items.iter().for_each(|v| walk(v, found));
            }
        }
        let mut found = 0;
        for crd in all() {
            walk(&serde_json::to_value(&crd).unwrap(), &mut found);
        }
        // GitRepo, HelmOp, Bundle, BundleDeployment, Cluster, ClusterGroup.
        assert!(found >= 6, "{found}");
    }

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
