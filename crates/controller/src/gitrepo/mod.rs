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
mod source;
mod status;

pub use bundles::{desired_bundle, owner_reference};
pub use source::{DEFAULT_POLL_INTERVAL, fingerprint, poll_interval, url_policy};

use crate::{Context, Error, ObjectKey};
use flotilla_api::{BundleSpec, GitRepo};
use flotilla_bundle::{CompileInput, CompiledBundle, Deadline, Limits};
use flotilla_git::{CompileCache, GitError, Mirrors, Oid, RemoteRefs, Source, Synced, Want};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Field manager of the GitRepo controller's applies (Bundles and status).
pub const GITREPO_FIELD_MANAGER: &str = "flotilla-gitrepo";

/// What the GitRepo controller remembers between reconciles. Lost on a
/// restart, which costs one ls-remote and one compile per GitRepo, and no
/// writes when nothing changed.
pub struct GitState {
    pub mirrors: Mirrors,
    pub(crate) repos: Mutex<HashMap<ObjectKey, RepoState>>,
    /// Bundle -> (its GitRepo, the spec this controller wants it to have).
    pub(crate) desired: RwLock<HashMap<ObjectKey, (ObjectKey, Arc<BundleSpec>)>>,
    /// Git network operations in flight (`--git-connections`).
    pub(crate) connections: Arc<tokio::sync::Semaphore>,
    /// Mirrors whose poll is in flight: a slow one is not polled again
    /// until it answers or times out.
    pub(crate) polling: Mutex<HashSet<String>>,
}

/// A GitRepo's background fetch.
#[derive(Default)]
pub(crate) enum Fetch {
    #[default]
    Idle,
    Running {
        fingerprint: String,
    },
    Done {
        fingerprint: String,
        result: Result<Synced, GitError>,
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
    /// A webhook (or a failed fetch) said "look again".
    pub poke: bool,
    pub(crate) fetch: Fetch,
    /// The fingerprint whose credentials last proved they read the remote
    /// (for a pinned commit, which needs no fetch once mirrored).
    authorized: Option<String>,
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
    pub fn new(mirrors: Mirrors, connections: usize) -> Self {
        GitState {
            mirrors,
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
pub enum Outcome {
    Synced {
        commit: Oid,
        bundles: usize,
    },
    /// A background fetch is running; its end queues the GitRepo again.
    Fetching,
    /// Something stops the GitRepo from being current. `stalled`: it needs
    /// the user (Stalled), else it may pass by itself (Reconciling).
    /// `retry`: try again with backoff (the fix may come from outside the
    /// watch: a Secret, the remote).
    Failed {
        reason: &'static str,
        message: String,
        stalled: bool,
        retry: bool,
    },
}

impl Outcome {
    fn stalled(reason: &'static str, message: String) -> Self {
        Outcome::Failed {
            reason,
            message,
            stalled: true,
            retry: false,
        }
    }

    fn transient(reason: &'static str, message: String) -> Self {
        Outcome::Failed {
            reason,
            message,
            stalled: false,
            retry: true,
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

/// What step 1 decided.
enum Commit {
    /// Known, and nothing says it moved.
    Known(Oid),
    /// A background fetch answered.
    Fetched(Result<Synced, GitError>),
    /// A background fetch runs, or was just started.
    Waiting,
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
    let want = Want::of(spec.branch.as_deref(), spec.revision.as_deref());
    let fingerprint = fingerprint(repo, &source, &want);

    // 1. The commit.
    let (step, poll_error, same_source) = {
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
        if !same {
            st.poll_error = None;
        }
        let step = match std::mem::take(&mut st.fetch) {
            Fetch::Done {
                fingerprint: f,
                result,
            } if f == fingerprint => {
                if result.is_ok() && want.pinned_commit().is_some() {
                    st.authorized = Some(fingerprint.clone());
                }
                match &result {
                    // The remote answered: an earlier poll's error is old news.
                    Ok(_) => st.poll_error = None,
                    // The retry must fetch again, not settle for the old head.
                    Err(_) => st.poke = true,
                }
                Commit::Fetched(result)
            }
            Fetch::Running { fingerprint: f } if f == fingerprint => {
                st.fetch = Fetch::Running { fingerprint: f };
                Commit::Waiting
            }
            _ => {
                let remote = st.remote.take().filter(|_| same);
                let poke = std::mem::take(&mut st.poke);
                let authorized = want.pinned_commit().is_none()
                    || st.authorized.as_deref() == Some(fingerprint.as_str());
                match st.head.filter(|_| same) {
                    Some(c) if remote.is_none() && !poke && authorized => Commit::Known(c),
                    _ => {
                        st.fetch = Fetch::Running {
                            fingerprint: fingerprint.clone(),
                        };
                        spawn_fetch(
                            ctx,
                            key,
                            source.clone(),
                            want.clone(),
                            remote,
                            fingerprint.clone(),
                            !authorized,
                        );
                        Commit::Waiting
                    }
                }
            }
        };
        (step, st.poll_error.clone().filter(|_| same), same)
    };
    let commit = match step {
        Commit::Waiting => return Ok(Outcome::Fetching),
        Commit::Fetched(Err(e)) => return Ok(source::git_failure(&e)),
        Commit::Fetched(Ok(s)) => s.commit,
        Commit::Known(c) => c,
    };

    // 2. The compiled bundles.
    let compile_failure = compile(ctx, key, &source, &fingerprint, commit, same_source, spec).await;

    // 3. The desired Bundles, written where they differ. After a failed
    // compile these are the last good ones, so spec edits still apply; with
    // none in memory (a restart), nothing is touched.
    let (good, bundles) = {
        let repos = ctx.git.repos();
        let st = repos.get(key).expect("state set above");
        (st.commit, st.bundles.clone())
    };
    if let Some(good) = good
        && let Err(e) = bundles::apply_bundles(ctx, key, repo, good, &bundles).await
    {
        tracing::warn!(gitrepo = %key, error = %e.message, "a write was refused; what is deployed stays");
        return Ok(Outcome::Failed {
            reason: "WriteFailed",
            message: format!("{}; what is deployed stays", e.message),
            stalled: e.refused,
            retry: true,
        });
    }
    Ok(match (compile_failure, poll_error, good) {
        (Some(f), _, _) => f,
        // The source stopped answering after a good sync: what is deployed
        // stays, and the conditions say why it may be old. The poller
        // queues the GitRepo again when it answers.
        (None, Some(e), _) => match source::git_failure(&e) {
            Outcome::Failed {
                reason,
                message,
                stalled,
                ..
            } => Outcome::Failed {
                reason,
                message: format!("{message}; the last good commit stays deployed"),
                stalled,
                retry: false,
            },
            other => other,
        },
        (None, None, Some(good)) => Outcome::Synced {
            commit: good,
            bundles: bundles.len(),
        },
        (None, None, None) => unreachable!("a successful compile sets the commit"),
    })
}

/// Step 2: compiles `commit` unless the bundles in memory are its own.
/// Returns the failure to report, if any.
async fn compile(
    ctx: &Context,
    key: &ObjectKey,
    source: &Source,
    fingerprint: &str,
    commit: Oid,
    same_source: bool,
    spec: &flotilla_api::GitRepoSpec,
) -> Option<Outcome> {
    let (needs_compile, failed, cache) = {
        let mut repos = ctx.git.repos();
        let st = repos.get_mut(key).expect("state set above");
        st.head = Some(commit);
        let failed = st
            .failed
            .clone()
            .filter(|(c, fp, _)| *c == commit && fp == fingerprint)
            .map(|(_, _, m)| m);
        let cache = if same_source {
            st.cache.clone()
        } else {
            CompileCache::default()
        };
        (!same_source || st.commit != Some(commit), failed, cache)
    };
    if !needs_compile {
        return None;
    }
    if let Some(message) = failed {
        return Some(compile_failure(commit, message));
    }
    let path = ctx.git.mirrors.path(source);
    let name = key.name.to_string();
    let paths = spec.paths.clone();
    let budget = ctx.args.compile_timeout;
    let compiled = tokio::task::spawn_blocking(move || {
        let git =
            flotilla_git::git2::Repository::open_bare(&path).map_err(|e| e.message().to_owned())?;
        let input = CompileInput {
            repo_name: &name,
            paths: &paths,
            targets: &[],
            limits: Limits::default(),
            deadline: Some(Deadline::after(budget)),
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
            st.fingerprint = fingerprint.to_owned();
            st.bundles = c.bundles;
            st.cache = c.cache;
            st.failed = None;
            None
        }
        Err(message) => {
            tracing::warn!(gitrepo = %key, %commit, error = %message, "commit does not compile; the deployed bundles stay");
            st.failed = Some((commit, fingerprint.to_owned(), message.clone()));
            Some(compile_failure(commit, message))
        }
    }
}

/// Runs a GitRepo's network step beside the workers: an authorization
/// (for a pinned commit), then the sync. Its end queues the GitRepo.
fn spawn_fetch(
    ctx: &Arc<Context>,
    key: &ObjectKey,
    source: Source,
    want: Want,
    remote: Option<RemoteRefs>,
    fingerprint: String,
    authorize: bool,
) {
    let ctx = Arc::clone(ctx);
    let key = key.clone();
    tokio::spawn(async move {
        let result = {
            let _permit = Arc::clone(&ctx.git.connections).acquire_owned().await;
            async {
                if authorize {
                    ctx.metrics.git("ls-remote", 1);
                    ctx.git.mirrors.authorize(&source).await?;
                } else if remote.is_none() && want.pinned_commit().is_none() {
                    ctx.metrics.git("ls-remote", 1);
                }
                let synced = ctx
                    .git
                    .mirrors
                    .sync(&source, &want, remote.as_ref())
                    .await?;
                if synced.fetched {
                    ctx.metrics.git("fetch", 1);
                }
                Ok(synced)
            }
            .await
        };
        if let Err(e) = &result {
            tracing::warn!(gitrepo = %key, error = %e, "fetch failed");
        }
        if let Some(st) = ctx.git.repos().get_mut(&key)
            && matches!(&st.fetch, Fetch::Running { fingerprint: f } if *f == fingerprint)
        {
            st.fetch = Fetch::Done {
                fingerprint,
                result,
            };
        }
        ctx.gitrepo.add(key, "fetched");
    });
}

fn compile_failure(commit: Oid, message: String) -> Outcome {
    Outcome::stalled(
        "CompileFailed",
        format!(
            "commit {}: {message}; the previous bundles stay deployed",
            short(commit)
        ),
    )
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
