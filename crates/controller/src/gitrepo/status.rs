//! What the GitRepo controller writes on the GitRepo itself: its finalizer
//! and the status fields it owns (commit, observedGeneration, the
//! Ready/Reconciling/Stalled conditions, the redacted repository URL and
//! the message), each only when it changed.

use super::{GITREPO_FIELD_MANAGER, Outcome, short};
use crate::bundles::{OwnerKey, OwnerKind, delete_bundle};
use crate::status::apply_status;
use crate::{Context, Error, ObjectKey, finalizers_patch};
use flotilla_api::condition;
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

/// Writes the GitRepo controller's own status: the commit, the
/// `Synced` condition (True: the latest commit compiled; Unknown: fetching,
/// or a failure retried on its own; False: stalled until the user changes
/// something), whether the last attempt failed, and the redacted URL. The
/// status controller turns `Synced`, the Bundles and the clusters into
/// Ready, Reconciling and Stalled.
pub async fn write_status(
    ctx: &Context,
    key: &ObjectKey,
    repo: &GitRepo,
    outcome: &Outcome,
) -> Result<(), Error> {
    let old = repo.status.clone().unwrap_or_default();
    let generation = repo.metadata.generation;
    let now = Time(flotilla_api::k8s_openapi::jiff::Timestamp::now());
    let mut conditions: Vec<Condition> = old
        .conditions
        .iter()
        .filter(|c| c.type_ == condition::SYNCED)
        .cloned()
        .collect();
    let before = conditions.clone();
    let (commit, error) = match outcome {
        Outcome::Synced { commit, bundles } => {
            let msg = format!(
                "commit {} compiled into {bundles} bundle(s)",
                short(*commit)
            );
            condition::set_synced(&mut conditions, "True", "Synced", &msg, generation, &now);
            (Some(commit.to_string()), false)
        }
        Outcome::Fetching => {
            // Only the first fetch says so: a new commit of a working
            // GitRepo is not worth a write.
            if old.commit.is_some() || !before.is_empty() {
                return Ok(());
            }
            let m = "fetching the repository";
            condition::set_synced(&mut conditions, "Unknown", "Fetching", m, generation, &now);
            (None, false)
        }
        Outcome::Failed {
            reason,
            message,
            stalled,
            ..
        } => {
            let status = if *stalled { "False" } else { "Unknown" };
            condition::set_synced(&mut conditions, status, reason, message, generation, &now);
            (old.commit.clone(), true)
        }
    };
    let observed = generation.unwrap_or_default();
    let shown_repo = flotilla_git::url::redact(repo.spec.repo.trim());
    let unchanged = old.commit == commit
        && old.observed_generation == observed
        && before == conditions
        && old.display.error == error
        && old.display.repo == shown_repo;
    if unchanged {
        return Ok(());
    }
    let status = json!({
        "commit": commit,
        "observedGeneration": observed,
        "conditions": conditions,
        "display": {"error": error, "repo": shown_repo},
    });
    apply_status::<GitRepo>(ctx, key, "GitRepo", status, GITREPO_FIELD_MANAGER).await?;
    // An Event for each transition an operator looks for.
    if before != conditions {
        use kube::Resource;
        let reference = repo.object_ref(&());
        match outcome {
            Outcome::Synced { .. } if old.commit != commit => {
                let note = conditions
                    .first()
                    .map(|c| c.message.as_str())
                    .unwrap_or_default();
                ctx.events.normal(&reference, "Synced", note).await;
            }
            Outcome::Failed {
                reason, message, ..
            } => ctx.events.warning(&reference, reason, message).await,
            _ => {}
        }
    }
    Ok(())
}
