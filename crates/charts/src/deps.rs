//! Chart dependencies (`dependencies` in `Chart.yaml`, or a v1 chart's
//! `requirements.yaml`), resolved when the bundle is compiled so that
//! `helm template` finds every subchart in `charts/`:
//!
//! - a dependency already in `charts/` (a directory, or a `<name>-*.tgz`)
//!   is used as it is;
//! - `Chart.lock` pins the versions it lists;
//! - `https://` and `oci://` repositories are fetched through the
//!   [`Resolver`] (so cached by digest);
//! - `file://` paths must name a chart inside the bundle, which is copied;
//! - repository aliases (`@stable`, `alias:stable`) need `helm repo add`,
//!   which is never run: they are refused with a message.

use crate::archive::{Dependency, chart_meta};
use crate::error::ChartError;
use crate::resolver::{Resolved, Resolver};
use crate::source::{Access, ChartSource};
use serde::Deserialize;
use std::collections::BTreeMap;

/// How deep subcharts' own dependencies are followed.
const MAX_DEPTH: usize = 5;

#[derive(Debug, Default, Deserialize)]
struct Requirements {
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

fn join(dir: &str, rel: &str) -> String {
    if dir.is_empty() {
        rel.to_owned()
    } else {
        format!("{dir}/{rel}")
    }
}

/// `dir` joined with a relative path, `..` folded, refusing to leave the
/// bundle.
fn within(dir: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    if rel.starts_with('/') {
        return None;
    }
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Vendors the dependencies of the chart at `chart_dir` (a directory of
/// `files`, "" for the root) into its `charts/`, and theirs in turn.
/// Returns the charts it fetched.
pub async fn vendor_dependencies(
    resolver: &Resolver,
    files: &mut BTreeMap<String, Vec<u8>>,
    chart_dir: &str,
    access_for: &(dyn Fn(&ChartSource) -> Access + Sync),
) -> Result<Vec<Resolved>, ChartError> {
    let mut fetched = Vec::new();
    let mut todo = vec![(chart_dir.to_owned(), 0usize)];
    while let Some((dir, depth)) = todo.pop() {
        let what = if dir.is_empty() {
            "(bundle root)".to_owned()
        } else {
            dir.clone()
        };
        let Some(chart_yaml) = files.get(&join(&dir, "Chart.yaml")).cloned() else {
            continue;
        };
        let meta = chart_meta(&what, &chart_yaml)?;
        let mut deps = meta.dependencies;
        if let Some(req) = files.get(&join(&dir, "requirements.yaml")) {
            let text = String::from_utf8_lossy(req).into_owned();
            let r: Requirements =
                serde_saphyr::from_str(&text).map_err(|e| ChartError::Invalid {
                    chart: meta.name.clone(),
                    message: format!(
                        "requirements.yaml: {}",
                        e.to_string().lines().next().unwrap_or_default()
                    ),
                })?;
            deps.extend(r.dependencies);
        }
        if deps.is_empty() {
            continue;
        }
        if depth >= MAX_DEPTH {
            return Err(ChartError::Invalid {
                chart: meta.name,
                message: format!("dependencies nest more than {MAX_DEPTH} levels"),
            });
        }
        let locked = lock_versions(files, &dir);
        for d in deps {
            // A name becomes a directory of the bundle.
            let plain = !d.name.is_empty()
                && d.name.len() <= 250
                && d.name != "."
                && d.name != ".."
                && !d.name.contains(['/', '\\', '\0'])
                && !d.name.starts_with('.');
            if !plain {
                return Err(ChartError::Invalid {
                    chart: meta.name.clone(),
                    message: format!(
                        "dependency name {:?} is not a chart name (no slashes, no leading dot)",
                        d.name
                    ),
                });
            }
            let target = join(&dir, &format!("charts/{}", d.name));
            if vendored(files, &dir, &d.name) {
                todo.push((target, depth + 1));
                continue;
            }
            let version = locked
                .get(&d.name)
                .cloned()
                .unwrap_or_else(|| d.version.clone());
            let repo = d.repository.trim();
            let refuse = |why: String| ChartError::Invalid {
                chart: meta.name.clone(),
                message: format!("dependency {}: {why}", d.name),
            };
            if repo.starts_with('@') || repo.starts_with("alias:") {
                return Err(refuse(format!(
                    "the repository alias {repo:?} needs `helm repo add`, which Flotilla does not run; give its URL"
                )));
            }
            if let Some(path) = repo.strip_prefix("file://") {
                let source = within(&dir, path)
                    .ok_or_else(|| refuse(format!("{repo:?} leaves the bundle")))?;
                if !files.contains_key(&join(&source, "Chart.yaml")) {
                    return Err(refuse(format!(
                        "{repo:?} is not a chart of the bundle (no Chart.yaml there)"
                    )));
                }
                let prefix = format!("{source}/");
                let copied: Vec<(String, Vec<u8>)> = files
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, v)| (format!("{target}/{}", &k[prefix.len()..]), v.clone()))
                    .collect();
                files.extend(copied);
                todo.push((target, depth + 1));
                continue;
            }
            let Some(src) = ChartSource::of(Some(repo), Some(&d.name), Some(&version)) else {
                return Err(refuse(if repo.is_empty() {
                    "it is not in charts/ and names no repository".into()
                } else {
                    format!(
                        "the repository {repo:?} is not an https://, http://, oci:// or file:// URL"
                    )
                }));
            };
            let resolved = resolver.resolve(&src, &access_for(&src)).await?;
            for (path, bytes) in &resolved.chart.files {
                files.insert(format!("{target}/{path}"), bytes.clone());
            }
            todo.push((target, depth + 1));
            fetched.push(resolved);
        }
    }
    Ok(fetched)
}

fn vendored(files: &BTreeMap<String, Vec<u8>>, dir: &str, name: &str) -> bool {
    let charts = join(dir, "charts/");
    files.contains_key(&format!("{charts}{name}/Chart.yaml"))
        || files
            .range(format!("{charts}{name}-")..)
            .take_while(|(k, _)| k.starts_with(&format!("{charts}{name}-")))
            .any(|(k, _)| k.ends_with(".tgz") && !k[charts.len()..].contains('/'))
}

fn lock_versions(files: &BTreeMap<String, Vec<u8>>, dir: &str) -> BTreeMap<String, String> {
    #[derive(Deserialize, Default)]
    struct Lock {
        #[serde(default)]
        dependencies: Vec<Dependency>,
    }
    files
        .get(&join(dir, "Chart.lock"))
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|t| serde_saphyr::from_str::<Lock>(t).ok())
        .map(|l| {
            l.dependencies
                .into_iter()
                .filter(|d| !d.version.is_empty())
                .map(|d| (d.name, d.version))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[tokio::test]
    async fn local_and_vendored_dependencies_need_no_network() {
        let resolver = Resolver::new(
            std::env::temp_dir().join("flotilla-deps-test"),
            std::time::Duration::from_secs(1),
        );
        let mut f = files(&[
            (
                "app/Chart.yaml",
                "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: common\n  version: 1.x\n  repository: file://../common\n- name: vendored\n  version: 2.0.0\n  repository: https://unreachable.invalid\n",
            ),
            ("app/charts/vendored-2.0.0.tgz", "binary"),
            (
                "common/Chart.yaml",
                "apiVersion: v2\nname: common\nversion: 1.2.0\n",
            ),
            ("common/templates/_h.tpl", "{{- define \"x\" }}{{ end }}"),
        ]);
        let none = |_: &ChartSource| Access::default();
        let fetched = vendor_dependencies(&resolver, &mut f, "app", &none)
            .await
            .unwrap();
        assert!(fetched.is_empty());
        assert!(f.contains_key("app/charts/common/Chart.yaml"));
        assert!(f.contains_key("app/charts/common/templates/_h.tpl"));
    }

    #[tokio::test]
    async fn bad_dependencies_are_refused_naming_them() {
        let resolver = Resolver::new(
            std::env::temp_dir().join("flotilla-deps-test"),
            std::time::Duration::from_secs(1),
        );
        let none = |_: &ChartSource| Access::default();
        for (repo, why) in [
            ("\"@stable\"", "needs `helm repo add`"),
            ("file://../../outside", "leaves the bundle"),
            ("file://../missing", "not a chart of the bundle"),
            ("\"\"", "names no repository"),
            ("ftp://x", "not an https://"),
        ] {
            let mut f = files(&[(
                "c/Chart.yaml",
                &format!(
                    "apiVersion: v2\nname: c\nversion: 1.0.0\ndependencies:\n- name: d\n  version: 1.0.0\n  repository: {repo}\n"
                ),
            )]);
            let err = vendor_dependencies(&resolver, &mut f, "c", &none)
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("dependency d") && err.to_string().contains(why),
                "{repo}: {err}"
            );
        }
    }
}
