//! What a HelmOp asks for, checked where it enters: its chart source, the
//! Bundle it makes (before its chart is resolved), and whether it polls.
//! Pure: no I/O.

use flotilla_api::{BundleTarget, HelmOp, keys};
use flotilla_bundle::{BundleKind, CompiledBundle};
use flotilla_charts::ChartSource;
use kube::ResourceExt;
use std::time::Duration;

/// The shortest and longest polling intervals.
const MIN_POLL: Duration = Duration::from_secs(1);
const MAX_POLL: Duration = Duration::from_secs(24 * 3600);

/// A HelmOp, checked.
#[derive(Debug)]
pub struct Plan {
    pub source: ChartSource,
    /// Its Bundle, the chart not yet resolved into it.
    pub bundle: CompiledBundle,
    /// How often its version range is resolved again, if at all.
    pub poll: Option<Duration>,
}

/// Checks a HelmOp as Fleet does, and more: what is wrong, naming the
/// field, or its plan.
pub fn plan(op: &HelmOp) -> Result<Plan, String> {
    let spec = &op.spec;
    let helm = spec.bundle.options.helm.clone().unwrap_or_default();
    fn set(s: &Option<String>) -> Option<&str> {
        s.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
    let repo = set(&helm.repo);
    let chart = set(&helm.chart);
    // Fleet writes an OCI chart as `repo: oci://host/path/chart` with no
    // chart; a chart under an oci:// repository is accepted too.
    let oci_repo = repo.is_some_and(|r| r.starts_with("oci://"));
    if chart.is_none() && !oci_repo {
        return Err(
            "spec.helm.chart is required (or spec.helm.repo as an oci:// reference)".into(),
        );
    }
    if repo.is_some() && chart.is_some_and(|c| c.contains("://")) {
        return Err(
            "spec.helm.chart is a URL: leave spec.helm.repo empty (an archive URL or an oci:// reference stands alone)"
                .into(),
        );
    }
    let source = ChartSource::of(repo, chart, helm.version.as_deref()).ok_or_else(|| {
        format!(
            "spec.helm.chart {:?} is not a chart in spec.helm.repo, an oci:// reference or an https:// archive URL (a HelmOp has no repository to hold a chart)",
            chart.unwrap_or_default()
        )
    })?;
    let version = set(&helm.version);
    match &source {
        ChartSource::Url { .. } if version.is_some() || set(&helm.repo).is_some() => {
            return Err(
                "spec.helm.version and spec.helm.repo must be empty when spec.helm.chart is an archive URL"
                    .into(),
            );
        }
        _ => {}
    }
    if let Some(v) = version {
        flotilla_charts::constraint::Constraint::parse(v)
            .map_err(|e| format!("spec.helm.version: {e}"))?;
    }
    for k in spec.labels.keys() {
        if k.starts_with("flotilla.dev/") || k == keys::MANAGED_BY {
            return Err(format!(
                "spec.labels: {k:?} is reserved for Flotilla's own use"
            ));
        }
    }
    let poll = match spec.polling_interval.as_deref().map(str::trim) {
        None | Some("" | "0") => None,
        Some(text) => {
            let d = crate::gitrepo::parse_go_duration(text)
                .map_err(|e| format!("spec.pollingInterval: {e}"))?;
            if d.is_zero() {
                None
            } else if !(MIN_POLL..=MAX_POLL).contains(&d) {
                return Err(format!(
                    "spec.pollingInterval: {text:?} must be 0 (off) or between 1s and 24h"
                ));
            } else {
                Some(d)
            }
        }
    };
    // An exact version or an archive URL cannot move: nothing to poll.
    let movable = !matches!(source, ChartSource::Url { .. })
        && !version.is_some_and(flotilla_charts::constraint::is_exact);
    let mut bundle_spec = spec.bundle.clone();
    bundle_spec.content_id = String::new();
    if bundle_spec.targets.is_empty() {
        bundle_spec.targets = flotilla_targeting::effective_targets(&[])
            .iter()
            .map(BundleTarget::from)
            .collect();
    }
    Ok(Plan {
        source,
        bundle: CompiledBundle {
            name: op.name_any(),
            dir: String::new(),
            kind: BundleKind::Helm,
            labels: spec.labels.clone(),
            annotations: Default::default(),
            spec: bundle_spec,
            content: Default::default(),
            warnings: Vec::new(),
        },
        poll: poll.filter(|_| movable),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(spec: serde_json::Value) -> HelmOp {
        serde_json::from_value(json!({
            "apiVersion": "flotilla.dev/v1alpha1",
            "kind": "HelmOp",
            "metadata": {"name": "redis", "namespace": "fleet-default"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn helmop_specs_table() {
        let rows: Vec<(serde_json::Value, Result<Option<u64>, &str>)> = vec![
            (
                json!({"helm": {"repo": "https://charts.example.com", "chart": "redis", "version": "~17"}, "pollingInterval": "1m"}),
                Ok(Some(60)),
            ),
            (
                json!({"helm": {"repo": "https://charts.example.com", "chart": "redis", "version": "17.3.2"}, "pollingInterval": "1m"}),
                Ok(None),
            ),
            (
                json!({"helm": {"chart": "oci://registry.example.com/charts/redis"}, "pollingInterval": "30s"}),
                Ok(Some(30)),
            ),
            (
                json!({"helm": {"chart": "https://example.com/redis-17.3.2.tgz"}, "pollingInterval": "30s"}),
                Ok(None),
            ),
            (
                json!({"helm": {"repo": "https://charts.example.com", "chart": "redis"}, "pollingInterval": "0"}),
                Ok(None),
            ),
            (
                json!({"helm": {"repo": "https://charts.example.com"}}),
                Err("spec.helm.chart is required"),
            ),
            (json!({}), Err("spec.helm.chart is required")),
            (
                json!({"helm": {"repo": "oci://registry.example.com/charts/redis", "version": "~17"}, "pollingInterval": "5m"}),
                Ok(Some(300)),
            ),
            (
                json!({"helm": {"repo": "https://charts.example.com", "chart": "https://example.com/redis-1.0.0.tgz"}}),
                Err("leave spec.helm.repo empty"),
            ),
            (
                json!({"helm": {"chart": "./local"}}),
                Err("no repository to hold a chart"),
            ),
            (
                json!({"helm": {"chart": "https://example.com/redis-1.0.0.tgz", "version": "1.0.0"}}),
                Err("must be empty when spec.helm.chart is an archive URL"),
            ),
            (
                json!({"helm": {"repo": "https://charts.example.com", "chart": "redis", "version": ">=> 1"}}),
                Err("spec.helm.version"),
            ),
            (
                json!({"helm": {"repo": "https://charts.example.com", "chart": "redis"}, "pollingInterval": "soon"}),
                Err("spec.pollingInterval"),
            ),
            (
                json!({"helm": {"repo": "https://charts.example.com", "chart": "redis"}, "pollingInterval": "100ms"}),
                Err("between 1s and 24h"),
            ),
            (
                json!({"helm": {"repo": "https://charts.example.com", "chart": "redis"}, "labels": {"flotilla.dev/repo-name": "x"}}),
                Err("reserved"),
            ),
        ];
        for (spec, want) in rows {
            let got = plan(&op(spec.clone()));
            match (got, want) {
                (Ok(p), Ok(poll)) => assert_eq!(p.poll.map(|d| d.as_secs()), poll, "{spec}"),
                (Err(e), Err(why)) => assert!(e.contains(why), "{spec}: {e}"),
                (got, want) => panic!("{spec}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_bundle_takes_the_spec_with_the_default_group_when_no_target_is_named() {
        let p = plan(&op(json!({
            "helm": {"repo": "https://charts.example.com", "chart": "redis", "version": "~17", "values": {"a": 1}},
            "defaultNamespace": "cache",
            "contentId": "s-ignored",
            "labels": {"team": "data"},
        })))
        .unwrap();
        let b = &p.bundle;
        assert_eq!(b.name, "redis");
        assert_eq!(b.kind, BundleKind::Helm);
        assert_eq!(b.labels["team"], "data");
        assert_eq!(b.spec.content_id, "", "the controller sets it");
        assert_eq!(b.spec.options.default_namespace.as_deref(), Some("cache"));
        assert_eq!(b.spec.targets.len(), 1);
        assert_eq!(
            b.spec.targets[0].criteria.cluster_group.as_deref(),
            Some("default")
        );
        assert!(matches!(p.source, ChartSource::Repo { .. }));
    }
}
