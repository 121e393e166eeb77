//! Schemas of every served kind, for field validation and OpenAPI v3.
//!
//! Built-in kinds take theirs from k8s-openapi (the Kubernetes OpenAPI
//! definitions); custom kinds from their CRD's structural schema. One
//! walk over an object against its schema finds unknown fields (reported
//! or rejected as `fieldValidation` says, and always dropped, as a real
//! server drops what it cannot decode or prunes) and values of the wrong
//! type (always rejected as Invalid).

use crate::registry::ResourceType;
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

/// `fieldValidation`: what to do about unknown fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    /// The server default: drop them, with a warning.
    #[default]
    Warn,
    /// Refuse the request (kubectl's default).
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Strict") => Ok(Self::Strict),
            Some(other) => Err(format!(
                "fieldValidation must be Ignore, Warn or Strict, not {other:?}"
            )),
        }
    }
}

/// The built-in definitions, keyed `io.k8s.api.apps.v1.Deployment` etc.,
/// with references as `#/components/schemas/<name>`.
pub struct Builtins {
    pub defs: Map<String, Value>,
}

/// The OpenAPI name of a kind: `io.k8s.api.apps.v1.Deployment`, or the
/// reversed group for custom kinds (`com.example.v1.Widget`).
pub fn definition_name(rt: &ResourceType) -> String {
    if rt.crd.is_some() {
        let reversed: Vec<&str> = rt.group.split('.').rev().collect();
        return format!("{}.{}.{}", reversed.join("."), rt.version, rt.kind);
    }
    match rt.group.as_str() {
        "apiextensions.k8s.io" => format!(
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{}.{}",
            rt.version, rt.kind
        ),
        "" => format!("io.k8s.api.core.{}.{}", rt.version, rt.kind),
        g => format!(
            "io.k8s.api.{}.{}.{}",
            g.split('.').next().unwrap_or(g),
            rt.version,
            rt.kind
        ),
    }
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                *r = format!("#/components/schemas/{name}");
            }
            m.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

fn add<T: schemars::JsonSchema>(
    defs: &mut Map<String, Value>,
    name: &str,
    gvk: (&str, &str, &str),
) {
    let mut root = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    let Some(obj) = root.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(more)) = obj.remove("$defs") {
        for (k, mut v) in more {
            rewrite_refs(&mut v);
            defs.insert(k, v);
        }
    }
    obj.remove("$schema");
    obj.remove("title");
    obj.insert(
        "x-kubernetes-group-version-kind".into(),
        json!([{"group": gvk.0, "version": gvk.1, "kind": gvk.2}]),
    );
    rewrite_refs(&mut root);
    defs.insert(name.to_owned(), root);
}

pub fn builtins() -> &'static Builtins {
    static B: OnceLock<Builtins> = OnceLock::new();
    B.get_or_init(|| {
        use k8s_openapi::api::{apps, batch, coordination, core, events};
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
        let mut defs = Map::new();
        for rt in crate::registry::builtins() {
            let name = definition_name(&rt);
            let gvk = (rt.group.as_str(), rt.version.as_str(), rt.kind.as_str());
            match (rt.group.as_str(), rt.kind.as_str()) {
                ("", "Namespace") => add::<core::v1::Namespace>(&mut defs, &name, gvk),
                ("", "ConfigMap") => add::<core::v1::ConfigMap>(&mut defs, &name, gvk),
                ("", "Secret") => add::<core::v1::Secret>(&mut defs, &name, gvk),
                ("", "ServiceAccount") => add::<core::v1::ServiceAccount>(&mut defs, &name, gvk),
                ("", "Service") => add::<core::v1::Service>(&mut defs, &name, gvk),
                ("", "Event") => add::<core::v1::Event>(&mut defs, &name, gvk),
                ("events.k8s.io", "Event") => add::<events::v1::Event>(&mut defs, &name, gvk),
                ("coordination.k8s.io", "Lease") => {
                    add::<coordination::v1::Lease>(&mut defs, &name, gvk)
                }
                ("apps", "Deployment") => add::<apps::v1::Deployment>(&mut defs, &name, gvk),
                ("apps", "StatefulSet") => add::<apps::v1::StatefulSet>(&mut defs, &name, gvk),
                ("apps", "DaemonSet") => add::<apps::v1::DaemonSet>(&mut defs, &name, gvk),
                ("batch", "Job") => add::<batch::v1::Job>(&mut defs, &name, gvk),
                ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                    add::<ext::CustomResourceDefinition>(&mut defs, &name, gvk)
                }
                _ => {}
            }
        }
        // Any JSON value (a CRD schema's default, example, enum items),
        // not only an object.
        if let Some(Value::Object(json)) =
            defs.get_mut("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON")
        {
            json.remove("type");
            json.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        }
        Builtins { defs }
    })
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// The schema of a custom kind: its CRD's, with the standard metadata.
pub fn custom_schema(crd_schema: &Value, rt: &ResourceType) -> Value {
    let mut s = crd_schema.clone();
    if let Some(m) = s.as_object_mut() {
        m.entry("type").or_insert(json!("object"));
        let props = m
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|p| {
                p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
                p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
                p.insert("metadata".into(), json!({"$ref": format!("#/components/schemas/{OBJECT_META}"), "description": "Standard object's metadata."}));
            });
        let _ = props;
        m.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}]),
        );
    }
    s
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Paths of unknown fields (`spec.replicaz`), now removed.
    pub unknown: Vec<String>,
    /// (path, message) of values of the wrong type.
    pub invalid: Vec<(String, String)>,
}

/// Walks `v` against `schema`, removing unknown fields. `free_form`: an
/// object schema with neither properties nor additionalProperties
/// accepts anything (built-in raw fields such as FieldsV1); for custom
/// kinds such an object is empty, as structural pruning makes it.
pub fn walk(v: &mut Value, schema: &Value, free_form: bool, path: &str, out: &mut Findings) {
    let defs = &builtins().defs;
    let mut schema = schema;
    let mut free_form = free_form;
    while let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        match r
            .strip_prefix("#/components/schemas/")
            .and_then(|n| defs.get(n))
        {
            Some(s) => {
                // A built-in definition (a custom kind's metadata):
                // Kubernetes' raw fields are free-form there.
                schema = s;
                free_form = true;
            }
            None => return,
        }
    }
    if v.is_null() {
        return;
    }
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            out.invalid.push((
                path.to_owned(),
                format!(
                    "Invalid value: {}: must be an integer or a string",
                    short(v)
                ),
            ));
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok = match ty {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !ok {
        out.invalid.push((
            path.to_owned(),
            format!(
                "Invalid value: {}: {path} in body must be of type {}: \"{}\"",
                short(v),
                ty.unwrap_or(""),
                json_type(v)
            ),
        ));
        return;
    }
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let embedded = schema
                .get("x-kubernetes-embedded-resource")
                .and_then(Value::as_bool)
                == Some(true);
            if props.is_none() && additional.is_none() && (free_form || preserve) {
                return;
            }
            let mut unknown = Vec::new();
            for (k, child) in map.iter_mut() {
                let child_path = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    walk(child, s, free_form, &child_path, out);
                } else if let Some(s) = additional.filter(|a| a.is_object()) {
                    walk(child, s, free_form, &child_path, out);
                } else {
                    let allowed = additional == Some(&Value::Bool(true))
                        || preserve
                        || (embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"));
                    if !allowed {
                        unknown.push(k.clone());
                        out.unknown.push(child_path);
                    }
                }
            }
            for k in unknown {
                map.remove(&k);
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, s, free_form, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!(
            "{}...",
            &s[..s
                .char_indices()
                .take(57)
                .last()
                .map_or(0, |(i, c)| i + c.len_utf8())]
        )
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment_schema() -> Value {
        builtins().defs["io.k8s.api.apps.v1.Deployment"].clone()
    }

    #[test]
    fn unknown_fields_are_found_and_removed_at_any_depth() {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labelz": {}},
            "spec": {"replicaz": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx", "imagee": "x", "resources": {"limits": {"cpu": "1"}}}
            ]}}},
        });
        let mut f = Findings::default();
        walk(&mut d, &deployment_schema(), true, "", &mut f);
        assert_eq!(
            f.unknown,
            [
                "metadata.labelz",
                "spec.replicaz",
                "spec.template.spec.containers[0].imagee"
            ]
        );
        assert!(f.invalid.is_empty(), "{:?}", f.invalid);
        assert!(d["spec"].get("replicaz").is_none());
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );
    }

    #[test]
    fn wrong_types_are_invalid() {
        let mut d = json!({"spec": {"replicas": "two", "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80.5}]}]}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}}});
        let mut f = Findings::default();
        walk(&mut d, &deployment_schema(), true, "", &mut f);
        let paths: Vec<&str> = f.invalid.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.replicas",
                "spec.template.spec.containers[0].ports[0].containerPort"
            ]
        );
        assert!(
            f.invalid[0].1.contains("must be of type integer"),
            "{}",
            f.invalid[0].1
        );
    }

    #[test]
    fn custom_schemas_prune_unless_preserved() {
        let rt = crate::registry::builtins()[0].clone();
        let crd = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"size": {"type": "integer"}},
                     "x-kubernetes-preserve-unknown-fields": false},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "empty": {"type": "object"}
        }});
        let s = custom_schema(&crd, &rt);
        let mut w = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w"}, "spec": {"size": 1, "color": "red"},
            "status": {"anything": {"goes": 1}}, "tags": {"a": "b"}, "empty": {"x": 1}});
        let mut f = Findings::default();
        walk(&mut w, &s, false, "", &mut f);
        assert_eq!(f.unknown, ["empty.x", "spec.color"]);
        assert_eq!(w["status"]["anything"]["goes"], 1);
        let mut bad = json!({"tags": {"a": 1}});
        let mut f = Findings::default();
        walk(&mut bad, &s, false, "", &mut f);
        assert_eq!(f.invalid[0].0, "tags.a");
    }

    #[test]
    fn crd_schemas_accept_any_json_as_default() {
        let crd = json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
            "type": "object", "properties": {"n": {"type": "integer", "default": 0, "enum": [0, 1]}}
        }}}]}});
        let mut f = Findings::default();
        let mut c = crd.clone();
        walk(
            &mut c,
            &builtins().defs["io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"],
            true,
            "",
            &mut f,
        );
        assert!(f.invalid.is_empty() && f.unknown.is_empty(), "{f:?}");
        assert_eq!(c, crd);
    }

    #[test]
    fn definition_names() {
        let all = crate::registry::builtins();
        let names: Vec<String> = all.iter().map(definition_name).collect();
        for n in &names {
            assert!(builtins().defs.contains_key(n), "{n}");
        }
        assert!(names.contains(&"io.k8s.api.coordination.v1.Lease".to_string()));
    }
}
