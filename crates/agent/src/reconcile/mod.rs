//! One BundleDeployment, top-down:
//! 1. deleted: prune its inventory (unless `keepResources`), then let its
//!    finalizer go;
//! 2. render its `deploymentID` (once per deployment, kept in memory);
//! 3. wait while a `dependsOn` bundle is not Ready here, apply nothing
//!    while `paused`;
//! 4. a new deployment: its `pre-install`/`pre-upgrade` Helm hooks (see
//!    `hooks.rs`), namespaces and CRDs, then everything else, each object
//!    only when it differs from the cluster; then prune what the new set
//!    lacks, unless an object was rejected; its `post-install`/
//!    `post-upgrade` hooks once everything is Ready;
//! 5. the same deployment: re-apply drifted objects when `correctDrift`;
//! 6. judge readiness and drift, and write the status only if it changed.

use crate::Error;
use crate::downstream::{api_message, gvk_of};
use crate::drift::{describe, drift};
use crate::hooks::{self, Phase};
use crate::inventory::{Inventory, Member, ObjKey, applyset_id, phase, prune};
use crate::readiness::readiness;
use crate::run::Inner;
use flotilla_api::bundledeployment::MAX_RESOURCE_STATUSES;
use flotilla_api::condition::{ConditionUpdate, DEPLOYED, set_condition};
use flotilla_api::{
    BundleDeployment, BundleDeploymentOptions, BundleDeploymentStatus, BundleState, Content,
    ModifiedStatus, NonReadyStatus, keys,
};
use flotilla_bundle::{BundleContent, RenderInput, render};
use flotilla_runtime::{Action, finalizers_patch};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// Objects applied at once within the second phase.
const APPLY_CONCURRENCY: usize = 8;
/// At most this many rejected objects are named in the condition.
const MAX_ERRORS_SHOWN: usize = 3;

mod depends;
mod hooks_run;
mod parent;
mod prepare;
mod status;

pub(crate) use depends::{depends_on, unready_dependencies};
use hooks_run::{not_again, post_hooks, run_hooks};
use parent::{Marks, Parent, read_parent, write_parent};
pub use prepare::Deployed;
use prepare::{Prepare, prepare};
use status::{Outcome, assess, write_status};

pub(crate) async fn reconcile(inner: Arc<Inner>, name: String) -> Result<Action, Error> {
    let Some(bd) = inner.bd(&name) else {
        return Ok(Action::Done);
    };
    let parent = Parent::of(&inner, &name);
    if bd.metadata.deletion_timestamp.is_some() {
        return finalize(&inner, &bd, &parent).await;
    }
    ensure_finalizer(&inner, &bd).await?;
    let spec = &bd.spec;
    if spec.deployment_id.is_empty() {
        return Ok(Action::Done);
    }
    let current = bd.status.clone().unwrap_or_default();

    let deployed = match prepare(&inner, &bd, &parent).await {
        Ok(d) => d,
        Err(Prepare::Retry(message)) => {
            let outcome = Outcome::failed("ContentUnavailable", message.clone());
            write_status(&inner, &bd, &current, &outcome).await?;
            return Err(Error::Failed(message));
        }
        Err(Prepare::ValuesFrom(message)) => {
            let outcome = Outcome::failed("ValuesFromFailed", message.clone());
            write_status(&inner, &bd, &current, &outcome).await?;
            return Err(Error::Failed(message));
        }
        Err(Prepare::Invalid(message)) => {
            let outcome = Outcome::failed("RenderFailed", message);
            write_status(&inner, &bd, &current, &outcome).await?;
            return Ok(Action::Done);
        }
    };

    let waiting = unready_dependencies(&bd, &inner.all_bds());
    if !waiting.is_empty() {
        let outcome = Outcome {
            waiting: Some(format!(
                "waiting for bundles to be Ready here: {}",
                waiting.join(", ")
            )),
            ..Outcome::default()
        };
        write_status(&inner, &bd, &current, &outcome).await?;
        return Ok(Action::Done);
    }

    watch_kinds(&inner, &deployed).await;
    let mut outcome = Outcome::default();
    if spec.paused {
        tracing::debug!(bundle_deployment = %name, "paused: nothing applied");
    } else if current.applied_deployment_id != spec.deployment_id {
        match apply_deployment(&inner, &bd, &deployed, &parent).await? {
            Applied::Done => {
                let o = &spec.options;
                let release_ns = o
                    .namespace
                    .as_deref()
                    .or(o.default_namespace.as_deref())
                    .filter(|n| !n.is_empty())
                    .unwrap_or("default");
                inner
                    .down
                    .apply_namespace_metadata(
                        release_ns,
                        o.namespace_labels.as_ref(),
                        o.namespace_annotations.as_ref(),
                    )
                    .await?;
                outcome.applied = true;
                tracing::info!(bundle_deployment = %name, deployment = %spec.deployment_id, objects = deployed.desired.len(), "deployment applied");
            }
            Applied::Rejected(errors) => {
                outcome.error = Some(("ApplyFailed", summarize(&errors)));
            }
            Applied::HookFailed(why) => outcome.error = Some(("HookFailed", why)),
        }
    } else if correct_drift(&bd) {
        let drifted = assess(&deployed, &inner, &spec.options).drifted;
        if !drifted.is_empty() {
            tracing::info!(bundle_deployment = %name, objects = drifted.len(), "correcting drift");
            ensure_namespaces(&inner, &deployed).await?;
            let objs: Vec<&Value> = deployed
                .desired
                .iter()
                .filter(|o| Member::of(o).is_some_and(|m| drifted.contains(&m.key)))
                .collect();
            let errors = apply_objects(&inner, objs, false).await;
            if !errors.is_empty() {
                outcome.error = Some(("DriftCorrectionFailed", summarize(&errors)));
            }
        }
    }
    let assessment = assess(&deployed, &inner, &spec.options);
    if outcome.error.is_none()
        && assessment.ready
        && deployed.hooks.iter().any(|h| {
            h.events.contains(&hooks::Event::PostInstall)
                || h.events.contains(&hooks::Event::PostUpgrade)
        })
        && let Err(e) = post_hooks(&inner, &bd, &deployed, &parent).await?
    {
        outcome.error = Some(("HookFailed", e));
    }
    outcome.assessment = Some(assessment);
    write_status(&inner, &bd, &current, &outcome).await?;
    match outcome.error {
        // Recorded: retrying would only run it again.
        Some(("HookFailed", _)) | None => Ok(Action::Done),
        Some((_, message)) => Err(Error::Failed(message)),
    }
}

fn correct_drift(bd: &BundleDeployment) -> bool {
    bd.spec
        .correct_drift
        .as_ref()
        .or(bd.spec.options.correct_drift.as_ref())
        .is_some_and(|c| c.enabled)
}

fn summarize(errors: &[String]) -> String {
    let mut s = errors
        .iter()
        .take(MAX_ERRORS_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if errors.len() > MAX_ERRORS_SHOWN {
        s.push_str(&format!("; and {} more", errors.len() - MAX_ERRORS_SHOWN));
    }
    s
}

async fn ensure_finalizer(inner: &Inner, bd: &BundleDeployment) -> Result<(), Error> {
    let have = bd.metadata.finalizers.clone().unwrap_or_default();
    if have.iter().any(|f| f == keys::BUNDLE_DEPLOYMENT_FINALIZER) {
        return Ok(());
    }
    let mut want = have;
    want.push(keys::BUNDLE_DEPLOYMENT_FINALIZER.to_owned());
    let written = bd_api(inner)
        .patch(
            bd.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::<()>::Json(finalizers_patch(&bd.metadata, &want)),
        )
        .await?;
    inner.wrote("BundleDeployment", "finalizer");
    inner.record(written);
    Ok(())
}

fn is_crd(member: &Member) -> bool {
    member.key.group == "apiextensions.k8s.io" && member.key.kind == "CustomResourceDefinition"
}

fn bd_api(inner: &Inner) -> Api<BundleDeployment> {
    Api::namespaced(inner.mgmt.clone(), &inner.config.cluster_namespace)
}

/// Deleted: prune, drop the parent, release the finalizer.
async fn finalize(inner: &Inner, bd: &BundleDeployment, parent: &Parent) -> Result<Action, Error> {
    let name = bd.metadata.name.clone().unwrap_or_default();
    let have = bd.metadata.finalizers.clone().unwrap_or_default();
    if !have.iter().any(|f| f == keys::BUNDLE_DEPLOYMENT_FINALIZER) {
        return Ok(Action::Done);
    }
    let keep = bd.spec.options.keep_resources;
    let mut recorded = read_parent(inner, parent).await?.members;
    if let Some(d) = inner.deployed.lock().expect("deployed lock").get(&name) {
        recorded = recorded.union(&d.members);
    }
    // CRDs stay unless asked (deleting one deletes every object of its
    // kind, cluster-wide), as in Fleet.
    let crds_too = bd.spec.options.delete_crd_resources;
    for member in prune(&recorded, &Inventory::default(), keep) {
        if is_crd(&member) && !crds_too {
            tracing::info!(object = %member.key, "CRD kept (deleteCRDResources is not set)");
            continue;
        }
        inner.down.delete(&member, &parent.id).await?;
    }
    inner
        .down
        .delete_parent(&parent.namespace, &parent.name)
        .await?;
    let rest: Vec<String> = have
        .into_iter()
        .filter(|f| f != keys::BUNDLE_DEPLOYMENT_FINALIZER)
        .collect();
    match bd_api(inner)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::<()>::Json(finalizers_patch(&bd.metadata, &rest)),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    inner.wrote("BundleDeployment", "finalizer");
    inner.deployed.lock().expect("deployed lock").remove(&name);
    tracing::info!(bundle_deployment = %name, kept = keep, "deployment removed from the cluster");
    Ok(Action::Done)
}

/// Starts the watches the deployment's kinds need, so the live map holds
/// their objects. A kind the cluster does not serve yet is skipped; its
/// apply will say so.
async fn watch_kinds(inner: &Inner, deployed: &Deployed) {
    let kinds: BTreeSet<_> = deployed.members.members.values().map(gvk_of).collect();
    for gvk in kinds {
        if let Err(e) = inner.down.watch(&gvk).await {
            tracing::debug!(kind = %gvk.2, error = %e, "not watched yet");
        }
    }
}

/// Creates the namespaces the objects need that the bundle does not
/// declare itself (with `namespaceLabels` and `namespaceAnnotations`).
async fn ensure_namespaces(inner: &Inner, deployed: &Deployed) -> Result<(), Error> {
    let declared: HashSet<&str> = deployed
        .members
        .members
        .keys()
        .filter(|k| k.group.is_empty() && k.kind == "Namespace")
        .map(|k| k.name.as_str())
        .collect();
    let needed: BTreeSet<&str> = deployed
        .members
        .members
        .keys()
        .map(|k| k.namespace.as_str())
        .filter(|ns| !ns.is_empty() && !declared.contains(ns))
        .collect();
    // Created bare: namespaceLabels and namespaceAnnotations are applied
    // to the release namespace after the deployment, by their own field
    // manager (so that a key dropped later goes).
    for ns in needed {
        inner.down.ensure_namespace(ns, None, None).await?;
    }
    Ok(())
}

/// How applying a new deployment went.
enum Applied {
    Done,
    /// The objects the cluster rejected (nothing was pruned).
    Rejected(Vec<String>),
    /// A pre hook failed, now or before (nothing else was applied).
    HookFailed(String),
}

/// Applies a new deployment: an install when nothing was deployed here
/// (no inventory parent, as Helm goes by its release record), else an
/// upgrade. Nothing is pruned unless every object was accepted.
async fn apply_deployment(
    inner: &Inner,
    bd: &BundleDeployment,
    deployed: &Deployed,
    parent: &Parent,
) -> Result<Applied, Error> {
    let options = &bd.spec.options;
    inner
        .down
        .ensure_namespace(&parent.namespace, None, None)
        .await?;
    ensure_namespaces(inner, deployed).await?;
    let state = read_parent(inner, parent).await?;
    if let Some(why) = state.failed_for(&deployed.deployment_id) {
        return Ok(Applied::HookFailed(not_again(why)));
    }
    let phase = if state.exists {
        Phase::Upgrade
    } else {
        Phase::Install
    };
    let previous = state.members.clone();
    let during = previous.union(&deployed.members);
    // Post hooks are remembered downstream until they ran, so a restarted
    // agent still runs them.
    let pending = (!hooks::for_event(&deployed.hooks, phase.post()).is_empty())
        .then(|| format!("{} {}", deployed.deployment_id, phase.as_str()));
    let marks = Marks {
        post_hooks: pending.as_deref(),
        failed_hook: None,
    };
    if during != previous || pending != state.post_hooks || state.failed_hook.is_some() {
        write_parent(inner, bd, parent, &during, marks).await?;
    }
    let pre = hooks::for_event(&deployed.hooks, phase.pre());
    if let Err(e) = run_hooks(inner, &pre, phase.pre(), parent, deployed.hook_timeout).await? {
        let failed = format!("{} {e}", deployed.deployment_id);
        let marks = Marks {
            failed_hook: Some(&failed),
            ..marks
        };
        write_parent(inner, bd, parent, &during, marks).await?;
        return Ok(Applied::HookFailed(not_again(&e)));
    }

    let (first, rest): (Vec<&Value>, Vec<&Value>) = deployed
        .desired
        .iter()
        .partition(|o| Member::of(o).is_some_and(|m| crate::inventory::phase(&m.key) == 0));
    let mut errors = apply_objects(inner, first, true).await;
    errors.extend(apply_objects(inner, rest, true).await);
    if !errors.is_empty() {
        return Ok(Applied::Rejected(errors));
    }
    for member in prune(&previous, &deployed.members, options.keep_resources) {
        // Fleet marks CRDs `helm.sh/resource-policy: keep` unless
        // deleteCRDResources: one that left the bundle stays.
        if is_crd(&member) && !options.delete_crd_resources {
            tracing::info!(object = %member.key, "CRD kept (deleteCRDResources is not set)");
            continue;
        }
        inner.down.delete(&member, &parent.id).await?;
    }
    // The parent already says this when nothing was pruned.
    if deployed.members != during {
        write_parent(inner, bd, parent, &deployed.members, marks).await?;
    }
    Ok(Applied::Done)
}

/// Applies objects that differ from the cluster (all of them when
/// `skip_unchanged` is false), a few at once. CRDs are waited for until
/// Established. Returns the rejections, each naming its object.
async fn apply_objects(inner: &Inner, objects: Vec<&Value>, skip_unchanged: bool) -> Vec<String> {
    let owned: Vec<Value> = objects.into_iter().cloned().collect();
    let results: Vec<Option<String>> = futures::stream::iter(owned)
        .map(|obj: Value| async move {
            let obj = &obj;
            let member = Member::of(obj)?;
            if skip_unchanged
                && let Some(live) = inner.down.live(&member.key)
                && owned_by_agent(&live)
                && drift(obj, &live, &[], true).is_empty()
            {
                return None;
            }
            if let Err(e) = inner.down.apply(obj).await {
                return Some(format!("{}: {e}", member.key));
            }
            if member.key.group == "apiextensions.k8s.io"
                && member.key.kind == "CustomResourceDefinition"
                && let Err(e) = inner
                    .down
                    .wait_established(&member.key.name, inner.config.crd_timeout)
                    .await
            {
                return Some(e);
            }
            None
        })
        .buffered(APPLY_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().flatten().collect()
}

/// Whether the agent's field manager applied this object.
fn owned_by_agent(live: &Value) -> bool {
    live.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|fields| {
            fields
                .iter()
                .any(|f| f["manager"] == keys::AGENT_FIELD_MANAGER && f["operation"] == "Apply")
        })
}

/// A BundleDeployment at deployment `id`, with (applied, ready,
/// non-modified) status and `dependsOn` names, for the tests.
#[cfg(test)]
pub(super) fn test_bd(
    name: &str,
    id: &str,
    status: Option<(&str, bool, bool)>,
    deps: &[&str],
) -> Arc<BundleDeployment> {
    let mut b = BundleDeployment::new(
        name,
        flotilla_api::BundleDeploymentSpec {
            deployment_id: id.into(),
            depends_on: deps
                .iter()
                .map(|d| flotilla_api::BundleRef {
                    name: Some(d.to_string()),
                    selector: None,
                    accepted_states: Vec::new(),
                })
                .collect(),
            ..Default::default()
        },
    );
    b.status = status.map(|(applied, ready, nm)| BundleDeploymentStatus {
        applied_deployment_id: applied.into(),
        ready,
        non_modified: nm,
        ..Default::default()
    });
    Arc::new(b)
}
