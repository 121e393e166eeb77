//! `fleet.yaml`: every Fleet field parsed; the ones Flotilla implements map
//! onto the Bundle spec. Unknown fields are warnings; an invalid value is an
//! error naming the file and the field.

use crate::error::{BundleError, Result};
use crate::yaml::parse_document;
use flotilla_api::schemars::{self, JsonSchema};
use flotilla_api::{
    BundleDeploymentOptions, BundleRef, GitTarget, RolloutStrategy, TargetCustomization,
    TargetCustomizationMode,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub const FILE_NAME: &str = "fleet.yaml";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetYaml {
    /// Overrides the generated bundle name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels of the Bundle; also added to every deployed resource.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(flatten)]
    pub options: BundleDeploymentOptions,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_strategy: Option<RolloutStrategy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_customizations: Vec<TargetCustomization>,
    #[serde(default)]
    pub target_customization_mode: TargetCustomizationMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<BundleRef>,
    /// Replaces the GitRepo's targets for this bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub override_targets: Vec<GitTarget>,
    /// Fleet's image scanning; parsed so it is not "unknown", not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub image_scans: Option<Value>,
    /// Fleet's (experimental) copying of Secrets and ConfigMaps downstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub downstream_resources: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub allow_pod_security_namespace_labels: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub delete_namespace: Option<Value>,
}

fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Fleet fields Flotilla recognises but does not act on, and why.
const NOT_SUPPORTED: [(&str, &str); 4] = [
    (
        "imageScans",
        "image scans write new tags back to Git, and Flotilla never writes to a repository",
    ),
    (
        "downstreamResources",
        "copying Secrets and ConfigMaps downstream is experimental in Fleet; create them in the cluster",
    ),
    (
        "allowPodSecurityNamespaceLabels",
        "namespaceLabels never set pod-security.kubernetes.io/ labels",
    ),
    (
        "deleteNamespace",
        "namespaces stay when a bundle leaves a cluster",
    ),
];

/// Helm options Fleet passes to `helm install` that have no meaning when
/// there is no Helm release, and why.
const HELM_NOT_SUPPORTED: [(&str, &str); 4] = [
    (
        "atomic",
        "there is no Helm release to roll back; a failed apply keeps what was deployed",
    ),
    ("maxHistory", "there is no Helm release history"),
    (
        "force",
        "objects are applied with server-side apply, which takes conflicting fields over anyway",
    ),
    (
        "takeOwnership",
        "server-side apply already takes existing objects over",
    ),
];

/// A parsed `fleet.yaml` and the warnings it produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedFleetYaml {
    pub fleet: FleetYaml,
    pub warnings: Vec<String>,
}

pub fn parse(file: &str, text: &str) -> Result<ParsedFleetYaml> {
    let value = match parse_document(file, text)? {
        Value::Null => Value::Object(Default::default()),
        v @ Value::Object(_) => v,
        other => {
            return Err(BundleError::InvalidField {
                file: file.to_owned(),
                field: "(root)".into(),
                message: format!("expected a mapping, found {}", kind_of(&other)),
            });
        }
    };
    let mut warnings = Vec::new();
    let schema = schemars::schema_for!(FleetYaml);
    check(
        &value,
        schema.as_value(),
        schema.as_value(),
        "",
        &mut warnings,
    )
    .map_err(|(field, message)| BundleError::InvalidField {
        file: file.to_owned(),
        field,
        message,
    })?;
    warnings
        .iter_mut()
        .for_each(|w| *w = format!("{file}: {w}"));
    for (field, why) in NOT_SUPPORTED {
        if value.get(field).is_some() {
            warnings.push(format!(
                "{file}: {field}: recognised, not supported by Flotilla: {why}"
            ));
        }
    }
    let mut helm_blocks: Vec<(String, &Value)> = Vec::new();
    if let Some(h) = value.get("helm") {
        helm_blocks.push(("helm".into(), h));
    }
    for (i, c) in value
        .get("targetCustomizations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(h) = c.get("helm") {
            helm_blocks.push((format!("targetCustomizations[{i}].helm"), h));
        }
    }
    for (path, h) in helm_blocks {
        for (field, why) in HELM_NOT_SUPPORTED {
            let set = h.get(field).is_some_and(|v| {
                !matches!(v, Value::Null | Value::Bool(false)) && v != &Value::from(0)
            });
            if set {
                warnings.push(format!(
                    "{file}: {path}.{field}: recognised, not supported by Flotilla: {why}"
                ));
            }
        }
    }
    if value
        .pointer("/correctDrift/keepFailHistory")
        .is_some_and(|v| v == &Value::Bool(true))
    {
        warnings.push(format!(
            "{file}: correctDrift.keepFailHistory: recognised, not supported by Flotilla: there is no Helm release history to keep"
        ));
    }
    let mut fleet: FleetYaml =
        serde_path_to_error::deserialize(&value).map_err(|e| BundleError::InvalidField {
            file: file.to_owned(),
            field: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    normalize(&mut fleet);
    validate(file, &fleet)?;
    Ok(ParsedFleetYaml { fleet, warnings })
}

/// As Fleet reads a `fleet.yaml`: an empty string is unset (`name: ""`
/// is the generated name, `helm: {chart: ""}` no chart), and an unnamed
/// target customization is named `target000`, `target001`, ... by its
/// place.
fn normalize(f: &mut FleetYaml) {
    f.name = f.name.take().filter(|n| !n.trim().is_empty());
    f.options.normalize();
    for (i, c) in f.target_customizations.iter_mut().enumerate() {
        c.options.normalize();
        if c.name.as_deref().is_none_or(|n| n.is_empty()) {
            c.name = Some(format!("target{i:03}"));
        }
    }
}

/// Checks that serde cannot express.
fn validate(file: &str, f: &FleetYaml) -> Result<()> {
    let invalid = |field: &str, message: String| {
        Err(BundleError::InvalidField {
            file: file.to_owned(),
            field: field.to_owned(),
            message,
        })
    };
    if let Some(name) = &f.name
        && !is_dns1123_subdomain(name)
    {
        return invalid("name", format!("{name:?} is not a valid DNS-1123 name"));
    }
    if let Some(release) = f
        .options
        .helm
        .as_ref()
        .and_then(|h| h.release_name.as_ref())
        && (release.len() > 53 || !is_dns1123_subdomain(release))
    {
        return invalid(
            "helm.releaseName",
            format!("{release:?} must be a DNS-1123 name of at most 53 characters"),
        );
    }
    for (i, dep) in f.depends_on.iter().enumerate() {
        if dep.name.is_none() && dep.selector.is_none() {
            return invalid(
                &format!("dependsOn[{i}]"),
                "needs a name or a selector".into(),
            );
        }
        for (j, s) in dep.accepted_states.iter().enumerate() {
            if flotilla_api::BundleState::parse(s).is_none() {
                return invalid(
                    &format!("dependsOn[{i}].acceptedStates[{j}]"),
                    format!(
                        "invalid state {s:?}; valid: Ready, NotReady, Pending, OutOfSync, Modified, WaitApplied, ErrApplied"
                    ),
                );
            }
        }
    }
    for (field, ns) in [
        ("defaultNamespace", &f.options.default_namespace),
        ("namespace", &f.options.namespace),
    ] {
        if let Some(ns) = ns
            && !is_dns1123_label(ns)
        {
            return invalid(field, format!("{ns:?} is not a valid namespace name"));
        }
    }
    Ok(())
}

/// Walks a value against the schema of the types it will deserialize into:
/// object keys the schema does not know become warnings, and a value of the
/// wrong type, outside an enum or below a minimum is an error at its path.
/// (serde cannot name fields inside `#[serde(flatten)]`, so this does.)
fn check(
    value: &Value,
    schema: &Value,
    root: &Value,
    path: &str,
    warnings: &mut Vec<String>,
) -> std::result::Result<(), (String, String)> {
    let schema = resolve(schema, root);
    let mut subschemas: Vec<&Value> = vec![schema];
    let mut i = 0;
    while i < subschemas.len() {
        for k in ["anyOf", "oneOf", "allOf"] {
            if let Some(list) = subschemas[i].get(k).and_then(Value::as_array) {
                subschemas.extend(list.iter().map(|s| resolve(s, root)));
            }
        }
        i += 1;
    }
    let preserve =
        |s: &&Value| s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if subschemas.iter().any(preserve) {
        return Ok(());
    }
    let field = || {
        if path.is_empty() {
            "(root)".to_owned()
        } else {
            path.to_owned()
        }
    };

    // Types: the union of what the subschemas allow.
    let mut types: Vec<&str> = Vec::new();
    for s in &subschemas {
        match s.get("type") {
            Some(Value::String(t)) => types.push(t),
            Some(Value::Array(ts)) => types.extend(ts.iter().filter_map(Value::as_str)),
            _ => {}
        }
        if s.get("nullable") == Some(&Value::Bool(true)) {
            types.push("null");
        }
        if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            types.extend(["integer", "string"]);
        }
    }
    let actual = json_type(value);
    if !types.is_empty()
        && !types
            .iter()
            .any(|t| *t == actual || (*t == "number" && actual == "integer"))
    {
        return Err((
            field(),
            format!("expected {}, found {}", types.join(" or "), kind_of(value)),
        ));
    }
    if let Value::String(v) = value {
        let free_string = subschemas.iter().any(|s| {
            s.get("type").and_then(Value::as_str) == Some("string") && s.get("enum").is_none()
        }) || types.contains(&"integer");
        let allowed: Vec<&Value> = subschemas
            .iter()
            .filter_map(|s| s.get("enum").and_then(Value::as_array))
            .flatten()
            .collect();
        if !free_string && !allowed.is_empty() && !allowed.iter().any(|a| a.as_str() == Some(v)) {
            let names: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            return Err((field(), format!("{v:?} is not one of {}", names.join(", "))));
        }
    }
    if let Some(n) = value.as_f64()
        && let Some(min) = subschemas
            .iter()
            .find_map(|s| s.get("minimum").and_then(Value::as_f64))
        && n < min
    {
        return Err((field(), format!("{n} is below the minimum {min}")));
    }

    match value {
        Value::Object(map) => {
            let mut properties = serde_json::Map::new();
            let mut additional: Option<&Value> = None;
            for s in &subschemas {
                if let Some(p) = s.get("properties").and_then(Value::as_object) {
                    properties.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
                    additional = Some(a);
                }
            }
            if properties.is_empty() && additional.is_none() {
                return Ok(());
            }
            for (k, v) in map {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (properties.get(k), additional) {
                    (Some(s), _) => check(v, s, root, &child, warnings)?,
                    (None, Some(a)) => check(v, a, root, &child, warnings)?,
                    (None, None) => warnings.push(format!("unknown field {child} (ignored)")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = subschemas.iter().find_map(|s| s.get("items")) {
                for (i, item) in items.iter().enumerate() {
                    check(item, item_schema, root, &format!("{path}[{i}]"), warnings)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..32 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix("#").and_then(|p| root.pointer(p)) {
                Some(target) => s = target,
                None => return s,
            },
            None => return s,
        }
    }
    s
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implemented_field_maps() {
        let text = r#"
name: my-app
defaultNamespace: shop
namespace: shop-forced
labels: {team: payments}
paused: true
keepResources: true
correctDrift: {enabled: true}
kustomize: {dir: overlays/prod}
helm:
  chart: ./chart
  repo: https://charts.example.com
  version: 1.2.3
  releaseName: shop
  values: {replicas: 2}
  valuesFiles: [values-prod.yaml]
rolloutStrategy:
  maxUnavailable: 10%
  autoPartitionSize: 25%
  partitions:
  - name: canary
    clusterSelector: {matchLabels: {canary: "true"}}
targetCustomizations:
- name: prod
  clusterSelector: {matchLabels: {env: prod}}
  helm: {values: {replicas: 5}}
- name: never
  clusterName: lab
  doNotDeploy: true
dependsOn:
- name: database
- selector: {matchLabels: {layer: infra}}
diff:
  comparePatches:
  - kind: Deployment
    name: web
    operations: [{op: remove, path: /spec/replicas}]
ignore:
  conditions: [{type: Progressing}]
yaml:
  overlays: [prod]
overrideTargets:
- clusterGroup: special
"#;
        let parsed = parse("app/fleet.yaml", text).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let f = parsed.fleet;
        assert_eq!(f.name.as_deref(), Some("my-app"));
        assert_eq!(f.options.default_namespace.as_deref(), Some("shop"));
        assert_eq!(f.options.namespace.as_deref(), Some("shop-forced"));
        assert_eq!(f.labels["team"], "payments");
        assert!(f.paused && f.options.keep_resources);
        assert!(f.options.correct_drift.unwrap().enabled);
        assert_eq!(
            f.options.kustomize.unwrap().dir.as_deref(),
            Some("overlays/prod")
        );
        let helm = f.options.helm.unwrap();
        assert_eq!(helm.values_files, ["values-prod.yaml"]);
        assert_eq!(helm.release_name.as_deref(), Some("shop"));
        assert_eq!(f.rollout_strategy.unwrap().partitions.len(), 1);
        assert_eq!(f.target_customizations.len(), 2);
        assert!(f.target_customizations[1].do_not_deploy);
        assert_eq!(f.depends_on.len(), 2);
        assert_eq!(
            f.options.diff.unwrap().compare_patches[0].operations.len(),
            1
        );
        assert_eq!(f.options.ignore.unwrap().conditions.len(), 1);
        assert_eq!(f.options.yaml.unwrap().overlays, ["prod"]);
        assert_eq!(
            f.override_targets[0].criteria.cluster_group.as_deref(),
            Some("special")
        );
    }

    #[test]
    fn unknown_fields_warn_with_their_path() {
        let text = "defaultNamespce: typo\nhelm:\n  valuez: {}\n  values: {anything: {goes: here}}\ntargetCustomizations:\n- name: x\n  clusterSelectr: {}\nimageScans: []\n";
        let parsed = parse("fleet.yaml", text).unwrap();
        assert_eq!(
            parsed.warnings,
            [
                "fleet.yaml: unknown field defaultNamespce (ignored)",
                "fleet.yaml: unknown field helm.valuez (ignored)",
                "fleet.yaml: unknown field targetCustomizations[0].clusterSelectr (ignored)",
                "fleet.yaml: imageScans: recognised, not supported by Flotilla: image scans write new tags back to Git, and Flotilla never writes to a repository",
            ]
        );
    }

    /// As Fleet reads them: empty strings are unset, unnamed
    /// customizations get `target000`..., and Fleet fields without meaning
    /// here are named with the reason.
    #[test]
    fn fleet_yaml_edges_as_fleet_reads_them() {
        // fleet-examples' single-cluster/helm/fleet.yaml.
        let text = "namespace: fleet-helm-example\nhelm:\n  releaseName: guestbook\n  chart: \"\"\n  repo: \"\"\n  version: \"\"\n  force: false\n  timeoutSeconds: 0\n  values:\n    replicas: 2\n";
        let f = parse("fleet.yaml", text).unwrap().fleet;
        let h = f.options.helm.as_ref().unwrap();
        assert_eq!(
            (h.chart.as_deref(), h.repo.as_deref(), h.version.as_deref()),
            (None, None, None)
        );
        assert_eq!(h.timeout_seconds, None);
        assert_eq!(h.release_name.as_deref(), Some("guestbook"));
        // Empty names and namespaces are unset, not refused.
        let f = parse(
            "fleet.yaml",
            "name: \"\"\nnamespace: \"\"\ndefaultNamespace: \"\"\nhelm: {releaseName: \"\"}\nkustomize: {dir: \"\"}\n",
        )
        .unwrap()
        .fleet;
        assert_eq!(f.name, None);
        assert_eq!(
            (
                f.options.namespace.clone(),
                f.options.default_namespace.clone()
            ),
            (None, None)
        );
        assert_eq!(f.options.helm.unwrap().release_name, None);
        assert_eq!(f.options.kustomize, None);
        // Unnamed customizations are named by their place.
        let f = parse(
            "fleet.yaml",
            "targetCustomizations:\n- clusterName: a\n- name: prod\n  clusterName: b\n- clusterName: c\n  namespace: \"\"\n",
        )
        .unwrap()
        .fleet;
        let names: Vec<&str> = f
            .target_customizations
            .iter()
            .map(|c| c.name.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["target000", "prod", "target002"]);
        assert_eq!(f.target_customizations[2].options.namespace, None);
        // Recognised, not supported.
        let w = parse(
            "fleet.yaml",
            "deleteNamespace: true\nhelm: {atomic: true, maxHistory: 5}\ntargetCustomizations:\n- name: x\n  clusterName: a\n  helm: {takeOwnership: true}\ncorrectDrift: {enabled: true, keepFailHistory: true}\n",
        )
        .unwrap()
        .warnings;
        for field in [
            "deleteNamespace",
            "helm.atomic",
            "helm.maxHistory",
            "targetCustomizations[0].helm.takeOwnership",
            "correctDrift.keepFailHistory",
        ] {
            assert!(
                w.iter()
                    .any(|m| m
                        .contains(&format!("{field}: recognised, not supported by Flotilla: "))),
                "{field}: {w:?}"
            );
        }
        assert!(w.iter().all(|m| !m.contains("unknown field")), "{w:?}");
        // dependsOn acceptedStates are checked.
        let err = parse(
            "fleet.yaml",
            "dependsOn:\n- name: db\n  acceptedStates: [Ready, Sleepy]\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("dependsOn[0].acceptedStates[1]"),
            "{err}"
        );
        assert!(
            parse(
                "fleet.yaml",
                "dependsOn:\n- name: db\n  acceptedStates: [Ready, Modified]\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn invalid_values_name_file_and_field() {
        let rows = [
            ("paused: yes-please\n", "paused"),
            ("helm: {timeoutSeconds: soon}\n", "helm.timeoutSeconds"),
            (
                "targetCustomizations:\n- clusterSelector: {matchLabels: [a]}\n",
                "targetCustomizations[0].clusterSelector.matchLabels",
            ),
            ("name: Not_A_Name\n", "name"),
            ("defaultNamespace: UPPER\n", "defaultNamespace"),
            ("dependsOn: [{}]\n", "dependsOn[0]"),
            ("- just\n- a list\n", "(root)"),
        ];
        for (text, field) in rows {
            match parse("apps/web/fleet.yaml", text) {
                Err(BundleError::InvalidField { file, field: f, .. }) => {
                    assert_eq!(file, "apps/web/fleet.yaml");
                    assert_eq!(f, field, "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_fleet_yaml_is_all_defaults() {
        assert_eq!(parse("fleet.yaml", "").unwrap().fleet, FleetYaml::default());
    }
}
