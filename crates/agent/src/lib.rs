//! Flotilla's agent: one per downstream cluster. It deploys the
//! BundleDeployments of its cluster's namespace on the management cluster.
//!
//! What wakes it:
//! - a BundleDeployment whose spec (generation), deletion or finalizer
//!   changed (its own status writes do not wake it);
//! - a BundleDeployment whose state changed wakes the ones that depend on
//!   it (`dependsOn`);
//! - a change to an object it applied, seen by one watch per kind on the
//!   downstream cluster, unless the change is the agent's own write.
//!
//! What it computes, per BundleDeployment (see [`reconcile`]): the rendered
//! manifests of its `deploymentID`, which of them differ from the cluster,
//! what the new set no longer holds ([`inventory::prune`]), readiness
//! ([`readiness`]) and drift ([`drift`]).
//!
//! What it writes: downstream, server-side applies (field manager
//! `flotilla-agent`, forced) of objects that differ, deletions of pruned
//! objects, and the inventory parent; on the management cluster, the
//! BundleDeployment's status when it changed, its finalizer, and, at the
//! contact interval, the Cluster's `status.agent.lastSeen`.
//!
//! The same code runs in the controller process (one agent per Cluster
//! with a kubeconfig Secret) and as `flotilla agent` in the downstream
//! cluster.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod downstream;
pub mod drift;
pub mod hooks;
pub mod inventory;
pub mod readiness;
pub mod reconcile;
mod run;
mod values_from;

pub use run::{Agent, AgentConfig};

use flotilla_runtime::Queue;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Failed(String),
}

/// Queues a BundleDeployment (by name) for its agent's workers.
#[derive(Clone)]
pub struct Wake(Arc<Queue<String>>);

impl Wake {
    pub fn wake(&self, name: String, trigger: &'static str) {
        self.0.add(name, trigger);
    }
}
