//! Content: a bundle's files as canonical bytes, their sha256, their gzip,
//! and the deploymentID of one cluster's deployment.
//!
//! Canonical bytes are compact JSON of the files sorted by path, so the
//! same files give the same sha256 on every machine and every run.

use crate::error::{BundleError, Result};
use base64::Engine;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flotilla_api::BundleDeploymentOptions;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// A bundle's files, by path relative to the bundle directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleContent {
    pub files: BTreeMap<String, Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct Canonical {
    files: Vec<CanonicalFile>,
}

#[derive(Serialize, Deserialize)]
struct CanonicalFile {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    /// Files that are not UTF-8 (packaged charts, images) travel as base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

impl BundleContent {
    pub fn total_bytes(&self) -> usize {
        self.files.values().map(Vec::len).sum()
    }

    pub fn canonical_bytes(&self) -> Vec<u8> {
        let files = self
            .files
            .iter()
            .map(|(name, bytes)| match std::str::from_utf8(bytes) {
                Ok(text) => CanonicalFile {
                    name: name.clone(),
                    content: Some(text.to_owned()),
                    base64: None,
                },
                Err(_) => CanonicalFile {
                    name: name.clone(),
                    content: None,
                    base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                },
            })
            .collect();
        serde_json::to_vec(&Canonical { files }).expect("plain data serializes")
    }

    pub fn from_canonical(bytes: &[u8]) -> Result<Self> {
        let bad = |message: String| BundleError::InvalidManifest {
            file: "(content)".into(),
            message,
        };
        let canonical: Canonical = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not canonical bundle content: {e}")))?;
        let mut files = BTreeMap::new();
        for f in canonical.files {
            let bytes = match (f.content, f.base64) {
                (Some(text), None) => text.into_bytes(),
                (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| bad(format!("{}: bad base64: {e}", f.name)))?,
                _ => {
                    return Err(bad(format!(
                        "{}: needs exactly one of content or base64",
                        f.name
                    )));
                }
            };
            files.insert(f.name, bytes);
        }
        Ok(BundleContent { files })
    }

    /// Lowercase hex sha256 of the canonical bytes.
    pub fn sha256_hex(&self) -> String {
        sha256_hex(&self.canonical_bytes())
    }

    /// The Content object's name: `s-<sha256>`.
    pub fn content_id(&self) -> String {
        flotilla_api::content_name(&self.sha256_hex())
    }

    /// Gzip of the canonical bytes, byte-identical across runs (no mtime,
    /// no file name in the header).
    pub fn gzip(&self) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&self.canonical_bytes())
            .expect("writing to a Vec cannot fail");
        enc.finish().expect("writing to a Vec cannot fail")
    }

    pub fn from_gzip(gz: &[u8]) -> Result<Self> {
        let mut bytes = Vec::new();
        GzDecoder::new(gz)
            .read_to_end(&mut bytes)
            .map_err(|e| BundleError::InvalidManifest {
                file: "(content)".into(),
                message: format!("content is not valid gzip: {e}"),
            })?;
        Self::from_canonical(&bytes)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `s-<content sha256>:<options sha256>`: changes exactly when the content
/// or this cluster's options change. Options hash over their JSON, whose
/// field order is fixed by the types and whose maps are sorted.
pub fn deployment_id(content_id: &str, options: &BundleDeploymentOptions) -> String {
    let options_json = serde_json::to_vec(options).expect("plain data serializes");
    format!("{content_id}:{}", sha256_hex(&options_json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BundleContent {
        let mut c = BundleContent::default();
        c.files
            .insert("b.yaml".into(), b"kind: ConfigMap\n".to_vec());
        c.files
            .insert("a/chart.tgz".into(), vec![0x1f, 0x8b, 0xff, 0x00]);
        c
    }

    #[test]
    fn canonical_round_trip_including_binary() {
        let c = sample();
        assert_eq!(
            BundleContent::from_canonical(&c.canonical_bytes()).unwrap(),
            c
        );
        assert_eq!(BundleContent::from_gzip(&c.gzip()).unwrap(), c);
    }

    /// Pinned: if this changes, every Content and deploymentID in every
    /// fleet changes with it, and every cluster redeploys.
    #[test]
    fn hashes_are_stable_across_runs_and_machines() {
        let c = sample();
        assert_eq!(
            String::from_utf8(c.canonical_bytes()).unwrap(),
            r#"{"files":[{"name":"a/chart.tgz","base64":"H4v/AA=="},{"name":"b.yaml","content":"kind: ConfigMap\n"}]}"#
        );
        assert_eq!(c.sha256_hex(), sha256_hex(&c.canonical_bytes()));
        assert_eq!(c.gzip(), c.gzip(), "gzip is deterministic");
        let opts = BundleDeploymentOptions {
            default_namespace: Some("shop".into()),
            ..Default::default()
        };
        assert_eq!(
            deployment_id("s-abc", &opts),
            format!("s-abc:{}", sha256_hex(br#"{"defaultNamespace":"shop"}"#))
        );
    }

    #[test]
    fn deployment_id_follows_content_and_options() {
        let base = BundleDeploymentOptions::default();
        let other = BundleDeploymentOptions {
            keep_resources: true,
            ..Default::default()
        };
        assert_eq!(
            deployment_id("s-1", &base),
            deployment_id("s-1", &base.clone())
        );
        assert_ne!(deployment_id("s-1", &base), deployment_id("s-2", &base));
        assert_ne!(deployment_id("s-1", &base), deployment_id("s-1", &other));
    }

    #[test]
    fn corrupt_content_is_an_error() {
        assert!(BundleContent::from_gzip(b"not gzip").is_err());
        assert!(BundleContent::from_canonical(br#"{"files":[{"name":"x"}]}"#).is_err());
    }
}
