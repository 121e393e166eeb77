//! The status controller.
//!
//! Wakes on: a BundleDeployment created, deleted or with a new status; a
//! targeting change (which changes what is desired); a Bundle spec change;
//! a Cluster or ClusterGroup created or changed; a GitRepo or HelmOp
//! created.
//!
//! Computes: per-state summaries straight from the BundleDeployments (never
//! from other summaries, so no status write has to wait for another), the
//! `x/y` display fields, kstatus conditions and the rollout partitions.
//! Summaries hold no timestamps and bounded, sorted lists, so the same
//! inputs always give the same status.
//!
//! Writes: a server-side apply of the fields it owns (field manager
//! `flotilla-status`) when they differ from what is stored; nothing
//! otherwise. Status changes wake no controller.

use crate::fanout::plan_bundle;
use crate::queue::Action;
use crate::topology::{Topology, cluster_namespace};
use crate::{Context, Error, STATUS_FIELD_MANAGER, StatusKey};
use flotilla_api::condition::{self, ConditionUpdate, set_condition};
use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use flotilla_api::k8s_openapi::jiff::Timestamp;
use flotilla_api::{
    Bundle, BundleState, BundleSummary, Cluster, ClusterGroup, cluster::MAX_NON_READY_CLUSTERS,
};
use flotilla_targeting::ObjectKey;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

pub async fn reconcile(ctx: Arc<Context>, key: StatusKey) -> Result<Action, Error> {
    match &key {
        StatusKey::Bundle(k) => bundle(&ctx, k).await?,
        StatusKey::Cluster(k) => cluster(&ctx, k).await?,
        StatusKey::Group(k) => group(&ctx, k).await?,
        StatusKey::GitRepo(k) => gitrepo(&ctx, k).await?,
        StatusKey::HelmOp(k) => helmop(&ctx, k).await?,
    }
    Ok(Action::Done)
}

/// The state of one (bundle, cluster) pair that is targeted.
fn pair_state(
    ctx: &Context,
    topo: &Topology,
    bundle: &ObjectKey,
    cluster: &ObjectKey,
) -> (BundleState, String) {
    // Templated values that failed: the deployment there is not current.
    if let Some(e) = ctx
        .value_errors
        .lock()
        .expect("value errors lock")
        .get(bundle)
        .and_then(|m| m.get(cluster))
    {
        return (BundleState::ErrApplied, format!("templated values: {e}"));
    }
    let bd = topo
        .bds_by_bundle
        .get(bundle)
        .and_then(|m| m.get(cluster))
        .and_then(|k| ctx.bds.get(k));
    match bd {
        Some(bd) => (bd.state(), bd.state_message()),
        None => (
            BundleState::Pending,
            "waiting for its BundleDeployment".into(),
        ),
    }
}

/// Summary of one cluster over the bundles that target it.
fn cluster_summary(ctx: &Context, topo: &Topology, cluster: &ObjectKey) -> BundleSummary {
    let mut s = BundleSummary::default();
    for bundle in topo.index.bundles_of(cluster) {
        let (state, message) = pair_state(ctx, topo, &bundle, cluster);
        s.add(state, &bundle.name, &message);
    }
    s
}

fn display_state(summary: &BundleSummary) -> String {
    summary
        .worst_state()
        .unwrap_or(BundleState::Ready)
        .as_str()
        .to_owned()
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Ready / Reconciling / Stalled, kstatus style.
fn conditions(
    existing: &[Condition],
    summary: &BundleSummary,
    error: Option<(&str, String)>,
    generation: Option<i64>,
) -> Vec<Condition> {
    kstatus(existing, summary, error, None, generation)
}

/// Ready / Reconciling / Stalled from, in order: a problem that needs the
/// user (`error`: Stalled), one a controller is still working on
/// (`progressing`: Reconciling), or the summary.
fn kstatus(
    existing: &[Condition],
    summary: &BundleSummary,
    error: Option<(&str, String)>,
    progressing: Option<(&str, String)>,
    generation: Option<i64>,
) -> Vec<Condition> {
    let mut conds = existing.to_vec();
    let t = now();
    let all_ready = summary.ready == summary.desired_ready;
    let first_non_ready = summary
        .non_ready_resources
        .first()
        .map(|r| {
            let state = r
                .bundle_state
                .map(BundleState::as_str)
                .unwrap_or("NotReady");
            if r.message.is_empty() {
                format!("{}: {state}", r.name)
            } else {
                format!("{}: {state}: {}", r.name, r.message)
            }
        })
        .unwrap_or_default();
    let progressing = progressing.filter(|_| error.is_none());
    let (ready, ready_reason, ready_message) = match (&error, &progressing) {
        (Some((reason, message)), _) => (false, *reason, message.clone()),
        (None, Some((reason, message))) => (false, *reason, message.clone()),
        (None, None) if all_ready => (true, "Ready", String::new()),
        (None, None) => (false, "NotReady", first_non_ready.clone()),
    };
    let reconciling = match &progressing {
        Some((reason, message)) => Some((*reason, message.clone())),
        None if error.is_none() && !all_ready => Some(("Progressing", first_non_ready.clone())),
        None => None,
    };
    let updates = [
        ConditionUpdate {
            type_: condition::READY,
            status: ready,
            reason: ready_reason,
            message: &ready_message,
            observed_generation: generation,
        },
        ConditionUpdate {
            type_: condition::RECONCILING,
            status: reconciling.is_some(),
            reason: reconciling.as_ref().map_or("Idle", |(r, _)| r),
            message: reconciling.as_ref().map_or("", |(_, m)| m.as_str()),
            observed_generation: generation,
        },
        ConditionUpdate {
            type_: condition::STALLED,
            status: error.is_some(),
            reason: error.as_ref().map_or("Fine", |(r, _)| r),
            message: error.as_ref().map_or("", |(_, m)| m.as_str()),
            observed_generation: generation,
        },
    ];
    for u in updates {
        set_condition(&mut conds, u, &t);
    }
    conds
}

pub(crate) async fn apply_status<K>(
    ctx: &Context,
    key: &ObjectKey,
    kind: &'static str,
    status: Value,
    field_manager: &str,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": &*key.name, "namespace": &*key.namespace},
        "status": status,
    });
    ctx.metrics.write(kind, "apply-status");
    match api
        .patch_status(
            &key.name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Write {
            verb: "apply the status of",
            kind,
            name: key.to_string(),
            source,
        }),
    }
}

/// What stops a Bundle's deployments being written at all: targets that
/// do not parse, or BundleDeployments the API refused.
fn bundle_error(ctx: &Context, topo: &Topology, key: &ObjectKey) -> Option<(&'static str, String)> {
    if let Some(e) = topo.bundle_errors.get(key) {
        return Some(("InvalidTargets", e.to_string()));
    }
    ctx.deployment_write_errors
        .lock()
        .expect("write errors lock")
        .get(key)
        .map(|w| ("DeploymentWriteFailed", w.clone()))
}

async fn bundle(ctx: &Context, key: &ObjectKey) -> Result<(), Error> {
    let Some(b) = ctx.bundles.get(key) else {
        return Ok(());
    };
    let (summary, rollout, error) = {
        let topo = ctx.topo();
        let rollout = plan_bundle(ctx, &topo, &b);
        let mut summary = BundleSummary::default();
        for cluster in topo.index.clusters_of(key) {
            let (state, message) = pair_state(ctx, &topo, key, &cluster);
            summary.add(state, &cluster.to_string(), &message);
        }
        let values_error = (!rollout.value_errors.is_empty()).then(|| {
            let shown: Vec<String> = rollout
                .value_errors
                .iter()
                .take(3)
                .map(|(c, e)| format!("cluster {c}: {e}"))
                .collect();
            let more = rollout.value_errors.len().saturating_sub(shown.len());
            format!(
                "templated values failed on {} cluster(s), whose deployments stay as they are: {}{}",
                rollout.value_errors.len(),
                shown.join("; "),
                if more > 0 { format!("; and {more} more") } else { String::new() }
            )
        });
        let error = match (bundle_error(ctx, &topo, key), &rollout.plan) {
            (Some(e), _) => Some(e),
            (None, Err(e)) => Some(("InvalidRolloutStrategy", e.clone())),
            _ => values_error.map(|m| ("InvalidValues", m)),
        };
        (summary, rollout, error)
    };
    let old = b.status.clone().unwrap_or_default();
    let mut new = old.clone();
    new.observed_generation = b.metadata.generation.unwrap_or_default();
    new.display.ready_clusters = summary.ready_display();
    new.display.state = if error.is_some() {
        "Stalled".into()
    } else {
        display_state(&summary)
    };
    if let Ok(plan) = &rollout.plan {
        new.unavailable = plan.status.unavailable;
        new.max_unavailable = plan.status.max_unavailable;
        new.unavailable_partitions = plan.status.unavailable_partitions;
        new.max_unavailable_partitions = plan.status.max_unavailable_partitions;
        new.partitions = plan.status.partitions.clone();
    }
    new.conditions = conditions(&old.conditions, &summary, error, b.metadata.generation);
    new.summary = summary;
    if new == old {
        return Ok(());
    }
    let status = serde_json::to_value(&new).expect("status serializes");
    apply_status::<Bundle>(ctx, key, "Bundle", status, STATUS_FIELD_MANAGER).await
}

async fn cluster(ctx: &Context, key: &ObjectKey) -> Result<(), Error> {
    let Some(c) = ctx.clusters.get(key) else {
        return Ok(());
    };
    let summary = cluster_summary(ctx, &ctx.topo(), key);
    let old = c.status.clone().unwrap_or_default();
    let mut new = old.clone();
    new.namespace = cluster_namespace(key);
    new.display.ready_bundles = summary.ready_display();
    new.display.state = display_state(&summary);
    new.conditions = conditions(&old.conditions, &summary, None, c.metadata.generation);
    new.summary = summary;
    if new == old {
        return Ok(());
    }
    // Only the fields this controller owns; `agent` belongs to the agent.
    let status = json!({
        "namespace": new.namespace,
        "summary": new.summary,
        "display": new.display,
        "conditions": new.conditions,
    });
    apply_status::<Cluster>(ctx, key, "Cluster", status, STATUS_FIELD_MANAGER).await
}

async fn group(ctx: &Context, key: &ObjectKey) -> Result<(), Error> {
    let Some(g) = ctx.groups.get(key) else {
        return Ok(());
    };
    let (summary, count, non_ready, error) = {
        let topo = ctx.topo();
        let members = topo.index.group_members(key);
        let mut summary = BundleSummary::default();
        let mut non_ready = Vec::new();
        for cluster in &members {
            let s = cluster_summary(ctx, &topo, cluster);
            if s.ready != s.desired_ready {
                non_ready.push(cluster.name.to_string());
            }
            summary.merge(&s);
        }
        let error = topo
            .group_errors
            .get(key)
            .map(|e| ("InvalidSelector", e.to_string()));
        (summary, members.len() as u32, non_ready, error)
    };
    let old = g.status.clone().unwrap_or_default();
    let mut new = old.clone();
    new.cluster_count = count;
    new.non_ready_cluster_count = non_ready.len() as u32;
    new.non_ready_clusters = non_ready.into_iter().take(MAX_NON_READY_CLUSTERS).collect();
    new.display.ready_clusters = format!("{}/{}", count - new.non_ready_cluster_count, count);
    new.display.ready_bundles = summary.ready_display();
    new.display.state = if error.is_some() {
        "Stalled".into()
    } else {
        display_state(&summary)
    };
    new.conditions = conditions(&old.conditions, &summary, error, g.metadata.generation);
    new.summary = summary;
    if new == old {
        return Ok(());
    }
    let status = serde_json::to_value(&new).expect("status serializes");
    apply_status::<ClusterGroup>(ctx, key, "ClusterGroup", status, STATUS_FIELD_MANAGER).await
}

/// Over an owner's bundles: the summary, the clusters where every one of
/// them is Ready, and the clusters any of them targets.
fn rollup<'a>(
    ctx: &Context,
    bundles: impl IntoIterator<Item = &'a ObjectKey>,
) -> (BundleSummary, u32, u32) {
    let topo = ctx.topo();
    let mut summary = BundleSummary::default();
    // cluster -> every bundle Ready on it.
    let mut clusters: BTreeMap<ObjectKey, bool> = BTreeMap::new();
    for bundle in bundles {
        for cluster in topo.index.clusters_of(bundle) {
            let (state, message) = pair_state(ctx, &topo, bundle, &cluster);
            let message = if message.is_empty() {
                format!("cluster {cluster}")
            } else {
                format!("cluster {cluster}: {message}")
            };
            summary.add(state, &bundle.name, &message);
            *clusters.entry(cluster).or_insert(true) &= state == BundleState::Ready;
        }
    }
    let ready = clusters.values().filter(|r| **r).count() as u32;
    (summary, ready, clusters.len() as u32)
}

/// What the status controller reads of a GitRepo or HelmOp it writes.
struct Owner<'a> {
    conditions: &'a [Condition],
    summary: &'a BundleSummary,
    ready_clusters: u32,
    desired_ready_clusters: u32,
    shown: &'a str,
    state: &'a str,
    message: &'a str,
    generation: Option<i64>,
}

/// The kstatus conditions this controller owns on an owner.
const OWNER_CONDITIONS: [&str; 3] = [condition::READY, condition::RECONCILING, condition::STALLED];

/// The fields the status controller owns on a GitRepo or HelmOp (its own
/// controller owns the rest, `Synced` among them), or `None` when they are
/// current. The owner is Ready only when its source synced, none of its
/// Bundles is blocked and every cluster is Ready; otherwise the first
/// problem, in words, is the Ready (and Stalled or Reconciling) message,
/// and all of them are the display message.
fn owner_status(
    ctx: &Context,
    old: Owner<'_>,
    bundles: &[ObjectKey],
    (summary, ready_clusters, desired_clusters): (BundleSummary, u32, u32),
) -> Option<Value> {
    // (reason, message, stalled), the source's first.
    let mut problems: Vec<(&str, String, bool)> = Vec::new();
    match old.conditions.iter().find(|c| c.type_ == condition::SYNCED) {
        None => problems.push(("Pending", "waiting for the first sync".into(), false)),
        Some(c) if c.status == "True" => {}
        Some(c) => problems.push((c.reason.as_str(), c.message.clone(), c.status == "False")),
    }
    {
        let topo = ctx.topo();
        for b in bundles {
            if let Some((reason, message)) = bundle_error(ctx, &topo, b) {
                problems.push((reason, format!("bundle {}: {message}", b.name), true));
            }
        }
    }
    let stalled = problems.iter().find(|p| p.2);
    let error = stalled.map(|(r, m, _)| (*r, m.clone()));
    let progressing = problems
        .iter()
        .find(|p| !p.2)
        .map(|(r, m, _)| (*r, m.clone()));
    let all = kstatus(
        old.conditions,
        &summary,
        error.clone(),
        progressing.clone(),
        old.generation,
    );
    let conditions: Vec<Condition> = all
        .into_iter()
        .filter(|c| OWNER_CONDITIONS.contains(&c.type_.as_str()))
        .collect();
    let old_conditions: Vec<&Condition> = old
        .conditions
        .iter()
        .filter(|c| OWNER_CONDITIONS.contains(&c.type_.as_str()))
        .collect();
    let shown = format!("{ready_clusters}/{desired_clusters}");
    let state = match (&error, &progressing) {
        (Some(_), _) => "Stalled".to_owned(),
        (None, Some(_)) => "Reconciling".to_owned(),
        (None, None) => display_state(&summary),
    };
    let message = if problems.is_empty() {
        conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    } else {
        let all: Vec<&str> = problems
            .iter()
            .map(|(_, m, _)| m.as_str())
            .filter(|m| !m.is_empty())
            .collect();
        all.join("; ")
    };
    let message = flotilla_api::summary::truncate(&message, 1024);
    let unchanged = *old.summary == summary
        && old.ready_clusters == ready_clusters
        && old.desired_ready_clusters == desired_clusters
        && old.shown == shown
        && old.state == state
        && old.message == message
        && old_conditions.len() == conditions.len()
        && old_conditions.iter().zip(&conditions).all(|(a, b)| *a == b);
    (!unchanged).then(|| {
        json!({
            "readyClusters": ready_clusters,
            "desiredReadyClusters": desired_clusters,
            "summary": summary,
            "conditions": conditions,
            "display": {"readyClusters": shown, "state": state, "message": message},
        })
    })
}

async fn gitrepo(ctx: &Context, key: &ObjectKey) -> Result<(), Error> {
    let Some(repo) = ctx.gitrepos.get(key) else {
        return Ok(());
    };
    let bundles: Vec<ObjectKey> = ctx
        .topo()
        .bundles_by_repo
        .get(key)
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let old = repo.status.clone().unwrap_or_default();
    let view = Owner {
        conditions: &old.conditions,
        summary: &old.summary,
        ready_clusters: old.ready_clusters,
        desired_ready_clusters: old.desired_ready_clusters,
        shown: &old.display.ready_clusters,
        state: &old.display.state,
        message: &old.display.message,
        generation: repo.metadata.generation,
    };
    write_owner(ctx, key, "GitRepo", &*repo, view, &bundles).await
}

/// Applies an owner's status fields when they changed, then publishes an
/// Event when a Bundle problem newly stalls it.
async fn write_owner<K>(
    ctx: &Context,
    key: &ObjectKey,
    kind: &'static str,
    owner: &K,
    view: Owner<'_>,
    bundles: &[ObjectKey],
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let old_conditions = view.conditions;
    let Some(status) = owner_status(ctx, view, bundles, rollup(ctx, bundles)) else {
        return Ok(());
    };
    let blocked = bundle_problem_event(old_conditions, &status);
    apply_status::<K>(ctx, key, kind, status, STATUS_FIELD_MANAGER).await?;
    if let Some((reason, message)) = blocked {
        ctx.events
            .warning(&owner.object_ref(&()), reason, &message)
            .await;
    }
    Ok(())
}

/// A Bundle problem newly stalling an owner (targets that do not parse,
/// deployments the API refused), for its Event; the owner's controller
/// publishes its own failures.
fn bundle_problem_event(old: &[Condition], new: &Value) -> Option<(&'static str, String)> {
    let now = new["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == condition::STALLED && c["status"] == "True")?;
    let (reason, message) = (now["reason"].as_str()?, now["message"].as_str()?);
    let reason = match reason {
        "InvalidTargets" => "InvalidTargets",
        "DeploymentWriteFailed" => "DeploymentWriteFailed",
        _ => return None,
    };
    let seen = old.iter().any(|c| {
        c.type_ == condition::STALLED
            && c.status == "True"
            && c.reason == reason
            && c.message == message
    });
    (!seen).then(|| (reason, message.to_owned()))
}

/// A HelmOp's one Bundle has its name.
async fn helmop(ctx: &Context, key: &ObjectKey) -> Result<(), Error> {
    let Some(op) = ctx.helmops.get(key) else {
        return Ok(());
    };
    let owner = crate::bundles::OwnerKey {
        kind: crate::bundles::OwnerKind::HelmOp,
        key: key.clone(),
    };
    let mine = ctx
        .bundles
        .get(key)
        .is_some_and(|b| crate::bundles::OwnerKind::of_bundle(&b).as_ref() == Some(&owner));
    let bundles: Vec<ObjectKey> = mine.then(|| key.clone()).into_iter().collect();
    let old = op.status.clone().unwrap_or_default();
    let view = Owner {
        conditions: &old.conditions,
        summary: &old.summary,
        ready_clusters: old.ready_clusters,
        desired_ready_clusters: old.desired_ready_clusters,
        shown: &old.display.ready_clusters,
        state: &old.display.state,
        message: &old.display.message,
        generation: op.metadata.generation,
    };
    write_owner(ctx, key, "HelmOp", &*op, view, &bundles).await
}
