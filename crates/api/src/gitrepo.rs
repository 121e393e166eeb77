//! GitRepo: a repository, the paths in it to deploy, and where to deploy them.

use crate::options::CorrectDrift;
use crate::summary::BundleSummary;
use crate::target::GitTarget;
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Git repository watched by Flotilla. Each path in it becomes a Bundle.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "GitRepo",
    namespaced,
    status = "GitRepoStatus",
    category = "flotilla",
    doc = "A Git repository watched by Flotilla; each path in it becomes a Bundle.",
    crates(kube_core = "::kube_core"),
    printcolumn = r#"{"name":"Repo","type":"string","jsonPath":".status.display.repo"}"#,
    printcolumn = r#"{"name":"Commit","type":"string","jsonPath":".status.commit"}"#,
    printcolumn = r#"{"name":"Clusters-Ready","type":"string","jsonPath":".status.display.readyClusters"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.display.state"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.display.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GitRepoSpec {
    /// The repository URL (https, ssh, git or file).
    pub repo: String,
    /// The branch to follow. Defaults to `master`, as in Fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A commit SHA or tag to pin instead of following a branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Directories of the repository to deploy; globs allowed. Defaults to `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Clusters to deploy to. None means the cluster group `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<GitTarget>,
    /// Forces every resource into this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Secret with the credentials for the repository (basic auth or ssh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_name: Option<String>,
    /// Secret with the credentials for private Helm repositories and OCI
    /// registries (`username`, `password`, `cacerts`, `insecureSkipVerify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_secret_name: Option<String>,
    /// Secret whose key `secrets-path.yaml` maps bundle paths to their own
    /// Helm credentials (`username`, `password`, `caBundle`,
    /// `insecureSkipVerify`); it takes precedence over `helmSecretName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm_secret_name_for_paths: Option<String>,
    /// Credentials are sent only to chart sources whose URL matches this
    /// regular expression (unanchored, as in Fleet).
    #[serde(
        default,
        rename = "helmRepoURLRegex",
        skip_serializing_if = "Option::is_none"
    )]
    pub helm_repo_url_regex: Option<String>,
    /// PEM CA bundle to verify the repository's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_base64_bytes")]
    pub ca_bundle: Option<ByteString>,
    #[serde(
        default,
        rename = "insecureSkipTLSVerify",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub insecure_skip_tls_verify: bool,
    /// Stop propagating commits; BundleDeployments show OutOfSync.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Service account the agents impersonate downstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// How often to poll the branch head, as a Go duration. Default 15s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<String>,
    /// Only webhooks trigger a fetch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_polling: bool,
    /// Bump to force a redeployment of unchanged content.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub force_sync_generation: i64,
    /// Keep deployed resources when the GitRepo or a bundle goes away.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_resources: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_drift: Option<CorrectDrift>,
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRepoStatus {
    #[serde(default)]
    pub observed_generation: i64,
    /// The commit the Bundles were compiled from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The lowest number of ready clusters over the repo's bundles.
    #[serde(default)]
    pub ready_clusters: u32,
    #[serde(default)]
    pub desired_ready_clusters: u32,
    #[serde(default)]
    pub summary: BundleSummary,
    #[serde(default)]
    pub display: GitRepoDisplay,
    /// kstatus conditions: Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRepoDisplay {
    /// The repository URL as it may be shown: no userinfo, no query
    /// credentials (the REPO column; `spec.repo` may hold a password).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repo: String,
    /// "ready/desired" clusters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ready_clusters: String,
    /// The worst bundle state, or a git-side state such as `Stalled`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
}
