//! Small schema helpers for fields whose shape the API server must not prune.

use schemars::{Schema, SchemaGenerator, json_schema};

/// A free-form object (Helm values, patches) that the API server keeps as is.
pub fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Bytes, base64-encoded on the wire.
pub fn base64_bytes(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "byte",
    })
}

/// Optional bytes, base64-encoded on the wire.
pub fn optional_base64_bytes(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "byte",
        "nullable": true,
    })
}
