//! Judging a deployment (readiness, drift) and writing the
//! BundleDeployment's status when it changed.

use super::*;

/// Readiness and drift of a deployment's objects, from the live map.
pub(crate) struct Assessment {
    pub ready: bool,
    pub non_modified: bool,
    pub non_ready: Vec<NonReadyStatus>,
    pub modified: Vec<ModifiedStatus>,
    /// Objects that are missing or differ.
    pub drifted: HashSet<ObjKey>,
}

pub(super) fn assess(
    deployed: &Deployed,
    inner: &Inner,
    options: &BundleDeploymentOptions,
) -> Assessment {
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
    // Values read from a Secret may be anywhere in the rendered objects.
    let secret_values = options
        .helm
        .as_ref()
        .is_some_and(|h| h.values_from.iter().any(|v| v.secret_key_ref.is_some()));
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
        let hide_values = secret_values || m.key.kind == "Secret";
        let diffs = drift(obj, &live, patches, hide_values);
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
    pub(super) fn failed(reason: &'static str, message: String) -> Self {
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

pub(super) async fn write_status(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn drift_never_quotes_a_secret_or_values_read_from_one() {
        let secret = |v: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "a"}, "data": {"password": v}});
        let key = |o: &Value| Member::of(o).unwrap().key;
        let (want, have) = (secret("aHVudGVyMg=="), secret("c2VjcmV0"));
        let a = assess_with(
            std::slice::from_ref(&want),
            |k| (*k == key(&have)).then(|| Arc::new(have.clone())),
            &BundleDeploymentOptions::default(),
        );
        assert_eq!(
            a.modified[0].patch,
            "data.password: applied (value hidden), found (value hidden)"
        );

        // A ConfigMap rendered from values that came from a Secret.
        let from_secret = BundleDeploymentOptions {
            helm: Some(flotilla_api::HelmOptions {
                values_from: vec![flotilla_api::ValuesFrom {
                    secret_key_ref: Some(flotilla_api::KeyRef {
                        name: "creds".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let (want, have) = (cm("c", "token-1"), cm("c", "token-2"));
        let a = assess_with(
            std::slice::from_ref(&want),
            |k| (*k == key(&have)).then(|| Arc::new(have.clone())),
            &from_secret,
        );
        assert_eq!(
            a.modified[0].patch,
            "data.k: applied (value hidden), found (value hidden)"
        );
        assert!(!a.modified[0].patch.contains("token"));
    }

    #[test]
    fn next_status_is_stable_and_reports_errors() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let b = test_bd("app", "v2", Some(("v1", true, true)), &[]);
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
