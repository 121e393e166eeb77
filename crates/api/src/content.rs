//! Content: the manifests of a bundle, stored once per distinct byte string.

use k8s_openapi::ByteString;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Gzip-compressed manifests named `s-<sha256>`. Every bundle and cluster
/// with the same bytes shares one Content, so N clusters never store N copies.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Content",
    no_spec,
    category = "flotilla",
    doc = "Gzip-compressed manifests, named s-<sha256> and shared by every bundle with the same bytes.",
    crates(kube_core = "::kube_core"),
    printcolumn = r#"{"name":"SHA256","type":"string","jsonPath":".sha256sum"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ContentFields {
    /// The gzip-compressed canonical manifests.
    #[schemars(schema_with = "crate::schema::base64_bytes")]
    pub content: ByteString,
    /// The hex sha256 of the uncompressed canonical manifests.
    pub sha256sum: String,
}

/// The name of the Content holding bytes with this sha256.
pub fn content_name(sha256_hex: &str) -> String {
    format!("s-{sha256_hex}")
}
