//! Where a GitRepo reads from: its URL (checked against the URL policy
//! where it enters), the credentials of its `clientSecretName` Secret, its
//! TLS settings, and its poll interval. Every failure here is an
//! [`Outcome::Failed`] naming the field.

use super::Outcome;
use crate::{Context, ObjectKey};
use flotilla_api::GitRepo;
use flotilla_api::k8s_openapi::api::core::v1::Secret;
use flotilla_git::url::{UrlPolicy, check_repo_url};
use flotilla_git::{Credentials, GitError, Source, Tls, Want};
use kube::Api;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// The poll interval when a GitRepo names none.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(15);
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Which URLs this controller's GitRepos may name.
pub fn url_policy(ctx: &Context) -> UrlPolicy {
    UrlPolicy {
        allow_file: ctx.args.allow_file_repos,
        forbidden_dir: Some(ctx.args.git_dir.clone()),
    }
}

/// The Source a GitRepo reads: its URL, the credentials from its
/// `clientSecretName` Secret, and its TLS settings.
pub async fn source_of(ctx: &Context, key: &ObjectKey, repo: &GitRepo) -> Result<Source, Outcome> {
    let spec = &repo.spec;
    let url = spec.repo.trim();
    check_repo_url(url, &url_policy(ctx))
        .map_err(|message| Outcome::stalled("InvalidRepo", message))?;
    let mut source = Source {
        url: url.to_owned(),
        tls: Tls {
            ca_bundle: spec.ca_bundle.as_ref().map(|b| b.0.clone()),
            insecure_skip_verify: spec.insecure_skip_tls_verify,
        },
        ..Default::default()
    };
    if let Some(name) = spec.client_secret_name.as_deref().filter(|n| !n.is_empty()) {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &key.namespace);
        let secret = match api.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(Outcome::Failed {
                    reason: "SecretNotFound",
                    message: format!(
                        "clientSecretName: Secret {}/{name} not found",
                        key.namespace
                    ),
                    stalled: true,
                    retry: true,
                });
            }
            Err(e) => {
                return Err(Outcome::transient(
                    "SecretUnreadable",
                    format!(
                        "clientSecretName: reading Secret {}/{name}: {e}",
                        key.namespace
                    ),
                ));
            }
        };
        let data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        source.credentials =
            Credentials::from_secret(secret.type_.as_deref(), &data).map_err(|why| {
                Outcome::Failed {
                    reason: "InvalidSecret",
                    message: format!("clientSecretName: Secret {}/{name}: {why}", key.namespace),
                    stalled: true,
                    retry: true,
                }
            })?;
    }
    Ok(source)
}

/// What selects a GitRepo's commit and its bundles: a change of any of it
/// (a rotated credential included) means a fresh listing, a fresh
/// authorization and a fresh compile.
pub fn fingerprint(repo: &GitRepo, source: &Source, want: &Want) -> String {
    let mut h = Sha256::new();
    h.update(source.url.as_bytes());
    h.update(b"\0");
    h.update(source.access_digest().as_bytes());
    // forceSyncGeneration prepares again, as Fleet runs its job again:
    // version ranges of charts are resolved anew.
    h.update(format!(
        "\0{want:?}\0{:?}\0{}",
        repo.spec.paths, repo.spec.force_sync_generation
    ));
    hex::encode(h.finalize())
}

/// How a git failure shows: an unreachable or slow remote is transient
/// (Reconciling, retried); an unknown branch or a refused credential
/// needs the user (Stalled, still retried: the fix may come from outside).
pub fn git_failure(e: &GitError) -> Outcome {
    match e {
        GitError::Unreachable { .. } | GitError::Timeout { .. } | GitError::Other { .. } => {
            Outcome::transient(e.reason(), e.to_string())
        }
        _ => Outcome::Failed {
            reason: e.reason(),
            message: e.to_string(),
            stalled: true,
            retry: true,
        },
    }
}

/// Parses a Go duration (`15s`, `1m30s`, `1h`, `500ms`) and checks the
/// bounds of a poll interval.
pub fn poll_interval(s: Option<&str>) -> Result<Duration, String> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(DEFAULT_POLL_INTERVAL);
    };
    let d = parse_go_duration(s)?;
    if !(MIN_POLL_INTERVAL..=MAX_POLL_INTERVAL).contains(&d) {
        return Err(format!("{s:?} must be between 1s and 24h"));
    }
    Ok(d)
}

pub(crate) fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as 15s, 1m30s or 1h");
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_interval_table() {
        let rows: [(Option<&str>, Result<u64, &str>); 9] = [
            (None, Ok(15_000)),
            (Some(""), Ok(15_000)),
            (Some("15s"), Ok(15_000)),
            (Some("1m30s"), Ok(90_000)),
            (Some("1h"), Ok(3_600_000)),
            (Some("1500ms"), Ok(1_500)),
            (Some("500ms"), Err("between 1s and 24h")),
            (Some("25h"), Err("between 1s and 24h")),
            (Some("soon"), Err("not a duration")),
        ];
        for (input, want) in rows {
            match (poll_interval(input), want) {
                (Ok(d), Ok(ms)) => assert_eq!(d.as_millis() as u64, ms, "{input:?}"),
                (Err(e), Err(why)) => assert!(e.contains(why), "{input:?}: {e}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
        assert!(parse_go_duration("1x").is_err());
        assert!(parse_go_duration("s").is_err());
    }
}
