//! Rendering one bundle for one cluster: the options after customization
//! in, the exact manifests that cluster receives out.
//!
//! - Raw YAML: every manifest file, with `yaml.overlays` applied in order.
//! - Kustomize: `kubectl kustomize` on `kustomize.dir` (or the root).
//! - Helm: `helm template` on the chart inside the bundle (a remote chart
//!   was vendored there when the bundle was compiled: the agent never
//!   fetches one); with a kustomization in `kustomize.dir` (or the root),
//!   kustomize then runs over Helm's output, as Fleet post-renders: the
//!   output becomes `fleet-manifests.yaml`, first of that kustomization's
//!   resources.
//!
//! Then, for every object: `namespace` forces the namespace of namespaced
//! kinds (a cluster-scoped object is refused, as in Fleet); otherwise
//! `defaultNamespace` fills in namespaced kinds that name none, and
//! cluster-scoped kinds stay as they are; the bundle's labels and
//! annotations are added.

use crate::compile::{BundleKind, is_manifest_file};
use crate::content::BundleContent;
use crate::error::{BundleError, Result};
use crate::tools::{Scratch, Tools, run};
use crate::yaml::parse_documents;
use flotilla_api::BundleDeploymentOptions;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy)]
pub struct RenderInput<'a> {
    pub content: &'a BundleContent,
    /// This cluster's options, customizations applied.
    pub options: &'a BundleDeploymentOptions,
    /// Used as the Helm release name when `helm.releaseName` is unset.
    pub bundle_name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    /// Kinds known to be cluster-scoped beyond the built-in ones, as
    /// (API group, kind); the agent adds these from discovery.
    pub cluster_scoped: &'a BTreeSet<(String, String)>,
    pub tools: &'a Tools,
}

/// Built-in cluster-scoped kinds, by (API group, kind).
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("networking.k8s.io", "IngressClass"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("flotilla.dev", "Content"),
];

/// Which renderer a bundle's files call for.
pub fn detect_kind(
    options: &BundleDeploymentOptions,
    has_root_file: impl Fn(&str) -> bool,
) -> BundleKind {
    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
    if options.helm.as_ref().is_some_and(|h| set(&h.chart)) || has_root_file("Chart.yaml") {
        BundleKind::Helm
    } else if options.kustomize.as_ref().is_some_and(|k| set(&k.dir))
        || ["kustomization.yaml", "kustomization.yml", "Kustomization"]
            .iter()
            .any(|f| has_root_file(f))
    {
        BundleKind::Kustomize
    } else {
        BundleKind::Raw
    }
}

pub fn render(input: &RenderInput<'_>) -> Result<Vec<Value>> {
    // Empty strings are unset, as Fleet reads them.
    let mut options = input.options.clone();
    options.normalize();
    let input = &RenderInput {
        options: &options,
        ..*input
    };
    // The options after customization: what reaches `helm` and `kubectl`.
    crate::validate::check_options(input.options, "")?;
    let kind = detect_kind(input.options, |f| input.content.files.contains_key(f));
    let objects = match kind {
        BundleKind::Raw => render_raw(input.content, input.options)?,
        BundleKind::Kustomize => render_kustomize(input)?,
        BundleKind::Helm => render_helm(input)?,
    };
    post_process(objects, input)
}

fn render_raw(content: &BundleContent, options: &BundleDeploymentOptions) -> Result<Vec<Value>> {
    let mut files: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (path, bytes) in &content.files {
        if path.starts_with("overlays/") || !is_manifest_file(path) {
            continue;
        }
        files.insert(path.clone(), parse_file(path, bytes)?);
    }
    for overlay in options.yaml.iter().flat_map(|y| &y.overlays) {
        apply_overlay(content, overlay, &mut files)?;
    }
    Ok(files.into_values().flatten().collect())
}

fn parse_file(path: &str, bytes: &[u8]) -> Result<Vec<Value>> {
    let text = std::str::from_utf8(bytes).map_err(|_| BundleError::InvalidManifest {
        file: path.to_owned(),
        message: "not UTF-8 text".into(),
    })?;
    parse_documents(path, text)
}

/// Fleet's overlays: `overlays/<name>/x.yaml` replaces or adds `x.yaml`;
/// `overlays/<name>/x_patch.yaml` patches it (a list is a JSON patch, a
/// mapping a merge patch).
fn apply_overlay(
    content: &BundleContent,
    overlay: &str,
    files: &mut BTreeMap<String, Vec<Value>>,
) -> Result<()> {
    let prefix = format!("overlays/{overlay}/");
    let err = |message: String| BundleError::Overlay {
        overlay: overlay.to_owned(),
        message,
    };
    let mut found = false;
    for (path, bytes) in content.files.range(prefix.clone()..) {
        let Some(rel) = path.strip_prefix(&prefix) else {
            break;
        };
        found = true;
        if !is_manifest_file(rel) {
            continue;
        }
        let docs = parse_file(path, bytes)?;
        if let Some(target) = rel
            .contains("_patch.")
            .then(|| rel.replacen("_patch.", ".", 1))
        {
            let base = files.get_mut(&target).ok_or_else(|| {
                err(format!(
                    "{path} patches {target}, which the bundle does not have"
                ))
            })?;
            for patch in &docs {
                for doc in base.iter_mut() {
                    match patch {
                        Value::Array(_) => {
                            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                                .map_err(|e| err(format!("{path}: invalid JSON patch: {e}")))?;
                            json_patch::patch(doc, &ops).map_err(|e| err(format!("{path}: {e}")))?
                        }
                        Value::Object(_) => json_patch::merge(doc, patch),
                        _ => return Err(err(format!("{path}: a patch is a mapping or a list"))),
                    }
                }
            }
        } else {
            files.insert(rel.to_owned(), docs);
        }
    }
    if !found {
        return Err(err(format!(
            "the bundle has no overlays/{overlay} directory"
        )));
    }
    Ok(())
}

fn render_kustomize(input: &RenderInput<'_>) -> Result<Vec<Value>> {
    // Nothing outside the bundle, and nothing remote.
    crate::kustomize::check_confined(input.content)?;
    let scratch = Scratch::write(input.content)?;
    let dir = input
        .options
        .kustomize
        .as_ref()
        .and_then(|k| k.dir.as_deref())
        .map(|d| crate::tree::safe_path("", d, "kustomize.dir"))
        .transpose()?
        .unwrap_or_default();
    let target = scratch.dir.join(&dir);
    let out = run(
        "kubectl kustomize",
        &input.tools.kubectl,
        &[
            "kustomize".into(),
            "--load-restrictor=LoadRestrictionsRootOnly".into(),
            target.to_string_lossy().into_owned(),
        ],
        input.tools.timeout,
    )?;
    parse_documents("(kustomize output)", &out)
}

/// The `helm template` command line: every value was checked by
/// [`crate::validate::check_options`], flags take their values in the
/// `--flag=value` form, and the release name and chart come after `--`,
/// so none of them can be read as an option.
fn helm_args(input: &RenderInput<'_>, scratch: &Scratch) -> Result<Vec<String>> {
    let helm = input.options.helm.clone().unwrap_or_default();
    let set = |o: &Option<String>| o.clone().filter(|s| !s.is_empty());
    let release = set(&helm.release_name).unwrap_or_else(|| {
        input
            .bundle_name
            .chars()
            .take(crate::validate::MAX_RELEASE_NAME)
            .collect::<String>()
            .trim_end_matches('-')
            .to_owned()
    });
    // `crds/` too: `helm install` (which Fleet runs) installs them.
    let mut args = vec!["template".to_owned(), "--include-crds".to_owned()];
    let chart = match (set(&helm.repo), set(&helm.chart)) {
        (Some(repo), Some(chart)) => {
            args.push(format!("--repo={repo}"));
            chart
        }
        (None, Some(chart)) if chart.contains("://") => chart,
        (_, chart) => {
            let dir = crate::tree::safe_path("", chart.as_deref().unwrap_or("."), "helm.chart")?;
            scratch.dir.join(dir).to_string_lossy().into_owned()
        }
    };
    if let Some(v) = set(&helm.version) {
        args.push(format!("--version={v}"));
    }
    if let Some(ns) =
        set(&input.options.namespace).or_else(|| set(&input.options.default_namespace))
    {
        args.push(format!("--namespace={ns}"));
    }
    for f in &helm.values_files {
        let p = crate::tree::safe_path("", f, "helm.valuesFiles")?;
        args.push(format!(
            "--values={}",
            scratch.dir.join(p).to_string_lossy()
        ));
    }
    if let Some(values) = &helm.values {
        let path = scratch.dir.join(".flotilla-values.json");
        std::fs::write(&path, serde_json::to_vec(values).expect("values serialize")).map_err(
            |e| BundleError::Tool {
                tool: "helm template".into(),
                message: e.to_string(),
            },
        )?;
        args.push(format!("--values={}", path.to_string_lossy()));
    }
    // As Fleet: templates may look names up unless disableDNS.
    if !helm.disable_dns {
        args.push("--enable-dns".into());
    }
    if helm.skip_schema_validation {
        args.push("--skip-schema-validation".into());
    }
    args.extend(["--".into(), release, chart]);
    Ok(args)
}

fn render_helm(input: &RenderInput<'_>) -> Result<Vec<Value>> {
    let helm = input.options.helm.clone().unwrap_or_default();
    let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
    if set(&helm.repo) || helm.chart.as_deref().is_some_and(|c| c.contains("://")) {
        return Err(BundleError::Tool {
            tool: "helm template".into(),
            message: "this bundle names a remote chart: charts are resolved and vendored when the bundle is compiled, and an agent never fetches one".into(),
        });
    }
    let helm_bin = input.tools.helm.as_ref().ok_or_else(|| BundleError::Tool {
        tool: "helm template".into(),
        message: "this bundle is a Helm chart, and no `helm` binary is on PATH".into(),
    })?;
    let scratch = Scratch::write(input.content)?;
    let args = helm_args(input, &scratch)?;
    let out = run("helm template", helm_bin, &args, input.tools.timeout)?;
    match post_render_dir(input)? {
        Some((dir, file)) => post_render(input, &dir, &file, out),
        None => parse_documents("(helm template output)", &out),
    }
}

/// The kustomization that post-renders a Helm bundle, if there is one:
/// in `kustomize.dir`, or the bundle's root. (dir, file name)
fn post_render_dir(input: &RenderInput<'_>) -> Result<Option<(String, String)>> {
    let dir = input
        .options
        .kustomize
        .as_ref()
        .and_then(|k| k.dir.as_deref())
        .filter(|d| !d.is_empty())
        .map(|d| crate::tree::safe_path("", d, "kustomize.dir"))
        .transpose()?
        .unwrap_or_default();
    let join = |f: &str| {
        if dir.is_empty() {
            f.to_owned()
        } else {
            format!("{dir}/{f}")
        }
    };
    Ok(crate::kustomize::KUSTOMIZATION_FILES
        .iter()
        .find(|f| input.content.files.contains_key(&join(f)))
        .map(|f| (dir.clone(), join(f))))
}

/// Kustomize over Helm's output: the output is written as
/// `fleet-manifests.yaml` beside the kustomization, listed first in its
/// resources.
fn post_render(
    input: &RenderInput<'_>,
    dir: &str,
    file: &str,
    helm_output: String,
) -> Result<Vec<Value>> {
    let manifests = if dir.is_empty() {
        "fleet-manifests.yaml".to_owned()
    } else {
        format!("{dir}/fleet-manifests.yaml")
    };
    let mut content = input.content.clone();
    let text =
        std::str::from_utf8(&content.files[file]).map_err(|_| BundleError::InvalidManifest {
            file: file.to_owned(),
            message: "not UTF-8 text".into(),
        })?;
    let mut kustomization = match crate::yaml::parse_document(file, text)? {
        Value::Null => Value::Object(Map::new()),
        v @ Value::Object(_) => v,
        _ => {
            return Err(BundleError::InvalidManifest {
                file: file.to_owned(),
                message: "a kustomization is a mapping".into(),
            });
        }
    };
    let has_output = !helm_output.trim().is_empty();
    if has_output {
        let resources = kustomization
            .as_object_mut()
            .expect("a mapping")
            .entry("resources")
            .or_insert_with(|| Value::Array(Vec::new()));
        match resources {
            Value::Array(list) => {
                if !list.iter().any(|r| r == "fleet-manifests.yaml") {
                    list.insert(0, Value::String("fleet-manifests.yaml".into()));
                }
            }
            _ => {
                return Err(BundleError::InvalidManifest {
                    file: file.to_owned(),
                    message: "resources is not a list".into(),
                });
            }
        }
        content.files.insert(manifests, helm_output.into_bytes());
    }
    content.files.insert(
        file.to_owned(),
        serde_json::to_vec(&kustomization).expect("a kustomization serializes"),
    );
    crate::kustomize::check_confined(&content)?;
    let scratch = Scratch::write(&content)?;
    let out = run(
        "kubectl kustomize (post-rendering the chart)",
        &input.tools.kubectl,
        &[
            "kustomize".into(),
            "--load-restrictor=LoadRestrictionsRootOnly".into(),
            scratch.dir.join(dir).to_string_lossy().into_owned(),
        ],
        input.tools.timeout,
    )?;
    parse_documents("(kustomize output over the chart)", &out)
}

fn post_process(objects: Vec<Value>, input: &RenderInput<'_>) -> Result<Vec<Value>> {
    // CRDs in the bundle declare the scope of their kinds.
    let mut cluster_scoped: BTreeSet<(String, String)> = input.cluster_scoped.clone();
    cluster_scoped.extend(
        CLUSTER_SCOPED
            .iter()
            .map(|(g, k)| (g.to_string(), k.to_string())),
    );
    for o in &objects {
        if o.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
            && o.pointer("/spec/scope").and_then(Value::as_str) == Some("Cluster")
            && let (Some(g), Some(k)) = (
                o.pointer("/spec/group").and_then(Value::as_str),
                o.pointer("/spec/names/kind").and_then(Value::as_str),
            )
        {
            cluster_scoped.insert((g.to_owned(), k.to_owned()));
        }
    }

    let mut out = Vec::with_capacity(objects.len());
    for mut o in objects {
        let (Some(api_version), Some(kind)) = (
            o.get("apiVersion")
                .and_then(Value::as_str)
                .map(str::to_owned),
            o.get("kind").and_then(Value::as_str).map(str::to_owned),
        ) else {
            continue; // not a Kubernetes object (a values file, a list of settings)
        };
        let group = api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
            .to_owned();
        let is_cluster_scoped = cluster_scoped.contains(&(group, kind.clone()));
        crate::limits::check_object(&o).map_err(|message| BundleError::InvalidManifest {
            file: format!("{kind} (rendered)"),
            message,
        })?;
        let Value::Object(obj) = &mut o else { continue };
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .ok_or_else(|| BundleError::InvalidManifest {
                file: kind.clone(),
                message: "metadata is not a mapping".into(),
            })?;
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if let Some(ns) = &input.options.namespace {
            if is_cluster_scoped {
                return Err(BundleError::InvalidManifest {
                    file: format!("{kind} {name}"),
                    message: format!("is cluster-scoped, and the bundle forces namespace {ns:?}"),
                });
            }
            meta.insert("namespace".into(), Value::String(ns.clone()));
        } else if let Some(ns) = &input.options.default_namespace
            && !is_cluster_scoped
            && meta
                .get("namespace")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            meta.insert("namespace".into(), Value::String(ns.clone()));
        }
        add_all(meta, "labels", input.labels);
        add_all(meta, "annotations", input.annotations);
        out.push(o);
    }
    Ok(out)
}

fn add_all(meta: &mut Map<String, Value>, field: &str, entries: &BTreeMap<String, String>) {
    if entries.is_empty() {
        return;
    }
    let map = meta
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = map {
        for (k, v) in entries {
            m.insert(k.clone(), Value::String(v.clone()));
        }
    }
}
