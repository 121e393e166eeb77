//! The dedicated GC controller.
//!
//! Wakes on: every targeting change that untargets a (bundle, cluster) pair
//! (a Bundle's targets, a Bundle deleted, a Cluster relabelled or deleted,
//! a ClusterGroup's selector changed or the group deleted), the creation
//! of a BundleDeployment (which may race a targets edit), and, for a
//! deleted Bundle, the deletion of each of its BundleDeployments. It never
//! waits for a periodic pass.
//!
//! Computes: whether the BundleDeployment's pair is still targeted, from
//! the same index the fan-out uses. A bundle whose targets (or a group of
//! whose namespace) could not be evaluated is left alone.
//!
//! Writes: a delete with a uid precondition, so a BundleDeployment
//! recreated meanwhile is never hit. The agent's finalizer then holds the
//! object until the agent has pruned downstream (unless `keepResources`).
//! For a deleted Bundle, it removes the Bundle's finalizer once no
//! BundleDeployment is left.
//!
//! A Bundle whose GitRepo or HelmOp is gone while the Bundle is not
//! deleting (the owner's finalizer was removed by hand) is an orphan: it is
//! deleted, and its BundleDeployments follow. Bundles carry an owner
//! reference to their owner, so the API server's garbage collector does the
//! same; this covers Bundles without one and API servers whose collector
//! lags.
//!
//! A safety sweep (`--gc-sweep-interval`) walks every BundleDeployment and
//! Bundle, counts the stale ones in `gc_sweep_stale_found_total`, logs them
//! and queues them. Finding one is a bug: the event path should have.

use crate::queue::Action;
use crate::topology::pair_of;
use crate::{Context, Error, GcKey};
use flotilla_api::{Bundle, BundleDeployment, keys};
use flotilla_targeting::ObjectKey;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use std::sync::Arc;

pub async fn reconcile(ctx: Arc<Context>, key: GcKey) -> Result<Action, Error> {
    match key {
        GcKey::Deployment(key) => deployment(&ctx, &key).await,
        GcKey::Bundle(key) => release_bundle(&ctx, &key).await,
    }
    .map(|_| Action::Done)
}

/// Whether a cached BundleDeployment should be deleted now.
pub fn is_stale(ctx: &Context, bd: &BundleDeployment) -> bool {
    if bd.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some((bundle, cluster)) = pair_of(bd) else {
        return false;
    };
    ctx.topo().is_stale(&bundle, &cluster)
}

async fn deployment(ctx: &Context, key: &ObjectKey) -> Result<(), Error> {
    let Some(bd) = ctx.bds.get(key) else {
        return Ok(());
    };
    if !is_stale(ctx, &bd) {
        return Ok(());
    }
    let api: Api<BundleDeployment> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: bd.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    ctx.metrics.write("BundleDeployment", "delete");
    match api.delete(&key.name, &params).await {
        Ok(_) => {
            ctx.metrics.gc_deleted();
            tracing::info!(bundle_deployment = %key, "stale bundle deployment deleted");
            // Summed per Bundle into one Event per burst.
            if let Some((bundle, _)) = pair_of(&bd)
                && let Some(b) = ctx.bundles.get(&bundle)
            {
                use kube::Resource;
                ctx.events.deleted(&bundle, b.object_ref(&()));
            }
            Ok(())
        }
        // Gone already, or replaced by a new object the precondition spares.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(source) => Err(Error::Write {
            verb: "delete",
            kind: "BundleDeployment",
            name: key.to_string(),
            source,
        }),
    }
}

/// Whether a Bundle belongs to a GitRepo that no longer exists.
pub fn is_orphan(ctx: &Context, bundle: &Bundle) -> bool {
    if bundle.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(owner) = crate::bundles::OwnerKind::of_bundle(bundle) else {
        return false;
    };
    // Bundles made by a GitRepo or HelmOp say so in their owner references
    // (older ones by their label alone); another owner means someone
    // else's.
    let owners = bundle
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    if owners.iter().any(|o| o.kind != owner.kind.kind()) {
        return false;
    }
    // One of that name that did not make it (one deleted and made again)
    // adopts it instead.
    match owner.kind {
        crate::bundles::OwnerKind::GitRepo => ctx.gitrepos.get(&owner.key).is_none(),
        crate::bundles::OwnerKind::HelmOp => ctx.helmops.get(&owner.key).is_none(),
    }
}

async fn delete_orphan(ctx: &Context, key: &ObjectKey, bundle: &Bundle) -> Result<(), Error> {
    let api: Api<Bundle> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: bundle.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    ctx.metrics.write("Bundle", "delete");
    match api.delete(&key.name, &params).await {
        Ok(_) => {
            tracing::info!(bundle = %key, "bundle deleted: its GitRepo is gone");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(source) => Err(Error::Write {
            verb: "delete",
            kind: "Bundle",
            name: key.to_string(),
            source,
        }),
    }
}

async fn release_bundle(ctx: &Context, key: &ObjectKey) -> Result<(), Error> {
    let Some(bundle) = ctx.bundles.get(key) else {
        return Ok(());
    };
    if is_orphan(ctx, &bundle) {
        return delete_orphan(ctx, key, &bundle).await;
    }
    let finalizers = bundle.metadata.finalizers.clone().unwrap_or_default();
    if bundle.metadata.deletion_timestamp.is_none()
        || !finalizers.iter().any(|f| f == keys::BUNDLE_FINALIZER)
    {
        return Ok(());
    }
    let remaining = ctx.topo().bds_by_bundle.get(key).map_or(0, |m| m.len());
    if remaining > 0 {
        // The deletion of each one queues this key again.
        tracing::debug!(bundle = %key, remaining, "bundle waits for its deployments");
        return Ok(());
    }
    let rest: Vec<String> = finalizers
        .iter()
        .filter(|f| *f != keys::BUNDLE_FINALIZER)
        .cloned()
        .collect();
    let patch = crate::finalizers_patch(&bundle.metadata, &rest);
    let api: Api<Bundle> = Api::namespaced(ctx.client.clone(), &key.namespace);
    ctx.metrics.write("Bundle", "patch");
    match api
        .patch(
            &key.name,
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(bundle = %key, "bundle released");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Write {
            verb: "remove the finalizer from",
            kind: "Bundle",
            name: key.to_string(),
            source,
        }),
    }
}

/// One safety sweep: returns how many stale BundleDeployments it found.
pub fn sweep(ctx: &Context) -> u64 {
    let mut found = 0;
    for bd in ctx.bds.list() {
        if is_stale(ctx, &bd) {
            found += 1;
            let key = ObjectKey::of(&bd.metadata);
            tracing::error!(bundle_deployment = %key, "safety sweep found a stale bundle deployment the event path missed");
            ctx.gc.add(GcKey::Deployment(key), "sweep");
        }
    }
    for b in ctx.bundles.list() {
        if is_orphan(ctx, &b) {
            found += 1;
            let key = ObjectKey::of(&b.metadata);
            tracing::warn!(bundle = %key, "safety sweep found a bundle whose GitRepo is gone");
            ctx.gc.add(GcKey::Bundle(key), "sweep");
        }
    }
    ctx.metrics.gc_sweep(found);
    found
}
