//! The bundle compiler: a repository tree becomes Bundles and Content, and a
//! bundle's content renders into the manifests one cluster receives.
//!
//! Pure apart from [`load`] (reading a checked-out directory) and the
//! `kubectl kustomize` and `helm template` adapters.

#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod compile;
pub mod content;
pub mod error;
pub mod fleetyaml;
pub mod ignore;
pub mod kustomize;
pub mod limits;
pub mod load;
pub mod name;
pub mod render;
pub mod tools;
pub mod tree;
pub mod validate;
pub mod yaml;

pub use compile::{
    BundleDir, BundleKind, CompileInput, CompiledBundle, Deadline, Limits, check_unique_names,
    compile_repo, plan_dirs,
};
pub use content::{BundleContent, deployment_id};
pub use error::{BundleError, Result};
pub use render::{RenderInput, render};
pub use tools::Tools;
pub use tree::{BlobSource, RepoTree};

#[cfg(test)]
mod tests;
