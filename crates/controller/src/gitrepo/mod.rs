//! The GitRepo controller: a repository's commit becomes Bundles and Content.
//!
//! What wakes it (see also `gitpoll.rs` and the hub):
//! - a GitRepo created, its spec changed (generation), or deleting;
//! - the poller, when a GitRepo's branch head moved or its poll failed or
//!   recovered, and webhooks;
//! - its own background fetch finishing;
//! - one of its Bundles deleted or edited by someone else (the hub checks
//!   each Bundle event against [`GitState::desired`]), so its own writes
//!   never wake it; a Content one of its Bundles needs deleted.
//!
//! What it computes, per GitRepo:
//! 1. the commit: the last one, if the source (URL, credentials, branch or
//!    revision, paths) is unchanged and nobody reported a new head; else a
//!    background fetch (an ls-remote and, only when the shared mirror lacks
//!    it, a fetch of one ref; for a pinned commit, an ls-remote that proves
//!    the credentials still read the remote). Network waits never hold a
//!    worker, so a server that never answers delays no other GitRepo;
//! 2. the compiled bundles: reused when the commit is unchanged, otherwise
//!    recompiled directory by directory, keyed by git tree id, under a
//!    deadline;
//! 3. the desired Bundles: the compiled ones with the GitRepo's own settings
//!    (targets, paused, keepResources, correctDrift, ...) laid over them,
//!    by [`desired_bundle`], which is pure. A spec edit redoes only this.
//!
//! What it writes, each only when it differs: missing Content, one write
//! per changed Bundle (with the Bundle finalizer and an owner reference),
//! deletes of Bundles whose path left the repository, the GitRepo
//! finalizer, and status (commit, observedGeneration, conditions, message).
//! A commit that fails to compile, a source that stops answering and a
//! write the API server refuses each leave every Bundle as it was and say
//! why in the GitRepo's conditions.

mod bundles;
mod prepare;
mod source;
mod status;

pub use bundles::desired_bundle;
pub(crate) use source::parse_go_duration;
pub use source::{DEFAULT_POLL_INTERVAL, fingerprint, poll_interval, url_policy};

use crate::bundles::{OwnerKey, OwnerKind};
use crate::{Context, Error, ObjectKey};
use flotilla_api::{BundleSpec, GitRepo};
use flotilla_bundle::CompiledBundle;
use flotilla_git::{CompileCache, GitError, Mirrors, Oid, RemoteRefs, Source, Want};
use prepare::{Failure, Job, Prepared};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Field manager of the GitRepo controller's applies (Bundles and status).
pub const GITREPO_FIELD_MANAGER: &str = "flotilla-gitrepo";

/// The first retry after a failed preparation; it doubles up to the max.
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What the GitRepo controller remembers between reconciles. Lost on a
/// restart, which costs one preparation per GitRepo, and no writes when
/// nothing changed.
pub struct GitState {
    pub mirrors: Mirrors,
    /// Helm charts, resolved and cached by digest (under `--git-dir`).
    pub charts: flotilla_charts::Resolver,
    pub(crate) repos: Mutex<HashMap<ObjectKey, RepoState>>,
    /// Bundle -> (its GitRepo or HelmOp, the spec it wants it to have).
    pub(crate) desired: RwLock<HashMap<ObjectKey, (OwnerKey, Arc<BundleSpec>)>>,
    /// Git and chart network operations in flight (`--git-connections`).
    pub(crate) connections: Arc<tokio::sync::Semaphore>,
    /// Mirrors whose poll is in flight: a slow one is not polled again
    /// until it answers or times out.
    pub(crate) polling: Mutex<HashSet<String>>,
}

/// A GitRepo's background preparation.
#[derive(Default)]
pub(crate) enum JobState {
    #[default]
    Idle,
    Running {
        fingerprint: String,
    },
    Done {
        fingerprint: String,
        result: Result<Prepared, Failure>,
    },
}

#[derive(Default)]
pub(crate) struct RepoState {
    /// Where and what it reads, for the poller.
    pub source: Option<(Source, Want)>,
    pub interval: Option<Duration>,
    pub next_poll: Option<Instant>,
    /// The error the last poll reported (cleared by the next good one):
    /// what is deployed stays, and the conditions say why it may be old.
    pub poll_error: Option<GitError>,
    /// A fresh listing from the poller that moved the head.
    pub remote: Option<RemoteRefs>,
    /// A webhook said "look again".
    pub poke: bool,
    pub(crate) job: JobState,
    /// The fingerprint whose credentials last proved they read the remote
    /// (for a pinned commit, which needs no fetch once mirrored).
    authorized: Option<String>,
    /// The newest commit seen on the source, prepared or not.
    pub head: Option<Oid>,
    /// What the bundles in memory were prepared from.
    prepared: Option<(String, Oid)>,
    /// The commit of the bundles in memory.
    pub commit: Option<Oid>,
    bundles: Vec<Arc<CompiledBundle>>,
    cache: CompileCache,
    /// The last failed preparation, for the fingerprint it ran with, and
    /// when to try again (doubling each time).
    failure: Option<(String, Failure)>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl RepoState {
    /// Whether the bundles in memory are what this fingerprint and head
    /// call for, or the last attempt at them failed for good (a commit
    /// that does not compile waits for the next one).
    fn settled(&self, fingerprint: &str) -> bool {
        let Some(head) = self.head else {
            return false;
        };
        let prepared = self.prepared.as_ref() == Some(&(fingerprint.to_owned(), head));
        let failed_for_good = self
            .failure
            .as_ref()
            .is_some_and(|(fp, f)| fp == fingerprint && !f.transient() && f.commit() == Some(head));
        prepared || failed_for_good
    }
}

impl GitState {
    pub fn new(mirrors: Mirrors, charts: flotilla_charts::Resolver, connections: usize) -> Self {
        GitState {
            mirrors,
            charts,
            repos: Mutex::new(HashMap::new()),
            desired: RwLock::new(HashMap::new()),
            connections: Arc::new(tokio::sync::Semaphore::new(connections.max(1))),
            polling: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn repos(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, RepoState>> {
        self.repos.lock().expect("gitrepo state lock")
    }

    /// The GitRepo that wants this Bundle, and the spec it wants.
    pub(crate) fn desired_of(&self, bundle: &ObjectKey) -> Option<(OwnerKey, Arc<BundleSpec>)> {
        self.desired
            .read()
            .expect("desired lock")
            .get(bundle)
            .cloned()
    }

    fn forget(&self, key: &ObjectKey) {
        self.repos().remove(key);
        self.forget_owner(&OwnerKey {
            kind: OwnerKind::GitRepo,
            key: key.clone(),
        });
    }

    /// Drops what an owner wanted of its Bundles.
    pub(crate) fn forget_owner(&self, owner: &OwnerKey) {
        self.desired
            .write()
            .expect("desired lock")
            .retain(|_, (o, _)| o != owner);
    }
}

/// How a reconcile ended, for the status.
pub enum Outcome {
    Synced {
        commit: Oid,
        bundles: usize,
    },
    /// A background preparation runs; its end queues the GitRepo again.
    Fetching,
    /// Something stops the GitRepo from being current. `stalled`: it needs
    /// the user (Stalled), else it may pass by itself (Reconciling).
    /// `retry`: the queue tries again with backoff.
    Failed {
        reason: &'static str,
        message: String,
        stalled: bool,
        retry: bool,
    },
}

impl Outcome {
    pub(crate) fn stalled(reason: &'static str, message: String) -> Self {
        Outcome::Failed {
            reason,
            message,
            stalled: true,
            retry: false,
        }
    }

    pub(crate) fn transient(reason: &'static str, message: String) -> Self {
        Outcome::Failed {
            reason,
            message,
            stalled: false,
            retry: true,
        }
    }

    /// A failed preparation as the GitRepo shows it. The controller retries
    /// it itself (see [`finish`]), so the queue does not.
    fn of_failure(f: &Failure, deployed: bool) -> Self {
        let kept = if deployed {
            "; the last good commit stays deployed"
        } else {
            ""
        };
        match f {
            Failure::Git(e) => match source::git_failure(e) {
                Outcome::Failed {
                    reason,
                    message,
                    stalled,
                    ..
                } => Outcome::Failed {
                    reason,
                    message: format!("{message}{kept}"),
                    stalled,
                    retry: false,
                },
                other => other,
            },
            Failure::Compile {
                transient: true, ..
            } => Outcome::Failed {
                reason: "CompileTimedOut",
                message: format!("{}{kept}", prepare::describe(f)),
                stalled: false,
                retry: false,
            },
            Failure::Compile { .. } => Outcome::Failed {
                reason: "CompileFailed",
                message: format!(
                    "{}; the previous bundles stay deployed",
                    prepare::describe(f)
                ),
                stalled: true,
                retry: false,
            },
            Failure::Chart { error, .. } => Outcome::Failed {
                reason: error.reason(),
                message: format!("{}{kept}", prepare::describe(f)),
                stalled: !error.transient(),
                retry: false,
            },
        }
    }
}

pub async fn reconcile(ctx: Arc<Context>, key: ObjectKey) -> Result<crate::queue::Action, Error> {
    let Some(repo) = ctx.gitrepos.get(&key) else {
        ctx.git.forget(&key);
        return Ok(crate::queue::Action::Done);
    };
    if repo.metadata.deletion_timestamp.is_some() {
        status::finalize(&ctx, &key, &repo).await?;
        return Ok(crate::queue::Action::Done);
    }
    status::ensure_finalizer(&ctx, &key, &repo).await?;
    let outcome = sync(&ctx, &key, &repo).await?;
    status::write_status(&ctx, &key, &repo, &outcome).await?;
    match outcome {
        Outcome::Failed {
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

/// A finished preparation: stored for the next reconcile, which it queues.
/// A failure schedules its own retry, doubling from [`RETRY_BASE`].
fn finish(
    ctx: &Arc<Context>,
    key: &ObjectKey,
    fingerprint: String,
    result: Result<Prepared, Failure>,
) {
    let mut repos = ctx.git.repos();
    let Some(st) = repos.get_mut(key) else {
        return;
    };
    if !matches!(&st.job, JobState::Running { fingerprint: f } if *f == fingerprint) {
        return; // superseded by a newer source
    }
    if let Err(f) = &result
        && f.transient()
    {
        st.failures = st.failures.saturating_add(1);
        let delay = (RETRY_BASE * (1u32 << (st.failures - 1).min(10))).min(RETRY_MAX);
        st.retry_at = Some(Instant::now() + delay);
        ctx.gitrepo.add_after(key.clone(), delay, "retry");
    }
    st.job = JobState::Done {
        fingerprint,
        result,
    };
    drop(repos);
    ctx.gitrepo.add(key.clone(), "prepared");
}

async fn sync(ctx: &Arc<Context>, key: &ObjectKey, repo: &GitRepo) -> Result<Outcome, Error> {
    let spec = &repo.spec;
    let interval = match poll_interval(spec.polling_interval.as_deref()) {
        Ok(i) => i,
        Err(message) => {
            return Ok(Outcome::stalled(
                "InvalidPollingInterval",
                format!("pollingInterval: {message}"),
            ));
        }
    };
    let source = match source::source_of(ctx, key, repo).await {
        Ok(s) => s,
        Err(outcome) => return Ok(outcome),
    };
    let secrets = crate::chart_access::HelmSecrets::of_gitrepo(spec);
    let chart_access = match crate::chart_access::chart_access(ctx, key, &secrets).await {
        Ok(a) => a,
        Err(outcome) => return Ok(outcome),
    };
    let want = Want::of(spec.branch.as_deref(), spec.revision.as_deref());
    let fingerprint = format!(
        "{}:{}",
        fingerprint(repo, &source, &want),
        chart_access.digest()
    );

    // 1. The bundles: take a finished preparation, or start one when the
    // ones in memory are not what the source now calls for.
    let (failure, poll_error, running) = {
        let mut repos = ctx.git.repos();
        let st = repos.entry(key.clone()).or_default();
        st.source = Some((source.clone(), want.clone()));
        let polling = (!spec.disable_polling && want.pinned_commit().is_none()).then_some(interval);
        if st.interval != polling || st.next_poll.is_none() {
            // A new or changed interval starts counting now.
            st.next_poll = Some(Instant::now() + interval);
        }
        st.interval = polling;
        match std::mem::take(&mut st.job) {
            JobState::Done {
                fingerprint: f,
                result,
            } if f == fingerprint => match result {
                Ok(p) => {
                    st.head = Some(p.commit);
                    st.prepared = Some((fingerprint.clone(), p.commit));
                    st.commit = Some(p.commit);
                    st.bundles = p.bundles;
                    st.cache = p.cache;
                    if want.pinned_commit().is_some() {
                        st.authorized = Some(fingerprint.clone());
                    }
                    st.failure = None;
                    st.failures = 0;
                    st.retry_at = None;
                    // The remote answered: an earlier poll's error is old news.
                    st.poll_error = None;
                }
                Err(f) => {
                    if let Some(c) = f.commit() {
                        st.head = Some(c);
                    }
                    st.failure = Some((fingerprint.clone(), f));
                }
            },
            JobState::Running { fingerprint: f } if f == fingerprint => {
                st.job = JobState::Running { fingerprint: f };
            }
            // Idle, or a job for a source that changed since.
            _ => {}
        }
        let running = matches!(st.job, JobState::Running { .. });
        let authorized = want.pinned_commit().is_none()
            || st.authorized.as_deref() == Some(fingerprint.as_str());
        let told = st.remote.is_some() || st.poke;
        let backing_off = st
            .failure
            .as_ref()
            .is_some_and(|(fp, f)| *fp == fingerprint && f.transient())
            && st.retry_at.is_some_and(|t| Instant::now() < t)
            && !told;
        if !running && !backing_off && (told || !authorized || !st.settled(&fingerprint)) {
            let same_source = st
                .prepared
                .as_ref()
                .is_some_and(|(fp, _)| *fp == fingerprint);
            st.job = JobState::Running {
                fingerprint: fingerprint.clone(),
            };
            st.poke = false;
            prepare::spawn(
                ctx,
                Job {
                    key: key.clone(),
                    source: source.clone(),
                    want: want.clone(),
                    remote: st.remote.take(),
                    fingerprint: fingerprint.clone(),
                    authorize: !authorized,
                    paths: spec.paths.clone(),
                    cache: if same_source {
                        st.cache.clone()
                    } else {
                        CompileCache::default()
                    },
                    charts: chart_access,
                },
            );
        }
        (
            st.failure
                .as_ref()
                .filter(|(fp, _)| *fp == fingerprint)
                .map(|(_, f)| f.clone()),
            st.poll_error.clone(),
            matches!(st.job, JobState::Running { .. }),
        )
    };

    // 2. The desired Bundles, written where they differ: the ones in memory
    // (the last good ones while a newer commit fails or is being prepared),
    // so spec edits apply whatever the source does. With none in memory (a
    // restart), nothing is touched.
    let (good, bundles) = {
        let repos = ctx.git.repos();
        let st = repos.get(key).expect("state set above");
        (st.commit, st.bundles.clone())
    };
    if let Some(good) = good
        && let Err(e) = bundles::write_commit(ctx, key, repo, good, &bundles).await
    {
        tracing::warn!(gitrepo = %key, error = %e.message, "a write was refused; what is deployed stays");
        return Ok(Outcome::Failed {
            reason: e.reason,
            message: format!("{}; what is deployed stays", e.message),
            stalled: e.refused,
            retry: true,
        });
    }
    Ok(match (failure, poll_error, good) {
        (Some(f), _, deployed) => Outcome::of_failure(&f, deployed.is_some()),
        // The source stopped answering after a good sync: what is deployed
        // stays, and the conditions say why it may be old. The poller
        // queues the GitRepo again when it answers.
        (None, Some(e), deployed) => Outcome::of_failure(&Failure::Git(e), deployed.is_some()),
        (None, None, None) => Outcome::Fetching,
        (None, None, Some(_)) if running && bundles.is_empty() => Outcome::Fetching,
        (None, None, Some(good)) => Outcome::Synced {
            commit: good,
            bundles: bundles.len(),
        },
    })
}

fn short(commit: Oid) -> String {
    commit.to_string()[..7].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::{BundleTarget, GitRepoSpec, GitTarget, TargetCriteria, keys};

    fn compiled(targets: Vec<BundleTarget>) -> CompiledBundle {
        CompiledBundle {
            name: "shop-web".into(),
            dir: "web".into(),
            kind: flotilla_bundle::BundleKind::Raw,
            labels: [("team".to_owned(), "web".to_owned())].into(),
            annotations: Default::default(),
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
