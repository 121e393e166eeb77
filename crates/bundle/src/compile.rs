//! A repository tree and a GitRepo's paths become bundles, as Fleet would
//! make them:
//! - each path is scanned on its own; globs select directories;
//! - a path is a bundle; every directory below it holding a `fleet.yaml`
//!   is a bundle of its own, and its files leave the parent bundle;
//! - a bundle is a Helm chart (a `Chart.yaml` or `helm.chart`), a kustomize
//!   directory (a `kustomization.yaml` or `kustomize.dir`), or raw YAML and
//!   JSON manifests (other files are skipped);
//! - `.fleetignore` removes files and directories.

use crate::content::BundleContent;
use crate::error::{BundleError, Result};
use crate::fleetyaml::{self, FleetYaml};
use crate::ignore::{self, FleetIgnore, Glob};
use crate::name::bundle_name;
use crate::tree::{RepoTree, parent, safe_path};
use crate::yaml::parse_documents;
use flotilla_api::{BundleSpec, BundleTarget, GitTarget, keys};
use std::collections::{BTreeMap, BTreeSet};

/// Size limits. The API server and etcd refuse large objects, so what
/// they would refuse is refused here first, naming the bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_manifest_bytes: usize,
    /// The bundle's files, uncompressed.
    pub max_bundle_bytes: usize,
    /// One stored object (the Content, the Bundle), as the API server
    /// stores it: etcd's default request limit.
    pub max_object_bytes: usize,
}

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const ETCD_MAX_OBJECT_BYTES: usize = 1536 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 1 << 20,
            max_bundle_bytes: 16 << 20,
            max_object_bytes: ETCD_MAX_OBJECT_BYTES,
        }
    }
}

/// What an object carries beyond its payload once stored (metadata, uid,
/// timestamps, managedFields).
pub const OBJECT_OVERHEAD_BYTES: usize = 2048;

#[derive(Clone, Debug)]
pub struct CompileInput<'a> {
    /// The GitRepo's name: bundle names start with it.
    pub repo_name: &'a str,
    /// The GitRepo's paths; empty means the repository root.
    pub paths: &'a [String],
    /// The targets bundles get unless their `fleet.yaml` overrides them.
    pub targets: &'a [GitTarget],
    pub limits: Limits,
    /// When the compile must give up; checked between files.
    pub deadline: Option<Deadline>,
}

/// A point in time a compile must finish by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub at: std::time::Instant,
    /// The budget it was given, for the message.
    pub seconds: u64,
}

impl Deadline {
    pub fn after(budget: std::time::Duration) -> Self {
        Deadline {
            at: std::time::Instant::now() + budget,
            seconds: budget.as_secs().max(1),
        }
    }
}

impl CompileInput<'_> {
    fn check_deadline(&self) -> Result<()> {
        match self.deadline {
            Some(d) if std::time::Instant::now() >= d.at => {
                Err(BundleError::TimedOut { seconds: d.seconds })
            }
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleKind {
    Raw,
    Kustomize,
    Helm,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CompiledBundle {
    pub name: String,
    /// The bundle's directory in the repository ("" for the root).
    pub dir: String,
    pub kind: BundleKind,
    pub labels: BTreeMap<String, String>,
    /// Annotations the Bundle carries (the charts it resolved, say).
    pub annotations: BTreeMap<String, String>,
    pub spec: BundleSpec,
    pub content: BundleContent,
    pub warnings: Vec<String>,
}

/// Compiles every bundle of the tree. One broken bundle fails the whole
/// compile, so a commit is deployed entirely or not at all.
pub fn compile_repo(tree: &RepoTree, input: &CompileInput<'_>) -> Result<Vec<CompiledBundle>> {
    let ignore = FleetIgnore::from_tree(tree)?;
    let mut bundles = Vec::new();
    for unit in plan_dirs(tree, input.paths, &ignore)? {
        input.check_deadline()?;
        let nested: Vec<&str> = unit.nested.iter().map(String::as_str).collect();
        if let Some(bundle) = compile_dir(tree, &unit.dir, &nested, &ignore, input)? {
            bundles.push(bundle);
        }
    }
    check_unique_names(bundles.iter().map(|b| (b.name.as_str(), b.dir.as_str())))?;
    Ok(bundles)
}

/// One bundle directory and the bundle directories nested below it, whose
/// files it leaves to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleDir {
    pub dir: String,
    pub nested: Vec<String>,
}

/// The bundle directories of a tree, each with its nested ones. Needs only
/// the tree's paths and its `.fleetignore` files, not the other files'
/// bytes, so an incremental compiler can plan before it reads anything.
pub fn plan_dirs(
    tree: &RepoTree,
    paths: &[String],
    ignore: &FleetIgnore,
) -> Result<Vec<BundleDir>> {
    let dirs = discover(tree, paths, ignore)?;
    Ok(dirs
        .iter()
        .map(|dir| BundleDir {
            dir: dir.clone(),
            nested: dirs
                .iter()
                .filter(|d| is_under(d, dir) && *d != dir)
                .cloned()
                .collect(),
        })
        .collect())
}

/// Two directories may not compile to the same bundle name (a `fleet.yaml`
/// `name:` can collide with a derived one). Takes (name, dir) pairs.
pub fn check_unique_names<'a>(bundles: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<()> {
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, dir) in bundles {
        if let Some(other) = names.insert(name, dir) {
            return Err(BundleError::InvalidPath {
                path: display_dir(dir),
                message: format!(
                    "bundle name {name:?} is also used by {}",
                    display_dir(other)
                ),
            });
        }
    }
    Ok(())
}

/// The bundle directories of the given paths, sorted.
pub fn discover(tree: &RepoTree, paths: &[String], ignore: &FleetIgnore) -> Result<Vec<String>> {
    let dirs = directories(tree);
    let mut roots = BTreeSet::new();
    let root_only = [String::from(".")];
    let paths = if paths.is_empty() {
        &root_only[..]
    } else {
        paths
    };
    for path in paths {
        let normalized = safe_path("", path.trim_start_matches('/'), "path")?;
        if normalized.contains(['*', '?', '[']) {
            let glob = Glob::new(&normalized).map_err(|message| BundleError::InvalidPath {
                path: path.clone(),
                message,
            })?;
            let matched: Vec<&String> = dirs.iter().filter(|d| glob.is_match(d)).collect();
            if matched.is_empty() {
                return Err(BundleError::InvalidPath {
                    path: path.clone(),
                    message: "the glob matches no directory of the repository".into(),
                });
            }
            roots.extend(matched.into_iter().cloned());
        } else if dirs.contains(&normalized) {
            roots.insert(normalized);
        } else {
            return Err(BundleError::InvalidPath {
                path: path.clone(),
                message: "no such directory in the repository".into(),
            });
        }
    }
    let mut out = BTreeSet::new();
    for root in roots {
        for (p, _) in tree.entries_under(&root) {
            let is_fleet_yaml = p.rsplit('/').next() == Some(fleetyaml::FILE_NAME);
            if is_fleet_yaml && !ignore.is_ignored(p, false) {
                out.insert(parent(p).to_owned());
            }
        }
        out.insert(root);
    }
    Ok(out.into_iter().collect())
}

/// Every directory of the tree, the root as "".
fn directories(tree: &RepoTree) -> BTreeSet<String> {
    let mut dirs = BTreeSet::from([String::new()]);
    for p in tree.paths() {
        let mut d = parent(p);
        while !d.is_empty() && dirs.insert(d.to_owned()) {
            d = parent(d);
        }
    }
    dirs
}

fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

fn display_dir(dir: &str) -> String {
    if dir.is_empty() {
        "/".into()
    } else {
        dir.to_owned()
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Compiles one bundle directory. Returns `None` for a path without a
/// `fleet.yaml` whose files all belong to nested bundles.
pub fn compile_dir(
    tree: &RepoTree,
    dir: &str,
    nested: &[&str],
    ignore: &FleetIgnore,
    input: &CompileInput<'_>,
) -> Result<Option<CompiledBundle>> {
    let fleet_path = join(dir, fleetyaml::FILE_NAME);
    let mut warnings = Vec::new();
    let has_fleet_yaml = !ignore.is_ignored(&fleet_path, false) && tree.contains(&fleet_path);
    let fleet: FleetYaml = if has_fleet_yaml {
        let bytes = tree
            .read_limited(&fleet_path, input.limits.max_manifest_bytes)?
            .unwrap_or_default();
        let text = std::str::from_utf8(&bytes).map_err(|_| BundleError::InvalidYaml {
            file: fleet_path.clone(),
            line: 1,
            format: "YAML",
            message: "the file is not UTF-8 text".into(),
        })?;
        let parsed = fleetyaml::parse(&fleet_path, text)?;
        warnings.extend(parsed.warnings);
        parsed.fleet
    } else {
        FleetYaml::default()
    };
    check_fleet_options(&fleet, &fleet_path)?;

    let kind = crate::render::detect_kind(&fleet.options, |f| tree.contains(&join(dir, f)));
    // The kind is decided per cluster, after customizations: one that
    // names a chart or a kustomize directory needs every file (a
    // configMapGenerator's `.properties`, a chart's templates).
    let raw_everywhere = kind == BundleKind::Raw
        && fleet
            .target_customizations
            .iter()
            .all(|c| crate::render::detect_kind(&c.options, |_| false) == BundleKind::Raw);

    let name = match &fleet.name {
        Some(n) => n.clone(),
        None => bundle_name(input.repo_name, dir),
    };
    let mut content = BundleContent::default();
    let mut total: u64 = 0;
    for (path, _) in tree.entries_under(dir) {
        input.check_deadline()?;
        if nested.iter().any(|n| is_under(path, n)) || ignore.is_ignored(path, false) {
            continue;
        }
        let rel = if dir.is_empty() {
            path
        } else {
            &path[dir.len() + 1..]
        };
        let file_name = rel.rsplit('/').next().unwrap_or(rel);
        if rel == fleetyaml::FILE_NAME || file_name == ignore::FILE_NAME {
            continue;
        }
        if raw_everywhere && !is_manifest_file(rel) {
            continue;
        }
        // Sizes are checked before anything is read: the file's, then the
        // bundle's so far.
        let size = tree.size(path)?.unwrap_or(0);
        if size > input.limits.max_manifest_bytes as u64 {
            return Err(BundleError::ManifestTooLarge {
                path: path.to_owned(),
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit: input.limits.max_manifest_bytes,
            });
        }
        total += size;
        if total > input.limits.max_bundle_bytes as u64 {
            return Err(BundleError::BundleTooLarge {
                bundle: name,
                size: usize::try_from(total).unwrap_or(usize::MAX),
                limit: input.limits.max_bundle_bytes,
            });
        }
        let Some(bytes) = tree.read_limited(path, input.limits.max_manifest_bytes)? else {
            warnings.push(format!("{path}: dangling symlink skipped"));
            continue;
        };
        if raw_everywhere {
            check_manifests(path, &bytes, &mut warnings)?;
        }
        content.files.insert(rel.to_owned(), bytes.into_owned());
    }

    if content.files.is_empty() && !has_fleet_yaml && !nested.is_empty() {
        return Ok(None);
    }
    if content.total_bytes() > input.limits.max_bundle_bytes {
        return Err(BundleError::BundleTooLarge {
            bundle: name,
            size: content.total_bytes(),
            limit: input.limits.max_bundle_bytes,
        });
    }
    check_references(&fleet, &content, &fleet_path, kind)?;
    if kind == BundleKind::Kustomize {
        crate::kustomize::check_confined(&content)?;
    }

    let mut labels = fleet.labels.clone();
    labels.insert(keys::REPO_NAME.to_owned(), input.repo_name.to_owned());
    let targets: Vec<BundleTarget> = if fleet.override_targets.is_empty() {
        input.targets.iter().map(Into::into).collect()
    } else {
        fleet.override_targets.iter().map(Into::into).collect()
    };
    let spec = BundleSpec {
        options: fleet.options,
        content_id: content.content_id(),
        paused: fleet.paused,
        rollout_strategy: fleet.rollout_strategy,
        targets,
        target_restrictions: Vec::new(),
        target_customizations: fleet.target_customizations,
        target_customization_mode: fleet.target_customization_mode,
        depends_on: fleet.depends_on,
    };
    check_stored_sizes(&name, &spec, &labels, &content, input.limits)?;
    Ok(Some(CompiledBundle {
        name,
        dir: dir.to_owned(),
        kind,
        labels,
        annotations: BTreeMap::new(),
        spec,
        content,
        warnings,
    }))
}

/// The options of `fleet.yaml` and of each target customization must be
/// safe to hand to a subprocess (see [`crate::validate`]).
fn check_fleet_options(fleet: &FleetYaml, fleet_path: &str) -> Result<()> {
    let in_file = |e: BundleError| match e {
        BundleError::InvalidOption { field, message } => BundleError::InvalidField {
            file: fleet_path.to_owned(),
            field,
            message,
        },
        other => other,
    };
    crate::validate::check_options(&fleet.options, "").map_err(in_file)?;
    for (i, c) in fleet.target_customizations.iter().enumerate() {
        crate::validate::check_options(&c.options, &format!("targetCustomizations[{i}]."))
            .map_err(in_file)?;
    }
    Ok(())
}

/// The Content and the Bundle must each fit in one stored object, as
/// etcd stores them: the content gzipped and base64-encoded, the Bundle as
/// JSON.
fn check_stored_sizes(
    name: &str,
    spec: &BundleSpec,
    labels: &BTreeMap<String, String>,
    content: &BundleContent,
    limits: Limits,
) -> Result<()> {
    let content_bytes = content.gzip().len().div_ceil(3) * 4 + OBJECT_OVERHEAD_BYTES;
    if content_bytes > limits.max_object_bytes {
        return Err(BundleError::ObjectTooLarge {
            what: format!("bundle {name}"),
            size: content_bytes,
            limit: limits.max_object_bytes,
            why: "of one stored object (its Content, gzipped and base64-encoded, as etcd would store it)".into(),
        });
    }
    // A BundleDeployment carries its options twice (applied and staged),
    // a target customization's merged over the bundle's.
    let options = json_len(&spec.options)
        + spec
            .target_customizations
            .iter()
            .map(|c| json_len(&c.options))
            .max()
            .unwrap_or(0);
    let deployment_bytes = 2 * options + OBJECT_OVERHEAD_BYTES;
    if deployment_bytes > limits.max_object_bytes {
        return Err(BundleError::ObjectTooLarge {
            what: format!("bundle {name}"),
            size: deployment_bytes,
            limit: limits.max_object_bytes,
            why: "of one stored object (each BundleDeployment carries the options, values included, twice: applied and staged)".into(),
        });
    }
    let bundle_bytes = json_len(spec) + json_len(labels) + OBJECT_OVERHEAD_BYTES;
    if bundle_bytes > limits.max_object_bytes {
        return Err(BundleError::ObjectTooLarge {
            what: format!("bundle {name}"),
            size: bundle_bytes,
            limit: limits.max_object_bytes,
            why: "of one stored object (the Bundle's spec: its targets, customizations and values)"
                .into(),
        });
    }
    Ok(())
}

/// The length of a value's JSON.
fn json_len<T: serde::Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).map_or(0, |v| v.len())
}

pub fn is_manifest_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml") || lower.ends_with(".json")
}

/// Raw manifests must parse; documents that are not Kubernetes objects are
/// skipped with a warning.
fn check_manifests(path: &str, bytes: &[u8], warnings: &mut Vec<String>) -> Result<()> {
    let text = std::str::from_utf8(bytes).map_err(|_| BundleError::InvalidManifest {
        file: path.to_owned(),
        message: "not UTF-8 text".into(),
    })?;
    // Overlay patches may be partial objects; they are checked when applied.
    if path.split('/').any(|seg| seg == "overlays") {
        parse_documents(path, text)?;
        return Ok(());
    }
    for (i, doc) in parse_documents(path, text)?.iter().enumerate() {
        crate::limits::check_object(doc).map_err(|message| BundleError::InvalidManifest {
            file: path.to_owned(),
            message,
        })?;
        if doc.get("apiVersion").and_then(|v| v.as_str()).is_none()
            || doc.get("kind").and_then(|v| v.as_str()).is_none()
        {
            warnings.push(format!(
                "{path}: document {} has no apiVersion and kind; skipped",
                i + 1
            ));
        }
    }
    Ok(())
}

/// Paths that `fleet.yaml` names must exist inside the bundle.
fn check_references(
    fleet: &FleetYaml,
    content: &BundleContent,
    fleet_path: &str,
    kind: BundleKind,
) -> Result<()> {
    let missing = |field: &str, path: &str, what: &str| BundleError::InvalidField {
        file: fleet_path.to_owned(),
        field: field.to_owned(),
        message: format!("{path:?}: {what}"),
    };
    let has_dir = |d: &str| d.is_empty() || content.files.keys().any(|f| is_under(f, d));
    if let Some(dir) = fleet
        .options
        .kustomize
        .as_ref()
        .and_then(|k| k.dir.as_deref())
    {
        let d = safe_path("", dir, "kustomize.dir")?;
        if kind == BundleKind::Kustomize && !has_dir(&d) {
            return Err(missing(
                "kustomize.dir",
                dir,
                "no such directory in the bundle",
            ));
        }
    }
    if let Some(helm) = &fleet.options.helm {
        if let Some(chart) = helm.chart.as_deref()
            && helm.repo.is_none()
            && !chart.contains("://")
        {
            let d = safe_path("", chart, "helm.chart")?;
            if !content.files.contains_key(&join(&d, "Chart.yaml"))
                && !content.files.contains_key(&d)
            {
                return Err(missing(
                    "helm.chart",
                    chart,
                    "no Chart.yaml there in the bundle",
                ));
            }
        }
        for (i, f) in helm.values_files.iter().enumerate() {
            let p = safe_path("", f, "helm.valuesFiles")?;
            if !content.files.contains_key(&p) {
                return Err(missing(
                    &format!("helm.valuesFiles[{i}]"),
                    f,
                    "no such file in the bundle",
                ));
            }
        }
    }
    Ok(())
}
