//! Flotilla's API: the CRD types of group `flotilla.dev/v1alpha1`, the label
//! and annotation keys, conditions, the ranking of deployment states and CRD
//! generation. Pure data: no client and no I/O.

#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod bundle;
pub mod bundledeployment;
pub mod cluster;
pub mod condition;
pub mod content;
pub mod crds;
pub mod gitrepo;
pub mod helmop;
pub mod keys;
pub mod options;
pub mod quantity;
mod schema;
pub mod state;
pub mod summary;
pub mod target;

pub use bundle::{Bundle, BundleDisplay, BundleSpec, BundleStatus, PartitionStatus};
pub use bundledeployment::{
    BundleDeployment, BundleDeploymentDisplay, BundleDeploymentSpec, BundleDeploymentStatus,
    ModifiedStatus, NonReadyStatus,
};
pub use cluster::{
    AgentStatus, Cluster, ClusterDisplay, ClusterGroup, ClusterGroupDisplay, ClusterGroupSpec,
    ClusterGroupStatus, ClusterSpec, ClusterStatus,
};
pub use content::{Content, ContentFields, content_name};
pub use gitrepo::{GitRepo, GitRepoDisplay, GitRepoSpec, GitRepoStatus};
pub use helmop::{HelmOp, HelmOpDisplay, HelmOpSpec, HelmOpStatus};
pub use options::{
    BundleDeploymentOptions, BundleRef, ComparePatch, CorrectDrift, DiffOptions, HelmOptions,
    IgnoreOptions, KeyRef, KustomizeOptions, Partition, PatchOperation, RolloutStrategy,
    ValuesFrom, YamlOptions,
};
pub use state::BundleState;
pub use summary::{BundleSummary, NonReadyResource};
pub use target::{
    BundleTarget, GitTarget, TargetCriteria, TargetCustomization, TargetCustomizationMode,
};

/// Re-exported so that dependents use the exact versions the types use.
pub use k8s_openapi;
pub use kube_core;
pub use schemars;
pub use serde;
pub use serde_json;
