//! `dependsOn`: which bundles must be Ready here first.

use super::*;

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

pub(super) fn bundle_name(bd: &BundleDeployment) -> &str {
    bd.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(keys::BUNDLE_NAME))
        .or(bd.metadata.name.as_ref())
        .map(String::as_str)
        .unwrap_or_default()
}

pub(super) fn refers_to(r: &flotilla_api::BundleRef, dep: &BundleDeployment) -> bool {
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
            let accepted = if r.accepted_states.is_empty() {
                state == BundleState::Ready
            } else {
                r.accepted_states.iter().any(|s| s == state.as_str())
            };
            if !accepted {
                out.insert(format!("{} ({state})", bundle_name(d)));
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::BundleRef;

    #[test]
    fn dependencies_wait_until_ready() {
        let app = test_bd("app", "x", None, &["db", "cache"]);
        let db_ready = test_bd("db", "d", Some(("d", true, true)), &[]);
        let db_rolling = test_bd("db", "d", Some(("d", false, true)), &[]);
        let all = vec![Arc::clone(&app), Arc::clone(&db_rolling)];
        assert_eq!(
            unready_dependencies(&app, &all),
            ["cache (not deployed)", "db (NotReady)"]
        );
        assert!(depends_on(&app, "db", &all));
        assert!(!depends_on(&db_rolling, "app", &all));
        let app_db_only = test_bd("app", "x", None, &["db"]);
        assert!(unready_dependencies(&app_db_only, &[db_ready]).is_empty());
    }

    #[test]
    fn dependencies_by_selector() {
        let mut app = (*test_bd("app", "x", None, &[])).clone();
        app.spec.depends_on = vec![BundleRef {
            name: None,
            selector: Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some(BTreeMap::from([("tier".into(), "data".into())])),
                    ..Default::default()
                },
            ),
            accepted_states: Vec::new(),
        }];
        let mut db = (*test_bd("db", "d", Some(("d", false, true)), &[])).clone();
        db.metadata.labels = Some(BTreeMap::from([("tier".into(), "data".into())]));
        let all = vec![Arc::new(db)];
        assert_eq!(unready_dependencies(&app, &all), ["db (NotReady)"]);
        assert!(
            unready_dependencies(&app, &[]).is_empty(),
            "a selector matching nothing asks for nothing"
        );
    }
}
