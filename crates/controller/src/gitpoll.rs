//! What tells the GitRepo controller that a repository moved: the poller
//! and the webhook receiver.
//!
//! The poller wakes once a second and looks for GitRepos whose interval is
//! up. It groups them by mirror (URL and credentials) and lists each remote
//! once (an ls-remote, no objects). It queues a GitRepo only when the head
//! it follows differs from the last one it saw, or when its poll starts or
//! stops failing (the GitRepo then says so), so a poll that finds nothing
//! new costs one connection and writes nothing.
//!
//! Each mirror's poll runs on its own: the round does not wait for it, and
//! a mirror is not polled again while its last poll is in flight. A server
//! that never answers holds one connection for `--git-timeout`, and no
//! other GitRepo waits for it.
//!
//! The webhook receiver (`POST /webhook`) authenticates a push from GitHub,
//! GitLab, Gitea or Gogs and queues every GitRepo on the pushed URL (and
//! branch) at once. A replica that does not lead cannot queue work, so it
//! records the push in an annotation on each matching GitRepo, whose change
//! wakes the leader.

use crate::{Context, ObjectKey};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use flotilla_api::keys;
use flotilla_git::webhook::{self, Event};
use flotilla_git::{Source, Want};
use kube::Api;
use kube::api::{Patch, PatchParams};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const TICK: Duration = Duration::from_secs(1);

/// Polls while `active` (leading with synced caches).
pub async fn poll_loop(ctx: Arc<Context>, mut active: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if *active.borrow_and_update() {
            poll_due(&ctx).await;
        }
    }
}

/// One round: every GitRepo whose interval is up, one ls-remote per mirror
/// whose last poll answered. The polls run in the background; the round
/// returns at once.
pub async fn poll_due(ctx: &Arc<Context>) {
    for task in start_due(ctx) {
        drop(task);
    }
}

/// Starts the round's polls and returns their tasks (tests and benchmarks
/// may wait for them; the poll loop does not).
pub fn start_due(ctx: &Arc<Context>) -> Vec<tokio::task::JoinHandle<()>> {
    let now = Instant::now();
    let mut groups: HashMap<String, (Source, Vec<(ObjectKey, Want)>)> = HashMap::new();
    {
        let polling = ctx.git.polling.lock().expect("polling lock");
        let mut repos = ctx.git.repos();
        for (key, st) in repos.iter_mut() {
            let (Some(interval), Some((source, want))) = (st.interval, &st.source) else {
                continue;
            };
            // Half a tick of slack, so a 1s interval polls every tick.
            if st.next_poll.is_some_and(|t| t > now + TICK / 2) {
                continue;
            }
            let mirror = source.mirror_key();
            if polling.contains(&mirror) {
                continue; // still waiting for the last answer
            }
            st.next_poll = Some(now + interval);
            groups
                .entry(mirror)
                .or_insert_with(|| (source.clone(), Vec::new()))
                .1
                .push((key.clone(), want.clone()));
        }
    }
    let mut tasks = Vec::new();
    for (mirror, (source, members)) in groups {
        ctx.git
            .polling
            .lock()
            .expect("polling lock")
            .insert(mirror.clone());
        let ctx = Arc::clone(ctx);
        tasks.push(tokio::spawn(async move {
            let listed = {
                let _permit = Arc::clone(&ctx.git.connections).acquire_owned().await;
                ctx.metrics.git("ls-remote", 1);
                ctx.git.mirrors.ls_remote(&source).await
            };
            ctx.git
                .polling
                .lock()
                .expect("polling lock")
                .remove(&mirror);
            record(&ctx, &listed, members);
        }));
    }
    tasks
}

/// What one poll found, for each GitRepo on the mirror.
fn record(
    ctx: &Context,
    listed: &Result<flotilla_git::RemoteRefs, flotilla_git::GitError>,
    members: Vec<(ObjectKey, Want)>,
) {
    let mut repos = ctx.git.repos();
    for (key, want) in members {
        let Some(st) = repos.get_mut(&key) else {
            continue;
        };
        let picked = listed
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|r| r.pick(&want));
        match picked {
            Ok((head, _)) => {
                let recovered = st.poll_error.take().is_some();
                if st.head != Some(head) {
                    tracing::info!(gitrepo = %key, %head, "poll: new commit");
                    st.remote = listed.as_ref().ok().cloned();
                    ctx.gitrepo.add(key, "poll");
                } else if recovered {
                    tracing::info!(gitrepo = %key, "poll: the repository answers again");
                    ctx.gitrepo.add(key, "poll-recovered");
                }
            }
            Err(e) => {
                // Queue once per distinct error: the reconcile shows it in
                // the conditions, and what is deployed stays.
                if st.poll_error.as_ref() != Some(&e) {
                    tracing::warn!(gitrepo = %key, error = %e, "poll failed");
                    st.poll_error = Some(e);
                    ctx.gitrepo.add(key, "poll-error");
                }
            }
        }
    }
}

/// The webhook router: `POST /webhook`.
pub fn router(ctx: Arc<Context>) -> axum::Router {
    axum::Router::new().route(
        "/webhook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let ctx = Arc::clone(&ctx);
            async move { receive(&ctx, &headers, &body).await }
        }),
    )
}

async fn receive(ctx: &Context, headers: &HeaderMap, body: &[u8]) -> (StatusCode, String) {
    let Some(secret) = &ctx.args.webhook_secret else {
        return (
            StatusCode::NOT_FOUND,
            "webhooks are not configured\n".into(),
        );
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let provider = match webhook::verify(header, body, secret.0.as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            if let Some(suppressed) = ctx.webhook_refusals.allow() {
                tracing::warn!(error = %e, suppressed, "webhook refused (logged at most every 10s)");
            }
            return (StatusCode::UNAUTHORIZED, format!("{e}\n"));
        }
    };
    let push = match webhook::parse(provider, header, body) {
        Ok(Event::Push(p)) => p,
        Ok(Event::Ignored(event)) => {
            return (StatusCode::OK, format!("event {event:?} ignored\n"));
        }
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let urls: Vec<String> = push
        .urls
        .iter()
        .map(|u| webhook::normalize_url(u))
        .collect();
    let matched: Vec<ObjectKey> = ctx
        .gitrepos
        .list()
        .iter()
        .filter(|r| urls.contains(&webhook::normalize_url(&r.spec.repo)))
        .filter(|r| follows(r, push.git_ref.as_deref()))
        .map(|r| ObjectKey::of(&r.metadata))
        .collect();
    tracing::info!(?provider, git_ref = ?push.git_ref, commit = ?push.commit, gitrepos = matched.len(), "webhook push");
    let leading = *ctx.leading().borrow();
    for key in &matched {
        if leading {
            if let Some(st) = ctx.git.repos().get_mut(key) {
                st.poke = true;
            }
            ctx.gitrepo.add(key.clone(), "webhook");
        } else if let Err(e) = annotate(ctx, key, push.commit.as_deref()).await {
            tracing::warn!(gitrepo = %key, error = %e, "could not hand the push to the leader");
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
        }
    }
    (
        StatusCode::OK,
        format!("{} gitrepo(s) triggered\n", matched.len()),
    )
}

/// Whether a GitRepo follows the pushed ref (or the push names none).
fn follows(repo: &flotilla_api::GitRepo, git_ref: Option<&str>) -> bool {
    let Some(r) = git_ref else {
        return true;
    };
    match Want::of(repo.spec.branch.as_deref(), repo.spec.revision.as_deref()) {
        Want::Branch(b) => r == format!("refs/heads/{b}"),
        Want::Revision(t) => r == format!("refs/tags/{t}") || r.starts_with("refs/heads/"),
    }
}

async fn annotate(ctx: &Context, key: &ObjectKey, commit: Option<&str>) -> Result<(), kube::Error> {
    let api: Api<flotilla_api::GitRepo> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let value = commit.map(str::to_owned).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis().to_string())
            .unwrap_or_default()
    });
    let patch = serde_json::json!({"metadata": {"annotations": {keys::WEBHOOK_COMMIT: value}}});
    ctx.metrics.write("GitRepo", "annotate-webhook");
    api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}
