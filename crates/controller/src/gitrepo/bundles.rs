//! What the GitRepo controller writes for a compiled commit: the Content
//! each Bundle needs, one write per Bundle that differs, and the deletion
//! of Bundles whose path left the repository.
//!
//! Every Bundle carries an owner reference to its GitRepo, so a GitRepo
//! deleted without its finalizer (removed by hand) still takes its Bundles
//! with it (the API server's garbage collector, and the GC sweep for
//! Bundles that predate the reference).

use crate::{Context, Error, ObjectKey};
use flotilla_api::k8s_openapi::ByteString;
use flotilla_api::{BundleSpec, BundleTarget, Content, ContentFields, GitRepo, keys};
use flotilla_bundle::CompiledBundle;
use flotilla_git::Oid;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::GITREPO_FIELD_MANAGER;

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

/// The owner reference a GitRepo's Bundles carry. Not
/// `blockOwnerDeletion`: that would need `gitrepos/finalizers` rights, and
/// the GitRepo's own finalizer already waits for its Bundles.
pub fn owner_reference(repo: &GitRepo) -> Value {
    json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "GitRepo",
        "name": repo.name_any(),
        "uid": repo.metadata.uid,
        "controller": true,
    })
}

fn owned_by(bundle: &flotilla_api::Bundle, repo: &GitRepo) -> bool {
    bundle
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == repo.metadata.uid.as_ref() && o.kind == "GitRepo")
}

/// A failed write, in words for the GitRepo's conditions.
pub struct WriteFailure {
    pub reason: &'static str,
    pub message: String,
    /// The API server refused it (a 4xx): it will not pass unchanged.
    pub refused: bool,
}

impl WriteFailure {
    fn of(what: &str, e: &kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => WriteFailure {
                reason: "WriteFailed",
                message: format!(
                    "{what}: the API server refused it ({}): {}",
                    s.code, s.message
                ),
                refused: (400..500).contains(&s.code),
            },
            other => WriteFailure {
                reason: "WriteFailed",
                message: format!("{what}: {other}"),
                refused: false,
            },
        }
    }
}

/// One Bundle write the commit needs.
struct Write {
    name: String,
    body: WriteBody,
}

enum WriteBody {
    /// A server-side apply, finalizer and owner included.
    Create(serde_json::Value),
    /// The whole spec replaced, guarded by the uid.
    Replace(json_patch::Patch),
}

/// Writes a compiled commit's Bundles, all or none: every write is tried
/// with `dryRun=All` first, so one the API server refuses (an invalid
/// label, a Bundle too large) leaves every Bundle as it was.
pub async fn apply_bundles(
    ctx: &Context,
    key: &ObjectKey,
    repo: &GitRepo,
    commit: Oid,
    compiled: &[Arc<CompiledBundle>],
) -> Result<(), WriteFailure> {
    let api: Api<flotilla_api::Bundle> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let mut wanted = HashSet::new();
    let mut writes = Vec::new();
    for c in compiled {
        let bkey = ObjectKey::new(&key.namespace, &c.name);
        wanted.insert(bkey.clone());
        let (labels, spec) = desired_bundle(repo, c);
        let existing = ctx.bundles.get(&bkey);
        if let Some(b) = &existing
            && let owner = b.labels().get(keys::REPO_NAME)
            && owner.map(String::as_str) != Some(&*key.name)
        {
            return Err(WriteFailure {
                reason: "BundleNameConflict",
                message: format!(
                    "bundle {} (from {}) is already {}; give one of them another name (fleet.yaml `name:`)",
                    c.name,
                    if c.dir.is_empty() { "/" } else { &c.dir },
                    match owner {
                        Some(o) => format!("GitRepo {o}'s"),
                        None => "a Bundle not made by a GitRepo".into(),
                    }
                ),
                refused: true,
            });
        }
        ctx.git
            .desired
            .write()
            .expect("desired lock")
            .insert(bkey.clone(), (key.clone(), Arc::new(spec.clone())));
        // The Content must exist whatever the Bundle looks like: someone
        // may have deleted it by hand.
        ensure_content(ctx, c).await.map_err(|e| {
            WriteFailure::of(
                &format!("Content {} of bundle {}", c.spec.content_id, c.name),
                &e,
            )
        })?;
        let mut annotations = c.annotations.clone();
        annotations.insert(keys::COMMIT.to_owned(), commit.to_string());
        let charts_gone = existing.as_ref().is_some_and(|b| {
            b.annotations()
                .contains_key(flotilla_charts::CHARTS_ANNOTATION)
                && !annotations.contains_key(flotilla_charts::CHARTS_ANNOTATION)
        });
        let unchanged = existing.as_ref().is_some_and(|b| {
            b.metadata.deletion_timestamp.is_none()
                && b.spec == spec
                && labels.iter().all(|(k, v)| b.labels().get(k) == Some(v))
                && c.annotations
                    .iter()
                    .all(|(k, v)| b.annotations().get(k) == Some(v))
                && !charts_gone
                && owned_by(b, repo)
        });
        if unchanged {
            continue;
        }
        let body = match existing.filter(|b| b.metadata.deletion_timestamp.is_none()) {
            None => WriteBody::Create(json!({
                "apiVersion": "flotilla.dev/v1alpha1",
                "kind": "Bundle",
                "metadata": {
                    "name": &c.name,
                    "namespace": &*key.namespace,
                    "labels": labels,
                    "annotations": annotations,
                    "finalizers": [keys::BUNDLE_FINALIZER],
                    "ownerReferences": [owner_reference(repo)],
                },
                "spec": spec,
            })),
            // The spec is this controller's alone, so it is replaced whole;
            // an apply would leave a field someone else set (e.g. `paused:
            // true`) when the desired value is the default.
            Some(b) => {
                let owners = (!owned_by(&b, repo)).then(|| owner_reference(repo));
                let mut patch = flotilla_runtime::replace_spec_patch(
                    &b.metadata,
                    &labels,
                    &annotations,
                    owners,
                    &serde_json::to_value(&spec).expect("a spec serializes"),
                );
                if charts_gone {
                    let path = format!(
                        "/metadata/annotations/{}",
                        flotilla_charts::CHARTS_ANNOTATION
                            .replace('~', "~0")
                            .replace('/', "~1")
                    );
                    patch.0.push(
                        serde_json::from_value(json!({"op": "remove", "path": path}))
                            .expect("a remove operation"),
                    );
                }
                WriteBody::Replace(patch)
            }
        };
        writes.push(Write {
            name: c.name.clone(),
            body,
        });
    }
    // Dry runs first: all or nothing.
    for w in &writes {
        send(&api, w, true)
            .await
            .map_err(|e| WriteFailure::of(&format!("bundle {}", w.name), &e))?;
    }
    for w in &writes {
        match &w.body {
            WriteBody::Create(_) => ctx.metrics.write("Bundle", "apply"),
            WriteBody::Replace(_) => ctx.metrics.write("Bundle", "patch"),
        }
        send(&api, w, false)
            .await
            .map_err(|e| WriteFailure::of(&format!("bundle {}", w.name), &e))?;
        tracing::info!(gitrepo = %key, bundle = %w.name, commit = %super::short(commit), "bundle written");
    }
    // Bundles of paths that left the repository.
    let stale: Vec<ObjectKey> = ctx
        .topo()
        .bundles_by_repo
        .get(key)
        .into_iter()
        .flatten()
        .filter(|b| !wanted.contains(*b))
        .cloned()
        .collect();
    for b in stale {
        delete_bundle(ctx, key, &b)
            .await
            .map_err(|e| WriteFailure {
                reason: "WriteFailed",
                message: e.to_string(),
                refused: false,
            })?;
    }
    Ok(())
}

async fn send(
    api: &Api<flotilla_api::Bundle>,
    w: &Write,
    dry_run: bool,
) -> Result<(), kube::Error> {
    match &w.body {
        WriteBody::Create(body) => {
            let mut params = PatchParams::apply(GITREPO_FIELD_MANAGER).force();
            params.dry_run = dry_run;
            api.patch(&w.name, &params, &Patch::Apply(body)).await?;
        }
        WriteBody::Replace(patch) => {
            let params = PatchParams {
                field_manager: Some(GITREPO_FIELD_MANAGER.into()),
                dry_run,
                ..Default::default()
            };
            api.patch(&w.name, &params, &Patch::<()>::Json(patch.clone()))
                .await?;
        }
    }
    Ok(())
}

pub async fn delete_bundle(
    ctx: &Context,
    repo: &ObjectKey,
    bundle: &ObjectKey,
) -> Result<(), Error> {
    ctx.git
        .desired
        .write()
        .expect("desired lock")
        .remove(bundle);
    let Some(b) = ctx.bundles.get(bundle) else {
        return Ok(());
    };
    if b.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let api: Api<flotilla_api::Bundle> = Api::namespaced(ctx.client.clone(), &bundle.namespace);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: b.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    ctx.metrics.write("Bundle", "delete");
    match api.delete(&bundle.name, &dp).await {
        Ok(_) => {
            tracing::info!(gitrepo = %repo, bundle = %bundle, "bundle deleted: its path left the repository or the GitRepo is going");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(source) => Err(Error::Write {
            verb: "delete",
            kind: "Bundle",
            name: bundle.to_string(),
            source,
        }),
    }
}

/// Creates a bundle's Content unless the Content watch has seen it.
async fn ensure_content(ctx: &Context, c: &CompiledBundle) -> Result<(), kube::Error> {
    let name = c.spec.content_id.clone();
    if ctx.contents.get(&ObjectKey::new("", &name)).is_some() {
        return Ok(());
    }
    let api: Api<Content> = Api::all(ctx.client.clone());
    let mut obj = Content::new(
        &name,
        ContentFields {
            content: ByteString(c.content.gzip()),
            sha256sum: c.content.sha256_hex(),
        },
    );
    obj.metadata.labels = Some(
        [(
            keys::MANAGED_BY.to_owned(),
            keys::MANAGED_BY_VALUE.to_owned(),
        )]
        .into(),
    );
    ctx.metrics.write("Content", "create");
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {
            tracing::info!(content = %name, bundle = %c.name, "content created");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
