//! The bundle compiler: a repository tree becomes Bundles and Content, and a
//! bundle's content renders into the manifests one cluster receives.
//!
//! Pure apart from [`load`] (reading a checked-out directory) and the
//! `kubectl kustomize` and `helm template` adapters.

#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod error;
pub mod fleetyaml;
pub mod ignore;
pub mod load;
pub mod tree;
pub mod yaml;

pub use error::{BundleError, Result};
pub use tree::RepoTree;
