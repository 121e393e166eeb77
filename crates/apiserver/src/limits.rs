//! The server's limits on what it accepts and keeps, each checked on every
//! path that could exceed it.
//!
//! - Request bodies: 3 MiB, as kube-apiserver's `MaxRequestBodyBytes`
//!   (413 `Request entity too large: limit is 3145728`).
//! - Stored objects: etcd's default 1.5 MiB request limit, which a real
//!   cluster answers with a 500 `etcdserver: request is too large`.
//! - JSON patches: at most 10,000 operations, as kube-apiserver.
//! - Nesting: at most [`MAX_OBJECT_DEPTH`] levels. A real server accepts
//!   10,000, but this one keeps values as trees it walks recursively, so it
//!   bounds depth on every write (bodies, and the result of every patch
//!   operation) well below what its own reader accepts: nothing it stores
//!   can later fail to load, or overflow a stack when serialized.

use crate::error::ApiError;
use serde_json::Value;

/// The largest request body, as kube-apiserver's default.
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The largest stored object: etcd's default `--max-request-bytes`.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// kube-apiserver's `maxJSONPatchOperations`.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The deepest object stored. serde_json reads 128 levels; a stored object
/// is wrapped in at most three more (a log record, a list, a watch event
/// or a Table row), so 100 leaves room.
pub const MAX_OBJECT_DEPTH: usize = 100;

/// Whether `v` nests deeper than `limit` levels. Recursion stops at the
/// limit, so a hostile value cannot overflow the stack here.
pub fn exceeds_depth(v: &Value, limit: usize) -> bool {
    fn walk(v: &Value, remaining: usize) -> bool {
        match v {
            Value::Array(items) => remaining == 0 || items.iter().any(|i| walk(i, remaining - 1)),
            Value::Object(map) => remaining == 0 || map.values().any(|i| walk(i, remaining - 1)),
            _ => false,
        }
    }
    walk(v, limit)
}

/// Whether the value a JSON patch operation wrote at `pointer` (`-`, an
/// append, meaning the array's last item) reaches past the depth limit.
/// Walks only that value, at most the remaining depth.
pub fn written_too_deep(doc: &Value, pointer: &str) -> bool {
    let segments = pointer.split('/').skip(1).count();
    if segments > MAX_OBJECT_DEPTH {
        return true;
    }
    let target = match pointer.strip_suffix("/-") {
        Some(parent) => doc
            .pointer(parent)
            .and_then(Value::as_array)
            .and_then(|a| a.last()),
        None => doc.pointer(pointer),
    };
    target.is_some_and(|v| exceeds_depth(v, MAX_OBJECT_DEPTH - segments))
}

/// The 400 a body or patch result deeper than the limit gets.
pub fn too_deep() -> ApiError {
    ApiError::bad_request(format!(
        "the object exceeded max depth of {MAX_OBJECT_DEPTH} nested levels"
    ))
}

/// What a real cluster answers when an object does not fit in etcd.
pub fn object_too_large() -> ApiError {
    ApiError::new(500, "", "etcdserver: request is too large")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn depth_is_counted_in_containers() {
        assert!(!exceeds_depth(&json!(1), 0));
        assert!(exceeds_depth(&json!({}), 0));
        assert!(!exceeds_depth(&json!({}), 1));
        assert!(!exceeds_depth(&nested(100), 100));
        assert!(exceeds_depth(&nested(101), 100));
        assert!(exceeds_depth(&json!([[[[1]]]]), 3));
    }

    #[test]
    fn a_written_value_is_checked_where_it_lands() {
        let mut doc = json!({"a": {"list": []}});
        assert!(!written_too_deep(&doc, "/a"));
        doc["a"]["deep"] = nested(98);
        assert!(!written_too_deep(&doc, "/a/deep"), "2 + 98 levels");
        doc["a"]["deep"] = nested(99);
        assert!(written_too_deep(&doc, "/a/deep"), "2 + 99 levels");
        doc["a"]["list"] = json!([1, nested(120)]);
        assert!(written_too_deep(&doc, "/a/list/-"));
        assert!(!written_too_deep(&doc, "/missing"));
    }
}
