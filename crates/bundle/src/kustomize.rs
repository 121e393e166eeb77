//! Kustomize confined to its bundle.
//!
//! `kubectl kustomize` follows `resources: [../../anywhere]` out of the
//! directory it is given and fetches `resources: [https://...]` (or
//! `github.com/org/repo//dir?ref=x`) from the network, so a bundle could
//! read files of the agent's host or make the agent fetch any URL, and what
//! it fetched would not be part of the deploymentID. Before kustomize runs
//! (when the bundle is compiled, and again when the agent renders), every
//! kustomization file of the bundle is read and each path it names must
//! resolve to a file or directory of the bundle itself. Remote resources
//! are not supported: vendor them into the repository.

use crate::content::BundleContent;
use crate::error::{BundleError, Result};
use crate::tree::{join_within, parent};
use crate::yaml::parse_document;
use serde_json::Value;

/// The file names kustomize looks for in a directory.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

pub fn is_kustomization(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    KUSTOMIZATION_FILES.contains(&name)
}

/// Checks every kustomization file of the bundle: each path it names stays
/// inside the bundle and exists there.
pub fn check_confined(content: &BundleContent) -> Result<()> {
    for (path, bytes) in &content.files {
        if !is_kustomization(path) {
            continue;
        }
        let text = std::str::from_utf8(bytes).map_err(|_| BundleError::InvalidManifest {
            file: path.clone(),
            message: "not UTF-8 text".into(),
        })?;
        let doc = parse_document(path, text)?;
        for (field, reference) in references(&doc) {
            check_reference(content, path, &field, &reference)?;
        }
    }
    Ok(())
}

/// Every (field, path) a kustomization names.
fn references(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    // Lists of paths (or URLs).
    for field in ["resources", "bases", "components", "crds", "configurations"] {
        for (i, r) in strings(doc.get(field)).into_iter().enumerate() {
            out.push((format!("{field}[{i}]"), r));
        }
    }
    // Paths or inline YAML (an entry with a line break is inline).
    for field in [
        "generators",
        "transformers",
        "validators",
        "patchesStrategicMerge",
    ] {
        for (i, r) in strings(doc.get(field)).into_iter().enumerate() {
            if !r.contains('\n') {
                out.push((format!("{field}[{i}]"), r));
            }
        }
    }
    // Objects with a `path`.
    for field in ["patches", "patchesJson6902", "replacements"] {
        for (i, item) in doc
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(p) = item.get("path").and_then(Value::as_str) {
                out.push((format!("{field}[{i}].path"), p.to_owned()));
            }
        }
    }
    if let Some(p) = doc.pointer("/openapi/path").and_then(Value::as_str) {
        out.push(("openapi.path".into(), p.to_owned()));
    }
    // Generators reading files: `files: [key=path | path]`, `envs`, `env`.
    for field in ["configMapGenerator", "secretGenerator"] {
        for (i, item) in doc
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (j, f) in strings(item.get("files")).into_iter().enumerate() {
                let p = f.split_once('=').map_or(f.as_str(), |(_, p)| p).to_owned();
                out.push((format!("{field}[{i}].files[{j}]"), p));
            }
            for (j, f) in strings(item.get("envs")).into_iter().enumerate() {
                out.push((format!("{field}[{i}].envs[{j}]"), f));
            }
            if let Some(e) = item.get("env").and_then(Value::as_str) {
                out.push((format!("{field}[{i}].env"), e.to_owned()));
            }
        }
    }
    if doc.get("helmCharts").is_some() || doc.get("helmChartInflationGenerator").is_some() {
        out.push(("helmCharts".into(), "helm://inflation".into()));
    }
    out
}

fn check_reference(
    content: &BundleContent,
    kustomization: &str,
    field: &str,
    reference: &str,
) -> Result<()> {
    let refuse = |why: String| BundleError::InvalidField {
        file: kustomization.to_owned(),
        field: field.to_owned(),
        message: why,
    };
    if reference == "helm://inflation" {
        return Err(refuse(
            "kustomize's Helm chart inflation is not supported: use fleet.yaml's helm options"
                .into(),
        ));
    }
    if looks_remote(reference) {
        return Err(refuse(format!(
            "{reference:?} is a remote resource; Flotilla does not fetch those at deploy time (vendor it into the repository)"
        )));
    }
    let dir = parent(kustomization);
    let resolved = join_within(dir, reference)
        .map_err(|why| refuse(format!("{reference:?} escapes the bundle ({why})")))?;
    let exists = content.files.contains_key(&resolved)
        || resolved.is_empty()
        || content
            .files
            .range(format!("{resolved}/")..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&format!("{resolved}/")));
    if !exists {
        return Err(refuse(format!(
            "{reference:?} is not a file or directory of the bundle"
        )));
    }
    Ok(())
}

/// URLs and kustomize's remote forms (`github.com/org/repo//dir?ref=x`,
/// `git@host:org/repo`).
fn looks_remote(reference: &str) -> bool {
    reference.contains("://")
        || reference.starts_with("git@")
        || reference.contains("?ref=")
        || reference.contains("//")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(files: &[(&str, &str)]) -> BundleContent {
        BundleContent {
            files: files
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn references_inside_the_bundle_pass() {
        let c = content(&[
            (
                "overlays/prod/kustomization.yaml",
                "resources: [../../base]\npatches:\n- path: patch.yaml\nconfigMapGenerator:\n- name: app\n  files: [app.properties, extra=conf/extra.txt]\n  envs: [env.txt]\n",
            ),
            ("overlays/prod/patch.yaml", "kind: Deployment"),
            ("overlays/prod/app.properties", "a=b"),
            ("overlays/prod/conf/extra.txt", "x"),
            ("overlays/prod/env.txt", "X=1"),
            ("base/kustomization.yaml", "resources: [deployment.yaml]\n"),
            ("base/deployment.yaml", "kind: Deployment"),
        ]);
        check_confined(&c).unwrap();
    }

    #[test]
    fn escapes_and_remote_resources_are_refused_naming_the_field() {
        let rows = [
            (
                "resources: [../../outside]\n",
                "resources[0]",
                "escapes the bundle",
            ),
            (
                "resources: [https://example.com/evil.yaml]\n",
                "resources[0]",
                "remote resource",
            ),
            (
                "resources: [github.com/org/repo//deploy?ref=main]\n",
                "resources[0]",
                "remote resource",
            ),
            ("resources: [missing.yaml]\n", "resources[0]", "not a file"),
            (
                "configMapGenerator:\n- name: x\n  files: [k=../../../etc/passwd]\n",
                "configMapGenerator[0].files[0]",
                "escapes",
            ),
            (
                "patches:\n- path: /etc/hosts\n",
                "patches[0].path",
                "escapes",
            ),
            (
                "helmCharts:\n- name: redis\n  repo: https://charts\n",
                "helmCharts",
                "not supported",
            ),
        ];
        for (text, field, why) in rows {
            let c = content(&[("app/kustomization.yaml", text), ("app/ok.yaml", "")]);
            let err = check_confined(&c).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("app/kustomization.yaml") && msg.contains(field) && msg.contains(why),
                "{text}: {msg}"
            );
        }
    }

    #[test]
    fn inline_patches_are_not_paths() {
        let c = content(&[(
            "kustomization.yaml",
            "patchesStrategicMerge:\n- |-\n  apiVersion: v1\n  kind: ConfigMap\n",
        )]);
        check_confined(&c).unwrap();
    }
}
