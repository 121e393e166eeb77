//! The fan-out controller.
//!
//! Wakes on: a Bundle spec change, a targeting change that adds or
//! re-customizes one of its clusters, a cluster namespace appearing, a
//! BundleDeployment of a waiting rollout changing status, and the deletion
//! of a BundleDeployment that is still targeted.
//!
//! Computes: for each targeted cluster, the options after customization,
//! the `deploymentID`, and through the rollout strategy whether the
//! cluster gets it now or has it staged.
//!
//! Writes: per BundleDeployment whose spec or labels differ from what it
//! computed, one write: a server-side apply to create it, else a
//! replacement of the whole spec, so that an edit by someone else (fields
//! they added included) is put back; nothing otherwise. The Bundle
//! finalizer once, and each Cluster's namespace. A write the API server
//! refuses is reported on the Bundle (`DeploymentWriteFailed`).
//!
//! It also wakes on a BundleDeployment whose spec someone else edited: it
//! remembers a digest of each spec it wrote or found right, and the hub
//! compares every spec change with it.

use crate::queue::Action;
use crate::rollout::{self, Current, Plan, Step, Target};
use crate::topology::{Topology, cluster_namespace};
use crate::{Context, Error, FanoutKey};
use flotilla_api::k8s_openapi::api::core::v1::Namespace;
use flotilla_api::{Bundle, BundleDeployment, BundleDeploymentOptions, BundleDeploymentSpec, keys};
use flotilla_targeting::values::{self, ClusterContext};
use flotilla_targeting::{CompiledCriteria, ObjectKey, resolve_options};
use futures::StreamExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Concurrent writes within one reconcile.
const WRITE_CONCURRENCY: usize = 16;

pub async fn reconcile(ctx: Arc<Context>, key: FanoutKey) -> Result<Action, Error> {
    match key {
        FanoutKey::Bundle(key) => bundle(&ctx, &key).await,
        FanoutKey::Cluster(key) => namespace(&ctx, &key).await.map(|_| Action::Done),
    }
}

/// One targeted cluster, everything the plan and the writes need.
pub struct Desired {
    pub cluster: ObjectKey,
    pub namespace: String,
    pub options: BundleDeploymentOptions,
    pub existing: Option<Arc<BundleDeployment>>,
}

/// The targets of a bundle and their rollout plan. Shared with the status
/// controller, which reports the plan's partitions.
pub struct Rollout {
    pub desired: Vec<Desired>,
    pub targets: Vec<Target>,
    pub plan: Result<Plan, String>,
    /// Clusters whose templated values failed: left out of the plan, so
    /// their BundleDeployments stay as they are.
    pub value_errors: BTreeMap<ObjectKey, String>,
}

pub fn plan_bundle(ctx: &Context, topo: &Topology, bundle: &Bundle) -> Rollout {
    let key = ObjectKey::of(&bundle.metadata);
    let strategy = bundle.spec.rollout_strategy.clone().unwrap_or_default();
    let partition_criteria: Result<Vec<CompiledCriteria>, String> = strategy
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            CompiledCriteria::compile(&p.criteria, &format!("rolloutStrategy.partitions[{i}]"))
                .map_err(|e| e.to_string())
        })
        .collect();
    let bds = topo.bds_of_bundle(&key);
    let mut desired = Vec::new();
    let mut targets = Vec::new();
    let mut value_errors = BTreeMap::new();
    let no_labels = BTreeMap::new();
    for cluster in topo.index.clusters_of(&key) {
        let Some(cluster_obj) = ctx.clusters.get(&cluster) else {
            continue;
        };
        let namespace = cluster_namespace(&cluster);
        let ns_ready = ctx
            .namespaces
            .get(&ObjectKey::new("", &namespace))
            .is_some_and(|ns| ns.metadata.deletion_timestamp.is_none());
        if !ns_ready {
            // Its namespace's creation wakes this bundle again.
            continue;
        }
        let customizations = topo
            .index
            .placement(&key, &cluster)
            .map(|p| p.customizations)
            .unwrap_or_default();
        let options = resolve_options(
            &bundle.spec.options,
            customizations
                .iter()
                .filter_map(|&i| bundle.spec.target_customizations.get(i)),
        );
        // Fleet's per-cluster values (`${ }` templates, label references).
        let options = if values::uses_cluster(&options) {
            match values::for_cluster(&options, &ClusterContext::of(&cluster_obj, &no_labels)) {
                Ok(o) => o,
                Err(e) => {
                    value_errors.insert(cluster, e);
                    continue;
                }
            }
        } else {
            options
        };
        let desired_id = flotilla_bundle::deployment_id(&bundle.spec.content_id, &options);
        let existing = bds.get(&cluster).and_then(|k| ctx.bds.get(k));
        let partition = partition_criteria.as_ref().ok().and_then(|crit| {
            crit.iter()
                .position(|c| topo.index.cluster_matches(&cluster, c))
        });
        targets.push(Target {
            name: cluster.name.to_string(),
            partition,
            paused: bundle.spec.paused || cluster_obj.spec.paused,
            desired_id,
            current: existing.as_ref().map(|bd| Current {
                deployment_id: bd.spec.deployment_id.clone(),
                applied_id: bd
                    .status
                    .as_ref()
                    .map(|s| s.applied_deployment_id.clone())
                    .unwrap_or_default(),
                ready: bd.status.as_ref().is_some_and(|s| s.ready),
            }),
            state: existing
                .as_ref()
                .map(|bd| bd.state())
                .unwrap_or(flotilla_api::BundleState::Pending),
        });
        desired.push(Desired {
            cluster,
            namespace,
            options,
            existing,
        });
    }
    let plan = partition_criteria.and_then(|_| rollout::plan(&strategy, &targets));
    Rollout {
        desired,
        targets,
        plan,
        value_errors,
    }
}

/// The BundleDeployment one step asks for.
fn deployment(bundle: &Bundle, d: &Desired, target: &Target, step: Step) -> BundleDeployment {
    let mut spec = BundleDeploymentSpec {
        staged_deployment_id: target.desired_id.clone(),
        staged_options: Some(d.options.clone()),
        paused: target.paused,
        depends_on: bundle.spec.depends_on.clone(),
        correct_drift: d.options.correct_drift.clone(),
        ..Default::default()
    };
    match (step, &d.existing) {
        (Step::Promote, _) => {
            spec.deployment_id = target.desired_id.clone();
            spec.content_id = bundle.spec.content_id.clone();
            spec.options = d.options.clone();
        }
        (_, Some(existing)) => {
            spec.deployment_id = existing.spec.deployment_id.clone();
            spec.content_id = existing.spec.content_id.clone();
            spec.options = existing.spec.options.clone();
        }
        (_, None) => {}
    }
    let bundle_key = ObjectKey::of(&bundle.metadata);
    let mut labels = BTreeMap::from([
        (
            keys::MANAGED_BY.to_owned(),
            keys::MANAGED_BY_VALUE.to_owned(),
        ),
        (keys::BUNDLE_NAME.to_owned(), bundle_key.name.to_string()),
        (
            keys::BUNDLE_NAMESPACE.to_owned(),
            bundle_key.namespace.to_string(),
        ),
        (keys::CLUSTER_NAME.to_owned(), d.cluster.name.to_string()),
        (
            keys::CLUSTER_NAMESPACE.to_owned(),
            d.cluster.namespace.to_string(),
        ),
    ]);
    if let Some(repo) = bundle
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(keys::REPO_NAME))
    {
        labels.insert(keys::REPO_NAME.to_owned(), repo.clone());
    }
    BundleDeployment {
        metadata: ObjectMeta {
            name: Some(bundle_key.name.to_string()),
            namespace: Some(d.namespace.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

/// Whether `existing` already says everything `want` says.
fn up_to_date(existing: &BundleDeployment, want: &BundleDeployment) -> bool {
    let have = existing.metadata.labels.as_ref();
    let labels_match = want
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v));
    labels_match && existing.spec == want.spec
}

async fn bundle(ctx: &Context, key: &ObjectKey) -> Result<Action, Error> {
    let Some(bundle) = ctx.bundles.get(key) else {
        return Ok(Action::Done);
    };
    if bundle.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    ensure_finalizer(ctx, &bundle).await?;
    let rollout = {
        let topo = ctx.topo();
        if topo.bundle_errors.contains_key(key) {
            // The status controller reports the error; deployments stay.
            return Ok(Action::Done);
        }
        plan_bundle(ctx, &topo, &bundle)
    };
    report_values(ctx, key, &rollout.value_errors);
    let plan = match &rollout.plan {
        Ok(plan) => plan,
        Err(e) => {
            tracing::warn!(bundle = %key, error = %e, "invalid rollout strategy; deployments stay as they are");
            return Ok(Action::Done);
        }
    };
    let mut writes = Vec::new();
    for ((d, t), step) in rollout
        .desired
        .iter()
        .zip(&rollout.targets)
        .zip(&plan.steps)
    {
        if *step == Step::Wait {
            // Not created in this pass (a `maxNew` batch): nothing to write
            // or to remember.
            continue;
        }
        let want = deployment(&bundle, d, t, *step);
        match &d.existing {
            Some(e) if up_to_date(e, &want) => remember(ctx, ObjectKey::of(&e.metadata), &e.spec),
            existing => writes.push((want, existing.clone())),
        }
    }
    let written = writes.len();
    let results: Vec<Result<(), Error>> = futures::stream::iter(writes)
        .map(|(bd, existing)| write(ctx, bd, existing))
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    {
        let mut waiting = ctx.rollout_waiting.lock().expect("rollout lock");
        if plan.waiting(&rollout.targets) {
            waiting.insert(key.clone());
        } else {
            waiting.remove(key);
        }
    }
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(write_failure_message))
        .collect();
    report_writes(
        ctx,
        key,
        failures.first().map(|f| {
            if failures.len() > 1 {
                format!("{f} (and {} more)", failures.len() - 1)
            } else {
                f.clone()
            }
        }),
    );
    results.into_iter().collect::<Result<(), Error>>()?;
    if written > 0 {
        tracing::debug!(bundle = %key, written, targets = rollout.targets.len(), "bundle deployments written");
    }
    let max_new = bundle
        .spec
        .rollout_strategy
        .as_ref()
        .and_then(|r| r.max_new)
        .unwrap_or(rollout::DEFAULT_MAX_NEW);
    if plan.deferred_creations(&rollout.targets, max_new) {
        return Ok(Action::Requeue);
    }
    Ok(Action::Done)
}

/// A digest of a spec, to tell the fan-out's own writes from edits.
fn spec_digest(spec: &BundleDeploymentSpec) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    serde_json::to_vec(spec)
        .expect("a spec serializes")
        .hash(&mut h);
    h.finish()
}

/// Records a spec the fan-out wrote or found right. The one before is
/// kept too: the event of an earlier write may arrive after a later one
/// (a stage, then a promote), and is not an edit.
fn remember(ctx: &Context, key: ObjectKey, spec: &BundleDeploymentSpec) {
    let digest = spec_digest(spec);
    let mut specs = ctx.fanout_specs.lock().expect("fanout specs lock");
    let entry = specs.entry(key).or_insert([digest, digest]);
    if entry[0] != digest {
        *entry = [digest, entry[0]];
    }
}

/// Whether a BundleDeployment's spec is not one the fan-out wrote or
/// checked lately: someone else edited it.
pub fn edited_by_others(ctx: &Context, key: &ObjectKey, bd: &BundleDeployment) -> bool {
    let digest = spec_digest(&bd.spec);
    ctx.fanout_specs
        .lock()
        .expect("fanout specs lock")
        .get(key)
        .is_some_and(|d| !d.contains(&digest))
}

/// Creates a BundleDeployment (a server-side apply), or replaces the spec
/// of an existing one whole, guarded by its uid.
async fn write(
    ctx: &Context,
    bd: BundleDeployment,
    existing: Option<Arc<BundleDeployment>>,
) -> Result<(), Error> {
    let name = bd.metadata.name.clone().unwrap_or_default();
    let ns = bd.metadata.namespace.clone().unwrap_or_default();
    let api: Api<BundleDeployment> = Api::namespaced(ctx.client.clone(), &ns);
    remember(ctx, ObjectKey::new(&ns, &name), &bd.spec);
    let written = match existing {
        None => {
            ctx.metrics.write("BundleDeployment", "apply");
            api.patch(
                &name,
                &PatchParams::apply(keys::CONTROLLER_FIELD_MANAGER).force(),
                &Patch::Apply(&bd),
            )
            .await
        }
        Some(e) => {
            ctx.metrics.write("BundleDeployment", "patch");
            let patch = flotilla_runtime::replace_spec_patch(
                &e.metadata,
                bd.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
                &BTreeMap::new(),
                None,
                &serde_json::to_value(&bd.spec).expect("a spec serializes"),
            );
            api.patch(
                &name,
                &PatchParams {
                    field_manager: Some(keys::CONTROLLER_FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::<()>::Json(patch),
            )
            .await
        }
    };
    written.map_err(|source| Error::Write {
        verb: "write",
        kind: "BundleDeployment",
        name: format!("{ns}/{name}"),
        source,
    })?;
    Ok(())
}

/// Records (or clears) a refused write on the Bundle's status.
/// Remembers which clusters' templated values failed, for the status
/// controller (each such pair shows ErrApplied, the Bundle Stalled).
fn report_values(ctx: &Context, bundle: &ObjectKey, errors: &BTreeMap<ObjectKey, String>) {
    let changed = {
        let mut all = ctx.value_errors.lock().expect("value errors lock");
        if errors.is_empty() {
            all.remove(bundle).is_some()
        } else {
            all.insert(bundle.clone(), errors.clone()).as_ref() != Some(errors)
        }
    };
    if changed {
        for (cluster, e) in errors {
            tracing::warn!(bundle = %bundle, cluster = %cluster, error = %e, "templated values failed; the cluster's deployment stays as it is");
        }
        ctx.status
            .add(crate::StatusKey::Bundle(bundle.clone()), "values");
        for cluster in errors.keys() {
            ctx.status
                .add(crate::StatusKey::Cluster(cluster.clone()), "values");
        }
        if let Some(owner) = ctx
            .bundles
            .get(bundle)
            .and_then(|b| crate::bundles::OwnerKind::of_bundle(&b))
        {
            ctx.status.add(
                match owner.kind {
                    crate::bundles::OwnerKind::GitRepo => crate::StatusKey::GitRepo(owner.key),
                    crate::bundles::OwnerKind::HelmOp => crate::StatusKey::HelmOp(owner.key),
                },
                "values",
            );
        }
    }
}

fn report_writes(ctx: &Context, bundle: &ObjectKey, failure: Option<String>) {
    let changed = {
        let mut errors = ctx
            .deployment_write_errors
            .lock()
            .expect("write errors lock");
        match failure {
            Some(f) => errors.insert(bundle.clone(), f.clone()).as_ref() != Some(&f),
            None => errors.remove(bundle).is_some(),
        }
    };
    if changed {
        ctx.status
            .add(crate::StatusKey::Bundle(bundle.clone()), "deployment-write");
    }
}

/// A refused write in words: the object and the API server's reason.
fn write_failure_message(e: &Error) -> String {
    match e {
        Error::Write {
            name,
            source: kube::Error::Api(s),
            ..
        } => format!(
            "BundleDeployment {name}: the API server refused it ({}): {}",
            s.code, s.message
        ),
        other => other.to_string(),
    }
}

async fn ensure_finalizer(ctx: &Context, bundle: &Bundle) -> Result<(), Error> {
    let mut finalizers = bundle.metadata.finalizers.clone().unwrap_or_default();
    if finalizers.iter().any(|f| f == keys::BUNDLE_FINALIZER) {
        return Ok(());
    }
    finalizers.push(keys::BUNDLE_FINALIZER.to_owned());
    let key = ObjectKey::of(&bundle.metadata);
    let api: Api<Bundle> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let patch = crate::finalizers_patch(&bundle.metadata, &finalizers);
    ctx.metrics.write("Bundle", "patch");
    api.patch(
        &key.name,
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map_err(|source| Error::Write {
        verb: "add the finalizer to",
        kind: "Bundle",
        name: key.to_string(),
        source,
    })?;
    Ok(())
}

/// Creates a Cluster's namespace, or deletes it once the Cluster is gone.
async fn namespace(ctx: &Context, cluster: &ObjectKey) -> Result<(), Error> {
    let name = cluster_namespace(cluster);
    let alive = ctx
        .clusters
        .get(cluster)
        .is_some_and(|c| c.metadata.deletion_timestamp.is_none());
    let existing = ctx.namespaces.get(&ObjectKey::new("", &name));
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match (alive, existing) {
        (true, None) => {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(BTreeMap::from([
                        (
                            keys::MANAGED_BY.to_owned(),
                            keys::MANAGED_BY_VALUE.to_owned(),
                        ),
                        (keys::CLUSTER_NAME.to_owned(), cluster.name.to_string()),
                        (
                            keys::CLUSTER_NAMESPACE.to_owned(),
                            cluster.namespace.to_string(),
                        ),
                    ])),
                    ..Default::default()
                },
                ..Default::default()
            };
            ctx.metrics.write("Namespace", "create");
            match api.create(&PostParams::default(), &ns).await {
                Ok(_) => {
                    tracing::info!(cluster = %cluster, namespace = %name, "cluster namespace created");
                    Ok(())
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(source) => Err(Error::Write {
                    verb: "create",
                    kind: "Namespace",
                    name,
                    source,
                }),
            }
        }
        (false, Some(ns)) if ns.metadata.deletion_timestamp.is_none() => {
            ctx.metrics.write("Namespace", "delete");
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(cluster = %cluster, namespace = %name, "cluster gone; namespace deleted");
                    Ok(())
                }
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(source) => Err(Error::Write {
                    verb: "delete",
                    kind: "Namespace",
                    name,
                    source,
                }),
            }
        }
        _ => Ok(()),
    }
}
