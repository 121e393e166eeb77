//! Writing Bundles for their owner (a GitRepo for a compiled commit, a
//! HelmOp for its chart): the Content each Bundle needs, one write per
//! Bundle that differs, all or none, and deleting a Bundle its owner no
//! longer wants.
//!
//! Every Bundle carries an owner reference, so one whose owner was deleted
//! without its finalizer (removed by hand) still goes with it (the API
//! server's garbage collector, and the GC sweep for Bundles that predate
//! the reference).

use crate::{Context, Error, ObjectKey};
use flotilla_api::k8s_openapi::ByteString;
use flotilla_api::{BundleSpec, Content, ContentFields, keys};
use flotilla_bundle::CompiledBundle;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What makes Bundles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    GitRepo,
    HelmOp,
}

impl OwnerKind {
    pub fn kind(self) -> &'static str {
        match self {
            OwnerKind::GitRepo => "GitRepo",
            OwnerKind::HelmOp => "HelmOp",
        }
    }

    /// The label on its Bundles naming it.
    pub fn label(self) -> &'static str {
        match self {
            OwnerKind::GitRepo => keys::REPO_NAME,
            OwnerKind::HelmOp => keys::HELMOP_NAME,
        }
    }

    fn field_manager(self) -> &'static str {
        match self {
            OwnerKind::GitRepo => crate::gitrepo::GITREPO_FIELD_MANAGER,
            OwnerKind::HelmOp => crate::helmop::HELMOP_FIELD_MANAGER,
        }
    }

    /// The owner a Bundle's labels name, if any.
    pub fn of_bundle(b: &flotilla_api::Bundle) -> Option<OwnerKey> {
        let labels = b.metadata.labels.as_ref()?;
        let ns = b.metadata.namespace.as_deref()?;
        [OwnerKind::GitRepo, OwnerKind::HelmOp]
            .into_iter()
            .find_map(|k| {
                labels.get(k.label()).map(|name| OwnerKey {
                    kind: k,
                    key: ObjectKey::new(ns, name),
                })
            })
    }
}

/// One GitRepo or HelmOp.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    pub kind: OwnerKind,
    pub key: ObjectKey,
}

impl std::fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.kind(), self.key)
    }
}

/// The object writing Bundles, as its Bundles refer to it.
pub struct Owner<'a> {
    pub kind: OwnerKind,
    pub key: &'a ObjectKey,
    pub uid: Option<&'a str>,
}

impl Owner<'_> {
    fn owner_key(&self) -> OwnerKey {
        OwnerKey {
            kind: self.kind,
            key: self.key.clone(),
        }
    }

    /// The owner reference its Bundles carry. Not `blockOwnerDeletion`:
    /// that would need rights on its `finalizers` subresource, and its own
    /// finalizer already waits for its Bundles.
    pub fn reference(&self) -> Value {
        json!({
            "apiVersion": "flotilla.dev/v1alpha1",
            "kind": self.kind.kind(),
            "name": &*self.key.name,
            "uid": self.uid,
            "controller": true,
        })
    }

    fn owns(&self, bundle: &flotilla_api::Bundle) -> bool {
        bundle
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(o.uid.as_str()) == self.uid && o.kind == self.kind.kind())
    }
}

/// A Bundle as its owner wants it.
pub struct DesiredBundle {
    pub compiled: Arc<CompiledBundle>,
    pub labels: BTreeMap<String, String>,
    /// Annotations beside the compiled ones (the commit).
    pub annotations: BTreeMap<String, String>,
    pub spec: BundleSpec,
}

/// A JSON pointer token.
fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// A failed write, in words for the owner's conditions.
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
    /// A create, finalizer and owner included.
    Create(serde_json::Value),
    /// The whole spec replaced, guarded by the uid.
    Replace(json_patch::Patch),
}

/// Writes an owner's Bundles, all or none: every write is tried with
/// `dryRun=All` first, so one the API server refuses (an invalid label, a
/// Bundle too large) leaves every Bundle as it was. Bundles it no longer
/// wants are the caller's to delete.
pub async fn apply_bundles(
    ctx: &Context,
    owner: &Owner<'_>,
    desired: &[DesiredBundle],
) -> Result<(), WriteFailure> {
    let key = owner.key;
    let label = owner.kind.label();
    let api: Api<flotilla_api::Bundle> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let mut writes = Vec::new();
    for d in desired {
        let c = &d.compiled;
        let spec = &d.spec;
        let mut labels = d.labels.clone();
        // A Bundle names one owner: another's label (from a fleet.yaml or
        // a HelmOp's labels) would hand it to that one.
        labels.retain(|k, _| k != keys::REPO_NAME && k != keys::HELMOP_NAME);
        labels.insert(label.to_owned(), key.name.to_string());
        labels.insert(
            keys::MANAGED_BY.to_owned(),
            keys::MANAGED_BY_VALUE.to_owned(),
        );
        let labels = &labels;
        let bkey = ObjectKey::new(&key.namespace, &c.name);
        let existing = ctx.bundles.get(&bkey);
        if let Some(b) = &existing
            && OwnerKind::of_bundle(b).as_ref() != Some(&owner.owner_key())
        {
            return Err(WriteFailure {
                reason: "BundleNameConflict",
                message: format!(
                    "bundle {}{} is already {}; give one of them another name{}",
                    c.name,
                    match owner.kind {
                        OwnerKind::GitRepo =>
                            format!(" (from {})", if c.dir.is_empty() { "/" } else { &c.dir }),
                        OwnerKind::HelmOp => String::new(),
                    },
                    match OwnerKind::of_bundle(b) {
                        Some(o) => format!("{} {}'s", o.kind.kind(), o.key.name),
                        None => "a Bundle made by neither a GitRepo nor a HelmOp".into(),
                    },
                    match owner.kind {
                        OwnerKind::GitRepo => " (fleet.yaml `name:`)",
                        OwnerKind::HelmOp => "",
                    }
                ),
                refused: true,
            });
        }
        ctx.git
            .desired
            .write()
            .expect("desired lock")
            .insert(bkey.clone(), (owner.owner_key(), Arc::new(spec.clone())));
        // The Content must exist whatever the Bundle looks like: someone
        // may have deleted it by hand.
        ensure_content(ctx, c).await.map_err(|e| {
            WriteFailure::of(
                &format!("Content {} of bundle {}", c.spec.content_id, c.name),
                &e,
            )
        })?;
        let mut annotations = c.annotations.clone();
        annotations.extend(d.annotations.clone());
        // The labels this owner set, so that one it drops is removed (a
        // hand-added label is left alone).
        let owned: String = labels.keys().cloned().collect::<Vec<_>>().join(",");
        annotations.insert(keys::OWNED_LABELS.to_owned(), owned.clone());
        let mut removals: Vec<String> = Vec::new();
        if let Some(b) = &existing {
            let had = b
                .annotations()
                .get(keys::OWNED_LABELS)
                .cloned()
                .unwrap_or_default();
            for k in had.split(',').filter(|k| !k.is_empty()) {
                if !labels.contains_key(k) && b.labels().contains_key(k) {
                    removals.push(format!("/metadata/labels/{}", escape(k)));
                }
            }
            if b.annotations()
                .contains_key(flotilla_charts::CHARTS_ANNOTATION)
                && !annotations.contains_key(flotilla_charts::CHARTS_ANNOTATION)
            {
                removals.push(format!(
                    "/metadata/annotations/{}",
                    escape(flotilla_charts::CHARTS_ANNOTATION)
                ));
            }
        }
        let unchanged = existing.as_ref().is_some_and(|b| {
            b.metadata.deletion_timestamp.is_none()
                && b.spec == *spec
                && labels.iter().all(|(k, v)| b.labels().get(k) == Some(v))
                && c.annotations
                    .iter()
                    .all(|(k, v)| b.annotations().get(k) == Some(v))
                && b.annotations().get(keys::OWNED_LABELS) == Some(&owned)
                && removals.is_empty()
                && owner.owns(b)
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
                    "ownerReferences": [owner.reference()],
                },
                "spec": spec,
            })),
            // The spec is this controller's alone, so it is replaced whole;
            // an apply would leave a field someone else set (e.g. `paused:
            // true`) when the desired value is the default.
            Some(b) => {
                let owners = (!owner.owns(&b)).then(|| owner.reference());
                let mut patch = flotilla_runtime::replace_spec_patch(
                    &b.metadata,
                    labels,
                    &annotations,
                    owners,
                    &serde_json::to_value(spec).expect("a spec serializes"),
                );
                for path in &removals {
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
    let manager = owner.kind.field_manager();
    // Dry runs first: all or nothing.
    let mut real = Vec::with_capacity(writes.len());
    for w in &writes {
        match send(&api, w, manager, true).await {
            Ok(()) => real.push(w),
            Err(e) => {
                settle(&api, owner, w, e).await?;
            }
        }
    }
    for w in real {
        match &w.body {
            WriteBody::Create(_) => ctx.metrics.write("Bundle", "create"),
            WriteBody::Replace(_) => ctx.metrics.write("Bundle", "patch"),
        }
        match send(&api, w, manager, false).await {
            Ok(()) => {
                tracing::info!(owner = %owner.owner_key(), bundle = %w.name, "bundle written");
            }
            Err(e) => {
                settle(&api, owner, w, e).await?;
            }
        }
    }
    Ok(())
}

/// A failed write, unless it is a create that found our own Bundle there
/// (one the cache has not seen yet: the next reconcile compares it);
/// another owner's is a conflict.
async fn settle(
    api: &Api<flotilla_api::Bundle>,
    owner: &Owner<'_>,
    w: &Write,
    e: kube::Error,
) -> Result<(), WriteFailure> {
    if matches!((&w.body, &e), (WriteBody::Create(_), kube::Error::Api(s)) if s.code == 409)
        && let Ok(live) = api.get(&w.name).await
        && owner.owns(&live)
        && OwnerKind::of_bundle(&live).as_ref() == Some(&owner.owner_key())
    {
        return Ok(());
    }
    Err(WriteFailure::of(&format!("bundle {}", w.name), &e))
}

async fn send(
    api: &Api<flotilla_api::Bundle>,
    w: &Write,
    manager: &str,
    dry_run: bool,
) -> Result<(), kube::Error> {
    match &w.body {
        // A create, not an apply: a Bundle of that name that appeared
        // meanwhile (another owner's) is refused, not taken over.
        WriteBody::Create(body) => {
            let bundle: flotilla_api::Bundle =
                serde_json::from_value(body.clone()).expect("a Bundle we built");
            let params = PostParams {
                dry_run,
                field_manager: Some(manager.to_owned()),
            };
            api.create(&params, &bundle).await?;
        }
        WriteBody::Replace(patch) => {
            let params = PatchParams {
                field_manager: Some(manager.into()),
                dry_run,
                ..Default::default()
            };
            api.patch(&w.name, &params, &Patch::<()>::Json(patch.clone()))
                .await?;
        }
    }
    Ok(())
}

/// Deletes a Bundle its owner no longer wants (guarded by its uid).
pub async fn delete_bundle(
    ctx: &Context,
    owner: &OwnerKey,
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
            tracing::info!(%owner, bundle = %bundle, "bundle deleted: its owner no longer wants it, or is going");
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
