//! `meta.k8s.io/v1` Table output, which `kubectl get` asks for with
//! `Accept: application/json;as=Table;...`. Custom kinds get their CRD's
//! `additionalPrinterColumns`; built-in kinds get the columns kubectl
//! shows on a real cluster.

use crate::jsonpath::JsonPath;
use crate::meta::age;
use crate::registry::ResourceType;
use serde_json::{Value, json};

/// What each row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s {
            None | Some("") | Some("Metadata") => Ok(Include::Metadata),
            Some("None") => Ok(Include::None),
            Some("Object") => Ok(Include::Object),
            Some(other) => Err(format!(
                "includeObject must be None, Metadata or Object, not {other:?}"
            )),
        }
    }
}

struct Column {
    name: &'static str,
    type_: &'static str,
    priority: i64,
    description: &'static str,
}

const fn col(name: &'static str, type_: &'static str, priority: i64) -> Column {
    Column {
        name,
        type_,
        priority,
        description: "",
    }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    priority: 0,
    description: "Name must be unique within a namespace.",
};
const AGE: Column = Column {
    name: "Age",
    type_: "string",
    priority: 0,
    description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
};

fn s(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn n(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn count(v: &Value, pointer: &str) -> usize {
    match v.pointer(pointer) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn containers(o: &Value, pointer: &str, field: &str) -> String {
    let list = o
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get(field).and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    or_none(list)
}

fn selector(o: &Value, pointer: &str) -> String {
    let labels = o
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    or_none(labels)
}

/// The built-in columns of a kind and the cells of one object.
fn builtin(kind: &str, o: &Value) -> (Vec<Column>, Vec<Value>) {
    let age_cell = json!(age(o.pointer("/metadata/creationTimestamp")));
    let name = json!(s(o, "/metadata/name"));
    let (mut cols, mut cells): (Vec<Column>, Vec<Value>) = match kind {
        "Namespace" => (
            vec![col("Status", "string", 0)],
            vec![json!(s(o, "/status/phase"))],
        ),
        "ConfigMap" => (
            vec![col("Data", "string", 0)],
            vec![json!(count(o, "/data") + count(o, "/binaryData"))],
        ),
        "Secret" => (
            vec![col("Type", "string", 0), col("Data", "string", 0)],
            vec![
                json!(s(o, "/type")),
                json!(count(o, "/data") + count(o, "/stringData")),
            ],
        ),
        "ServiceAccount" => (
            vec![col("Secrets", "string", 0)],
            vec![json!(count(o, "/secrets"))],
        ),
        "Service" => {
            let ports = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let port = p.get("port").map(Value::to_string).unwrap_or_default();
                            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                            match p.get("nodePort") {
                                Some(np) => format!("{port}:{np}/{proto}"),
                                None => format!("{port}/{proto}"),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let type_ = s(o, "/spec/type");
            (
                vec![
                    col("Type", "string", 0),
                    col("Cluster-IP", "string", 0),
                    col("External-IP", "string", 0),
                    col("Port(s)", "string", 0),
                ],
                vec![
                    json!(if type_.is_empty() {
                        "ClusterIP".into()
                    } else {
                        type_
                    }),
                    json!(or_none(s(o, "/spec/clusterIP"))),
                    json!(or_none(
                        o.pointer("/spec/externalIPs")
                            .and_then(Value::as_array)
                            .map(|a| a
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(","))
                            .unwrap_or_default()
                    )),
                    json!(or_none(ports)),
                ],
            )
        }
        "Event" => {
            let last = o
                .pointer("/lastTimestamp")
                .filter(|v| !v.is_null())
                .or_else(|| o.pointer("/eventTime"))
                .or_else(|| o.pointer("/metadata/creationTimestamp"));
            let object = format!(
                "{}/{}",
                s(o, "/involvedObject/kind").to_ascii_lowercase(),
                s(o, "/involvedObject/name")
            );
            let cols = vec![
                col("Last Seen", "string", 0),
                col("Type", "string", 0),
                col("Reason", "string", 0),
                col("Object", "string", 0),
                col("Message", "string", 0),
            ];
            let cells = vec![
                json!(age(last)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(object),
                json!(s(o, "/message")),
            ];
            // Events lead with Last Seen and have no Name/Age pair.
            return (cols, cells);
        }
        "Lease" => (
            vec![col("Holder", "string", 0)],
            vec![json!(s(o, "/spec/holderIdentity"))],
        ),
        "Deployment" => (
            vec![
                col("Ready", "string", 0),
                col("Up-to-date", "string", 0),
                col("Available", "string", 0),
            ],
            vec![
                json!(format!(
                    "{}/{}",
                    n(o, "/status/readyReplicas"),
                    o.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                )),
                json!(n(o, "/status/updatedReplicas")),
                json!(n(o, "/status/availableReplicas")),
            ],
        ),
        "StatefulSet" => (
            vec![col("Ready", "string", 0)],
            vec![json!(format!(
                "{}/{}",
                n(o, "/status/readyReplicas"),
                o.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            ))],
        ),
        "DaemonSet" => (
            vec![
                col("Desired", "string", 0),
                col("Current", "string", 0),
                col("Ready", "string", 0),
                col("Up-to-date", "string", 0),
                col("Available", "string", 0),
                col("Node Selector", "string", 0),
            ],
            vec![
                json!(n(o, "/status/desiredNumberScheduled")),
                json!(n(o, "/status/currentNumberScheduled")),
                json!(n(o, "/status/numberReady")),
                json!(n(o, "/status/updatedNumberScheduled")),
                json!(n(o, "/status/numberAvailable")),
                json!(selector(o, "/spec/template/spec/nodeSelector")),
            ],
        ),
        "Job" => {
            let completions = o
                .pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let succeeded = n(o, "/status/succeeded");
            let complete = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter().find(|c| {
                        c.get("status").and_then(Value::as_str) == Some("True")
                            && matches!(
                                c.get("type").and_then(Value::as_str),
                                Some("Complete" | "Failed")
                            )
                    })
                })
                .and_then(|c| c.get("type").and_then(Value::as_str))
                .unwrap_or("Running");
            (
                vec![
                    col("Status", "string", 0),
                    col("Completions", "string", 0),
                    col("Duration", "string", 0),
                ],
                vec![
                    json!(complete),
                    json!(format!("{succeeded}/{completions}")),
                    json!(age(o.pointer("/status/startTime"))),
                ],
            )
        }
        "CustomResourceDefinition" => {
            return (
                vec![NAME, col("Created At", "date", 0)],
                vec![
                    name,
                    o.pointer("/metadata/creationTimestamp")
                        .cloned()
                        .unwrap_or(Value::Null),
                ],
            );
        }
        _ => (Vec::new(), Vec::new()),
    };
    let mut all = vec![NAME];
    all.append(&mut cols);
    all.push(AGE);
    let mut all_cells = vec![name];
    all_cells.append(&mut cells);
    all_cells.push(age_cell);
    // Wide columns (priority 1).
    match kind {
        "Service" => {
            all.push(col("Selector", "string", 1));
            all_cells.push(json!(selector(o, "/spec/selector")));
        }
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => {
            all.push(col("Containers", "string", 1));
            all_cells.push(json!(containers(
                o,
                "/spec/template/spec/containers",
                "name"
            )));
            all.push(col("Images", "string", 1));
            all_cells.push(json!(containers(
                o,
                "/spec/template/spec/containers",
                "image"
            )));
            if kind != "StatefulSet" {
                all.push(col("Selector", "string", 1));
                all_cells.push(json!(selector(o, "/spec/selector/matchLabels")));
            }
        }
        _ => {}
    }
    (all, all_cells)
}

/// Columns and cells of a custom kind: Name, then its printer columns
/// (or Age when it declares none).
fn custom(rt: &ResourceType, o: &Value) -> (Vec<Value>, Vec<Value>) {
    let mut defs = vec![def(&NAME)];
    let mut cells = vec![json!(s(o, "/metadata/name"))];
    if rt.columns.is_empty() {
        defs.push(json!({"name": "Age", "type": "date", "format": "", "description": AGE.description, "priority": 0}));
        cells.push(
            o.pointer("/metadata/creationTimestamp")
                .cloned()
                .unwrap_or(Value::Null),
        );
    }
    for c in &rt.columns {
        defs.push(json!({"name": c.name, "type": c.type_, "format": "", "description": "", "priority": c.priority}));
        cells.push(
            JsonPath::parse(&c.json_path)
                .map(|p| p.cell(o))
                .unwrap_or(Value::Null),
        );
    }
    (defs, cells)
}

fn def(c: &Column) -> Value {
    json!({"name": c.name, "type": c.type_, "format": if c.name == "Name" { "name" } else { "" }, "description": c.description, "priority": c.priority})
}

/// A Table of objects.
pub fn table(rt: &ResourceType, objects: &[&Value], include: Include, list_meta: Value) -> Value {
    let mut defs: Vec<Value> = Vec::new();
    let mut rows = Vec::new();
    for o in objects {
        let (d, cells) = columns_and_cells(rt, o);
        if defs.is_empty() {
            defs = d;
        }
        rows.push(row(cells, o, include));
    }
    if defs.is_empty() {
        defs = columns_and_cells(rt, &json!({})).0;
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn columns_and_cells(rt: &ResourceType, o: &Value) -> (Vec<Value>, Vec<Value>) {
    if rt.crd.is_some() {
        custom(rt, o)
    } else {
        let (cols, cells) = builtin(&rt.kind, o);
        if cols.is_empty() {
            // A kind without dedicated columns: Name and Age.
            return (
                vec![def(&NAME), def(&AGE)],
                vec![
                    json!(s(o, "/metadata/name")),
                    json!(age(o.pointer("/metadata/creationTimestamp"))),
                ],
            );
        }
        (cols.iter().map(def).collect(), cells)
    }
}

fn row(cells: Vec<Value>, o: &Value, include: Include) -> Value {
    let mut row = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Object => row["object"] = o.clone(),
        Include::Metadata => {
            let mut meta = o.get("metadata").cloned().unwrap_or(json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
            });
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{PrinterColumn, builtins};

    fn rt(kind: &str) -> ResourceType {
        builtins().into_iter().find(|t| t.kind == kind).unwrap()
    }

    fn names(t: &Value) -> Vec<String> {
        t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn deployments_show_kubectls_columns() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        let t = table(&rt("Deployment"), &[&d], Include::Metadata, json!({}));
        assert_eq!(
            names(&t),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "2/3");
        assert_eq!(cells[6], "nginx:1");
        assert_eq!(cells[7], "app=web");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn custom_kinds_use_printer_columns() {
        let mut w = rt("ConfigMap");
        w.crd = Some("widgets.example.com".into());
        w.columns = vec![PrinterColumn {
            name: "Ready".into(),
            type_: "string".into(),
            json_path: r#".status.conditions[?(@.type=="Ready")].status"#.into(),
            priority: 0,
        }];
        let o = json!({"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let t = table(&w, &[&o], Include::None, json!({}));
        assert_eq!(names(&t), ["Name", "Ready"]);
        assert_eq!(t["rows"][0]["cells"], json!(["a", "True"]));
        assert!(t["rows"][0].get("object").is_none());
        w.columns.clear();
        let t = table(&w, &[], Include::None, json!({}));
        assert_eq!(names(&t), ["Name", "Age"], "no columns: Name and Age");
    }

    #[test]
    fn configmaps_count_their_data() {
        let o = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let t = table(&rt("ConfigMap"), &[&o], Include::None, json!({}));
        assert_eq!(names(&t), ["Name", "Data", "Age"]);
        assert_eq!(t["rows"][0]["cells"][1], 2);
    }
}
