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

/// What one deployment renders to on this cluster.
pub struct Deployed {
    pub deployment_id: String,
    /// Normalized manifests, labelled for the inventory, in apply order.
    pub desired: Vec<Value>,
    pub members: Inventory,
    /// Helm hooks to run around the apply; not in the inventory.
    pub hooks: Vec<hooks::Hook>,
    /// How long one hook may run (`helm.timeoutSeconds`, else 5 minutes).
    pub hook_timeout: std::time::Duration,
}

/// The annotation of the inventory parent that holds a deployment's
/// post hooks until they ran: `<deploymentID> install|upgrade`.
const POST_HOOKS: &str = "flotilla.dev/post-hooks";

/// The inventory parent of a BundleDeployment.
struct Parent {
    namespace: String,
    name: String,
    id: String,
}

impl Parent {
    fn of(inner: &Inner, bd_name: &str) -> Parent {
        let namespace = inner.config.inventory_namespace.clone();
        let name = format!("flotilla-{bd_name}");
        let id = applyset_id(&name, &namespace);
        Parent {
            namespace,
            name,
            id,
        }
    }
}

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
        let phase = if current.applied_deployment_id.is_empty() {
            Phase::Install
        } else {
            Phase::Upgrade
        };
        let errors = apply_deployment(&inner, &bd, &deployed, &parent, phase).await?;
        if errors.is_empty() {
            outcome.applied = true;
            tracing::info!(bundle_deployment = %name, deployment = %spec.deployment_id, objects = deployed.desired.len(), "deployment applied");
        } else {
            outcome.error = Some(("ApplyFailed", summarize(&errors)));
        }
    } else if correct_drift(&bd) {
        let drifted = assess(&deployed, &inner, &spec.options).drifted;
        if !drifted.is_empty() {
            tracing::info!(bundle_deployment = %name, objects = drifted.len(), "correcting drift");
            ensure_namespaces(&inner, &bd, &deployed).await?;
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
        Some((_, message)) => Err(Error::Failed(message)),
        None => Ok(Action::Done),
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
    for member in prune(&recorded, &Inventory::default(), keep) {
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

enum Prepare {
    /// Worth retrying: the Content may not be there yet.
    Retry(String),
    /// Retrying cannot help until the BundleDeployment changes.
    Invalid(String),
}

/// The rendered manifests of the BundleDeployment's deployment, from
/// memory or rendered now.
async fn prepare(
    inner: &Inner,
    bd: &BundleDeployment,
    parent: &Parent,
) -> Result<Arc<Deployed>, Prepare> {
    let name = bd.metadata.name.clone().unwrap_or_default();
    if let Some(d) = inner.deployed.lock().expect("deployed lock").get(&name)
        && d.deployment_id == bd.spec.deployment_id
    {
        return Ok(Arc::clone(d));
    }
    if bd.spec.content_id.is_empty() {
        return Err(Prepare::Invalid(
            "spec.contentId is empty: no Content to deploy".into(),
        ));
    }
    let contents: Api<Content> = Api::all(inner.mgmt.clone());
    let content = match contents.get_opt(&bd.spec.content_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(Prepare::Retry(format!(
                "Content {} not found",
                bd.spec.content_id
            )));
        }
        Err(e) => {
            return Err(Prepare::Retry(format!(
                "reading Content: {}",
                api_message(e)
            )));
        }
    };
    let files = BundleContent::from_gzip(&content.spec.content.0)
        .map_err(|e| Prepare::Invalid(format!("Content {}: {e}", bd.spec.content_id)))?;
    // Contents are shared and cluster-scoped: one is deployed only if it
    // holds what its name (the sha256 of its files) says.
    if files.content_id() != bd.spec.content_id {
        return Err(Prepare::Invalid(format!(
            "Content {} does not hold what its name says (its files hash to {}); refusing it",
            bd.spec.content_id,
            files.content_id()
        )));
    }
    let labels = BTreeMap::from([
        (keys::PART_OF.to_owned(), parent.id.clone()),
        (keys::BUNDLE_DEPLOYMENT.to_owned(), name.clone()),
    ]);
    let bundle_name = bd
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(keys::BUNDLE_NAME))
        .cloned()
        .unwrap_or_else(|| name.clone());
    let mut cluster_scoped = inner.down.cluster_scoped();
    let options = bd.spec.options.clone();
    let tools = inner.config.tools.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        cluster_scoped.extend(
            crd_scopes(&files)
                .into_iter()
                .filter(|(_, c)| *c)
                .map(|(gk, _)| gk),
        );
        render(&RenderInput {
            content: &files,
            options: &options,
            bundle_name: &bundle_name,
            labels: &labels,
            annotations: &BTreeMap::new(),
            cluster_scoped: &cluster_scoped,
            tools: &tools,
        })
        .map(|objs| (objs, crd_scopes(&files)))
    })
    .await
    .map_err(|e| Prepare::Retry(format!("rendering: {e}")))?
    .map_err(|e| Prepare::Invalid(format!("rendering: {e}")))?;
    let (objects, crds) = rendered;
    let mut desired = Vec::with_capacity(objects.len());
    let mut members = BTreeMap::new();
    for mut obj in objects {
        let Some(member) = Member::of(&obj) else {
            return Err(Prepare::Invalid(format!(
                "a manifest without apiVersion, kind or metadata.name: {}",
                crate::drift::describe(&[obj.to_string()])
            )));
        };
        let gk = (member.key.group.clone(), member.key.kind.clone());
        let namespaced = match crds.get(&gk) {
            Some(cluster) => Some(!cluster),
            None => inner
                .down
                .resolve(&gvk_of(&member))
                .await
                .ok()
                .map(|r| r.namespaced),
        };
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("member has metadata");
        match namespaced {
            Some(false) => {
                meta.remove("namespace");
            }
            Some(true) if member.key.namespace.is_empty() => {
                meta.insert("namespace".into(), "default".into());
            }
            _ => {}
        }
        let member = Member::of(&obj).expect("still an object");
        if members.insert(member.key.clone(), member.clone()).is_some() {
            return Err(Prepare::Invalid(format!("{} appears twice", member.key)));
        }
        desired.push(obj);
    }
    let (mut desired, hooks) = hooks::split(desired);
    desired.sort_by_key(|o| Member::of(o).map(|m| phase(&m.key)));
    let members = Inventory::new(members.into_values().filter(|m| {
        desired
            .iter()
            .any(|o| Member::of(o).is_some_and(|d| d.key == m.key))
    }));
    // The inventory is one ConfigMap: the API server refuses it past 1 MiB.
    let size = members.encode().len();
    if size > flotilla_bundle::limits::MAX_CONFIG_DATA_BYTES - INVENTORY_HEADROOM {
        return Err(Prepare::Invalid(format!(
            "the inventory of {} objects is {size} bytes, over the {} a ConfigMap may hold (less {INVENTORY_HEADROOM} for its metadata); split the bundle",
            desired.len(),
            flotilla_bundle::limits::MAX_CONFIG_DATA_BYTES
        )));
    }
    let hook_timeout = std::time::Duration::from_secs(
        bd.spec
            .options
            .helm
            .as_ref()
            .and_then(|h| h.timeout_seconds)
            .filter(|t| *t > 0)
            .map_or(300, u64::from),
    );
    let deployed = Arc::new(Deployed {
        deployment_id: bd.spec.deployment_id.clone(),
        desired,
        members,
        hooks,
        hook_timeout,
    });
    inner
        .deployed
        .lock()
        .expect("deployed lock")
        .insert(name, Arc::clone(&deployed));
    Ok(deployed)
}

/// Room left in the inventory ConfigMap for its labels and annotations.
const INVENTORY_HEADROOM: usize = 16 * 1024;

/// The CRDs a bundle defines: (group, kind) -> cluster-scoped.
fn crd_scopes(files: &BundleContent) -> BTreeMap<(String, String), bool> {
    let mut out = BTreeMap::new();
    for (path, bytes) in &files.files {
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        if !text.contains("CustomResourceDefinition") {
            continue;
        }
        for doc in flotilla_bundle::yaml::parse_documents(path, text).unwrap_or_default() {
            if doc["kind"] == "CustomResourceDefinition"
                && let (Some(g), Some(k)) = (
                    doc["spec"]["group"].as_str(),
                    doc["spec"]["names"]["kind"].as_str(),
                )
            {
                out.insert(
                    (g.to_owned(), k.to_owned()),
                    doc["spec"]["scope"] == "Cluster",
                );
            }
        }
    }
    out
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
async fn ensure_namespaces(
    inner: &Inner,
    bd: &BundleDeployment,
    deployed: &Deployed,
) -> Result<(), Error> {
    let options = &bd.spec.options;
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
    for ns in needed {
        inner
            .down
            .ensure_namespace(
                ns,
                options.namespace_labels.as_ref(),
                options.namespace_annotations.as_ref(),
            )
            .await?;
    }
    Ok(())
}

/// Applies a new deployment. Returns the objects the cluster rejected;
/// nothing is pruned unless that list is empty.
async fn apply_deployment(
    inner: &Inner,
    bd: &BundleDeployment,
    deployed: &Deployed,
    parent: &Parent,
    phase: Phase,
) -> Result<Vec<String>, Error> {
    let options = &bd.spec.options;
    inner
        .down
        .ensure_namespace(&parent.namespace, None, None)
        .await?;
    ensure_namespaces(inner, bd, deployed).await?;
    let state = read_parent(inner, parent).await?;
    let previous = state.members;
    let during = previous.union(&deployed.members);
    // Post hooks are remembered downstream until they ran, so a restarted
    // agent still runs them.
    let pending = (!hooks::for_event(&deployed.hooks, phase.post()).is_empty())
        .then(|| format!("{} {}", deployed.deployment_id, phase.as_str()));
    if during != previous || pending != state.post_hooks {
        write_parent(inner, bd, parent, &during, pending.as_deref()).await?;
    }
    let pre = hooks::for_event(&deployed.hooks, phase.pre());
    if let Err(e) = run_hooks(inner, &pre, phase.pre(), parent, deployed.hook_timeout).await? {
        return Ok(vec![e]);
    }

    let (first, rest): (Vec<&Value>, Vec<&Value>) = deployed
        .desired
        .iter()
        .partition(|o| Member::of(o).is_some_and(|m| crate::inventory::phase(&m.key) == 0));
    let mut errors = apply_objects(inner, first, true).await;
    errors.extend(apply_objects(inner, rest, true).await);
    if !errors.is_empty() {
        return Ok(errors);
    }
    for member in prune(&previous, &deployed.members, options.keep_resources) {
        inner.down.delete(&member, &parent.id).await?;
    }
    // The parent already says this when nothing was pruned.
    if deployed.members != during {
        write_parent(inner, bd, parent, &deployed.members, pending.as_deref()).await?;
    }
    Ok(errors)
}

/// Runs hooks in order, each waited for; `Ok(Err(why))` when one failed
/// (what follows is not applied). Delete policies are honoured.
async fn run_hooks(
    inner: &Inner,
    hooks: &[&hooks::Hook],
    event: hooks::Event,
    parent: &Parent,
    timeout: std::time::Duration,
) -> Result<Result<(), String>, Error> {
    for hook in hooks {
        let Some(member) = Member::of(&hook.object) else {
            continue;
        };
        let what = format!("{} hook {}", event.as_str(), member.key);
        if hook.delete_before {
            inner.down.delete(&member, &parent.id).await?;
            inner.down.wait_gone(&member, timeout).await?;
        }
        if let Err(e) = inner.down.apply(&hook.object).await {
            return Ok(Err(format!("{what}: {e}")));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let outcome = loop {
            let live = inner.down.get(&member).await?;
            match live.as_ref().map(hooks::progress) {
                Some(hooks::Progress::Succeeded) => break Ok(()),
                Some(hooks::Progress::Failed(why)) => break Err(format!("{what} failed: {why}")),
                // Deleted by someone else meanwhile: Helm would say failed.
                None => break Err(format!("{what} disappeared before it finished")),
                Some(hooks::Progress::Running) if tokio::time::Instant::now() >= deadline => {
                    break Err(format!(
                        "{what} did not finish within {}s",
                        timeout.as_secs()
                    ));
                }
                Some(hooks::Progress::Running) => {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
            }
        };
        match &outcome {
            Ok(()) if hook.delete_on_success => inner.down.delete(&member, &parent.id).await?,
            Err(_) if hook.delete_on_failure => inner.down.delete(&member, &parent.id).await?,
            _ => {}
        }
        if let Err(e) = outcome {
            tracing::warn!(hook = %member.key, error = %e, "hook failed");
            return Ok(Err(e));
        }
        tracing::info!(hook = %member.key, event = event.as_str(), "hook done");
    }
    Ok(Ok(()))
}

/// Once the deployment is Ready: its post hooks, if the parent says they
/// have not run yet for it.
async fn post_hooks(
    inner: &Inner,
    bd: &BundleDeployment,
    deployed: &Deployed,
    parent: &Parent,
) -> Result<Result<(), String>, Error> {
    let state = read_parent(inner, parent).await?;
    let Some(pending) = state.post_hooks.as_deref() else {
        return Ok(Ok(()));
    };
    let (id, phase) = pending.split_once(' ').unwrap_or((pending, ""));
    let Some(phase) = Phase::parse(phase).filter(|_| id == deployed.deployment_id) else {
        return Ok(Ok(()));
    };
    let post = hooks::for_event(&deployed.hooks, phase.post());
    if let Err(e) = run_hooks(inner, &post, phase.post(), parent, deployed.hook_timeout).await? {
        return Ok(Err(e));
    }
    write_parent(inner, bd, parent, &state.members, None).await?;
    Ok(Ok(()))
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
                && drift(obj, &live, &[]).is_empty()
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

/// What the inventory parent records.
struct ParentState {
    members: Inventory,
    /// Post hooks not run yet: `<deploymentID> <phase>`.
    post_hooks: Option<String>,
}

async fn read_parent(inner: &Inner, parent: &Parent) -> Result<ParentState, Error> {
    let Some(cm) = inner
        .down
        .get_parent(&parent.namespace, &parent.name)
        .await?
    else {
        return Ok(ParentState {
            members: Inventory::default(),
            post_hooks: None,
        });
    };
    let post_hooks = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POST_HOOKS))
        .cloned();
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("members"))
        .map(String::as_str)
        .unwrap_or("[]");
    let members = Inventory::decode(text).map_err(|e| {
        Error::Failed(format!(
            "inventory {}/{}: {e}",
            parent.namespace, parent.name
        ))
    })?;
    Ok(ParentState {
        members,
        post_hooks,
    })
}

async fn write_parent(
    inner: &Inner,
    bd: &BundleDeployment,
    parent: &Parent,
    members: &Inventory,
    post_hooks: Option<&str>,
) -> Result<(), Error> {
    let additional: BTreeSet<&str> = members
        .members
        .keys()
        .map(|k| k.namespace.as_str())
        .filter(|ns| !ns.is_empty() && *ns != parent.namespace)
        .collect();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(parent.name.clone()),
            namespace: Some(parent.namespace.clone()),
            labels: Some(BTreeMap::from([
                ("applyset.kubernetes.io/id".to_owned(), parent.id.clone()),
                (
                    keys::MANAGED_BY.to_owned(),
                    keys::MANAGED_BY_VALUE.to_owned(),
                ),
            ])),
            annotations: Some(
                BTreeMap::from([
                    (
                        "applyset.kubernetes.io/tooling".to_owned(),
                        format!("flotilla/v{}", env!("CARGO_PKG_VERSION")),
                    ),
                    (
                        "applyset.kubernetes.io/contains-group-kinds".to_owned(),
                        members.group_kinds(),
                    ),
                    (
                        "applyset.kubernetes.io/additional-namespaces".to_owned(),
                        additional.into_iter().collect::<Vec<_>>().join(","),
                    ),
                    (
                        keys::BUNDLE_DEPLOYMENT.to_owned(),
                        format!(
                            "{}/{}",
                            inner.config.cluster_namespace,
                            bd.metadata.name.as_deref().unwrap_or_default()
                        ),
                    ),
                ])
                .into_iter()
                .chain(post_hooks.map(|p| (POST_HOOKS.to_owned(), p.to_owned())))
                .collect(),
            ),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("members".to_owned(), members.encode())])),
        ..Default::default()
    };
    inner.down.apply_parent(&cm).await
}

/// Readiness and drift of a deployment's objects, from the live map.
pub(crate) struct Assessment {
    pub ready: bool,
    pub non_modified: bool,
    pub non_ready: Vec<NonReadyStatus>,
    pub modified: Vec<ModifiedStatus>,
    /// Objects that are missing or differ.
    pub drifted: HashSet<ObjKey>,
}

fn assess(deployed: &Deployed, inner: &Inner, options: &BundleDeploymentOptions) -> Assessment {
    assess_with(&deployed.desired, |k| inner.down.live(k), options)
}

/// Pure: the assessment of `desired` against whatever `live` returns.
pub(crate) fn assess_with(
    desired: &[Value],
    live: impl Fn(&ObjKey) -> Option<Arc<Value>>,
    options: &BundleDeploymentOptions,
) -> Assessment {
    let patches = options
        .diff
        .as_ref()
        .map(|d| d.compare_patches.as_slice())
        .unwrap_or_default();
    let mut a = Assessment {
        ready: true,
        non_modified: true,
        non_ready: Vec::new(),
        modified: Vec::new(),
        drifted: HashSet::new(),
    };
    for obj in desired {
        let Some(m) = Member::of(obj) else { continue };
        let namespace = (!m.key.namespace.is_empty()).then(|| m.key.namespace.clone());
        let modified = |missing: bool, patch: String| ModifiedStatus {
            kind: m.key.kind.clone(),
            api_version: m.api_version(),
            namespace: namespace.clone(),
            name: m.key.name.clone(),
            missing,
            delete: false,
            patch,
        };
        let Some(live) = live(&m.key) else {
            a.non_modified = false;
            a.ready = false;
            a.drifted.insert(m.key.clone());
            a.modified.push(modified(true, String::new()));
            a.non_ready.push(NonReadyStatus {
                kind: m.key.kind.clone(),
                api_version: m.api_version(),
                namespace: namespace.clone(),
                name: m.key.name.clone(),
                message: "missing".into(),
            });
            continue;
        };
        let diffs = drift(obj, &live, patches);
        if !diffs.is_empty() {
            a.non_modified = false;
            a.drifted.insert(m.key.clone());
            a.modified.push(modified(false, describe(&diffs)));
        }
        if let Err(message) = readiness(&live, options.ignore.as_ref()) {
            a.ready = false;
            a.non_ready.push(NonReadyStatus {
                kind: m.key.kind.clone(),
                api_version: m.api_version(),
                namespace: namespace.clone(),
                name: m.key.name.clone(),
                message,
            });
        }
    }
    a.non_ready.truncate(MAX_RESOURCE_STATUSES);
    a.modified.truncate(MAX_RESOURCE_STATUSES);
    a
}

/// What one reconcile found, to be turned into status.
#[derive(Default)]
pub(crate) struct Outcome {
    /// The deployment was applied in full.
    pub applied: bool,
    /// The Deployed condition's reason and message when something failed.
    pub error: Option<(&'static str, String)>,
    pub waiting: Option<String>,
    pub assessment: Option<Assessment>,
}

impl Outcome {
    fn failed(reason: &'static str, message: String) -> Self {
        Outcome {
            error: Some((reason, message)),
            ..Outcome::default()
        }
    }
}

/// Pure: the status after `outcome`. Equal to `current` when nothing
/// changed, which is what makes a no-op resync write nothing.
pub(crate) fn next_status(
    bd: &BundleDeployment,
    current: &BundleDeploymentStatus,
    outcome: &Outcome,
    now: &Time,
) -> BundleDeploymentStatus {
    let mut s = current.clone();
    let generation = bd.metadata.generation;
    if outcome.applied {
        s.applied_deployment_id = bd.spec.deployment_id.clone();
    }
    let deployed = s.applied_deployment_id == bd.spec.deployment_id;
    match &outcome.error {
        Some((reason, message)) => {
            set_condition(
                &mut s.conditions,
                ConditionUpdate {
                    type_: DEPLOYED,
                    status: false,
                    reason,
                    message,
                    observed_generation: generation,
                },
                now,
            );
        }
        None if deployed && outcome.waiting.is_none() => {
            set_condition(
                &mut s.conditions,
                ConditionUpdate {
                    type_: DEPLOYED,
                    status: true,
                    reason: "Applied",
                    message: "",
                    observed_generation: generation,
                },
                now,
            );
        }
        None => {}
    }
    if let Some(a) = &outcome.assessment {
        s.ready = a.ready;
        s.non_modified = a.non_modified;
        s.non_ready_status = a.non_ready.clone();
        s.modified_status = a.modified.clone();
    }
    s.display.message = match (&outcome.waiting, &outcome.error) {
        (Some(w), _) => w.clone(),
        (None, Some((_, e))) => e.clone(),
        (None, None) => String::new(),
    };
    let mut probe = bd.clone();
    probe.status = Some(s.clone());
    s.display.state = probe.state().to_string();
    s
}

async fn write_status(
    inner: &Inner,
    bd: &BundleDeployment,
    current: &BundleDeploymentStatus,
    outcome: &Outcome,
) -> Result<(), Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let next = next_status(bd, current, outcome, &now);
    if bd.status.is_some() && next == *current {
        return Ok(());
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "add", "path": "/status", "value": next}
    ]))
    .expect("a well-formed JSON patch");
    let written = bd_api(inner)
        .patch_status(
            bd.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await?;
    inner.wrote("BundleDeployment", "status");
    inner.record(written);
    Ok(())
}

/// Whether `bd` depends on the BundleDeployment named `dep`.
pub(crate) fn depends_on(bd: &BundleDeployment, dep: &str, all: &[Arc<BundleDeployment>]) -> bool {
    if bd.metadata.name.as_deref() == Some(dep) || bd.spec.depends_on.is_empty() {
        return false;
    }
    let Some(dep) = all.iter().find(|b| b.metadata.name.as_deref() == Some(dep)) else {
        return bd.spec.depends_on.iter().any(|r| r.name.is_some());
    };
    bd.spec.depends_on.iter().any(|r| refers_to(r, dep))
}

fn bundle_name(bd: &BundleDeployment) -> &str {
    bd.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(keys::BUNDLE_NAME))
        .or(bd.metadata.name.as_ref())
        .map(String::as_str)
        .unwrap_or_default()
}

fn refers_to(r: &flotilla_api::BundleRef, dep: &BundleDeployment) -> bool {
    if let Some(name) = &r.name {
        return name == bundle_name(dep);
    }
    match r.selector.clone().map(Selector::try_from) {
        Some(Ok(sel)) => sel.matches(&dep.metadata.labels.clone().unwrap_or_default()),
        _ => false,
    }
}

/// The `dependsOn` bundles that are not Ready on this cluster, each with
/// its state. A named bundle with no deployment here is waited for; a
/// selector that matches nothing asks for nothing.
pub(crate) fn unready_dependencies(
    bd: &BundleDeployment,
    all: &[Arc<BundleDeployment>],
) -> Vec<String> {
    let mut out = BTreeSet::new();
    for r in &bd.spec.depends_on {
        let deps: Vec<&Arc<BundleDeployment>> = all
            .iter()
            .filter(|d| d.metadata.name != bd.metadata.name && refers_to(r, d))
            .collect();
        if deps.is_empty()
            && let Some(name) = &r.name
        {
            out.insert(format!("{name} (not deployed)"));
        }
        for d in deps {
            let state = d.state();
            if state != BundleState::Ready {
                out.insert(format!("{} ({state})", bundle_name(d)));
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::{BundleDeploymentSpec, BundleRef};
    use serde_json::json;

    fn bd(
        name: &str,
        id: &str,
        status: Option<(&str, bool, bool)>,
        deps: &[&str],
    ) -> Arc<BundleDeployment> {
        let mut b = BundleDeployment::new(
            name,
            BundleDeploymentSpec {
                deployment_id: id.into(),
                depends_on: deps
                    .iter()
                    .map(|d| BundleRef {
                        name: Some(d.to_string()),
                        selector: None,
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

    #[test]
    fn dependencies_wait_until_ready() {
        let app = bd("app", "x", None, &["db", "cache"]);
        let db_ready = bd("db", "d", Some(("d", true, true)), &[]);
        let db_rolling = bd("db", "d", Some(("d", false, true)), &[]);
        let all = vec![Arc::clone(&app), Arc::clone(&db_rolling)];
        assert_eq!(
            unready_dependencies(&app, &all),
            ["cache (not deployed)", "db (NotReady)"]
        );
        assert!(depends_on(&app, "db", &all));
        assert!(!depends_on(&db_rolling, "app", &all));
        let app_db_only = bd("app", "x", None, &["db"]);
        assert!(unready_dependencies(&app_db_only, &[db_ready]).is_empty());
    }

    #[test]
    fn dependencies_by_selector() {
        let mut app = (*bd("app", "x", None, &[])).clone();
        app.spec.depends_on = vec![BundleRef {
            name: None,
            selector: Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some(BTreeMap::from([("tier".into(), "data".into())])),
                    ..Default::default()
                },
            ),
        }];
        let mut db = (*bd("db", "d", Some(("d", false, true)), &[])).clone();
        db.metadata.labels = Some(BTreeMap::from([("tier".into(), "data".into())]));
        let all = vec![Arc::new(db)];
        assert_eq!(unready_dependencies(&app, &all), ["db (NotReady)"]);
        assert!(
            unready_dependencies(&app, &[]).is_empty(),
            "a selector matching nothing asks for nothing"
        );
    }

    fn cm(name: &str, data: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "a"}, "data": {"k": data}})
    }

    #[test]
    fn assessment_reports_missing_drifted_and_unready_objects() {
        let desired = vec![cm("same", "1"), cm("changed", "1"), cm("gone", "1")];
        let mut live = std::collections::HashMap::new();
        for obj in [cm("same", "1"), cm("changed", "2")] {
            live.insert(Member::of(&obj).unwrap().key, Arc::new(obj));
        }
        let a = assess_with(
            &desired,
            |k| live.get(k).cloned(),
            &BundleDeploymentOptions::default(),
        );
        assert!(!a.ready && !a.non_modified);
        assert_eq!(a.drifted.len(), 2);
        let names: Vec<(&str, bool)> = a
            .modified
            .iter()
            .map(|m| (m.name.as_str(), m.missing))
            .collect();
        assert_eq!(names, [("changed", false), ("gone", true)]);
        assert_eq!(a.modified[0].patch, r#"data.k: applied "1", found "2""#);
        assert_eq!(a.non_ready[0].message, "missing");

        let all_live = |k: &ObjKey| {
            desired
                .iter()
                .find(|o| Member::of(o).unwrap().key == *k)
                .cloned()
                .map(Arc::new)
        };
        let ok = assess_with(&desired, all_live, &BundleDeploymentOptions::default());
        assert!(ok.ready && ok.non_modified && ok.modified.is_empty() && ok.non_ready.is_empty());
    }

    #[test]
    fn next_status_is_stable_and_reports_errors() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let b = bd("app", "v2", Some(("v1", true, true)), &[]);
        let current = b.status.clone().unwrap();
        let failed = next_status(
            &b,
            &current,
            &Outcome::failed("ApplyFailed", "ConfigMap a/x: denied".into()),
            &now,
        );
        assert_eq!(
            failed.applied_deployment_id, "v1",
            "a failed apply keeps the applied deployment"
        );
        assert_eq!(failed.display.state, "ErrApplied");
        assert_eq!(failed.display.message, "ConfigMap a/x: denied");

        let applied = Outcome {
            applied: true,
            assessment: Some(assess_with(
                &[],
                |_| None,
                &BundleDeploymentOptions::default(),
            )),
            ..Outcome::default()
        };
        let ok = next_status(&b, &failed, &applied, &now);
        assert_eq!(ok.applied_deployment_id, "v2");
        assert_eq!(ok.display.state, "Ready");
        assert_eq!(ok.conditions[0].status, "True");
        let mut done = (*b).clone();
        done.status = Some(ok.clone());
        let later = Time(k8s_openapi::jiff::Timestamp::now());
        let again = Outcome {
            assessment: Some(assess_with(
                &[],
                |_| None,
                &BundleDeploymentOptions::default(),
            )),
            ..Outcome::default()
        };
        assert_eq!(
            next_status(&done, &ok, &again, &later),
            ok,
            "a no-op resync changes nothing"
        );
    }
}
