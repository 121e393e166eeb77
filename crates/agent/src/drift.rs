//! Has an applied object drifted? Pure: what was applied and what lives in
//! the cluster in, the differences out.
//!
//! Only the fields the agent applied are compared. Whatever the API server
//! or another controller adds (defaults, status, other managers' fields)
//! is not drift. A list must keep its length, and each element is compared
//! the same way. `diff.comparePatches` entries that match the object
//! remove paths from both sides first.

use flotilla_api::ComparePatch;
use serde_json::Value;

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
    compare(&desired, &live, &mut String::new(), &mut out, show);
    out
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

fn compare(
    desired: &Value,
    live: &Value,
    path: &mut String,
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
                match have.get(k) {
                    Some(h) => compare(w, h, path, out, show),
                    None if w.is_null() => {}
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
                compare(w, h, path, out, show);
                path.truncate(len);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (w, h) if w == h => {}
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
