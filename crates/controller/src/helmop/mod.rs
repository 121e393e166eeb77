//! The HelmOp controller: a Helm chart, deployed without Git, becomes one
//! Bundle (of the HelmOp's name) and its Content, as Fleet's HelmOp does.
//!
//! What wakes it (the hub, `hub/owners.rs`):
//! - a HelmOp created, its spec changed (generation), or deleting;
//! - its own background resolution finishing, or its retry falling due;
//! - its polling interval elapsing (only for a version range: an exact
//!   version or an archive URL cannot move);
//! - its Bundle deleted or edited by someone else, or a Content it needs
//!   deleted.
//!
//! What it computes: the HelmOp checked ([`spec::plan`], pure); its
//! credentials (`helmSecretName`, `insecureSkipTLSVerify`); then, in the
//! background and never holding a worker, the chart resolved and vendored
//! by the same code as a GitRepo's charts (`flotilla_charts`), the version
//! a range picks, the archive verified and cached by digest.
//!
//! What it writes, each only when it differs: the Content and the Bundle
//! (through [`crate::bundles`], with the Bundle finalizer and an owner
//! reference), the HelmOp finalizer, and status (the version and digest
//! deployed, kstatus conditions, the message). A source that fails, a chart
//! that is refused, or a write the API server refuses leaves the Bundle as
//! it was, and says why in the conditions. A poll that finds nothing new
//! writes nothing.

mod spec;
mod status;

pub use spec::{Plan, plan};

use crate::bundles::{DesiredBundle, Owner, OwnerKind, apply_bundles};
use crate::chart_access::{ChartAccess, HelmSecrets, chart_access};
use crate::{Context, Error, ObjectKey};
use flotilla_api::HelmOp;
use flotilla_bundle::{CompiledBundle, Limits};
use flotilla_charts::{ChartError, VendoredChart};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Field manager of the HelmOp controller's writes (Bundle and status).
pub const HELMOP_FIELD_MANAGER: &str = "flotilla-helmop";

const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// When a source that refused (credentials, TLS, no such chart or
/// version) is asked again.
const RECHECK: Duration = Duration::from_secs(300);

/// What the HelmOp controller remembers between reconciles. Lost on a
/// restart, which costs one resolution per HelmOp (from the cache), and no
/// writes when nothing changed.
#[derive(Default)]
pub struct HelmOpState {
    ops: Mutex<HashMap<ObjectKey, OpState>>,
}

impl HelmOpState {
    fn ops(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, OpState>> {
        self.ops.lock().expect("helmop state lock")
    }

    fn forget(&self, key: &ObjectKey) {
        self.ops().remove(key);
    }
}

type Resolution = Result<(Arc<CompiledBundle>, VendoredChart), ChartError>;

#[derive(Default)]
enum Job {
    #[default]
    Idle,
    Running {
        fingerprint: String,
    },
    Done {
        fingerprint: String,
        result: Resolution,
    },
}

#[derive(Default)]
struct OpState {
    job: Job,
    /// The last good resolution and the fingerprint it was made for.
    good: Option<(String, Arc<CompiledBundle>, VendoredChart)>,
    /// The last failed one, for the fingerprint it ran with.
    failure: Option<(String, ChartError)>,
    failures: u32,
    retry_at: Option<Instant>,
    /// When the version range is resolved again.
    next_poll: Option<Instant>,
    /// The earliest wake-up queued, so that timers do not pile up.
    wake_at: Option<Instant>,
}

/// Queues the HelmOp after `delay`, unless an earlier wake-up is pending
/// (its reconcile schedules the next).
fn wake_after(
    ctx: &Context,
    key: &ObjectKey,
    st: &mut OpState,
    delay: Duration,
    why: &'static str,
) {
    let now = Instant::now();
    let at = now + delay;
    if st.wake_at.is_some_and(|t| t > now && t <= at) {
        return;
    }
    st.wake_at = Some(at);
    ctx.helmop.add_after(key.clone(), delay, why);
}

/// How a reconcile ended, for the status.
pub enum Outcome {
    Synced {
        chart: VendoredChart,
    },
    /// The first resolution runs; its end queues the HelmOp again.
    Resolving,
    /// A changed spec is being resolved; `chart` stays deployed meanwhile
    /// (and the status does not yet claim the new generation).
    Updating {
        chart: VendoredChart,
    },
    /// `stalled`: it needs the user; `retry`: the queue tries again.
    Failed {
        reason: &'static str,
        message: String,
        stalled: bool,
        retry: bool,
    },
}

/// The chart source as it may be shown (no userinfo, no query secrets).
pub fn shown_source(op: &HelmOp) -> String {
    let helm = op.spec.bundle.options.helm.clone().unwrap_or_default();
    flotilla_charts::ChartSource::of(
        helm.repo.as_deref(),
        helm.chart.as_deref(),
        helm.version.as_deref(),
    )
    .map(|s| s.shown())
    .unwrap_or_default()
}

pub async fn reconcile(ctx: Arc<Context>, key: ObjectKey) -> Result<crate::queue::Action, Error> {
    let Some(op) = ctx.helmops.get(&key) else {
        ctx.helm.forget(&key);
        return Ok(crate::queue::Action::Done);
    };
    if op.metadata.deletion_timestamp.is_some() {
        status::finalize(&ctx, &key, &op).await?;
        return Ok(crate::queue::Action::Done);
    }
    status::ensure_finalizer(&ctx, &key, &op).await?;
    let outcome = sync(&ctx, &key, &op).await?;
    status::write_status(&ctx, &key, &op, &outcome).await?;
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

/// A digest of everything a resolution depends on: the spec and the
/// credentials (a rotated one resolves again).
fn fingerprint(op: &HelmOp, access: &ChartAccess) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&op.spec).expect("a spec serializes"));
    h.update(access.digest().as_bytes());
    hex::encode(&h.finalize()[..16])
}

async fn sync(ctx: &Arc<Context>, key: &ObjectKey, op: &HelmOp) -> Result<Outcome, Error> {
    let plan = match plan(op) {
        Ok(p) => p,
        Err(message) => {
            return Ok(Outcome::Failed {
                reason: "InvalidSpec",
                message,
                stalled: true,
                retry: false,
            });
        }
    };
    let secrets = HelmSecrets {
        helm_secret_name: op.spec.helm_secret_name.as_deref(),
        insecure_skip_tls_verify: op.spec.insecure_skip_tls_verify,
        ..HelmSecrets::default()
    };
    let access = match chart_access(ctx, key, &secrets).await {
        Ok(a) => a,
        Err(crate::gitrepo::Outcome::Failed {
            reason,
            message,
            stalled,
            retry,
        }) => {
            return Ok(Outcome::Failed {
                reason,
                message,
                stalled,
                retry,
            });
        }
        Err(_) => return Ok(Outcome::Resolving),
    };
    let fp = fingerprint(op, &access);

    // 1. The resolution: take a finished one, or start one when the spec
    // or credentials changed, or a poll is due.
    let (good, failure) = {
        let mut ops = ctx.helm.ops();
        let st = ops.entry(key.clone()).or_default();
        match std::mem::take(&mut st.job) {
            Job::Done {
                fingerprint,
                result,
            } if fingerprint == fp => match result {
                Ok((bundle, chart)) => {
                    st.good = Some((fp.clone(), bundle, chart));
                    st.failure = None;
                    st.failures = 0;
                    st.retry_at = None;
                }
                Err(e) => st.failure = Some((fp.clone(), e)),
            },
            Job::Running { fingerprint } if fingerprint == fp => {
                st.job = Job::Running { fingerprint };
            }
            _ => {}
        }
        let running = matches!(st.job, Job::Running { .. });
        // A failure is tried again at `retry_at`: soon for a source that
        // did not answer, after RECHECK for one that refused (its Secret
        // may be fixed meanwhile, and nothing watches Secrets).
        let current = st.good.as_ref().is_some_and(|(f, ..)| *f == fp)
            || st
                .failure
                .as_ref()
                .is_some_and(|(f, _)| *f == fp && st.retry_at.is_some_and(|t| Instant::now() < t));
        let now = Instant::now();
        let poll_due = plan.poll.is_some() && st.next_poll.is_some_and(|t| now >= t);
        if st.wake_at.is_some_and(|t| t <= now) {
            st.wake_at = None;
        }
        let start = !running && (!current || poll_due);
        if !start {
            // Keep the next poll or retry armed whatever woke this.
            let deadlines = [
                st.next_poll.filter(|_| plan.poll.is_some()),
                st.retry_at
                    .filter(|_| st.failure.as_ref().is_some_and(|(f, _)| *f == fp)),
            ];
            for at in deadlines.into_iter().flatten().filter(|t| *t > now) {
                wake_after(ctx, key, st, at - now, "rearm");
            }
        }
        if start {
            if st.failure.as_ref().is_some_and(|(f, _)| *f != fp) {
                st.failures = 0; // a new spec starts its backoff afresh
            }
            st.job = Job::Running {
                fingerprint: fp.clone(),
            };
            spawn(
                ctx,
                key.clone(),
                fp.clone(),
                plan.bundle.clone(),
                plan.source.clone(),
                access,
                plan.poll,
            );
        }
        (
            st.good
                .as_ref()
                .map(|(f, b, c)| (*f == fp, Arc::clone(b), c.clone())),
            st.failure
                .as_ref()
                .filter(|(f, _)| *f == fp)
                .map(|(_, e)| e.clone()),
        )
    };

    // 2. The Bundle, from the last good resolution (the chart that stays
    // deployed while a newer one fails or is being resolved).
    let Some((current, bundle, chart)) = good else {
        return Ok(match failure {
            Some(e) => of_failure(&e, false),
            None => Outcome::Resolving,
        });
    };
    let owner = Owner {
        kind: OwnerKind::HelmOp,
        key,
        uid: op.metadata.uid.as_deref(),
    };
    let desired = DesiredBundle {
        labels: bundle.labels.clone(),
        annotations: BTreeMap::new(),
        spec: bundle.spec.clone(),
        compiled: bundle,
    };
    if let Err(e) = apply_bundles(ctx, &owner, std::slice::from_ref(&desired)).await {
        tracing::warn!(helmop = %key, error = %e.message, "a write was refused; what is deployed stays");
        return Ok(Outcome::Failed {
            reason: e.reason,
            message: format!("{}; what is deployed stays", e.message),
            stalled: e.refused,
            retry: true,
        });
    }
    Ok(match failure {
        Some(e) => of_failure(&e, true),
        None if current => Outcome::Synced { chart },
        None => Outcome::Updating { chart },
    })
}

fn of_failure(e: &ChartError, deployed: bool) -> Outcome {
    let kept = if deployed {
        "; the last good chart stays deployed"
    } else {
        ""
    };
    Outcome::Failed {
        reason: e.reason(),
        message: format!("{e}{kept}"),
        stalled: !e.transient(),
        // The controller retries a transient failure itself.
        retry: false,
    }
}

/// Resolves the chart in the background, within `--git-connections`; the
/// end stores the result and queues the HelmOp (and its next poll).
fn spawn(
    ctx: &Arc<Context>,
    key: ObjectKey,
    fp: String,
    bundle: CompiledBundle,
    source: flotilla_charts::ChartSource,
    access: ChartAccess,
    poll: Option<Duration>,
) {
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let result = {
            let _permit = Arc::clone(&ctx.git.connections).acquire_owned().await;
            // Its credentials go only to its own chart source's host (not
            // to dependencies or customizations elsewhere).
            let for_source = |src: &flotilla_charts::ChartSource| {
                let mut a = access.access("", src);
                if !src.same_host(&source) {
                    a.basic = None;
                }
                a
            };
            flotilla_charts::resolve_bundle(
                &ctx.git.charts,
                &bundle,
                Limits::default(),
                &for_source,
            )
            .await
        };
        ctx.metrics.git("helmop-resolve", 1);
        let result: Resolution = result.and_then(|(resolved, vendored)| {
            let downloads = vendored.iter().filter(|v| v.downloaded).count();
            ctx.metrics.git("chart-download", downloads as u64);
            let chart = vendored.into_iter().next().ok_or_else(|| ChartError::Invalid {
                chart: bundle.name.clone(),
                message: "resolved to no chart".into(),
            })?;
            tracing::info!(helmop = %key, chart = %chart.name, version = %chart.version, digest = %chart.digest, "chart resolved");
            Ok((Arc::new(resolved), chart))
        });
        if let Err(e) = &result {
            tracing::warn!(helmop = %key, error = %e, "chart resolution failed");
        }
        let mut ops = ctx.helm.ops();
        let Some(st) = ops.get_mut(&key) else {
            return;
        };
        if !matches!(&st.job, Job::Running { fingerprint } if *fingerprint == fp) {
            return; // superseded by a newer spec
        }
        if let Err(e) = &result {
            let delay = if e.transient() {
                st.failures = st.failures.saturating_add(1);
                (RETRY_BASE * (1u32 << (st.failures - 1).min(10))).min(RETRY_MAX)
            } else {
                RECHECK
            };
            st.retry_at = Some(Instant::now() + delay);
            wake_after(&ctx, &key, st, delay, "retry");
        }
        if let Some(every) = poll {
            st.next_poll = Some(Instant::now() + every);
            wake_after(&ctx, &key, st, every, "poll");
        }
        st.job = Job::Done {
            fingerprint: fp,
            result,
        };
        drop(ops);
        ctx.helmop.add(key, "resolved");
    });
}
