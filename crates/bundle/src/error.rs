//! Everything that can go wrong compiling or rendering a bundle. Each error
//! names the offending file (and field or line) so a GitRepo condition can
//! say exactly what to fix.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BundleError {
    #[error("{path}: escapes the repository ({why})")]
    PathEscapes { path: String, why: String },

    #[error("{path}: {size} bytes is over the {limit}-byte limit for one manifest")]
    ManifestTooLarge {
        path: String,
        size: usize,
        limit: usize,
    },

    #[error("bundle {bundle}: {size} bytes is over the {limit}-byte limit for one bundle")]
    BundleTooLarge {
        bundle: String,
        size: usize,
        limit: usize,
    },

    /// `format` is "YAML" or "JSON", after the file's extension.
    #[error("{file}:{line}: invalid {format}: {message}")]
    InvalidYaml {
        file: String,
        line: usize,
        format: &'static str,
        message: String,
    },

    /// A Kubernetes object the API server would refuse for its size.
    #[error("{what}: {size} bytes is over the {limit}-byte limit {why}")]
    ObjectTooLarge {
        what: String,
        size: usize,
        limit: usize,
        why: String,
    },

    /// A deployment option that would reach a subprocess (helm, kustomize)
    /// or a path, and is not safe there.
    #[error("{field}: {message}")]
    InvalidOption { field: String, message: String },

    #[error("the compile did not finish within {seconds}s (a deadline bounds every compile)")]
    TimedOut { seconds: u64 },

    #[error("{file}: field {field}: {message}")]
    InvalidField {
        file: String,
        field: String,
        message: String,
    },

    #[error("{path}: {message}")]
    InvalidPath { path: String, message: String },

    #[error("{file}: {message}")]
    InvalidManifest { file: String, message: String },

    #[error("{path}: cannot be read: {message}")]
    Unreadable { path: String, message: String },

    #[error("{tool} failed: {message}")]
    Tool { tool: String, message: String },

    #[error("overlay {overlay}: {message}")]
    Overlay { overlay: String, message: String },
}

pub type Result<T, E = BundleError> = std::result::Result<T, E>;
