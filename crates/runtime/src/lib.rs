//! What the controllers and the agents share at run time: the
//! deduplicating work queue with its worker pools ([`queue`]), and one
//! Prometheus registry ([`metrics`]), so an in-process agent's figures are
//! served on the controller's `/metrics`.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod metrics;
pub mod queue;
pub mod serve;
pub mod throttle;

pub use metrics::Metrics;
pub use queue::{Action, Queue, run_workers};

/// A JSON patch that sets an object's finalizers to `want`, guarded by a
/// test of the list it read, so that it conflicts only with a concurrent
/// finalizer change and never with an unrelated write such as a status
/// update (which a resourceVersion guard would).
pub fn finalizers_patch(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    want: &[String],
) -> json_patch::Patch {
    let ops = match &meta.finalizers {
        Some(have) => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": have},
            {"op": "replace", "path": "/metadata/finalizers", "value": want},
        ]),
        None => serde_json::json!([
            {"op": "test", "path": "/metadata/uid", "value": meta.uid},
            {"op": "add", "path": "/metadata/finalizers", "value": want},
        ]),
    };
    serde_json::from_value(ops).expect("a well-formed JSON patch")
}

/// A JSON patch that replaces an object's whole spec and sets the given
/// labels and annotations (and sets the owner reference), guarded by the
/// object's uid. A controller that owns a spec outright writes it this
/// way: a server-side apply would leave fields another manager added
/// under it (a hand edit), which this removes.
pub fn replace_spec_patch(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
    owner: Option<serde_json::Value>,
    spec: &serde_json::Value,
) -> json_patch::Patch {
    use serde_json::json;
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    let mut ops = vec![
        json!({"op": "test", "path": "/metadata/uid", "value": meta.uid}),
        json!({"op": "replace", "path": "/spec", "value": spec}),
    ];
    let mut set = |field: &str,
                   have: bool,
                   entries: &std::collections::BTreeMap<String, String>| {
        if entries.is_empty() {
            return;
        }
        if have {
            for (k, v) in entries {
                ops.push(json!({"op": "add", "path": format!("/metadata/{field}/{}", escape(k)), "value": v}));
            }
        } else {
            ops.push(json!({"op": "add", "path": format!("/metadata/{field}"), "value": entries}));
        }
    };
    set("labels", meta.labels.is_some(), labels);
    set("annotations", meta.annotations.is_some(), annotations);
    // The owner replaces any other: two controller owners are refused.
    if let Some(owner) = owner {
        ops.push(json!({"op": "add", "path": "/metadata/ownerReferences", "value": [owner]}));
    }
    serde_json::from_value(serde_json::Value::Array(ops)).expect("a well-formed JSON patch")
}
