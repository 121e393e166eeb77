//! Values a real kube-apiserver stores in a canonical form rather than as
//! given: resource quantities in the built-in kinds (`cpu: 0.5` is kept as
//! `500m`, `memory: 1024Mi` as `1Gi`; a number is accepted and stored as a
//! string). Clients that compare what they applied with what they read
//! back (the agent's drift check) must see what production shows them.

use flotilla_api::quantity::{self, QuantityError};
use serde_json::Value;

/// Rewrites every resource quantity under the `spec` of a kind with a pod
/// template into its canonical form: `resources.limits` and
/// `resources.requests` (of containers, of a pod, of a volume claim
/// template), a pod's `overhead` and an emptyDir's `sizeLimit`. A value
/// that is not a quantity is refused, as decoding it into the built-in
/// type would be. Other kinds are left alone: a CRD's schema may well have
/// properties of those names, and they are no quantities.
pub fn quantities(group: &str, kind: &str, object: &mut Value) -> Result<(), QuantityError> {
    let pod_template = matches!(
        (group, kind),
        (
            "apps",
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
        ) | ("batch", "Job" | "CronJob")
            | ("", "Pod" | "PodTemplate" | "ReplicationController")
    );
    match object.get_mut("spec") {
        Some(spec) if pod_template => walk(spec, 0),
        _ => Ok(()),
    }
}

/// Deep enough for any pod template (a StatefulSet's claim templates sit
/// six maps down); a pathological body stops descending, it is not refused.
const MAX_DEPTH: usize = 24;

fn walk(v: &mut Value, depth: usize) -> Result<(), QuantityError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match (k.as_str(), &mut *child) {
                    ("resources", Value::Object(r)) => {
                        for key in ["limits", "requests"] {
                            if let Some(Value::Object(list)) = r.get_mut(key) {
                                list.values_mut().try_for_each(canonicalize)?;
                            }
                        }
                    }
                    ("overhead", Value::Object(list)) => {
                        list.values_mut().try_for_each(canonicalize)?;
                    }
                    ("sizeLimit", value) => canonicalize(value)?,
                    (_, child) => walk(child, depth + 1)?,
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|i| walk(i, depth + 1)),
        _ => Ok(()),
    }
}

/// A Secret's write-only `stringData`, folded into `data` as the server
/// decodes it: each value base64-encoded, replacing a `data` key of the
/// same name, and `stringData` itself never stored.
pub fn string_data(object: &mut Value) {
    use base64::Engine;
    let Some(Value::Object(strings)) = object.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    let o = object.as_object_mut().expect("a Secret is a map");
    let data = o
        .entry("data")
        .or_insert_with(|| Value::Object(Default::default()));
    if !data.is_object() {
        *data = Value::Object(Default::default());
    }
    let data = data.as_object_mut().expect("just made a map");
    for (k, v) in strings {
        if let Some(text) = v.as_str() {
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            data.insert(k, Value::String(encoded));
        }
    }
}

fn canonicalize(v: &mut Value) -> Result<(), QuantityError> {
    if v.is_null() {
        return Ok(());
    }
    if let Some(c) = quantity::canonical(v)? {
        *v = Value::String(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_are_stored_canonical_wherever_a_pod_template_has_them() {
        let mut sts = json!({"spec": {
            "template": {"spec": {
                "containers": [{"name": "c", "resources": {
                    "requests": {"cpu": 0.5, "memory": "1024Mi"},
                    "limits": {"cpu": "1000m", "memory": "1.5Gi", "nvidia.com/gpu": 1}
                }}],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "0.1"}}}],
                "overhead": {"cpu": "250m", "memory": "0.5Gi"},
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1000Mi"}}]
            }},
            "volumeClaimTemplates": [{"spec": {"resources": {"requests": {"storage": "10240Mi"}}}}]
        }});
        quantities("apps", "StatefulSet", &mut sts).unwrap();
        let s = &sts["spec"]["template"]["spec"];
        assert_eq!(
            s["containers"][0]["resources"],
            json!({"requests": {"cpu": "500m", "memory": "1Gi"},
                   "limits": {"cpu": "1", "memory": "1536Mi", "nvidia.com/gpu": "1"}})
        );
        assert_eq!(
            s["initContainers"][0]["resources"]["requests"]["cpu"],
            "100m"
        );
        assert_eq!(s["overhead"], json!({"cpu": "250m", "memory": "512Mi"}));
        assert_eq!(s["volumes"][0]["emptyDir"]["sizeLimit"], "1000Mi");
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            "10Gi"
        );
        // Anything else is left as written.
        let mut cm =
            json!({"data": {"cpu": "0.5"}, "spec": {"replicas": 2, "limits": {"x": "1000m"}}});
        quantities("apps", "Deployment", &mut cm).unwrap();
        assert_eq!(cm["data"]["cpu"], "0.5");
        assert_eq!(cm["spec"]["limits"]["x"], "1000m");
        // A CRD whose schema has properties of those names (as any CRD
        // embedding a pod spec does) is no pod template.
        let schema = json!({"properties": {
            "emptyDir": {"properties": {"sizeLimit": {"x-kubernetes-int-or-string": true}}},
            "overhead": {"type": "object", "additionalProperties": {"type": "string"}},
            "resources": {"limits": {"type": "object"}}
        }});
        let mut crd =
            json!({"spec": {"versions": [{"schema": {"openAPIV3Schema": schema.clone()}}]}});
        quantities("apiextensions.k8s.io", "CustomResourceDefinition", &mut crd).unwrap();
        assert_eq!(
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            schema
        );
    }

    #[test]
    fn string_data_becomes_data() {
        let mut s = json!({"kind": "Secret", "data": {"a": "b2xk", "b": "Yg=="}, "stringData": {"a": "admin"}});
        string_data(&mut s);
        assert_eq!(
            s,
            json!({"kind": "Secret", "data": {"a": "YWRtaW4=", "b": "Yg=="}})
        );
        let mut only = json!({"kind": "Secret", "stringData": {"k": "v"}});
        string_data(&mut only);
        assert_eq!(only, json!({"kind": "Secret", "data": {"k": "dg=="}}));
    }

    #[test]
    fn a_value_that_is_no_quantity_is_refused() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "resources": {"limits": {"memory": "1 gig"}}}]}}}});
        assert_eq!(
            quantities("apps", "Deployment", &mut d),
            Err(QuantityError::Format)
        );
    }
}
