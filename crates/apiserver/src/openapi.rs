//! OpenAPI v3 discovery: `/openapi/v3` lists one document per group
//! version, and each document lists the served paths with their
//! operations, the `x-kubernetes-group-version-kind` of each, and the
//! query parameters the server honours. kubectl reads these to learn that
//! the server validates fields itself (`fieldValidation`), instead of
//! validating client-side.

use crate::registry::{Registry, ResourceType};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// `api/v1`, `apis/apps/v1`: the document path of a type.
fn doc_path(t: &ResourceType) -> String {
    if t.group.is_empty() {
        format!("api/{}", t.version)
    } else {
        format!("apis/{}/{}", t.group, t.version)
    }
}

/// The documents, by path, with a hash of each for cache busting.
fn documents(registry: &Registry) -> BTreeMap<String, Value> {
    let mut by_gv: BTreeMap<String, Vec<ResourceType>> = BTreeMap::new();
    for t in registry.all() {
        by_gv.entry(doc_path(&t)).or_default().push(t);
    }
    by_gv
        .into_iter()
        .map(|(path, types)| {
            let doc = document(&types);
            (path, doc)
        })
        .collect()
}

/// `/openapi/v3`.
pub fn root(registry: &Registry) -> Value {
    let paths: Map<String, Value> = documents(registry)
        .into_iter()
        .map(|(path, doc)| {
            let hash = fnv(&doc.to_string());
            let url = format!("/openapi/v3/{path}?hash={hash:016X}");
            (path, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// `/openapi/v3/{path}`, if served.
pub fn document_at(registry: &Registry, path: &str) -> Option<Value> {
    documents(registry).remove(path)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid value: All.",
        ),
        query(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        query(
            "fieldValidation",
            "How the server treats unknown or duplicate fields: Ignore, Warn or Strict.",
        ),
    ]
}

fn document(types: &[ResourceType]) -> Value {
    let mut paths = Map::new();
    for t in types {
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let prefix = format!("/{}", doc_path(t));
        let collection = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{prefix}/{}", t.plural)
        };
        let op = |verb: &str, params: Vec<Value>| {
            json!({
                "operationId": format!("{verb}{}", t.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        let mut patch_params = write_params();
        patch_params.push(query(
            "force",
            "Force is going to \"force\" Apply requests.",
        ));
        paths.insert(
            collection.clone(),
            json!({
                "get": op("list", vec![query("labelSelector", ""), query("fieldSelector", ""), query("limit", ""), query("continue", ""), query("watch", ""), query("resourceVersion", "")]),
                "post": op("post", write_params()),
                "delete": op("deletecollection", vec![query("labelSelector", ""), query("dryRun", "")]),
            }),
        );
        let item = format!("{collection}/{{name}}");
        paths.insert(
            item.clone(),
            json!({
                "get": op("get", vec![]),
                "put": op("put", write_params()),
                "patch": op("patch", patch_params.clone()),
                "delete": op("delete", vec![query("dryRun", ""), query("propagationPolicy", "")]),
            }),
        );
        if t.status {
            paths.insert(
                format!("{item}/status"),
                json!({
                    "get": op("get", vec![]),
                    "put": op("put", write_params()),
                    "patch": op("patch", patch_params),
                }),
            );
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0-flotilla"},
        "paths": paths,
        "components": {"schemas": schemas(types)},
    })
}

/// The schema of each type, under its definition name, and every
/// definition those refer to.
fn schemas(types: &[ResourceType]) -> Map<String, Value> {
    let defs = &crate::schema::builtins().defs;
    let mut out = Map::new();
    let mut todo: Vec<String> = Vec::new();
    for t in types {
        if let Some(s) = t.schema() {
            refs(s, &mut todo);
            out.insert(crate::schema::definition_name(t), s.clone());
        }
    }
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        if let Some(s) = defs.get(&name) {
            refs(s, &mut todo);
            out.insert(name, s.clone());
        }
    }
    out
}

fn refs(v: &Value, into: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(name) = m
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                into.push(name.to_owned());
            }
            m.values().for_each(|v| refs(v, into));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, into)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_a_document_declaring_field_validation() {
        let r = Registry::default();
        let root = root(&r);
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
        let doc = document_at(&r, "apis/apps/v1").unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(document_at(&r, "apis/nope/v1").is_none());
        // The schema of each kind, and what it refers to, for kubectl explain.
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let d = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        assert!(schemas.contains_key("io.k8s.api.core.v1.PodSpec"));
        assert!(schemas.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    }
}
