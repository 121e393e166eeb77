//! Workload readiness, simulated. The embedded downstream API servers of
//! `flotilla dev` run no kubelet and no workload controllers, so nothing
//! would ever report a Deployment available. This loop stands in for them:
//! a short while after a Deployment, StatefulSet or DaemonSet is written,
//! it sets the status a real cluster would report once every replica runs,
//! and a Job's once it completed (Helm hooks wait for their Jobs).
//! It is a simulation, for demos and tests only; on a real cluster the
//! workload controllers do this.
//!
//! What wakes it: a watch per kind. What it writes: the status subresource,
//! only when the status differs from the simulated one, so its own writes
//! wake it once and change nothing. A workload annotated
//! `flotilla.dev/simulate-ready: "false"` is left alone and never turns
//! ready (to see a NotReady cluster in the demo).

use flotilla_api::k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use flotilla_api::k8s_openapi::api::batch::v1::Job;
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The annotation that keeps a workload from being marked ready.
pub const SIMULATE_READY: &str = "flotilla.dev/simulate-ready";

/// The status a finished rollout of `obj` reports, or None when `obj` is
/// not a simulated kind or opts out. Pure.
pub fn simulated_status(obj: &Value) -> Option<Value> {
    let annotations = &obj["metadata"]["annotations"];
    if annotations[SIMULATE_READY] == "false" {
        return None;
    }
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    match obj["kind"].as_str()? {
        "Deployment" => Some(json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability (simulated)."},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": "ReplicaSet has successfully progressed (simulated)."},
            ],
        })),
        "StatefulSet" => {
            let revision = format!(
                "{}-{generation}",
                obj["metadata"]["name"].as_str().unwrap_or("statefulset")
            );
            Some(json!({
                "observedGeneration": generation,
                "replicas": replicas,
                "readyReplicas": replicas,
                "currentReplicas": replicas,
                "updatedReplicas": replicas,
                "availableReplicas": replicas,
                "currentRevision": revision,
                "updateRevision": revision,
            }))
        }
        // One simulated node.
        "DaemonSet" => Some(json!({
            "observedGeneration": generation,
            "desiredNumberScheduled": 1,
            "currentNumberScheduled": 1,
            "updatedNumberScheduled": 1,
            "numberReady": 1,
            "numberAvailable": 1,
            "numberMisscheduled": 0,
        })),
        // Runs to completion: Helm hook Jobs wait for this.
        "Job" => {
            let completions = obj["spec"]["completions"].as_i64().unwrap_or(1);
            Some(json!({
                "succeeded": completions,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods (simulated)."},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods (simulated)."},
                ],
            }))
        }
        _ => None,
    }
}

/// Does `have` already hold everything `want` says? Objects compare key by
/// key, lists item by item, so server-added fields (condition timestamps)
/// do not count as a difference.
fn covers(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| covers(h.get(k).unwrap_or(&Value::Null), v)),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(h, w)| covers(h, w))
        }
        // Go leaves zero counts out.
        (Value::Null, Value::Number(n)) => n.as_i64() == Some(0),
        (h, w) => h == w,
    }
}

/// The status patch `obj` needs, if any.
pub fn needed(obj: &Value) -> Option<Value> {
    let want = simulated_status(obj)?;
    (!covers(&obj["status"], &want)).then_some(want)
}

/// Runs the simulation against one cluster until the task is dropped.
/// `delay` is how long a rollout takes.
pub async fn run(client: kube::Client, delay: Duration) {
    let kinds = [
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<DaemonSet>(&()),
        ApiResource::erase::<Job>(&()),
    ];
    let pending: Arc<Mutex<HashSet<(String, String, String)>>> = Arc::default();
    let streams = kinds.into_iter().map(|ar| {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .map(move |ev| (ar.clone(), ev))
            .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    while let Some((ar, ev)) = events.next().await {
        let obj = match ev {
            Ok(obj) => obj,
            Err(e) => {
                tracing::debug!(error = %e, kind = %ar.kind, "simulation watch error; retrying");
                continue;
            }
        };
        let (Some(ns), Some(name)) = (obj.metadata.namespace.clone(), obj.metadata.name.clone())
        else {
            continue;
        };
        let value = with_kind(&obj, &ar);
        if needed(&value).is_none() {
            continue;
        }
        let key = (ar.kind.clone(), ns.clone(), name.clone());
        if !pending.lock().expect("pending").insert(key.clone()) {
            continue;
        }
        let (client, pending) = (client.clone(), Arc::clone(&pending));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            pending.lock().expect("pending").remove(&key);
            let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
            // Re-read: the object may have changed or gone meanwhile.
            let Ok(Some(obj)) = api.get_opt(&name).await else {
                return;
            };
            let Some(status) = needed(&with_kind(&obj, &ar)) else {
                return;
            };
            let patch = json!({"status": status});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::debug!(kind = %ar.kind, namespace = %ns, %name, "simulated a finished rollout")
                }
                Err(e) => {
                    tracing::warn!(kind = %ar.kind, namespace = %ns, %name, error = %e, "simulating readiness failed")
                }
            }
        });
    }
}

fn with_kind(obj: &DynamicObject, ar: &ApiResource) -> Value {
    let mut value = serde_json::to_value(obj).unwrap_or(Value::Null);
    value["kind"] = Value::String(ar.kind.clone());
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_status_table() {
        let rows = [
            (
                json!({"kind": "Deployment", "metadata": {"name": "w", "generation": 2}, "spec": {"replicas": 3}}),
                Some((
                    "/availableReplicas",
                    json!(3),
                    "/observedGeneration",
                    json!(2),
                )),
            ),
            (
                json!({"kind": "StatefulSet", "metadata": {"name": "db", "generation": 4}, "spec": {}}),
                Some(("/readyReplicas", json!(1), "/updateRevision", json!("db-4"))),
            ),
            (
                json!({"kind": "DaemonSet", "metadata": {"name": "d", "generation": 1}, "spec": {}}),
                Some((
                    "/numberAvailable",
                    json!(1),
                    "/desiredNumberScheduled",
                    json!(1),
                )),
            ),
            (
                json!({"kind": "Job", "metadata": {"name": "migrate", "generation": 1}, "spec": {"completions": 2}}),
                Some((
                    "/succeeded",
                    json!(2),
                    "/conditions/1/type",
                    json!("Complete"),
                )),
            ),
            (
                json!({"kind": "ConfigMap", "metadata": {"name": "c"}}),
                None,
            ),
            (
                json!({"kind": "Deployment", "metadata": {"name": "w", "generation": 1,
                        "annotations": {SIMULATE_READY: "false"}}, "spec": {}}),
                None,
            ),
        ];
        for (obj, want) in rows {
            let got = simulated_status(&obj);
            match want {
                None => assert_eq!(got, None, "{obj}"),
                Some((p1, v1, p2, v2)) => {
                    let got = got.expect("a status");
                    assert_eq!(got.pointer(p1), Some(&v1), "{obj}");
                    assert_eq!(got.pointer(p2), Some(&v2), "{obj}");
                }
            }
        }
    }

    #[test]
    fn the_simulated_status_is_ready_to_the_agent() {
        for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
            let mut obj = json!({"apiVersion": "apps/v1", "kind": kind,
                "metadata": {"name": "w", "generation": 3}, "spec": {"replicas": 2}});
            assert!(
                flotilla_agent::readiness::readiness(&obj, None).is_err(),
                "{kind}"
            );
            obj["status"] = simulated_status(&obj).unwrap();
            assert_eq!(
                flotilla_agent::readiness::readiness(&obj, None),
                Ok(()),
                "{kind}"
            );
        }
    }

    #[test]
    fn a_simulated_job_completes_a_helm_hook() {
        let mut job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "migrate", "generation": 1}, "spec": {}});
        assert_eq!(
            flotilla_agent::hooks::progress(&job),
            flotilla_agent::hooks::Progress::Running
        );
        job["status"] = simulated_status(&job).unwrap();
        assert_eq!(
            flotilla_agent::hooks::progress(&job),
            flotilla_agent::hooks::Progress::Succeeded
        );
    }

    #[test]
    fn a_written_status_needs_nothing_more_until_the_generation_moves() {
        let mut obj =
            json!({"kind": "Deployment", "metadata": {"name": "w", "generation": 1}, "spec": {}});
        let mut status = needed(&obj).expect("a fresh Deployment needs a status");
        // What the server adds does not count as a difference.
        status["conditions"][0]["lastTransitionTime"] = json!("2026-01-01T00:00:00Z");
        obj["status"] = status;
        assert_eq!(needed(&obj), None);
        obj["metadata"]["generation"] = json!(2);
        assert!(needed(&obj).is_some());
        obj["metadata"]["generation"] = json!(2);
        obj["spec"]["replicas"] = json!(0);
        obj["status"] = json!({"observedGeneration": 2, "conditions": simulated_status(&obj).unwrap()["conditions"]});
        assert_eq!(needed(&obj), None, "zero counts are left out, as Go does");
    }
}
