//! `helm.valuesFrom`: values read in the downstream cluster, where Fleet's
//! agent reads them, just before the chart is rendered. Each entry names
//! a key of a ConfigMap or a Secret (namespace: the release's, key:
//! `values.yaml` unless given); its text is YAML, merged over the values
//! in order. Secret values stay in the agent's memory: they are never
//! logged, written to the management cluster or shown in a status (an
//! error names the object and the key, never the data).

use flotilla_api::{BundleDeploymentOptions, KeyRef};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use serde_json::Value;

/// The options with `valuesFrom` merged into `helm.values`, or why not.
pub async fn resolve(
    client: &kube::Client,
    options: &BundleDeploymentOptions,
) -> Result<BundleDeploymentOptions, String> {
    let Some(helm) = options.helm.as_ref().filter(|h| !h.values_from.is_empty()) else {
        return Ok(options.clone());
    };
    let release_ns = options
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| options.default_namespace.clone().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "default".to_owned());
    let mut values = helm
        .values
        .clone()
        .unwrap_or(Value::Object(Default::default()));
    for (i, from) in helm.values_from.iter().enumerate() {
        let field = format!("helm.valuesFrom[{i}]");
        for (kind, r) in [
            ("ConfigMap", from.config_map_key_ref.as_ref()),
            ("Secret", from.secret_key_ref.as_ref()),
        ] {
            let Some(r) = r else { continue };
            let text = read(client, kind, r, &release_ns, &field).await?;
            let ns = if r.namespace.is_empty() {
                &release_ns
            } else {
                &r.namespace
            };
            let key = key_of(r);
            let parsed: Value = serde_saphyr::from_str(&text).map_err(|_| {
                // The parser's message may quote the data: never show it.
                format!("{field}: key {key:?} of {kind} {ns}/{} is not YAML", r.name)
            })?;
            match parsed {
                Value::Object(_) => flotilla_targeting::merge_values(&mut values, &parsed),
                Value::Null => {}
                _ => {
                    return Err(format!(
                        "{field}: key {key:?} of {kind} {ns}/{} is not a YAML mapping",
                        r.name
                    ));
                }
            }
        }
    }
    let mut out = options.clone();
    if let Some(h) = out.helm.as_mut() {
        h.values = Some(values);
    }
    Ok(out)
}

fn key_of(r: &KeyRef) -> &str {
    if r.key.is_empty() {
        "values.yaml"
    } else {
        &r.key
    }
}

async fn read(
    client: &kube::Client,
    kind: &str,
    r: &KeyRef,
    release_ns: &str,
    field: &str,
) -> Result<String, String> {
    let ns = if r.namespace.is_empty() {
        release_ns
    } else {
        &r.namespace
    };
    let key = key_of(r);
    if r.name.is_empty() {
        return Err(format!("{field}: the {kind} needs a name"));
    }
    let missing = || {
        format!(
            "{field}: {} {ns}/{} not found",
            kind.to_ascii_lowercase(),
            r.name
        )
    };
    let no_key = || {
        format!(
            "{field}: key {key} is missing from {} {ns}/{}, can't use it in valuesFrom",
            kind.to_ascii_lowercase(),
            r.name
        )
    };
    let failed = |e: kube::Error| format!("{field}: reading {kind} {ns}/{}: {e}", r.name);
    match kind {
        "ConfigMap" => {
            let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt(&r.name)
                .await
                .map_err(failed)?
                .ok_or_else(missing)?;
            cm.data.and_then(|d| d.get(key).cloned()).ok_or_else(no_key)
        }
        _ => {
            let secret = Api::<Secret>::namespaced(client.clone(), ns)
                .get_opt(&r.name)
                .await
                .map_err(failed)?
                .ok_or_else(missing)?;
            let bytes = secret
                .data
                .and_then(|d| d.get(key).map(|b| b.0.clone()))
                .ok_or_else(no_key)?;
            String::from_utf8(bytes).map_err(|_| {
                format!(
                    "{field}: key {key:?} of {kind} {ns}/{} is not UTF-8",
                    r.name
                )
            })
        }
    }
}
