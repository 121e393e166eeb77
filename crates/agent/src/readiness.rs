//! Is an applied object ready? Pure: the live object in, a verdict out.
//!
//! - Deployment, StatefulSet, DaemonSet: the rollout is complete, judged
//!   as `kubectl rollout status` does, and only once the controller has
//!   observed the current generation;
//! - Job: complete (a failed Job says so);
//! - any other kind with `status.conditions`: its `Ready` condition;
//! - anything else: ready once applied.
//!
//! Conditions matching an entry of `ignore.conditions` never count against
//! readiness.

use flotilla_api::IgnoreOptions;
use serde_json::Value;

/// `Ok(())` when ready, otherwise why not, in a short sentence.
pub fn readiness(obj: &Value, ignore: Option<&IgnoreOptions>) -> Result<(), String> {
    let group = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .map(|(g, _)| g)
        .unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let status = obj.get("status").unwrap_or(&Value::Null);
    match (group, kind) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet") => {
            observed(obj)?;
            match kind {
                "Deployment" => deployment(obj, status),
                "StatefulSet" => statefulset(obj, status),
                _ => daemonset(status),
            }
        }
        ("batch", "Job") => job(status),
        _ => ready_condition(status, ignore),
    }
}

fn int(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_i64()
}

fn observed(obj: &Value) -> Result<(), String> {
    let generation = int(obj, &["metadata", "generation"]).unwrap_or(0);
    let observed = int(obj, &["status", "observedGeneration"]).unwrap_or(0);
    if observed < generation {
        return Err("waiting for the controller to observe the new generation".into());
    }
    Ok(())
}

fn conditions(status: &Value) -> impl Iterator<Item = &Value> {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn deployment(obj: &Value, status: &Value) -> Result<(), String> {
    if let Some(c) = conditions(status).find(|c| c["type"] == "Progressing")
        && c["reason"] == "ProgressDeadlineExceeded"
    {
        return Err(format!(
            "rollout exceeded its progress deadline: {}",
            c["message"].as_str().unwrap_or_default()
        ));
    }
    let want = int(obj, &["spec", "replicas"]).unwrap_or(1);
    let updated = int(status, &["updatedReplicas"]).unwrap_or(0);
    let total = int(status, &["replicas"]).unwrap_or(0);
    let available = int(status, &["availableReplicas"]).unwrap_or(0);
    if updated < want {
        return Err(format!("{updated} of {want} replicas updated"));
    }
    if total > updated {
        return Err(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if available < updated {
        return Err(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Ok(())
}

fn statefulset(obj: &Value, status: &Value) -> Result<(), String> {
    let want = int(obj, &["spec", "replicas"]).unwrap_or(1);
    let ready = int(status, &["readyReplicas"]).unwrap_or(0);
    if ready < want {
        return Err(format!("{ready} of {want} replicas ready"));
    }
    let on_delete = obj["spec"]["updateStrategy"]["type"] == "OnDelete";
    let updated = int(status, &["updatedReplicas"]).unwrap_or(0);
    let current = status.get("currentRevision");
    if !on_delete && (updated < want || current != status.get("updateRevision")) {
        return Err(format!("{updated} of {want} replicas updated"));
    }
    Ok(())
}

fn daemonset(status: &Value) -> Result<(), String> {
    let want = int(status, &["desiredNumberScheduled"]).unwrap_or(0);
    let updated = int(status, &["updatedNumberScheduled"]).unwrap_or(0);
    let available = int(status, &["numberAvailable"]).unwrap_or(0);
    if updated < want {
        return Err(format!("{updated} of {want} pods updated"));
    }
    if available < want {
        return Err(format!("{available} of {want} pods available"));
    }
    Ok(())
}

fn job(status: &Value) -> Result<(), String> {
    let is = |t: &str| conditions(status).find(|c| c["type"] == t && c["status"] == "True");
    if let Some(failed) = is("Failed") {
        return Err(format!(
            "job failed: {}",
            failed["message"].as_str().unwrap_or_default()
        ));
    }
    if is("Complete").is_some() {
        return Ok(());
    }
    Err("job not complete".into())
}

fn ignored(c: &Value, ignore: Option<&IgnoreOptions>) -> bool {
    ignore.is_some_and(|i| {
        i.conditions.iter().any(|want| {
            !want.is_empty()
                && want
                    .iter()
                    .all(|(k, v)| c.get(k).and_then(Value::as_str) == Some(v.as_str()))
        })
    })
}

fn ready_condition(status: &Value, ignore: Option<&IgnoreOptions>) -> Result<(), String> {
    match conditions(status).find(|c| c["type"] == "Ready" && !ignored(c, ignore)) {
        Some(c) if c["status"] != "True" => Err(c["message"]
            .as_str()
            .filter(|m| !m.is_empty())
            .or(c["reason"].as_str())
            .unwrap_or("Ready is not True")
            .to_owned()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn deploy(generation: i64, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "generation": generation},
               "spec": {"replicas": 2}, "status": status})
    }

    #[test]
    fn readiness_table() {
        let rows: Vec<(&str, Value, Result<(), &str>)> = vec![
            (
                "deployment complete",
                deploy(
                    2,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
                ),
                Ok(()),
            ),
            (
                "deployment not observed yet",
                deploy(
                    3,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
                ),
                Err("waiting for the controller to observe the new generation"),
            ),
            (
                "deployment rolling",
                deploy(
                    2,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}),
                ),
                Err("1 of 2 replicas updated"),
            ),
            (
                "deployment old replicas",
                deploy(
                    2,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
                ),
                Err("1 old replicas pending termination"),
            ),
            (
                "deployment unavailable",
                deploy(
                    2,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                ),
                Err("1 of 2 updated replicas available"),
            ),
            (
                "deployment past its deadline",
                deploy(
                    2,
                    json!({"observedGeneration": 2, "conditions": [
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]}),
                ),
                Err("rollout exceeded its progress deadline: too slow"),
            ),
            (
                "statefulset ready",
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"generation": 1}, "spec": {"replicas": 1},
                       "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "a"}}),
                Ok(()),
            ),
            (
                "statefulset mid-update",
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"generation": 1}, "spec": {"replicas": 1},
                       "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 0, "currentRevision": "a", "updateRevision": "b"}}),
                Err("0 of 1 replicas updated"),
            ),
            (
                "daemonset unavailable",
                json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"generation": 1},
                       "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2}}),
                Err("2 of 3 pods available"),
            ),
            (
                "daemonset ready",
                json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"generation": 1},
                       "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}}),
                Ok(()),
            ),
            (
                "job complete",
                json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
                Ok(()),
            ),
            (
                "job running",
                json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"active": 1}}),
                Err("job not complete"),
            ),
            (
                "job failed",
                json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}}),
                Err("job failed: BackoffLimitExceeded"),
            ),
            (
                "custom kind not ready",
                json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": {"conditions": [{"type": "Ready", "status": "False", "message": "warming up"}]}}),
                Err("warming up"),
            ),
            (
                "custom kind ready",
                json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                Ok(()),
            ),
            (
                "conditions without Ready",
                json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": {"conditions": [{"type": "Synced", "status": "False"}]}}),
                Ok(()),
            ),
            (
                "no status at all",
                json!({"apiVersion": "v1", "kind": "ConfigMap"}),
                Ok(()),
            ),
        ];
        for (what, obj, want) in rows {
            assert_eq!(readiness(&obj, None), want.map_err(String::from), "{what}");
        }
    }

    #[test]
    fn ignored_conditions_do_not_count() {
        let obj = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Flapping"}]}});
        assert_eq!(readiness(&obj, None), Err("Flapping".into()));
        let ignore = IgnoreOptions {
            conditions: vec![BTreeMap::from([
                ("type".to_string(), "Ready".to_string()),
                ("status".to_string(), "False".to_string()),
            ])],
        };
        assert_eq!(readiness(&obj, Some(&ignore)), Ok(()));
        let other = IgnoreOptions {
            conditions: vec![BTreeMap::from([("type".to_string(), "Synced".to_string())])],
        };
        assert!(readiness(&obj, Some(&other)).is_err());
    }
}
