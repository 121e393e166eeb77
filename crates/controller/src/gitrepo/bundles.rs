//! What the GitRepo controller writes for a compiled commit: its Bundles
//! (through [`crate::bundles`], all or none, stamped with the commit), and
//! the deletion of Bundles whose path left the repository.

use crate::bundles::{
    DesiredBundle, Owner, OwnerKey, OwnerKind, WriteFailure, apply_bundles, delete_bundle,
};
use crate::{Context, ObjectKey};
use flotilla_api::{BundleSpec, BundleTarget, GitRepo, keys};
use flotilla_bundle::CompiledBundle;
use flotilla_git::Oid;
use kube::ResourceExt;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

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

/// Writes a compiled commit's Bundles, then deletes those of paths that
/// left the repository.
pub async fn write_commit(
    ctx: &Context,
    key: &ObjectKey,
    repo: &GitRepo,
    commit: Oid,
    compiled: &[Arc<CompiledBundle>],
) -> Result<(), WriteFailure> {
    let owner = Owner {
        kind: OwnerKind::GitRepo,
        key,
        uid: repo.metadata.uid.as_deref(),
    };
    let desired: Vec<DesiredBundle> = compiled
        .iter()
        .map(|c| {
            let (labels, spec) = desired_bundle(repo, c);
            DesiredBundle {
                compiled: Arc::clone(c),
                labels,
                annotations: BTreeMap::from([(keys::COMMIT.to_owned(), commit.to_string())]),
                spec,
            }
        })
        .collect();
    apply_bundles(ctx, &owner, &desired).await?;
    let wanted: HashSet<ObjectKey> = compiled
        .iter()
        .map(|c| ObjectKey::new(&key.namespace, &c.name))
        .collect();
    let stale: Vec<ObjectKey> = ctx
        .topo()
        .bundles_by_repo
        .get(key)
        .into_iter()
        .flatten()
        .filter(|b| !wanted.contains(*b))
        .cloned()
        .collect();
    let owner = OwnerKey {
        kind: OwnerKind::GitRepo,
        key: key.clone(),
    };
    for b in stale {
        delete_bundle(ctx, &owner, &b)
            .await
            .map_err(|e| WriteFailure {
                reason: "WriteFailed",
                message: e.to_string(),
                refused: false,
            })?;
    }
    Ok(())
}
