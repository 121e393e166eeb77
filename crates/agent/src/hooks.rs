//! Helm hooks, which `helm template` emits as plain objects annotated
//! `helm.sh/hook`. Flotilla renders with `helm template`, so it runs them
//! itself, as Helm would on install and upgrade:
//!
//! - `pre-install` / `pre-upgrade` hooks are applied before everything
//!   else, in `helm.sh/hook-weight` order (then name), each waited for (a
//!   Job until it completes, a Pod until it succeeds) before the next; one
//!   that fails stops the deployment, and is not run again for it;
//! - `post-install` / `post-upgrade` hooks run once the rest is Ready;
//! - `helm.sh/hook-delete-policy`: `before-hook-creation` (the default)
//!   deletes the previous object first, `hook-succeeded` deletes it once
//!   every hook of the event succeeded, `hook-failed` when it failed; a
//!   CRD hook is never deleted;
//! - `test` hooks are never applied, nor are delete and rollback hooks
//!   (there is no Helm release to delete or roll back);
//! - hooks are not in the inventory: like Helm, Flotilla does not prune
//!   them; their delete policy decides.
//!
//! Objects annotated `helm.sh/resource-policy: keep` are never pruned.
//! This module is pure: which hooks run when, and whether one finished.

use serde_json::Value;

pub const HOOK: &str = "helm.sh/hook";
pub const HOOK_WEIGHT: &str = "helm.sh/hook-weight";
pub const HOOK_DELETE_POLICY: &str = "helm.sh/hook-delete-policy";
pub const RESOURCE_POLICY: &str = "helm.sh/resource-policy";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    PreInstall,
    PostInstall,
    PreUpgrade,
    PostUpgrade,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::PreInstall => "pre-install",
            Event::PostInstall => "post-install",
            Event::PreUpgrade => "pre-upgrade",
            Event::PostUpgrade => "post-upgrade",
        }
    }
}

/// Whether this deployment installs (nothing applied yet) or upgrades.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Install,
    Upgrade,
}

impl Phase {
    pub fn pre(self) -> Event {
        match self {
            Phase::Install => Event::PreInstall,
            Phase::Upgrade => Event::PreUpgrade,
        }
    }

    pub fn post(self) -> Event {
        match self {
            Phase::Install => Event::PostInstall,
            Phase::Upgrade => Event::PostUpgrade,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Install => "install",
            Phase::Upgrade => "upgrade",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        match s {
            "install" => Some(Phase::Install),
            "upgrade" => Some(Phase::Upgrade),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hook {
    pub events: Vec<Event>,
    pub weight: i64,
    pub delete_before: bool,
    pub delete_on_success: bool,
    pub delete_on_failure: bool,
    pub object: Value,
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// Splits rendered objects into resources and hooks, dropping the hooks
/// that never run here (`test`, delete and rollback hooks).
pub fn split(objects: Vec<Value>) -> (Vec<Value>, Vec<Hook>) {
    let mut resources = Vec::new();
    let mut hooks = Vec::new();
    for obj in objects {
        let Some(spec) = annotation(&obj, HOOK) else {
            resources.push(obj);
            continue;
        };
        let events: Vec<Event> = spec
            .split(',')
            .filter_map(|e| match e.trim() {
                "pre-install" => Some(Event::PreInstall),
                "post-install" => Some(Event::PostInstall),
                "pre-upgrade" => Some(Event::PreUpgrade),
                "post-upgrade" => Some(Event::PostUpgrade),
                _ => None,
            })
            .collect();
        if events.is_empty() {
            continue; // test, delete or rollback hooks only
        }
        let weight = annotation(&obj, HOOK_WEIGHT)
            .and_then(|w| w.trim().parse().ok())
            .unwrap_or(0);
        let policies: Vec<&str> = annotation(&obj, HOOK_DELETE_POLICY)
            .map(|p| p.split(',').map(str::trim).collect())
            .unwrap_or_default();
        // Helm never deletes a CRD hook, whatever its policy says: that
        // would delete every object of its kind.
        let deletable = obj["kind"] != "CustomResourceDefinition";
        hooks.push(Hook {
            events,
            weight,
            // Helm's default when no policy is given.
            delete_before: deletable
                && (policies.is_empty() || policies.contains(&"before-hook-creation")),
            delete_on_success: deletable && policies.contains(&"hook-succeeded"),
            delete_on_failure: deletable && policies.contains(&"hook-failed"),
            object: obj,
        });
    }
    (resources, hooks)
}

/// The hooks of one event, in the order Helm runs them: by weight, then
/// name (a stable sort, so equal ones keep their rendered order).
pub fn for_event(hooks: &[Hook], event: Event) -> Vec<&Hook> {
    let mut out: Vec<&Hook> = hooks.iter().filter(|h| h.events.contains(&event)).collect();
    let key = |h: &Hook| {
        (
            h.weight,
            h.object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        )
    };
    out.sort_by_key(|h| key(h));
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    Running,
    Succeeded,
    Failed(String),
}

/// Whether a hook object is done, as Helm waits for it: a Job until it
/// completes, a Pod until it succeeds; anything else once applied.
pub fn progress(live: &Value) -> Progress {
    let conditions = live
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let condition = |t: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == t && c["status"] == "True")
    };
    match live["kind"].as_str().unwrap_or_default() {
        "Job" => {
            if let Some(c) = condition("Failed") {
                let why = c["message"]
                    .as_str()
                    .or(c["reason"].as_str())
                    .unwrap_or("failed");
                return Progress::Failed(why.to_owned());
            }
            // As Helm waits: the Job's conditions (a Job of several
            // completions is not done at its first success).
            let done = condition("Complete").is_some() || condition("SuccessCriteriaMet").is_some();
            if done {
                Progress::Succeeded
            } else {
                Progress::Running
            }
        }
        "Pod" => match live.pointer("/status/phase").and_then(Value::as_str) {
            Some("Succeeded") => Progress::Succeeded,
            Some("Failed") => Progress::Failed(
                live.pointer("/status/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the pod failed")
                    .to_owned(),
            ),
            _ => Progress::Running,
        },
        _ => Progress::Succeeded,
    }
}

/// Whether an object is kept when pruned (`helm.sh/resource-policy: keep`).
pub fn keep(obj: &Value) -> bool {
    annotation(obj, RESOURCE_POLICY).is_some_and(|p| p.trim() == "keep")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: &str, name: &str, annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "annotations": annotations}})
    }

    #[test]
    fn hooks_split_order_and_policies() {
        let (resources, hooks) = split(vec![
            obj("ConfigMap", "plain", json!({})),
            obj(
                "Job",
                "migrate",
                json!({HOOK: "pre-install,pre-upgrade", HOOK_WEIGHT: "5"}),
            ),
            obj(
                "Job",
                "seed",
                json!({HOOK: "pre-install", HOOK_WEIGHT: "-1", HOOK_DELETE_POLICY: "hook-succeeded"}),
            ),
            obj("Pod", "smoke", json!({HOOK: "test"})),
            obj(
                "Job",
                "notify",
                json!({HOOK: "post-install", HOOK_DELETE_POLICY: "before-hook-creation,hook-failed"}),
            ),
            obj("Job", "cleanup", json!({HOOK: "pre-delete"})),
        ]);
        assert_eq!(resources.len(), 1);
        assert_eq!(hooks.len(), 3, "test and delete hooks are dropped");
        let pre: Vec<&str> = for_event(&hooks, Event::PreInstall)
            .iter()
            .map(|h| h.object["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(pre, ["seed", "migrate"], "by weight");
        assert_eq!(for_event(&hooks, Event::PreUpgrade).len(), 1);
        let seed = &hooks[1];
        assert!(!seed.delete_before && seed.delete_on_success && !seed.delete_on_failure);
        let migrate = &hooks[0];
        assert!(migrate.delete_before, "before-hook-creation is the default");
        let notify = &hooks[2];
        assert!(notify.delete_before && notify.delete_on_failure);

        // Equal weights go by name, whatever the kind; a CRD hook is never
        // deleted.
        let (_, hooks) = split(vec![
            obj("ServiceAccount", "b", json!({HOOK: "pre-install"})),
            obj("Job", "a", json!({HOOK: "pre-install"})),
            obj(
                "CustomResourceDefinition",
                "c",
                json!({HOOK: "pre-install", HOOK_DELETE_POLICY: "hook-succeeded"}),
            ),
        ]);
        let pre: Vec<&str> = for_event(&hooks, Event::PreInstall)
            .iter()
            .map(|h| h.object["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(pre, ["a", "b", "c"]);
        assert!(!hooks[2].delete_before && !hooks[2].delete_on_success);
    }

    #[test]
    fn progress_table() {
        let rows = [
            (json!({"kind": "Job", "status": {}}), Progress::Running),
            (
                json!({"kind": "Job", "spec": {"completions": 3}, "status": {"succeeded": 1}}),
                Progress::Running,
            ),
            (
                json!({"kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
                Progress::Succeeded,
            ),
            (
                json!({"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}}),
                Progress::Failed("Job has reached the specified backoff limit".into()),
            ),
            (
                json!({"kind": "Pod", "status": {"phase": "Running"}}),
                Progress::Running,
            ),
            (
                json!({"kind": "Pod", "status": {"phase": "Succeeded"}}),
                Progress::Succeeded,
            ),
            (json!({"kind": "ConfigMap"}), Progress::Succeeded),
        ];
        for (live, want) in rows {
            assert_eq!(progress(&live), want, "{live}");
        }
        assert!(keep(&obj("Secret", "s", json!({RESOURCE_POLICY: "keep"}))));
        assert!(!keep(&obj("Secret", "s", json!({}))));
    }
}
