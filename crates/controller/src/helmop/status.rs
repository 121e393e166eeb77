//! What the HelmOp controller writes on the HelmOp itself: its finalizer,
//! and the status fields it owns (observedGeneration, the chart version and
//! digest deployed, the Ready/Reconciling/Stalled conditions, the source as
//! it may be shown, the message), each only when it changed. The status
//! controller owns the cluster counts and the summary.

use super::{HELMOP_FIELD_MANAGER, Outcome};
use crate::bundles::{OwnerKey, OwnerKind, delete_bundle};
use crate::status::apply_status;
use crate::{Context, Error, ObjectKey, finalizers_patch};
use flotilla_api::condition;
use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use flotilla_api::{HelmOp, keys};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

async fn patch_finalizers(
    ctx: &Context,
    key: &ObjectKey,
    op: &HelmOp,
    want: &[String],
) -> Result<(), Error> {
    let api: Api<HelmOp> = Api::namespaced(ctx.client.clone(), &key.namespace);
    ctx.metrics.write("HelmOp", "patch-finalizers");
    match api
        .patch(
            &key.name,
            &PatchParams::default(),
            &Patch::<()>::Json(finalizers_patch(&op.metadata, want)),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Write {
            verb: "patch the finalizers of",
            kind: "HelmOp",
            name: key.to_string(),
            source,
        }),
    }
}

pub async fn ensure_finalizer(ctx: &Context, key: &ObjectKey, op: &HelmOp) -> Result<(), Error> {
    let have = op.metadata.finalizers.clone().unwrap_or_default();
    if have.iter().any(|f| f == keys::HELMOP_FINALIZER) {
        return Ok(());
    }
    let mut want = have;
    want.push(keys::HELMOP_FINALIZER.to_owned());
    patch_finalizers(ctx, key, op, &want).await
}

/// A deleting HelmOp: delete its Bundle, and release it once the Bundle
/// is gone (its deletion event wakes this again).
pub async fn finalize(ctx: &Context, key: &ObjectKey, op: &HelmOp) -> Result<(), Error> {
    let owner = OwnerKey {
        kind: OwnerKind::HelmOp,
        key: key.clone(),
    };
    let mine = |b: &flotilla_api::Bundle| OwnerKind::of_bundle(b).as_ref() == Some(&owner);
    if ctx.bundles.get(key).is_some_and(|b| mine(&b)) {
        delete_bundle(ctx, &owner, key).await?;
        return Ok(());
    }
    // The cache may not have seen a Bundle written just before the
    // deletion: ask the API server before letting the HelmOp go.
    let live = Api::<flotilla_api::Bundle>::namespaced(ctx.client.clone(), &key.namespace)
        .get_opt(&key.name)
        .await
        .map_err(|source| Error::Write {
            verb: "read",
            kind: "Bundle",
            name: key.to_string(),
            source,
        })?;
    if live.as_ref().is_some_and(mine) {
        // Its event reaches the cache and wakes this again (which then
        // deletes it, or waits for its removal).
        return Ok(());
    }
    ctx.helm.forget(key);
    ctx.git.forget_owner(&owner);
    let have = op.metadata.finalizers.clone().unwrap_or_default();
    if !have.iter().any(|f| f == keys::HELMOP_FINALIZER) {
        return Ok(());
    }
    let want: Vec<String> = have
        .into_iter()
        .filter(|f| f != keys::HELMOP_FINALIZER)
        .collect();
    tracing::info!(helmop = %key, "bundle gone; releasing the HelmOp");
    patch_finalizers(ctx, key, op, &want).await
}

pub async fn write_status(
    ctx: &Context,
    key: &ObjectKey,
    op: &HelmOp,
    outcome: &Outcome,
) -> Result<(), Error> {
    let old = op.status.clone().unwrap_or_default();
    let generation = op.metadata.generation;
    let now = Time(flotilla_api::k8s_openapi::jiff::Timestamp::now());
    // Only `Synced` is this controller's; the status controller derives
    // Ready, Reconciling and Stalled from it, the Bundle and the clusters.
    let mut conditions: Vec<Condition> = old
        .conditions
        .iter()
        .filter(|c| c.type_ == condition::SYNCED)
        .cloned()
        .collect();
    let before = conditions.clone();
    let mut set = |status: &str, reason: &str, message: &str| {
        condition::set_synced(&mut conditions, status, reason, message, generation, &now);
    };
    let (version, digest, error) = match outcome {
        Outcome::Synced { chart } => {
            let m = format!("chart {} {} ({})", chart.name, chart.version, chart.digest);
            set("True", "Synced", &m);
            (chart.version.clone(), chart.digest.clone(), false)
        }
        Outcome::Updating { chart } => {
            // Not current for the new generation yet: say it is being
            // worked on, and leave observedGeneration where it was.
            let m = format!(
                "resolving the chart for generation {}; {} {} stays deployed meanwhile",
                generation.unwrap_or_default(),
                chart.name,
                chart.version
            );
            set("Unknown", "Resolving", &m);
            (old.version.clone(), old.digest.clone(), false)
        }
        Outcome::Resolving => {
            // Only the first resolution says so.
            if !old.version.is_empty() || !before.is_empty() {
                return Ok(());
            }
            set("Unknown", "Resolving", "resolving the chart");
            (String::new(), String::new(), false)
        }
        Outcome::Failed {
            reason,
            message,
            stalled,
            ..
        } => {
            set(if *stalled { "False" } else { "Unknown" }, reason, message);
            (old.version.clone(), old.digest.clone(), true)
        }
    };
    let observed = match outcome {
        Outcome::Updating { .. } => old.observed_generation,
        _ => generation.unwrap_or_default(),
    };
    let shown = super::shown_source(op);
    let unchanged = old.version == version
        && old.digest == digest
        && old.observed_generation == observed
        && before == conditions
        && old.display.error == error
        && old.display.repo == shown;
    if unchanged {
        return Ok(());
    }
    let status = json!({
        "observedGeneration": observed,
        "version": version,
        "digest": digest,
        "conditions": conditions,
        "display": {"error": error, "repo": shown},
    });
    apply_status::<HelmOp>(ctx, key, "HelmOp", status, HELMOP_FIELD_MANAGER).await
}
