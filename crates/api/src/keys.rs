//! Every label, annotation and finalizer key Flotilla reads or writes.
//!
//! Keeping them in one place means a controller and the agent can never
//! disagree on a spelling.

/// The API group of every Flotilla kind.
pub const GROUP: &str = "flotilla.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";

/// On a Bundle: the GitRepo it was compiled from.
pub const REPO_NAME: &str = "flotilla.dev/repo-name";
/// On a Bundle: the HelmOp that made it (as Fleet's
/// `fleet.cattle.io/fleet-helm-name`).
pub const HELMOP_NAME: &str = "flotilla.dev/helmop-name";
/// On a Bundle: the label keys its owner set (comma-separated), so that
/// one it no longer sets is removed.
pub const OWNED_LABELS: &str = "flotilla.dev/labels";
/// On a Bundle: the commit it was compiled from.
pub const COMMIT: &str = "flotilla.dev/commit";
/// On a GitRepo: the last pushed commit a webhook reported to a replica
/// that does not lead; its change wakes the leader.
pub const WEBHOOK_COMMIT: &str = "flotilla.dev/webhook-commit";
/// On a BundleDeployment: the Bundle it deploys.
pub const BUNDLE_NAME: &str = "flotilla.dev/bundle-name";
/// On a BundleDeployment: the namespace (workspace) of its Bundle.
pub const BUNDLE_NAMESPACE: &str = "flotilla.dev/bundle-namespace";
/// On a BundleDeployment and a cluster namespace: the Cluster it belongs to.
pub const CLUSTER_NAME: &str = "flotilla.dev/cluster";
/// On a BundleDeployment and a cluster namespace: the namespace of that Cluster.
pub const CLUSTER_NAMESPACE: &str = "flotilla.dev/cluster-namespace";
/// On every object Flotilla's controllers create: who manages it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "flotilla";

/// On downstream objects: the ApplySet-style inventory they belong to.
pub const PART_OF: &str = "applyset.kubernetes.io/part-of";
/// On downstream objects: the BundleDeployment that applied them.
pub const BUNDLE_DEPLOYMENT: &str = "flotilla.dev/bundle-deployment";

/// Field manager used by the agent for every server-side apply.
pub const AGENT_FIELD_MANAGER: &str = "flotilla-agent";
/// Field manager used by the controllers.
pub const CONTROLLER_FIELD_MANAGER: &str = "flotilla-controller";

/// Held by the agent on a BundleDeployment until it has pruned downstream.
pub const BUNDLE_DEPLOYMENT_FINALIZER: &str = "flotilla.dev/bundle-deployment";
/// Held on a Bundle until its BundleDeployments are gone.
pub const BUNDLE_FINALIZER: &str = "flotilla.dev/bundle";
/// Held on a GitRepo until its Bundles are gone.
pub const GITREPO_FINALIZER: &str = "flotilla.dev/gitrepo";
/// On a HelmOp: its Bundle is deleted before it goes.
pub const HELMOP_FINALIZER: &str = "flotilla.dev/helmop";

/// The cluster group a GitRepo targets when it names no targets.
pub const DEFAULT_CLUSTER_GROUP: &str = "default";

#[cfg(test)]
mod tests {
    use super::*;

    /// Label keys must be valid qualified names or the API server rejects
    /// every object that carries them.
    #[test]
    fn label_keys_are_qualified_names() {
        for key in [
            REPO_NAME,
            HELMOP_NAME,
            OWNED_LABELS,
            COMMIT,
            WEBHOOK_COMMIT,
            BUNDLE_NAME,
            BUNDLE_NAMESPACE,
            CLUSTER_NAME,
            CLUSTER_NAMESPACE,
            MANAGED_BY,
            PART_OF,
            BUNDLE_DEPLOYMENT,
        ] {
            let (prefix, name) = key.split_once('/').expect("prefixed");
            assert!(prefix.len() <= 253 && prefix.contains('.'), "{key}");
            assert!(!name.is_empty() && name.len() <= 63, "{key}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{key}"
            );
        }
    }
}
