//! What the GitRepo controller writes on the GitRepo itself: its finalizer
//! and the status fields it owns (commit, observedGeneration, the
//! Ready/Reconciling/Stalled conditions, the redacted repository URL and
//! the message), each only when it changed.

use super::{GITREPO_FIELD_MANAGER, Outcome, short};
use crate::bundles::{OwnerKey, OwnerKind, delete_bundle};
use crate::status::apply_status;
use crate::{Context, Error, ObjectKey, finalizers_patch};
use flotilla_api::condition::{self, ConditionUpdate, set_condition};
use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use flotilla_api::{GitRepo, keys};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

pub async fn ensure_finalizer(ctx: &Context, key: &ObjectKey, repo: &GitRepo) -> Result<(), Error> {
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
pub async fn finalize(ctx: &Context, key: &ObjectKey, repo: &GitRepo) -> Result<(), Error> {
    let bundles: Vec<ObjectKey> = ctx
        .topo()
        .bundles_by_repo
        .get(key)
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let owner = OwnerKey {
        kind: OwnerKind::GitRepo,
        key: key.clone(),
    };
    for b in &bundles {
        delete_bundle(ctx, &owner, b).await?;
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

pub async fn write_status(
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
        Outcome::Fetching => {
            // Only the first fetch says so: a new commit of a working
            // GitRepo is not worth a write.
            if old.commit.is_some() || !old.conditions.is_empty() {
                return Ok(());
            }
            let m = "fetching the repository";
            for (t, status, reason, m) in [
                (condition::READY, false, "Fetching", m),
                (condition::RECONCILING, true, "Fetching", m),
                (condition::STALLED, false, "Fetching", ""),
            ] {
                set(&mut conditions, t, status, reason, m, generation, &now);
            }
            (None, String::new(), false)
        }
        Outcome::Failed {
            reason,
            message,
            stalled,
            ..
        } => {
            for (t, status, m) in [
                (condition::READY, false, message.as_str()),
                (
                    condition::RECONCILING,
                    !*stalled,
                    if *stalled { "" } else { message.as_str() },
                ),
                (
                    condition::STALLED,
                    *stalled,
                    if *stalled { message.as_str() } else { "" },
                ),
            ] {
                set(&mut conditions, t, status, reason, m, generation, &now);
            }
            (old.commit.clone(), message.clone(), true)
        }
    };
    let observed = generation.unwrap_or_default();
    let message = flotilla_api::summary::truncate(&message, 1024);
    let shown_repo = flotilla_git::url::redact(repo.spec.repo.trim());
    let unchanged = old.commit == commit
        && old.observed_generation == observed
        && old.conditions == conditions
        && old.display.message == message
        && old.display.error == error
        && old.display.repo == shown_repo;
    if unchanged {
        return Ok(());
    }
    let status = json!({
        "commit": commit,
        "observedGeneration": observed,
        "conditions": conditions,
        "display": {"message": message, "error": error, "repo": shown_repo},
    });
    apply_status::<GitRepo>(ctx, key, "GitRepo", status, GITREPO_FIELD_MANAGER).await
}

fn set(
    conditions: &mut Vec<Condition>,
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
