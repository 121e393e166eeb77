//! Applying target customizations to a bundle's options.
//!
//! Merge rules, applied once per chosen customization in order:
//! - a value the customization sets replaces the bundle's;
//! - Helm values and namespace labels/annotations merge deeply, the
//!   customization winning on conflicts;
//! - lists that accumulate (values files, overlays, compare patches,
//!   ignored conditions) are appended to;
//! - `keepResources` is kept once either side sets it.

use flotilla_api::serde_json::Value;
use flotilla_api::{BundleDeploymentOptions, HelmOptions, TargetCustomization};
use std::collections::BTreeMap;

/// The options a cluster gets: the bundle's, then each customization.
pub fn resolve_options<'a>(
    base: &BundleDeploymentOptions,
    customizations: impl IntoIterator<Item = &'a TargetCustomization>,
) -> BundleDeploymentOptions {
    let mut out = base.clone();
    out.normalize();
    for c in customizations {
        merge_options(&mut out, &c.options);
    }
    out
}

/// Merges `over` into `base`, `over` winning.
pub fn merge_options(base: &mut BundleDeploymentOptions, over: &BundleDeploymentOptions) {
    // Empty strings are unset, as in Fleet: they keep the bundle's value.
    let mut normalized = over.clone();
    normalized.normalize();
    let over = &normalized;
    base.normalize();
    replace(&mut base.default_namespace, &over.default_namespace);
    replace(&mut base.namespace, &over.namespace);
    replace(&mut base.kustomize, &over.kustomize);
    replace(&mut base.service_account, &over.service_account);
    if over.force_sync_generation != 0 {
        base.force_sync_generation = over.force_sync_generation;
    }
    base.keep_resources |= over.keep_resources;
    base.delete_crd_resources |= over.delete_crd_resources;
    replace(&mut base.correct_drift, &over.correct_drift);
    if let Some(h) = &over.helm {
        merge_helm(base.helm.get_or_insert_with(Default::default), h);
    }
    if let Some(y) = &over.yaml {
        let dst = base.yaml.get_or_insert_with(Default::default);
        dst.overlays.extend(y.overlays.iter().cloned());
    }
    if let Some(d) = &over.diff {
        let dst = base.diff.get_or_insert_with(Default::default);
        dst.compare_patches
            .extend(d.compare_patches.iter().cloned());
    }
    if let Some(i) = &over.ignore {
        let dst = base.ignore.get_or_insert_with(Default::default);
        dst.conditions.extend(i.conditions.iter().cloned());
    }
    merge_map(&mut base.namespace_labels, &over.namespace_labels);
    merge_map(&mut base.namespace_annotations, &over.namespace_annotations);
}

fn merge_helm(base: &mut HelmOptions, over: &HelmOptions) {
    replace(&mut base.chart, &over.chart);
    replace(&mut base.repo, &over.repo);
    replace(&mut base.release_name, &over.release_name);
    replace(&mut base.version, &over.version);
    replace(&mut base.timeout_seconds, &over.timeout_seconds);
    replace(&mut base.max_history, &over.max_history);
    base.values_files.extend(over.values_files.iter().cloned());
    // As Fleet: one entry per object and key, a customization's replacing
    // the bundle's.
    for from in &over.values_from {
        let id = |f: &flotilla_api::ValuesFrom| {
            f.config_map_key_ref
                .as_ref()
                .map(|r| ("configmap", r))
                .or(f.secret_key_ref.as_ref().map(|r| ("secret", r)))
                .filter(|(_, r)| !r.key.is_empty())
                .map(|(k, r)| (k, r.namespace.clone(), r.name.clone(), r.key.clone()))
        };
        match id(from).and_then(|i| {
            base.values_from
                .iter()
                .position(|b| id(b) == Some(i.clone()))
        }) {
            Some(at) => base.values_from[at] = from.clone(),
            None => base.values_from.push(from.clone()),
        }
    }
    base.template_values.extend(
        over.template_values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    match (&mut base.values, &over.values) {
        (Some(dst), Some(src)) => merge_values(dst, src),
        (dst @ None, Some(src)) => *dst = Some(src.clone()),
        (_, None) => {}
    }
    base.force |= over.force;
    base.take_ownership |= over.take_ownership;
    base.wait_for_jobs |= over.wait_for_jobs;
    base.atomic |= over.atomic;
    base.disable_pre_process |= over.disable_pre_process;
    base.disable_dns |= over.disable_dns;
    base.skip_schema_validation |= over.skip_schema_validation;
}

/// Deep merge as Helm does for values: objects merge key by key, anything
/// else is replaced.
pub fn merge_values(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(dst), Value::Object(src)) => {
            for (k, v) in src {
                match dst.get_mut(k) {
                    Some(existing) => merge_values(existing, v),
                    None => {
                        dst.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (dst, src) => *dst = src.clone(),
    }
}

fn replace<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
    if src.is_some() {
        dst.clone_from(src);
    }
}

fn merge_map(dst: &mut Option<BTreeMap<String, String>>, src: &Option<BTreeMap<String, String>>) {
    if let Some(src) = src {
        let dst = dst.get_or_insert_with(Default::default);
        dst.extend(src.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::serde_json::json;
    use flotilla_api::{CorrectDrift, YamlOptions};

    fn cust(options: BundleDeploymentOptions) -> TargetCustomization {
        TargetCustomization {
            options,
            ..Default::default()
        }
    }

    fn helm_values(v: Value) -> Option<HelmOptions> {
        Some(HelmOptions {
            values: Some(v),
            ..Default::default()
        })
    }

    #[test]
    fn customization_overrides_scalars_and_merges_values() {
        let base = BundleDeploymentOptions {
            default_namespace: Some("app".into()),
            helm: Some(HelmOptions {
                chart: Some("./chart".into()),
                values: Some(json!({"replicas": 1, "image": {"tag": "v1", "repo": "r"}})),
                values_files: vec!["values.yaml".into()],
                ..Default::default()
            }),
            namespace_labels: Some(BTreeMap::from([("team".into(), "a".into())])),
            ..Default::default()
        };
        let prod = cust(BundleDeploymentOptions {
            default_namespace: Some("app-prod".into()),
            helm: Some(HelmOptions {
                values: Some(json!({"image": {"tag": "v2"}, "extra": true})),
                values_files: vec!["prod.yaml".into()],
                ..Default::default()
            }),
            namespace_labels: Some(BTreeMap::from([("tier".into(), "gold".into())])),
            correct_drift: Some(CorrectDrift {
                enabled: true,
                ..Default::default()
            }),
            keep_resources: true,
            ..Default::default()
        });
        let out = resolve_options(&base, [&prod]);
        assert_eq!(out.default_namespace.as_deref(), Some("app-prod"));
        let helm = out.helm.unwrap();
        assert_eq!(
            helm.chart.as_deref(),
            Some("./chart"),
            "unset fields keep the base"
        );
        assert_eq!(
            helm.values,
            Some(json!({"replicas": 1, "image": {"tag": "v2", "repo": "r"}, "extra": true}))
        );
        assert_eq!(helm.values_files, ["values.yaml", "prod.yaml"]);
        assert_eq!(out.namespace_labels.unwrap().len(), 2);
        assert!(out.correct_drift.unwrap().enabled);
        assert!(out.keep_resources);
    }

    #[test]
    fn later_customizations_win() {
        let a = cust(BundleDeploymentOptions {
            default_namespace: Some("a".into()),
            helm: helm_values(json!({"x": 1, "y": 1})),
            yaml: Some(YamlOptions {
                overlays: vec!["a".into()],
            }),
            ..Default::default()
        });
        let b = cust(BundleDeploymentOptions {
            default_namespace: Some("b".into()),
            helm: helm_values(json!({"y": 2})),
            yaml: Some(YamlOptions {
                overlays: vec!["b".into()],
            }),
            ..Default::default()
        });
        let out = resolve_options(&BundleDeploymentOptions::default(), [&a, &b]);
        assert_eq!(out.default_namespace.as_deref(), Some("b"));
        assert_eq!(out.helm.unwrap().values, Some(json!({"x": 1, "y": 2})));
        assert_eq!(out.yaml.unwrap().overlays, ["a", "b"]);
    }

    #[test]
    fn no_customization_is_the_identity() {
        let base = BundleDeploymentOptions {
            namespace: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(resolve_options(&base, []), base);
    }

    #[test]
    fn non_object_values_are_replaced() {
        let mut v = json!({"list": [1, 2], "s": "a"});
        merge_values(&mut v, &json!({"list": [3], "s": {"now": "object"}}));
        assert_eq!(v, json!({"list": [3], "s": {"now": "object"}}));
    }
}
