//! Per-cluster Helm values, as Fleet's controller computes them for each
//! BundleDeployment (pure: the cluster comes in as data):
//!
//! 1. the cluster's labels and annotations, without `kubectl.kubernetes.io/`
//!    keys or keys containing `cattle.io/` (Fleet's export cleaning), its
//!    `fleet.cattle.io/` and `management.cattle.io/` labels put back; a
//!    cluster left with no labels gets no templating at all, as in Fleet;
//! 2. a string value `global.fleet.clusterLabels.<name>` becomes that label's
//!    value (or "");
//! 3. unless `helm.disablePreProcess`: `${ }` templates (Go text/template,
//!    sprig without `env`, `expandenv`, `include`, `tpl`; a missing key is
//!    an error) in values and keys, with `.ClusterName`,
//!    `.ClusterNamespace`, `.ClusterLabels`, `.ClusterAnnotations` and
//!    `.ClusterValues` (the Cluster's `spec.templateValues`); a template
//!    that Fleet's YAML would leave unquoted is read back as YAML (so
//!    `${ .ClusterValues.replicas }` gives a number), a quoted one stays a
//!    string; then each `helm.templateValues` entry, rendered and read as
//!    YAML, replaces the top-level value of its key.
//!
//! Errors name the value (`helm.values.ingress.host`) and the reason.

use crate::sprig;
use flotilla_api::BundleDeploymentOptions;
use flotilla_api::serde_json::{Map, Value};
use gotmpl::{MissingKey, Template, Value as T};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A string value naming a cluster label, replaced by its value.
pub const CLUSTER_LABEL_PREFIX: &str = "global.fleet.clusterLabels.";
/// How deep values may nest (Fleet's maxTemplateRecursionDepth).
const MAX_DEPTH: usize = 50;

/// What a cluster offers templates.
#[derive(Clone, Copy, Debug)]
pub struct ClusterContext<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    /// `spec.templateValues`.
    pub template_values: Option<&'a Value>,
}

impl<'a> ClusterContext<'a> {
    pub fn of(cluster: &'a flotilla_api::Cluster, empty: &'a BTreeMap<String, String>) -> Self {
        ClusterContext {
            name: cluster.metadata.name.as_deref().unwrap_or_default(),
            namespace: cluster.metadata.namespace.as_deref().unwrap_or_default(),
            labels: cluster.metadata.labels.as_ref().unwrap_or(empty),
            annotations: cluster.metadata.annotations.as_ref().unwrap_or(empty),
            template_values: cluster.spec.template_values.as_ref(),
        }
    }
}

/// Whether a bundle's options (or a customization's) use anything of the
/// cluster: its templates, label references or templateValues. Only such
/// bundles are planned again when a cluster's labels, annotations or
/// templateValues change.
pub fn uses_cluster(options: &BundleDeploymentOptions) -> bool {
    let Some(h) = &options.helm else {
        return false;
    };
    fn walk(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains("${") || s.starts_with(CLUSTER_LABEL_PREFIX),
            Value::Array(a) => a.iter().any(walk),
            Value::Object(o) => o.iter().any(|(k, v)| k.contains("${") || walk(v)),
            _ => false,
        }
    }
    !h.template_values.is_empty() || h.values.as_ref().is_some_and(walk)
}

fn clean(m: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    m.iter()
        .filter(|(k, _)| !k.starts_with("kubectl.kubernetes.io/") && !k.contains("cattle.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The options one cluster gets: `options` (customizations merged) with
/// its Helm values worked out for `cluster`.
pub fn for_cluster(
    options: &BundleDeploymentOptions,
    cluster: &ClusterContext<'_>,
) -> Result<BundleDeploymentOptions, String> {
    let mut labels = clean(cluster.labels);
    for (k, v) in cluster.labels {
        if k.starts_with("fleet.cattle.io/") || k.starts_with("management.cattle.io/") {
            labels.insert(k.clone(), v.clone());
        }
    }
    let mut out = options.clone();
    let Some(helm) = out.helm.as_mut() else {
        return Ok(out);
    };
    if labels.is_empty() || (helm.values.is_none() && helm.template_values.is_empty()) {
        return Ok(out);
    }
    let mut values = match helm.values.take() {
        Some(Value::Object(m)) => m,
        Some(Value::Null) | None => Map::new(),
        Some(_) => return Err("helm.values: not a mapping".into()),
    };
    label_values(&mut values, &labels, 0)?;
    if !helm.disable_pre_process {
        let ctx = context(cluster, &labels);
        let mut rendered = Map::new();
        for (k, v) in values {
            let path = format!("helm.values.{k}");
            let key = render_key(&k, &ctx, &path)?;
            if rendered
                .insert(key.clone(), render(v, &ctx, &path, 0)?)
                .is_some()
            {
                return Err(format!(
                    "{path}: the key {key:?} appears twice once templated"
                ));
            }
        }
        values = rendered;
        for (k, t) in &helm.template_values {
            let path = format!("helm.templateValues.{k}");
            let text = execute(t, &ctx, &path)?;
            values.insert(k.clone(), read_yaml(&text, &path)?);
        }
    }
    helm.values = Some(Value::Object(values));
    Ok(out)
}

fn label_values(
    values: &mut Map<String, Value>,
    labels: &BTreeMap<String, String>,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "helm.values: nested more than {MAX_DEPTH} levels deep"
        ));
    }
    for v in values.values_mut() {
        match v {
            Value::String(s) if s.starts_with(CLUSTER_LABEL_PREFIX) => {
                let label = &s[CLUSTER_LABEL_PREFIX.len()..];
                *v = Value::String(labels.get(label).cloned().unwrap_or_default());
            }
            Value::Object(m) => label_values(m, labels, depth + 1)?,
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(m) = item {
                        label_values(m, labels, depth + 1)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn context(cluster: &ClusterContext<'_>, labels: &BTreeMap<String, String>) -> T {
    let strings = |m: &BTreeMap<String, String>| {
        T::Map(Arc::new(
            m.iter()
                .map(|(k, v)| (Arc::<str>::from(k.as_str()), T::String(v.as_str().into())))
                .collect(),
        ))
    };
    let values = cluster
        .template_values
        .map(sprig::from_json)
        .filter(|v| matches!(v, T::Map(_)))
        .unwrap_or_else(|| T::Map(Arc::new(BTreeMap::new())));
    T::Map(Arc::new(BTreeMap::from([
        ("ClusterName".into(), T::String(cluster.name.into())),
        (
            "ClusterNamespace".into(),
            T::String(cluster.namespace.into()),
        ),
        ("ClusterLabels".into(), strings(labels)),
        (
            "ClusterAnnotations".into(),
            strings(&clean(cluster.annotations)),
        ),
        ("ClusterValues".into(), values),
    ])))
}

/// Parsed templates, by their text: one bundle's values are the same for
/// every cluster, so each is parsed once. Bounded: cleared when full.
static PARSED: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, Arc<Template>>>,
> = std::sync::LazyLock::new(Default::default);
const MAX_PARSED: usize = 10_000;

/// Runs one template.
fn execute(text: &str, ctx: &T, path: &str) -> Result<String, String> {
    let describe = |e: gotmpl::TemplateError| {
        let m = e.to_string();
        let m = match m.strip_prefix("undefined function: ") {
            Some(f) => format!(
                "function {f:?} is not defined (Flotilla has sprig's string, default, list, dict, math, encoding, hash and regex functions)"
            ),
            None => m,
        };
        format!("{path}: {m}")
    };
    let cached = PARSED.lock().expect("templates lock").get(text).cloned();
    let template = match cached {
        Some(t) => t,
        None => {
            static FUNCS: std::sync::LazyLock<gotmpl::FuncMap> =
                std::sync::LazyLock::new(sprig::functions);
            let t = Arc::new(
                Template::new("values")
                    .delims("${", "}")
                    .missing_key(MissingKey::Error)
                    .max_range_iters(100_000)
                    .funcs(FUNCS.clone())
                    .parse(text)
                    .map_err(describe)?,
            );
            let mut parsed = PARSED.lock().expect("templates lock");
            if parsed.len() >= MAX_PARSED {
                parsed.clear();
            }
            parsed.insert(text.to_owned(), Arc::clone(&t));
            t
        }
    };
    template.execute_to_string(ctx).map_err(describe)
}

fn read_yaml(text: &str, path: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        format!(
            "{path}: the template gave {text:?}, which is not YAML: {}",
            e.to_string().lines().next().unwrap_or_default()
        )
    })
}

/// Whether Fleet's YAML encoder would write `s` unquoted, so that the
/// templated result is read back as YAML rather than kept a string.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_whitespace() || "-?:,[]{}#&*!|>'\"%@`".contains(c))
        && !s.ends_with(char::is_whitespace)
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains(['\n', '\t'])
        && !s.ends_with(':')
}

fn render_key(key: &str, ctx: &T, path: &str) -> Result<String, String> {
    if !key.contains("${") {
        return Ok(key.to_owned());
    }
    let text = execute(key, ctx, path)?;
    // Keys read back as YAML too; as JSON they are strings.
    Ok(match read_yaml(&text, path)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

fn render(v: Value, ctx: &T, path: &str, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{path}: nested more than {MAX_DEPTH} levels deep"));
    }
    Ok(match v {
        Value::String(s) if s.contains("${") => {
            let text = execute(&s, ctx, path)?;
            if plain(&s) {
                read_yaml(&text, path)?
            } else {
                Value::String(text)
            }
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| render(item, ctx, &format!("{path}[{i}]"), depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let p = format!("{path}.{k}");
                let key = render_key(&k, ctx, &p)?;
                if out
                    .insert(key.clone(), render(v, ctx, &p, depth + 1)?)
                    .is_some()
                {
                    return Err(format!("{p}: the key {key:?} appears twice once templated"));
                }
            }
            Value::Object(out)
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::HelmOptions;
    use flotilla_api::serde_json::json;

    fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn opts(values: Value) -> BundleDeploymentOptions {
        BundleDeploymentOptions {
            helm: Some(HelmOptions {
                values: Some(values),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn run(
        o: &BundleDeploymentOptions,
        l: &[(&str, &str)],
        tv: Option<Value>,
    ) -> Result<Value, String> {
        let labels = labels(l);
        let annotations = labels_of(&[
            ("team.example.com/owner", "data"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ]);
        let ctx = ClusterContext {
            name: "prod-eu",
            namespace: "fleet-default",
            labels: &labels,
            annotations: &annotations,
            template_values: tv.as_ref(),
        };
        for_cluster(o, &ctx).map(|o| o.helm.unwrap().values.unwrap_or(Value::Null))
    }

    fn labels_of(l: &[(&str, &str)]) -> BTreeMap<String, String> {
        labels(l)
    }

    #[test]
    fn templates_see_the_cluster_and_read_back_as_yaml() {
        let o = opts(json!({
            "region": "${ .ClusterLabels.region }",
            "replicas": "${ .ClusterValues.replicas }",
            "name": "${ .ClusterName | upper }",
            "ns": "${ .ClusterNamespace }",
            "owner": "${ index .ClusterAnnotations \"team.example.com/owner\" }",
            "tier": "${ default \"standard\" .ClusterValues.tier }",
            "host": "${ .ClusterName }.example.com",
            "colon": "${ .ClusterName }: not a map",
            "${ .ClusterLabels.env }-only": true,
            "nested": {"list": [{"zone": "${ .ClusterLabels.region }-a"}, 7]},
            "label": "global.fleet.clusterLabels.env",
            "absent": "global.fleet.clusterLabels.nope",
            "escaped": "${`${PWD}`}",
            "plain": "stays",
        }));
        let got = run(
            &o,
            &[("env", "prod"), ("region", "eu-west-1")],
            // A missing key is an error even under `default`, as in Go with
            // missingkey=error: an empty one is not.
            Some(json!({"replicas": 3, "tier": ""})),
        )
        .unwrap();
        assert_eq!(
            got,
            json!({
                "region": "eu-west-1",
                "replicas": 3,
                "name": "PROD-EU",
                "ns": "fleet-default",
                "owner": "data",
                "tier": "standard",
                "host": "prod-eu.example.com",
                "colon": "prod-eu: not a map",
                "prod-only": true,
                "nested": {"list": [{"zone": "eu-west-1-a"}, 7]},
                "label": "prod",
                "absent": "",
                "escaped": "${PWD}",
                "plain": "stays",
            })
        );
    }

    #[test]
    fn template_values_replace_top_level_keys_and_pre_process_can_be_off() {
        let mut o = opts(
            json!({"a": {"keep": 1}, "b": "${ .ClusterName }", "c": "global.fleet.clusterLabels.env"}),
        );
        o.helm.as_mut().unwrap().template_values =
            BTreeMap::from([("a".to_owned(), "${ .ClusterValues.a | toJson }".to_owned())]);
        let got = run(&o, &[("env", "dev")], Some(json!({"a": {"x": [1, 2]}}))).unwrap();
        assert_eq!(got, json!({"a": {"x": [1, 2]}, "b": "prod-eu", "c": "dev"}));
        o.helm.as_mut().unwrap().disable_pre_process = true;
        let got = run(&o, &[("env", "dev")], None).unwrap();
        assert_eq!(
            got,
            json!({"a": {"keep": 1}, "b": "${ .ClusterName }", "c": "dev"}),
            "label references still apply"
        );
    }

    #[test]
    fn a_cluster_without_labels_gets_the_values_as_they_are() {
        let o = opts(json!({"b": "${ .ClusterName }"}));
        assert_eq!(
            run(&o, &[], None).unwrap(),
            json!({"b": "${ .ClusterName }"})
        );
        // Only cattle.io labels, which Fleet's cleaning drops, count as none.
        assert_eq!(
            run(
                &o,
                &[("x.cattle.io/y", "z"), ("kubectl.kubernetes.io/z", "w")],
                None
            )
            .unwrap(),
            json!({"b": "${ .ClusterName }"})
        );
        assert_eq!(
            run(
                &o,
                &[("management.cattle.io/cluster-display-name", "Prod")],
                None
            )
            .unwrap(),
            json!({"b": "prod-eu"}),
            "management.cattle.io labels are kept"
        );
    }

    #[test]
    fn errors_name_the_value_and_the_reason() {
        let rows = [
            (
                json!({"a": {"b": "${ .ClusterLabels.nope }"}}),
                "helm.values.a.b",
                "nope",
            ),
            (
                json!({"x": ["${ .ClusterValues.missing.deeper }"]}),
                "helm.values.x[0]",
                "missing",
            ),
            (json!({"f": "${ now }"}), "helm.values.f", "now"),
            (
                json!({"e": "${ env \"HOME\" }"}),
                "helm.values.e",
                "not allowed",
            ),
            (json!({"s": "${ .ClusterName "}), "helm.values.s", ""),
            (
                json!({"y": "${ printf \"%s\" \"[\" }"}),
                "helm.values.y",
                "not YAML",
            ),
        ];
        for (values, path, says) in rows {
            let err = run(&opts(values.clone()), &[("env", "x")], None).unwrap_err();
            assert!(err.starts_with(path), "{values}: {err}");
            assert!(err.contains(says), "{values}: {err}");
        }
    }

    #[test]
    fn uses_cluster_finds_templates_label_references_and_template_values() {
        assert!(uses_cluster(&opts(
            json!({"a": [{"b": "${ .ClusterName }"}]})
        )));
        assert!(uses_cluster(&opts(
            json!({"a": "global.fleet.clusterLabels.env"})
        )));
        assert!(uses_cluster(&opts(json!({"${ .ClusterName }": 1}))));
        assert!(!uses_cluster(&opts(json!({"a": "$HOME", "b": 2}))));
        assert!(!uses_cluster(&BundleDeploymentOptions::default()));
    }
}
