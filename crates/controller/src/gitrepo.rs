//! The GitRepo controller: a repository's commit becomes Bundles and Content.
//!
//! What wakes it (see also `gitpoll.rs` and the hub):
//! - a GitRepo created, its spec changed (generation), or deleting;
//! - the poller, when a GitRepo's branch head moved, and webhooks;
//! - one of its Bundles deleted or edited by someone else (the hub checks
//!   each Bundle event against [`GitState::desired`]), so its own writes
//!   never wake it.
//!
//! What it computes, per GitRepo:
//! 1. the commit: the last one, if the source (URL, credentials, branch or
//!    revision, paths) is unchanged and nobody reported a new head; else an
//!    ls-remote and, only when the shared mirror lacks it, a fetch;
//! 2. the compiled bundles: reused when the commit is unchanged, otherwise
//!    recompiled directory by directory, keyed by git tree id;
//! 3. the desired Bundles: the compiled ones with the GitRepo's own settings
//!    (targets, paused, keepResources, correctDrift, ...) laid over them,
//!    by [`desired_bundle`], which is pure. A spec edit redoes only this.
//!
//! What it writes, each only when it differs: missing Content, one
//! server-side apply per changed Bundle (with the Bundle finalizer already
//! set), deletes of Bundles whose path left the repository, the GitRepo
//! finalizer, and status (commit, observedGeneration, conditions, message).
//! A commit that fails to compile leaves every Bundle as it was.

use crate::status::apply_status;
use crate::{Context, Error, ObjectKey, finalizers_patch};
use flotilla_api::condition::{self, ConditionUpdate, set_condition};
use flotilla_api::k8s_openapi::ByteString;
use flotilla_api::k8s_openapi::api::core::v1::Secret;
use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use flotilla_api::{BundleSpec, BundleTarget, Content, ContentFields, GitRepo, keys};
use flotilla_bundle::{CompileInput, CompiledBundle, Limits};
use flotilla_git::{
    CompileCache, Credentials, GitError, Mirrors, Oid, RemoteRefs, Source, Tls, Want,
};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Field manager of the GitRepo controller's applies (Bundles and status).
pub const GITREPO_FIELD_MANAGER: &str = "flotilla-gitrepo";

/// The poll interval when a GitRepo names none.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(15);
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// What the GitRepo controller remembers between reconciles. Lost on a
/// restart, which costs one ls-remote and one compile per GitRepo, and no
/// writes when nothing changed.
pub struct GitState {
    pub mirrors: Mirrors,
    pub(crate) repos: Mutex<HashMap<ObjectKey, RepoState>>,
    /// Bundle -> (its GitRepo, the spec this controller wants it to have).
    pub(crate) desired: RwLock<HashMap<ObjectKey, (ObjectKey, Arc<BundleSpec>)>>,
    /// Content known to exist.
    contents: Mutex<HashSet<String>>,
}

#[derive(Default)]
pub(crate) struct RepoState {
    /// Where and what it reads, for the poller.
    pub source: Option<(Source, Want)>,
    pub interval: Option<Duration>,
    pub next_poll: Option<Instant>,
    /// The last error a poll reported, so that the same error queues once.
    pub poll_error: Option<String>,
    /// A fresh listing from the poller that moved the head.
    pub remote: Option<RemoteRefs>,
    /// A webhook said "look again".
    pub poke: bool,
    /// Hash of what selects the commit and its bundles.
    fingerprint: String,
    /// The newest commit seen on the source, compiled or not.
    pub head: Option<Oid>,
    /// The commit the current bundles were compiled from.
    pub commit: Option<Oid>,
    bundles: Vec<Arc<CompiledBundle>>,
    cache: CompileCache,
    /// A commit that failed to compile, with its fingerprint and error.
    failed: Option<(Oid, String, String)>,
}

impl GitState {
    pub fn new(mirrors: Mirrors) -> Self {
        GitState {
            mirrors,
            repos: Mutex::new(HashMap::new()),
            desired: RwLock::new(HashMap::new()),
            contents: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn repos(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, RepoState>> {
        self.repos.lock().expect("gitrepo state lock")
    }

    /// The GitRepo that wants this Bundle, and the spec it wants.
    pub(crate) fn desired_of(&self, bundle: &ObjectKey) -> Option<(ObjectKey, Arc<BundleSpec>)> {
        self.desired
            .read()
            .expect("desired lock")
            .get(bundle)
            .cloned()
    }

    fn forget(&self, key: &ObjectKey) {
        self.repos().remove(key);
        self.desired
            .write()
            .expect("desired lock")
            .retain(|_, (repo, _)| repo != key);
    }
}

/// How a reconcile ended, for the status.
enum Outcome {
    Synced {
        commit: Oid,
        bundles: usize,
    },
    /// The source cannot be read; retried with backoff.
    Retry {
        reason: &'static str,
        message: String,
    },
    /// Needs a change from the user (a spec edit, a fixed commit, a
    /// Secret); terminal until then. `retry` asks for backoff anyway when
    /// the fix may come from outside the watch (a Secret, the remote).
    Stalled {
        reason: &'static str,
        message: String,
        retry: bool,
    },
}

pub async fn reconcile(ctx: Arc<Context>, key: ObjectKey) -> Result<crate::queue::Action, Error> {
    let Some(repo) = ctx.gitrepos.get(&key) else {
        ctx.git.forget(&key);
        return Ok(crate::queue::Action::Done);
    };
    if repo.metadata.deletion_timestamp.is_some() {
        finalize(&ctx, &key, &repo).await?;
        return Ok(crate::queue::Action::Done);
    }
    ensure_finalizer(&ctx, &key, &repo).await?;
    let outcome = sync(&ctx, &key, &repo).await?;
    write_status(&ctx, &key, &repo, &outcome).await?;
    match outcome {
        Outcome::Retry { message, .. }
        | Outcome::Stalled {
            message,
            retry: true,
            ..
        } => Err(Error::Source {
            name: key.to_string(),
            message,
        }),
        _ => Ok(crate::queue::Action::Done),
    }
}

async fn sync(ctx: &Context, key: &ObjectKey, repo: &GitRepo) -> Result<Outcome, Error> {
    let spec = &repo.spec;
    let interval = match poll_interval(spec.polling_interval.as_deref()) {
        Ok(i) => i,
        Err(message) => {
            return Ok(Outcome::Stalled {
                reason: "InvalidPollingInterval",
                message: format!("pollingInterval: {message}"),
                retry: false,
            });
        }
    };
    let source = match source_of(ctx, key, repo).await {
        Ok(s) => s,
        Err(outcome) => return Ok(outcome),
    };
    let want = Want::of(spec.branch.as_deref(), spec.revision.as_deref());
    let fingerprint = fingerprint(repo, &source, &want);

    // 1. The commit.
    let (remote, poke, same_source, known) = {
        let mut repos = ctx.git.repos();
        let st = repos.entry(key.clone()).or_default();
        st.source = Some((source.clone(), want.clone()));
        let polling = (!spec.disable_polling && want.pinned_commit().is_none()).then_some(interval);
        if st.interval != polling || st.next_poll.is_none() {
            // A new or changed interval starts counting now.
            st.next_poll = Some(Instant::now() + interval);
        }
        st.interval = polling;
        let same = st.fingerprint == fingerprint;
        (
            st.remote.take().filter(|_| same),
            std::mem::take(&mut st.poke),
            same,
            st.head.filter(|_| same),
        )
    };
    let commit = match known {
        Some(c) if remote.is_none() && !poke => c,
        _ => {
            if remote.is_none() && want.pinned_commit().is_none() {
                ctx.metrics.git("ls-remote", 1);
            }
            match ctx.git.mirrors.sync(&source, &want, remote.as_ref()).await {
                Ok(s) => {
                    if s.fetched {
                        ctx.metrics.git("fetch", 1);
                    }
                    s.commit
                }
                Err(e) => return Ok(git_failure(&e)),
            }
        }
    };

    // 2. The compiled bundles.
    let (needs_compile, failed, cache) = {
        let mut repos = ctx.git.repos();
        let st = repos.get_mut(key).expect("state set above");
        st.head = Some(commit);
        let failed = st
            .failed
            .clone()
            .filter(|(c, fp, _)| *c == commit && *fp == fingerprint)
            .map(|(_, _, m)| m);
        let cache = if same_source {
            st.cache.clone()
        } else {
            CompileCache::default()
        };
        (!same_source || st.commit != Some(commit), failed, cache)
    };
    let mut failure = None;
    if needs_compile && let Some(message) = failed {
        failure = Some(compile_failure(commit, message));
    } else if needs_compile {
        let path = ctx.git.mirrors.path(&source);
        let name = key.name.to_string();
        let paths = spec.paths.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            let git = flotilla_git::git2::Repository::open_bare(&path)
                .map_err(|e| e.message().to_owned())?;
            let input = CompileInput {
                repo_name: &name,
                paths: &paths,
                targets: &[],
                limits: Limits::default(),
            };
            flotilla_git::compile_commit(&git, commit, &input, &cache).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("the compile panicked: {e}")));
        let mut repos = ctx.git.repos();
        let st = repos.entry(key.clone()).or_default();
        match compiled {
            Ok(c) => {
                ctx.metrics.git("compiled", c.compiled.len() as u64);
                ctx.metrics.git("reused", c.reused as u64);
                tracing::info!(
                    gitrepo = %key,
                    commit = %commit,
                    bundles = c.bundles.len(),
                    compiled = ?c.compiled,
                    reused = c.reused,
                    "compiled"
                );
                for w in &c.warnings {
                    tracing::warn!(gitrepo = %key, warning = %w, "compile warning");
                }
                st.commit = Some(commit);
                st.fingerprint = fingerprint;
                st.bundles = c.bundles;
                st.cache = c.cache;
                st.failed = None;
            }
            Err(message) => {
                tracing::warn!(gitrepo = %key, %commit, error = %message, "commit does not compile; the deployed bundles stay");
                st.failed = Some((commit, fingerprint, message.clone()));
                failure = Some(compile_failure(commit, message));
            }
        }
    }

    // 3. The desired Bundles, written where they differ. After a failed
    // compile these are the last good ones, so spec edits still apply; with
    // none in memory (a restart), nothing is touched.
    let (good, bundles) = {
        let repos = ctx.git.repos();
        let st = repos.get(key).expect("state set above");
        (st.commit, st.bundles.clone())
    };
    if let Some(good) = good {
        apply_bundles(ctx, key, repo, good, &bundles).await?;
    }
    Ok(match (failure, good) {
        (Some(f), _) => f,
        (None, Some(good)) => Outcome::Synced {
            commit: good,
            bundles: bundles.len(),
        },
        (None, None) => unreachable!("a successful compile sets the commit"),
    })
}

fn git_failure(e: &GitError) -> Outcome {
    match e {
        GitError::Unreachable { .. } | GitError::Timeout { .. } | GitError::Other { .. } => {
            Outcome::Retry {
                reason: e.reason(),
                message: e.to_string(),
            }
        }
        _ => Outcome::Stalled {
            reason: e.reason(),
            message: e.to_string(),
            retry: true,
        },
    }
}

fn compile_failure(commit: Oid, message: String) -> Outcome {
    Outcome::Stalled {
        reason: "CompileFailed",
        message: format!(
            "commit {}: {message}; the previous bundles stay deployed",
            short(commit)
        ),
        retry: false,
    }
}

fn short(commit: Oid) -> String {
    commit.to_string()[..7].to_owned()
}

/// The Source a GitRepo reads: its URL, the credentials from its
/// `clientSecretName` Secret, and its TLS settings.
async fn source_of(ctx: &Context, key: &ObjectKey, repo: &GitRepo) -> Result<Source, Outcome> {
    let spec = &repo.spec;
    if spec.repo.trim().is_empty() {
        return Err(Outcome::Stalled {
            reason: "InvalidRepo",
            message: "spec.repo is empty".into(),
            retry: false,
        });
    }
    let mut source = Source {
        url: spec.repo.trim().to_owned(),
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
                return Err(Outcome::Stalled {
                    reason: "SecretNotFound",
                    message: format!(
                        "clientSecretName: Secret {}/{name} not found",
                        key.namespace
                    ),
                    retry: true,
                });
            }
            Err(e) => {
                return Err(Outcome::Retry {
                    reason: "SecretUnreadable",
                    message: format!(
                        "clientSecretName: reading Secret {}/{name}: {e}",
                        key.namespace
                    ),
                });
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
                Outcome::Stalled {
                    reason: "InvalidSecret",
                    message: format!("clientSecretName: Secret {}/{name}: {why}", key.namespace),
                    retry: true,
                }
            })?;
        source.credentials_id = format!("{}/{name}", key.namespace);
    }
    Ok(source)
}

fn fingerprint(repo: &GitRepo, source: &Source, want: &Want) -> String {
    let mut h = Sha256::new();
    h.update(source.url.as_bytes());
    h.update(b"\0");
    h.update(source.credentials_id.as_bytes());
    h.update(format!(
        "\0{want:?}\0{:?}\0{:?}",
        repo.spec.paths, source.tls.insecure_skip_verify
    ));
    if let Some(ca) = &source.tls.ca_bundle {
        h.update(ca);
    }
    hex::encode(h.finalize())
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

fn parse_go_duration(s: &str) -> Result<Duration, String> {
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

/// A compiled bundle as this GitRepo deploys it: the GitRepo's targets
/// unless `fleet.yaml` overrides them (the default cluster group when it
/// names none), and its paused, keepResources, correctDrift,
/// targetNamespace, serviceAccount and forceSyncGeneration laid over the
/// bundle's options.
pub fn desired_bundle(
    repo: &GitRepo,
    compiled: &CompiledBundle,
) -> (BTreeMap<String, String>, BundleSpec) {
    let g = &repo.spec;
    let mut spec = compiled.spec.clone();
    if spec.targets.is_empty() {
        spec.targets = flotilla_targeting::effective_targets(&g.targets)
            .iter()
            .map(BundleTarget::from)
            .collect();
    }
    spec.paused |= g.paused;
    let o = &mut spec.options;
    o.keep_resources |= g.keep_resources;
    if g.correct_drift.is_some() {
        o.correct_drift = g.correct_drift.clone();
    }
    if let Some(ns) = g.target_namespace.as_ref().filter(|n| !n.is_empty()) {
        o.namespace = Some(ns.clone());
    }
    if o.service_account.is_none() {
        o.service_account = g.service_account.clone();
    }
    if g.force_sync_generation != 0 {
        o.force_sync_generation = g.force_sync_generation;
    }
    let mut labels = compiled.labels.clone();
    labels.insert(keys::REPO_NAME.to_owned(), repo.name_any());
    labels.insert(
        keys::MANAGED_BY.to_owned(),
        keys::MANAGED_BY_VALUE.to_owned(),
    );
    (labels, spec)
}

async fn apply_bundles(
    ctx: &Context,
    key: &ObjectKey,
    repo: &GitRepo,
    commit: Oid,
    compiled: &[Arc<CompiledBundle>],
) -> Result<(), Error> {
    let bundles: Api<flotilla_api::Bundle> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let mut wanted = HashSet::new();
    for c in compiled {
        let bkey = ObjectKey::new(&key.namespace, &c.name);
        wanted.insert(bkey.clone());
        let (labels, spec) = desired_bundle(repo, c);
        let existing = ctx.bundles.get(&bkey);
        if let Some(b) = &existing {
            let owner = b.labels().get(keys::REPO_NAME);
            if owner.map(String::as_str) != Some(&*key.name) {
                tracing::warn!(gitrepo = %key, bundle = %bkey, owner = ?owner, "bundle name taken by another owner; not touching it");
                continue;
            }
        }
        ctx.git
            .desired
            .write()
            .expect("desired lock")
            .insert(bkey.clone(), (key.clone(), Arc::new(spec.clone())));
        let unchanged = existing.as_ref().is_some_and(|b| {
            b.metadata.deletion_timestamp.is_none()
                && b.spec == spec
                && labels.iter().all(|(k, v)| b.labels().get(k) == Some(v))
        });
        if unchanged {
            continue;
        }
        ensure_content(ctx, c).await?;
        let written = match existing.filter(|b| b.metadata.deletion_timestamp.is_none()) {
            // New: one server-side apply, finalizer included.
            None => {
                let body = json!({
                    "apiVersion": "flotilla.dev/v1alpha1",
                    "kind": "Bundle",
                    "metadata": {
                        "name": &c.name,
                        "namespace": &*key.namespace,
                        "labels": labels,
                        "annotations": {keys::COMMIT: commit.to_string()},
                        "finalizers": [keys::BUNDLE_FINALIZER],
                    },
                    "spec": spec,
                });
                ctx.metrics.write("Bundle", "apply");
                bundles
                    .patch(
                        &c.name,
                        &PatchParams::apply(GITREPO_FIELD_MANAGER).force(),
                        &Patch::Apply(&body),
                    )
                    .await
            }
            // Existing: the spec is this controller's alone, so it is
            // replaced whole; an apply would leave a field someone else set
            // (e.g. `paused: true`) when the desired value is the default.
            Some(b) => {
                ctx.metrics.write("Bundle", "patch");
                bundles
                    .patch(
                        &c.name,
                        &PatchParams {
                            field_manager: Some(GITREPO_FIELD_MANAGER.into()),
                            ..Default::default()
                        },
                        &Patch::<()>::Json(bundle_patch(&b, &labels, commit, &spec)),
                    )
                    .await
            }
        };
        written.map_err(|source| Error::Write {
            verb: "write",
            kind: "Bundle",
            name: bkey.to_string(),
            source,
        })?;
        tracing::info!(gitrepo = %key, bundle = %bkey, commit = %short(commit), "bundle written");
    }
    // Bundles of paths that left the repository.
    let stale: Vec<ObjectKey> = ctx
        .topo()
        .bundles_by_repo
        .get(key)
        .into_iter()
        .flatten()
        .filter(|b| !wanted.contains(*b))
        .cloned()
        .collect();
    for b in stale {
        delete_bundle(ctx, key, &b).await?;
    }
    Ok(())
}

/// Replaces an existing Bundle's spec and sets the labels and the commit
/// annotation, guarded by its uid.
fn bundle_patch(
    existing: &flotilla_api::Bundle,
    labels: &BTreeMap<String, String>,
    commit: Oid,
    spec: &BundleSpec,
) -> json_patch::Patch {
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    let mut ops = vec![
        json!({"op": "test", "path": "/metadata/uid", "value": existing.metadata.uid}),
        json!({"op": "replace", "path": "/spec", "value": spec}),
    ];
    let mut meta = |field: &str, have: bool, entries: BTreeMap<String, String>| {
        if have {
            for (k, v) in entries {
                ops.push(json!({"op": "add", "path": format!("/metadata/{field}/{}", escape(&k)), "value": v}));
            }
        } else {
            ops.push(json!({"op": "add", "path": format!("/metadata/{field}"), "value": entries}));
        }
    };
    meta("labels", existing.metadata.labels.is_some(), labels.clone());
    meta(
        "annotations",
        existing.metadata.annotations.is_some(),
        [(keys::COMMIT.to_owned(), commit.to_string())].into(),
    );
    serde_json::from_value(serde_json::Value::Array(ops)).expect("a well-formed JSON patch")
}

async fn delete_bundle(ctx: &Context, repo: &ObjectKey, bundle: &ObjectKey) -> Result<(), Error> {
    ctx.git
        .desired
        .write()
        .expect("desired lock")
        .remove(bundle);
    let Some(b) = ctx.bundles.get(bundle) else {
        return Ok(());
    };
    if b.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let api: Api<flotilla_api::Bundle> = Api::namespaced(ctx.client.clone(), &bundle.namespace);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: b.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    ctx.metrics.write("Bundle", "delete");
    match api.delete(&bundle.name, &dp).await {
        Ok(_) => {
            tracing::info!(gitrepo = %repo, bundle = %bundle, "bundle deleted: its path left the repository or the GitRepo is going");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(source) => Err(Error::Write {
            verb: "delete",
            kind: "Bundle",
            name: bundle.to_string(),
            source,
        }),
    }
}

async fn ensure_content(ctx: &Context, c: &CompiledBundle) -> Result<(), Error> {
    let name = c.spec.content_id.clone();
    if ctx
        .git
        .contents
        .lock()
        .expect("contents lock")
        .contains(&name)
    {
        return Ok(());
    }
    let api: Api<Content> = Api::all(ctx.client.clone());
    let mut obj = Content::new(
        &name,
        ContentFields {
            content: ByteString(c.content.gzip()),
            sha256sum: c.content.sha256_hex(),
        },
    );
    obj.metadata.labels = Some(
        [(
            keys::MANAGED_BY.to_owned(),
            keys::MANAGED_BY_VALUE.to_owned(),
        )]
        .into(),
    );
    ctx.metrics.write("Content", "create");
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(source) => {
            return Err(Error::Write {
                verb: "create",
                kind: "Content",
                name,
                source,
            });
        }
    }
    ctx.git.contents.lock().expect("contents lock").insert(name);
    Ok(())
}

async fn ensure_finalizer(ctx: &Context, key: &ObjectKey, repo: &GitRepo) -> Result<(), Error> {
    let have = repo.metadata.finalizers.clone().unwrap_or_default();
    if have.iter().any(|f| f == keys::GITREPO_FINALIZER) {
        return Ok(());
    }
    let mut want = have;
    want.push(keys::GITREPO_FINALIZER.to_owned());
    patch_finalizers(ctx, key, repo, &want).await
}

async fn patch_finalizers(
    ctx: &Context,
    key: &ObjectKey,
    repo: &GitRepo,
    want: &[String],
) -> Result<(), Error> {
    let api: Api<GitRepo> = Api::namespaced(ctx.client.clone(), &key.namespace);
    ctx.metrics.write("GitRepo", "patch-finalizers");
    match api
        .patch(
            &key.name,
            &PatchParams::default(),
            &Patch::<()>::Json(finalizers_patch(&repo.metadata, want)),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Write {
            verb: "patch the finalizers of",
            kind: "GitRepo",
            name: key.to_string(),
            source,
        }),
    }
}

/// A deleting GitRepo: delete its Bundles, and release it once they are
/// gone (each Bundle's deletion event wakes this again).
async fn finalize(ctx: &Context, key: &ObjectKey, repo: &GitRepo) -> Result<(), Error> {
    let bundles: Vec<ObjectKey> = ctx
        .topo()
        .bundles_by_repo
        .get(key)
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    for b in &bundles {
        delete_bundle(ctx, key, b).await?;
    }
    if !bundles.is_empty() {
        return Ok(());
    }
    ctx.git.forget(key);
    let have = repo.metadata.finalizers.clone().unwrap_or_default();
    if !have.iter().any(|f| f == keys::GITREPO_FINALIZER) {
        return Ok(());
    }
    let want: Vec<String> = have
        .into_iter()
        .filter(|f| f != keys::GITREPO_FINALIZER)
        .collect();
    tracing::info!(gitrepo = %key, "bundles gone; releasing the GitRepo");
    patch_finalizers(ctx, key, repo, &want).await
}

async fn write_status(
    ctx: &Context,
    key: &ObjectKey,
    repo: &GitRepo,
    outcome: &Outcome,
) -> Result<(), Error> {
    let old = repo.status.clone().unwrap_or_default();
    let generation = repo.metadata.generation;
    let now = Time(flotilla_api::k8s_openapi::jiff::Timestamp::now());
    let mut conditions = old.conditions.clone();
    let (commit, message, error) = match outcome {
        Outcome::Synced { commit, bundles } => {
            let msg = format!(
                "commit {} compiled into {bundles} bundle(s)",
                short(*commit)
            );
            for (t, status, reason, m) in [
                (condition::READY, true, "Synced", msg.as_str()),
                (condition::RECONCILING, false, "Synced", ""),
                (condition::STALLED, false, "Synced", ""),
            ] {
                set(&mut conditions, t, status, reason, m, generation, &now);
            }
            (Some(commit.to_string()), String::new(), false)
        }
        Outcome::Retry { reason, message } => {
            for (t, status, m) in [
                (condition::READY, false, message.as_str()),
                (condition::RECONCILING, true, message.as_str()),
                (condition::STALLED, false, ""),
            ] {
                set(&mut conditions, t, status, reason, m, generation, &now);
            }
            (old.commit.clone(), message.clone(), true)
        }
        Outcome::Stalled {
            reason, message, ..
        } => {
            for (t, status, m) in [
                (condition::READY, false, message.as_str()),
                (condition::RECONCILING, false, ""),
                (condition::STALLED, true, message.as_str()),
            ] {
                set(&mut conditions, t, status, reason, m, generation, &now);
            }
            (old.commit.clone(), message.clone(), true)
        }
    };
    let observed = generation.unwrap_or_default();
    let message = flotilla_api::summary::truncate(&message, 1024);
    let unchanged = old.commit == commit
        && old.observed_generation == observed
        && old.conditions == conditions
        && old.display.message == message
        && old.display.error == error;
    if unchanged {
        return Ok(());
    }
    let status = json!({
        "commit": commit,
        "observedGeneration": observed,
        "conditions": conditions,
        "display": {"message": message, "error": error},
    });
    apply_status::<GitRepo>(ctx, key, "GitRepo", status, GITREPO_FIELD_MANAGER).await
}

fn set(
    conditions: &mut Vec<flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    set_condition(
        conditions,
        ConditionUpdate {
            type_,
            status,
            reason,
            message,
            observed_generation: generation,
        },
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::{GitRepoSpec, GitTarget, TargetCriteria};

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

    fn compiled(targets: Vec<BundleTarget>) -> CompiledBundle {
        CompiledBundle {
            name: "shop-web".into(),
            dir: "web".into(),
            kind: flotilla_bundle::BundleKind::Raw,
            labels: [("team".to_owned(), "web".to_owned())].into(),
            spec: BundleSpec {
                content_id: "s-abc".into(),
                targets,
                ..Default::default()
            },
            content: Default::default(),
            warnings: vec![],
        }
    }

    fn gitrepo(spec: GitRepoSpec) -> GitRepo {
        GitRepo::new("shop", spec)
    }

    #[test]
    fn the_gitrepo_settings_lay_over_the_bundle() {
        let prod = GitTarget {
            name: Some("prod".into()),
            criteria: TargetCriteria {
                cluster_group: Some("prod".into()),
                ..Default::default()
            },
        };
        // No targets anywhere: the default group.
        let (labels, spec) = desired_bundle(&gitrepo(GitRepoSpec::default()), &compiled(vec![]));
        assert_eq!(spec.targets.len(), 1);
        assert_eq!(
            spec.targets[0].criteria.cluster_group.as_deref(),
            Some("default")
        );
        assert_eq!(
            labels.get(keys::REPO_NAME).map(String::as_str),
            Some("shop")
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("web"));

        // The GitRepo's targets and settings.
        let repo = gitrepo(GitRepoSpec {
            targets: vec![prod.clone()],
            paused: true,
            keep_resources: true,
            target_namespace: Some("shop".into()),
            service_account: Some("deployer".into()),
            force_sync_generation: 3,
            ..Default::default()
        });
        let (_, spec) = desired_bundle(&repo, &compiled(vec![]));
        assert_eq!(spec.targets, vec![BundleTarget::from(&prod)]);
        assert!(spec.paused && spec.options.keep_resources);
        assert_eq!(spec.options.namespace.as_deref(), Some("shop"));
        assert_eq!(spec.options.service_account.as_deref(), Some("deployer"));
        assert_eq!(spec.options.force_sync_generation, 3);

        // fleet.yaml overrideTargets win over the GitRepo's.
        let own = BundleTarget {
            name: Some("own".into()),
            ..Default::default()
        };
        let (_, spec) = desired_bundle(&repo, &compiled(vec![own.clone()]));
        assert_eq!(spec.targets, vec![own]);
        assert_eq!(spec.content_id, "s-abc", "content untouched");
    }
}
