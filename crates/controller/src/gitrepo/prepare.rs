//! Preparing a GitRepo's bundles, beside the workers: the commit (an
//! ls-remote and a fetch of one ref only when the mirror lacks it; for a
//! pinned commit, an ls-remote that proves the credentials still read the
//! remote), its compile (directories whose tree changed only, under a
//! deadline), and the Helm charts its bundles name (resolved, verified and
//! vendored into their Content). Network waits never hold a worker, so a
//! server that never answers delays no other GitRepo; the job's end queues
//! the GitRepo, whose reconcile writes what it prepared.

use crate::chart_access::ChartAccess;
use crate::{Context, ObjectKey};
use flotilla_bundle::{CompileInput, CompiledBundle, Deadline, Limits};
use flotilla_git::{CompileCache, GitError, Oid, RemoteRefs, Source, Want};
use std::sync::Arc;

/// Everything a job needs, taken from the reconcile that starts it.
pub struct Job {
    pub key: ObjectKey,
    pub source: Source,
    pub want: Want,
    /// A listing the poller already has.
    pub remote: Option<RemoteRefs>,
    pub fingerprint: String,
    /// Prove the credentials before using a pinned commit the mirror has.
    pub authorize: bool,
    pub paths: Vec<String>,
    pub cache: CompileCache,
    pub charts: ChartAccess,
}

/// What a job made: bundles ready to write.
pub struct Prepared {
    pub commit: Oid,
    pub bundles: Vec<Arc<CompiledBundle>>,
    pub cache: CompileCache,
}

/// Why a job failed, and the commit it got to.
#[derive(Clone, Debug)]
pub enum Failure {
    Git(GitError),
    Compile {
        commit: Oid,
        message: String,
        /// A deadline, not the commit: worth trying again.
        transient: bool,
    },
    Chart {
        commit: Oid,
        error: flotilla_charts::ChartError,
    },
}

impl Failure {
    /// The commit the source pointed at, when it got that far.
    pub fn commit(&self) -> Option<Oid> {
        match self {
            Failure::Git(_) => None,
            Failure::Compile { commit, .. } | Failure::Chart { commit, .. } => Some(*commit),
        }
    }

    /// Whether the same inputs may succeed later (a remote that comes
    /// back, a compile that ran out of time on a busy machine).
    pub fn transient(&self) -> bool {
        match self {
            Failure::Git(_) => true,
            Failure::Compile { transient, .. } => *transient,
            Failure::Chart { error, .. } => error.transient(),
        }
    }
}

/// Starts a job; its end stores the result and queues the GitRepo.
pub fn spawn(ctx: &Arc<Context>, job: Job) {
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let key = job.key.clone();
        let fingerprint = job.fingerprint.clone();
        let result = run(&ctx, job).await;
        if let Err(f) = &result {
            tracing::warn!(gitrepo = %key, error = %describe(f), "preparing the bundles failed");
        }
        super::finish(&ctx, &key, fingerprint, result);
    });
}

pub fn describe(f: &Failure) -> String {
    match f {
        Failure::Git(e) => e.to_string(),
        Failure::Compile {
            commit, message, ..
        } => {
            format!("commit {}: {message}", super::short(*commit))
        }
        Failure::Chart { commit, error } => {
            format!("commit {}: {error}", super::short(*commit))
        }
    }
}

async fn run(ctx: &Arc<Context>, job: Job) -> Result<Prepared, Failure> {
    // The commit.
    let synced = {
        let _permit = Arc::clone(&ctx.git.connections).acquire_owned().await;
        if job.authorize {
            ctx.metrics.git("ls-remote", 1);
            ctx.git
                .mirrors
                .authorize(&job.source)
                .await
                .map_err(Failure::Git)?;
        } else if job.remote.is_none() && job.want.pinned_commit().is_none() {
            ctx.metrics.git("ls-remote", 1);
        }
        ctx.git
            .mirrors
            .sync(&job.source, &job.want, job.remote.as_ref())
            .await
            .map_err(Failure::Git)?
    };
    if synced.fetched {
        ctx.metrics.git("fetch", 1);
    }
    let commit = synced.commit;

    // The compile.
    let path = ctx.git.mirrors.path(&job.source);
    let name = job.key.name.to_string();
    let paths = job.paths.clone();
    let cache = job.cache.clone();
    let budget = ctx.args.compile_timeout;
    let compiled = tokio::task::spawn_blocking(move || {
        let git = flotilla_git::git2::Repository::open_bare(&path)
            .map_err(|e| (e.message().to_owned(), false))?;
        let input = CompileInput {
            repo_name: &name,
            paths: &paths,
            targets: &[],
            limits: Limits::default(),
            deadline: Some(Deadline::after(budget)),
        };
        flotilla_git::compile_commit(&git, commit, &input, &cache).map_err(|e| {
            let transient = matches!(
                e,
                flotilla_git::CompileError::Bundle(flotilla_bundle::BundleError::TimedOut { .. })
            );
            (e.to_string(), transient)
        })
    })
    .await
    .unwrap_or_else(|e| Err((format!("the compile panicked: {e}"), false)))
    .map_err(|(message, transient)| Failure::Compile {
        commit,
        message,
        transient,
    })?;
    ctx.metrics.git("compiled", compiled.compiled.len() as u64);
    ctx.metrics.git("reused", compiled.reused as u64);
    tracing::info!(
        gitrepo = %job.key,
        commit = %commit,
        bundles = compiled.bundles.len(),
        compiled = ?compiled.compiled,
        reused = compiled.reused,
        "compiled"
    );
    for w in &compiled.warnings {
        tracing::warn!(gitrepo = %job.key, warning = %w, "compile warning");
    }

    // The charts.
    let mut bundles = Vec::with_capacity(compiled.bundles.len());
    for b in compiled.bundles {
        if !flotilla_charts::needs_resolution(&b) {
            bundles.push(b);
            continue;
        }
        let _permit = Arc::clone(&ctx.git.connections).acquire_owned().await;
        let dir = b.dir.clone();
        let access = |src: &flotilla_charts::ChartSource| job.charts.access(&dir, src);
        let (resolved, vendored) =
            flotilla_charts::resolve_bundle(&ctx.git.charts, &b, Limits::default(), &access)
                .await
                .map_err(|error| Failure::Chart { commit, error })?;
        let downloads = vendored.iter().filter(|v| v.downloaded).count();
        ctx.metrics.git("chart-download", downloads as u64);
        for v in &vendored {
            tracing::info!(gitrepo = %job.key, bundle = %b.name, chart = %v.name, version = %v.version, digest = %v.digest, "chart resolved");
        }
        bundles.push(Arc::new(resolved));
    }
    Ok(Prepared {
        commit,
        bundles,
        cache: compiled.cache,
    })
}
