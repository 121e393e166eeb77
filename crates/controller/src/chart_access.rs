//! The credentials a GitRepo's or HelmOp's Helm charts are fetched with,
//! read from its Secrets as Fleet reads them:
//!
//! - `helmSecretName`: `username`, `password`, `cacerts` (PEM), and
//!   `insecureSkipVerify` (`"true"`);
//! - `helmSecretNameForPaths`: the key `secrets-path.yaml` maps a bundle's
//!   path to its own `{username, password, caBundle (base64),
//!   insecureSkipVerify}`; a path listed there uses only those;
//! - `helmRepoURLRegex`: credentials go only to sources whose URL matches
//!   (unanchored); the TLS trust applies everywhere.
//!
//! Nothing here is logged, and `Debug` shows no secret.

use crate::gitrepo::Outcome;
use crate::{Context, ObjectKey};
use flotilla_api::k8s_openapi::api::core::v1::Secret;
use flotilla_charts::{Access, ChartSource};
use kube::Api;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Clone, Default, PartialEq, Eq)]
struct Creds {
    basic: Option<(String, String)>,
    ca: Option<Vec<u8>>,
    insecure: bool,
}

/// How one GitRepo reaches its chart sources.
#[derive(Clone, Default)]
pub struct ChartAccess {
    default: Creds,
    by_path: BTreeMap<String, Creds>,
    regex: Option<regex::Regex>,
}

impl std::fmt::Debug for ChartAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartAccess")
            .field("paths", &self.by_path.len())
            .field("regex", &self.regex.as_ref().map(|r| r.as_str().to_owned()))
            .finish()
    }
}

impl ChartAccess {
    /// What a source of the bundle at `dir` is fetched with.
    pub fn access(&self, dir: &str, src: &ChartSource) -> Access {
        let creds = self.by_path.get(dir).unwrap_or(&self.default);
        let allowed = self
            .regex
            .as_ref()
            .is_none_or(|r| r.is_match(&src.url_for_credentials()));
        Access {
            basic: creds.basic.clone().filter(|_| allowed),
            ca_bundle: creds.ca.clone(),
            insecure_skip_verify: creds.insecure,
        }
    }

    /// A digest of it all, for the GitRepo's fingerprint: a rotated
    /// credential resolves the charts again.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let mut add = |label: &str, c: &Creds| {
            h.update(label.as_bytes());
            if let Some((u, p)) = &c.basic {
                h.update(u.as_bytes());
                h.update(b"\0");
                h.update(p.as_bytes());
            }
            h.update(b"\0");
            h.update(c.ca.as_deref().unwrap_or_default());
            h.update([u8::from(c.insecure)]);
        };
        add("default", &self.default);
        for (path, c) in &self.by_path {
            add(path, c);
        }
        h.update(self.regex.as_ref().map(|r| r.as_str()).unwrap_or_default());
        hex::encode(&h.finalize()[..12])
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PathCreds {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// Base64 of a PEM bundle.
    #[serde(default)]
    ca_bundle: String,
    #[serde(default)]
    insecure_skip_verify: bool,
}

async fn secret_data(
    ctx: &Context,
    key: &ObjectKey,
    field: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, Outcome> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &key.namespace);
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()),
        Ok(None) => Err(Outcome::Failed {
            reason: "SecretNotFound",
            message: format!("{field}: Secret {}/{name} not found", key.namespace),
            stalled: true,
            retry: true,
        }),
        Err(e) => Err(Outcome::transient(
            "SecretUnreadable",
            format!("{field}: reading Secret {}/{name}: {e}", key.namespace),
        )),
    }
}

fn text(data: &BTreeMap<String, Vec<u8>>, k: &str) -> Option<String> {
    data.get(k)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
        .filter(|s| !s.is_empty())
}

/// Where an owner's Helm credentials are: the fields of its spec.
#[derive(Default)]
pub struct HelmSecrets<'a> {
    pub helm_secret_name: Option<&'a str>,
    pub helm_secret_name_for_paths: Option<&'a str>,
    pub helm_repo_url_regex: Option<&'a str>,
    /// `insecureSkipTLSVerify` of a HelmOp.
    pub insecure_skip_tls_verify: bool,
}

impl<'a> HelmSecrets<'a> {
    pub fn of_gitrepo(spec: &'a flotilla_api::GitRepoSpec) -> Self {
        HelmSecrets {
            helm_secret_name: spec.helm_secret_name.as_deref(),
            helm_secret_name_for_paths: spec.helm_secret_name_for_paths.as_deref(),
            helm_repo_url_regex: spec.helm_repo_url_regex.as_deref(),
            insecure_skip_tls_verify: false,
        }
    }
}

/// Reads an owner's Helm credentials (its Secrets are in `key`'s
/// namespace). An error names the field and the Secret, never a value.
pub async fn chart_access(
    ctx: &Context,
    key: &ObjectKey,
    spec: &HelmSecrets<'_>,
) -> Result<ChartAccess, Outcome> {
    let mut out = ChartAccess::default();
    out.default.insecure = spec.insecure_skip_tls_verify;
    if let Some(re) = spec.helm_repo_url_regex.filter(|r| !r.is_empty()) {
        out.regex = Some(regex::Regex::new(re).map_err(|e| {
            Outcome::stalled("InvalidHelmRepoURLRegex", format!("helmRepoURLRegex: {e}"))
        })?);
    }
    if let Some(name) = spec.helm_secret_name.filter(|n| !n.is_empty()) {
        let data = secret_data(ctx, key, "helmSecretName", name).await?;
        out.default = Creds {
            basic: text(&data, "username")
                .or_else(|| text(&data, "password").map(|_| String::new()))
                .zip(text(&data, "password")),
            ca: data.get("cacerts").cloned().filter(|c| !c.is_empty()),
            insecure: spec.insecure_skip_tls_verify
                || text(&data, "insecureSkipVerify").as_deref() == Some("true"),
        };
    }
    if let Some(name) = spec.helm_secret_name_for_paths.filter(|n| !n.is_empty()) {
        let data = secret_data(ctx, key, "helmSecretNameForPaths", name).await?;
        let bad = |why: String| {
            Outcome::stalled(
                "InvalidSecret",
                format!(
                    "helmSecretNameForPaths: Secret {}/{name}: {why}",
                    key.namespace
                ),
            )
        };
        let yaml = data
            .get("secrets-path.yaml")
            .ok_or_else(|| bad("it has no key \"secrets-path.yaml\"".into()))?;
        let text =
            std::str::from_utf8(yaml).map_err(|_| bad("secrets-path.yaml is not UTF-8".into()))?;
        let paths: BTreeMap<String, PathCreds> = serde_saphyr::from_str(text).map_err(|_| {
            // The parser's message may quote the file; never show it.
            bad("secrets-path.yaml is not a map of paths to credentials".into())
        })?;
        use base64::Engine as _;
        for (path, c) in paths {
            let ca = if c.ca_bundle.is_empty() {
                None
            } else {
                Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(c.ca_bundle.trim())
                        .map_err(|_| bad(format!("path {path:?}: caBundle is not base64")))?,
                )
            };
            let basic = (!c.password.is_empty()).then(|| (c.username.clone(), c.password.clone()));
            out.by_path.insert(
                path.trim_matches('/').to_owned(),
                Creds {
                    basic,
                    ca,
                    insecure: c.insecure_skip_verify,
                },
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_where_the_regex_allows() {
        let a = ChartAccess {
            default: Creds {
                basic: Some(("bob".into(), "hunter2".into())),
                ca: Some(b"PEM".to_vec()),
                insecure: false,
            },
            by_path: [(
                "apps/special".to_owned(),
                Creds {
                    basic: Some(("eve".into(), "s3cret".into())),
                    ..Default::default()
                },
            )]
            .into(),
            regex: Some(regex::Regex::new("charts\\.example\\.com").unwrap()),
        };
        let ours =
            ChartSource::of(Some("https://charts.example.com"), Some("redis"), None).unwrap();
        let theirs =
            ChartSource::of(Some("https://evil.example.org"), Some("redis"), None).unwrap();
        assert_eq!(
            a.access("apps/web", &ours).basic,
            Some(("bob".into(), "hunter2".into()))
        );
        let other = a.access("apps/web", &theirs);
        assert_eq!(
            other.basic, None,
            "no credentials to a source the regex does not match"
        );
        assert_eq!(
            other.ca_bundle.as_deref(),
            Some(&b"PEM"[..]),
            "TLS trust applies everywhere"
        );
        assert_eq!(
            a.access("apps/special", &ours).basic,
            Some(("eve".into(), "s3cret".into()))
        );
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
