//! What the controllers and the agents share at run time: the
//! deduplicating work queue with its worker pools ([`queue`]), and one
//! Prometheus registry ([`metrics`]), so an in-process agent's figures are
//! served on the controller's `/metrics`.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod metrics;
pub mod queue;

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
