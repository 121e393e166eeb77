//! Has an applied object drifted? Pure: what was applied and what lives in
//! the cluster in, the differences out.
//!
//! Only the fields the agent applied are compared. Whatever the API server
//! or another controller adds (defaults, status, other managers' fields)
//! is not drift. A list must keep its length, and each element is compared
//! the same way. `diff.comparePatches` entries that match the object
//! remove paths from both sides first.
//!
//! Both sides are compared as a real API server stores them, so that a
//! server's canonical form is never reported as drift:
//! - resource quantities (`limits`, `requests`, `overhead`, `hard`,
//!   `sizeLimit`) compare by value: `0.5` is `500m`, `1024Mi` is `1Gi`;
//! - numbers compare by value (`1` is `1.0`), and an int-or-string field
//!   (`targetPort`, `maxSurge`, ...) written `8080` or `"8080"` is the same;
//! - a field applied empty (`{}`, `[]`, `""`, `false`, `0`, `null`) and
//!   absent from the live object was dropped by the server, not changed;
//! - a Secret's `stringData` is compared as the `data` it becomes.

use base64::Engine;
use flotilla_api::ComparePatch;
use flotilla_api::quantity;
use serde_json::Value;

/// Maps whose values are resource quantities.
const QUANTITY_MAPS: &[&str] = &[
    "limits",
    "requests",
    "overhead",
    "hard",
    "capacity",
    "allocatable",
];

/// Int-or-string fields of the built-in kinds the agent applies.
const INT_OR_STRING: &[&str] = &[
    "targetPort",
    "port",
    "maxSurge",
    "maxUnavailable",
    "minAvailable",
];

/// At most this many differences are described; the rest are counted.
const MAX_DESCRIBED: usize = 3;

/// The paths where `live` differs from `desired`, each with both values,
/// or, when `hide_values` (a Secret, or a deployment whose values came from
/// a Secret), with neither: a status must never quote a secret.
pub fn drift(
    desired: &Value,
    live: &Value,
    patches: &[ComparePatch],
    hide_values: bool,
) -> Vec<String> {
    let matching: Vec<&ComparePatch> = patches
        .iter()
        .filter(|p| matches(p, &identity(desired)))
        .collect();
    let mut desired = desired.clone();
    let mut live = live.clone();
    fold_string_data(&mut desired);
    for obj in [&mut desired, &mut live] {
        if let Some(map) = obj.as_object_mut() {
            map.remove("status");
        }
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| k == "labels" || k == "annotations");
        }
    }
    for patch in matching {
        let removals = patch
            .operations
            .iter()
            .filter(|op| op.op.as_deref().unwrap_or("remove") == "remove")
            .filter_map(|op| op.path.as_deref())
            .chain(patch.json_pointers.iter().map(String::as_str));
        for pointer in removals {
            remove_pointer(&mut desired, pointer);
            remove_pointer(&mut live, pointer);
        }
    }
    let mut out = Vec::new();
    let show = if hide_values { hidden } else { shown };
    compare(
        &desired,
        &live,
        &mut String::new(),
        Key::default(),
        &mut out,
        show,
    );
    out
}

/// A Secret's `stringData` as the server stores it: base64 in `data`,
/// overriding a `data` key of the same name.
fn fold_string_data(obj: &mut Value) {
    if obj.get("kind").and_then(Value::as_str) != Some("Secret")
        || obj.get("apiVersion").and_then(Value::as_str) != Some("v1")
    {
        return;
    }
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    let data = obj
        .as_object_mut()
        .expect("checked")
        .entry("data")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(data) = data.as_object_mut() {
        for (k, v) in strings {
            if let Some(text) = v.as_str() {
                let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                data.insert(k, Value::String(encoded));
            }
        }
    }
}

/// A short sentence for `modifiedStatus.patch`.
pub fn describe(differences: &[String]) -> String {
    let mut s = differences
        .iter()
        .take(MAX_DESCRIBED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if differences.len() > MAX_DESCRIBED {
        s.push_str(&format!("; and {} more", differences.len() - MAX_DESCRIBED));
    }
    s
}

struct Identity<'a> {
    api_version: &'a str,
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
}

fn identity(v: &Value) -> Identity<'_> {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default();
    Identity {
        api_version: s("/apiVersion"),
        kind: s("/kind"),
        namespace: s("/metadata/namespace"),
        name: s("/metadata/name"),
    }
}

fn matches(p: &ComparePatch, id: &Identity<'_>) -> bool {
    let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    ok(&p.api_version, id.api_version)
        && ok(&p.kind, id.kind)
        && ok(&p.namespace, id.namespace)
        && ok(&p.name, id.name)
}

fn remove_pointer(v: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match v.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(&last);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

fn hidden(_: &Value) -> String {
    "(value hidden)".into()
}

fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// Where a value sits: its own key and its parent map's key.
#[derive(Clone, Copy, Default)]
struct Key<'a> {
    name: &'a str,
    parent: &'a str,
}

/// A value the server drops when it is applied (Go's `omitempty`).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

/// Whether two leaves are the same value as the server stores it.
fn same_leaf(key: Key<'_>, want: &Value, have: &Value) -> bool {
    if want == have {
        return true;
    }
    match (want, have) {
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => return true,
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n))
            if INT_OR_STRING.contains(&key.name) && n.to_string() == *s =>
        {
            return true;
        }
        _ => {}
    }
    let quantities = QUANTITY_MAPS.contains(&key.parent) || key.name == "sizeLimit";
    quantities && quantity::same(want, have)
}

fn compare(
    desired: &Value,
    live: &Value,
    path: &mut String,
    key: Key<'_>,
    out: &mut Vec<String>,
    show: fn(&Value) -> String,
) {
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => {
            for (k, w) in want {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                let child = Key {
                    name: k,
                    parent: key.name,
                };
                match have.get(k) {
                    Some(h) => compare(w, h, path, child, out, show),
                    None if is_empty(w) => {}
                    None => out.push(format!("{path}: applied {}, found none", show(w))),
                }
                path.truncate(len);
            }
        }
        (Value::Array(want), Value::Array(have)) => {
            if want.len() != have.len() {
                out.push(format!(
                    "{path}: applied {} items, found {}",
                    want.len(),
                    have.len()
                ));
                return;
            }
            for (i, (w, h)) in want.iter().zip(have).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                compare(w, h, path, key, out, show);
                path.truncate(len);
            }
        }
        (w, Value::Null) if is_empty(w) => {}
        (w, h) if same_leaf(key, w, h) => {}
        (w, h) => out.push(format!("{path}: applied {}, found {}", show(w), show(h))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::PatchOperation;
    use serde_json::json;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn drift_table() {
        let mut defaulted = deploy(2, "nginx:1");
        defaulted["metadata"]["resourceVersion"] = json!("42");
        defaulted["metadata"]["labels"]["extra"] = json!("added by someone");
        defaulted["spec"]["strategy"] = json!({"type": "RollingUpdate"});
        defaulted["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] =
            json!("IfNotPresent");
        defaulted["status"] = json!({"replicas": 2});
        let mut unlabeled = deploy(2, "nginx:1");
        unlabeled["metadata"]["labels"] = json!({});
        let mut extra_container = deploy(2, "nginx:1");
        extra_container["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar"}));
        let rows: Vec<(&str, Value, Vec<&str>)> = vec![
            ("identical", deploy(2, "nginx:1"), vec![]),
            (
                "server defaults, status and others' fields are not drift",
                defaulted,
                vec![],
            ),
            (
                "a scaled replica count",
                deploy(5, "nginx:1"),
                vec!["spec.replicas: applied 2, found 5"],
            ),
            (
                "a changed image",
                deploy(2, "nginx:2"),
                vec![
                    r#"spec.template.spec.containers[0].image: applied "nginx:1", found "nginx:2""#,
                ],
            ),
            (
                "a removed label",
                unlabeled,
                vec![r#"metadata.labels.app: applied "web", found none"#],
            ),
            (
                "an added list item",
                extra_container,
                vec!["spec.template.spec.containers: applied 1 items, found 2"],
            ),
        ];
        for (what, live, want) in rows {
            assert_eq!(
                drift(&deploy(2, "nginx:1"), &live, &[], false),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn what_the_server_canonicalizes_is_not_drift() {
        let with = |requests: Value, limits: Value| {
            let mut d = deploy(2, "nginx:1");
            d["spec"]["template"]["spec"]["containers"][0]["resources"] =
                json!({"requests": requests, "limits": limits});
            d
        };
        // Every notation Kubernetes accepts, against what it stores, both
        // ways round.
        for (applied, stored) in [
            (json!(0.5), json!("500m")),
            (json!("0.5"), json!("500m")),
            (json!(1), json!("1")),
            (json!("1000m"), json!("1")),
            (json!("1.5"), json!("1500m")),
            (json!("1024Mi"), json!("1Gi")),
            (json!("0.5Gi"), json!("512Mi")),
            (json!("1e3"), json!("1e3")),
            (json!("1000e0"), json!("1e3")),
            (json!("2000M"), json!("2G")),
            (json!("0.0000000001"), json!("1n")),
        ] {
            let want = with(
                json!({"cpu": applied.clone()}),
                json!({"memory": applied.clone()}),
            );
            let have = with(
                json!({"cpu": stored.clone()}),
                json!({"memory": stored.clone()}),
            );
            assert_eq!(
                drift(&want, &have, &[], false),
                Vec::<String>::new(),
                "{applied} vs {stored}"
            );
            assert_eq!(
                drift(&have, &want, &[], false),
                Vec::<String>::new(),
                "{stored} vs {applied}"
            );
        }
        // A real change is still one, named once, with both values.
        assert_eq!(
            drift(
                &with(json!({"cpu": 0.5}), json!({})),
                &with(json!({"cpu": "600m"}), json!({})),
                &[],
                false
            ),
            [
                "spec.template.spec.containers[0].resources.requests.cpu: applied 0.5, found \"600m\""
            ]
        );
        // Only quantities compare as quantities.
        let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"cpu": v}});
        assert_eq!(drift(&cm("0.5"), &cm("500m"), &[], false).len(), 1);

        // Int-or-string, numbers, and what the server drops when empty.
        let svc = |port: Value, extra: Value| {
            let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                "spec": {"ports": [{"port": 80, "targetPort": port}]}});
            s["spec"]
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            s
        };
        let want = svc(
            json!(8080),
            json!({"selector": {}, "externalIPs": [], "loadBalancerIP": "", "publishNotReadyAddresses": false, "healthCheckNodePort": 0}),
        );
        assert!(drift(&want, &svc(json!("8080"), json!({})), &[], false).is_empty());
        assert!(
            drift(
                &svc(json!(80.0), json!({})),
                &svc(json!(80), json!({})),
                &[],
                false
            )
            .is_empty()
        );
        assert_eq!(
            drift(
                &svc(json!(8080), json!({})),
                &svc(json!("http"), json!({})),
                &[],
                false
            ),
            [r#"spec.ports[0].targetPort: applied 8080, found "http""#]
        );
        assert_eq!(
            drift(
                &svc(json!(1), json!({"publishNotReadyAddresses": true})),
                &svc(json!(1), json!({})),
                &[],
                false
            ),
            ["spec.publishNotReadyAddresses: applied true, found none"]
        );

        // A Secret's stringData is the data it becomes.
        let secret = |fields: Value| {
            let mut s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
            s.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            s
        };
        let want = secret(
            json!({"stringData": {"user": "admin"}, "data": {"user": "b2xk", "other": "eA=="}}),
        );
        let have = secret(json!({"data": {"user": "YWRtaW4=", "other": "eA=="}, "type": "Opaque"}));
        assert!(drift(&want, &have, &[], true).is_empty());
        let changed = secret(json!({"data": {"user": "cm9vdA==", "other": "eA=="}}));
        assert_eq!(
            drift(&want, &changed, &[], true),
            ["data.user: applied (value hidden), found (value hidden)"]
        );
    }

    #[test]
    fn compare_patches_remove_paths_of_matching_objects_only() {
        let live = deploy(5, "nginx:1");
        let ignore_replicas = ComparePatch {
            kind: Some("Deployment".into()),
            api_version: Some("apps/v1".into()),
            name: Some("web".into()),
            operations: vec![PatchOperation {
                op: Some("remove".into()),
                path: Some("/spec/replicas".into()),
                value: None,
            }],
            ..Default::default()
        };
        assert!(
            drift(
                &deploy(2, "nginx:1"),
                &live,
                std::slice::from_ref(&ignore_replicas),
                false,
            )
            .is_empty()
        );
        let by_pointer = ComparePatch {
            json_pointers: vec!["/spec/replicas".into()],
            ..Default::default()
        };
        assert!(drift(&deploy(2, "nginx:1"), &live, &[by_pointer], false).is_empty());
        let other = ComparePatch {
            name: Some("api".into()),
            ..ignore_replicas
        };
        assert_eq!(
            drift(&deploy(2, "nginx:1"), &live, &[other], false).len(),
            1
        );
    }

    #[test]
    fn describe_bounds_its_length() {
        let many: Vec<String> = (0..5)
            .map(|i| format!("f{i}: applied 1, found 2"))
            .collect();
        assert_eq!(
            describe(&many),
            "f0: applied 1, found 2; f1: applied 1, found 2; f2: applied 1, found 2; and 2 more"
        );
        assert_eq!(describe(&[]), "");
    }
}
