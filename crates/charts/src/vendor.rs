//! A compiled bundle made self-contained: every remote chart it names (in
//! its options, and in each target customization's) is resolved, and its
//! files stored in the bundle's Content under `.chart/<digest>/<name>/`;
//! the options are rewritten to point there, so an agent renders with no
//! network at all. The dependencies of every chart it holds are vendored
//! into their `charts/` directories. Since the charts are in the Content,
//! a new upstream version is a new content id, hence a new deploymentID.
//!
//! The resolved charts are listed in the annotation `flotilla.dev/charts`
//! of the Bundle (`redis 17.3.2 sha256:... from https://...`).

use crate::deps::vendor_dependencies;
use crate::error::ChartError;
use crate::resolver::{Resolved, Resolver};
use crate::source::{Access, ChartSource};
use flotilla_api::{BundleDeploymentOptions, HelmOptions};
use flotilla_bundle::{BundleKind, CompiledBundle, Limits};
use std::collections::BTreeMap;

/// The annotation listing the charts a Bundle resolved.
pub const CHARTS_ANNOTATION: &str = "flotilla.dev/charts";

/// A chart one bundle resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendoredChart {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub source: String,
    /// Where its files are in the bundle.
    pub path: String,
    /// Whether resolving it downloaded the archive (not the cache).
    pub downloaded: bool,
}

impl std::fmt::Display for VendoredChart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} from {}",
            self.name, self.version, self.digest, self.source
        )
    }
}

/// Whether a bundle names a remote chart or holds a chart with
/// dependencies: only those need the network.
pub fn needs_resolution(bundle: &CompiledBundle) -> bool {
    if bundle.kind != BundleKind::Helm {
        return false;
    }
    let remote = |o: &BundleDeploymentOptions| {
        o.helm.as_ref().is_some_and(|h| {
            ChartSource::of(h.repo.as_deref(), h.chart.as_deref(), h.version.as_deref()).is_some()
        })
    };
    remote(&bundle.spec.options)
        || bundle
            .spec
            .target_customizations
            .iter()
            .any(|c| remote(&merged_helm(&bundle.spec.options, &c.options)))
        || bundle
            .content
            .files
            .iter()
            .any(|(p, b)| p.ends_with("Chart.yaml") && contains(b, b"dependencies:"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A customization's Helm source fields over the bundle's, as Fleet
/// inherits them: an empty repo, chart or version takes the bundle's.
fn merged_helm(
    base: &BundleDeploymentOptions,
    custom: &BundleDeploymentOptions,
) -> BundleDeploymentOptions {
    let Some(c) = &custom.helm else {
        return BundleDeploymentOptions::default();
    };
    let b = base.helm.clone().unwrap_or_default();
    let pick = |c: &Option<String>, b: &Option<String>| {
        c.clone().filter(|s| !s.is_empty()).or_else(|| b.clone())
    };
    BundleDeploymentOptions {
        helm: Some(HelmOptions {
            repo: pick(&c.repo, &b.repo),
            chart: pick(&c.chart, &b.chart),
            version: pick(&c.version, &b.version),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn source_of(o: &BundleDeploymentOptions) -> Option<ChartSource> {
    let h = o.helm.as_ref()?;
    ChartSource::of(h.repo.as_deref(), h.chart.as_deref(), h.version.as_deref())
}

/// Points Helm options at a vendored chart.
fn point_at(helm: &mut HelmOptions, path: &str) {
    helm.chart = Some(path.to_owned());
    helm.repo = None;
    helm.version = None;
}

/// Resolves and vendors every chart a bundle needs. `access_for` decides,
/// per source, which credentials and TLS trust to use.
pub async fn resolve_bundle(
    resolver: &Resolver,
    bundle: &CompiledBundle,
    limits: Limits,
    access_for: &(dyn Fn(&ChartSource) -> Access + Sync),
) -> Result<(CompiledBundle, Vec<VendoredChart>), ChartError> {
    let mut out = bundle.clone();
    if !needs_resolution(bundle) {
        return Ok((out, Vec::new()));
    }
    let mut vendored: Vec<VendoredChart> = Vec::new();
    let mut by_source: BTreeMap<String, String> = BTreeMap::new();
    let mut place = |resolved: Resolved, files: &mut BTreeMap<String, Vec<u8>>| -> String {
        let hex = resolved.digest.trim_start_matches("sha256:");
        let path = format!(
            ".chart/{}/{}",
            &hex[..hex.len().min(16)],
            resolved.chart.name
        );
        for (rel, bytes) in &resolved.chart.files {
            files.insert(format!("{path}/{rel}"), bytes.clone());
        }
        if !vendored.iter().any(|v| v.path == path) {
            vendored.push(VendoredChart {
                name: resolved.chart.name.clone(),
                version: resolved.version.clone(),
                digest: resolved.digest.clone(),
                source: resolved.source.clone(),
                path: path.clone(),
                downloaded: resolved.downloaded,
            });
        }
        path
    };

    // The bundle's own chart, then each customization's.
    if let Some(src) = source_of(&bundle.spec.options) {
        let resolved = resolver.resolve(&src, &access_for(&src)).await?;
        let path = place(resolved, &mut out.content.files);
        by_source.insert(format!("{src:?}"), path.clone());
        if let Some(h) = out.spec.options.helm.as_mut() {
            point_at(h, &path);
        }
    }
    for i in 0..bundle.spec.target_customizations.len() {
        let merged = merged_helm(
            &bundle.spec.options,
            &bundle.spec.target_customizations[i].options,
        );
        let Some(src) = source_of(&merged) else {
            continue;
        };
        let own = bundle.spec.target_customizations[i]
            .options
            .helm
            .as_ref()
            .is_some_and(|h| {
                [&h.repo, &h.chart, &h.version]
                    .iter()
                    .any(|f| f.as_deref().is_some_and(|s| !s.is_empty()))
            });
        if !own {
            continue; // inherits the bundle's chart, already vendored
        }
        let path = match by_source.get(&format!("{src:?}")) {
            Some(p) => p.clone(),
            None => {
                let resolved = resolver.resolve(&src, &access_for(&src)).await?;
                let p = place(resolved, &mut out.content.files);
                by_source.insert(format!("{src:?}"), p.clone());
                p
            }
        };
        if let Some(h) = out.spec.target_customizations[i].options.helm.as_mut() {
            point_at(h, &path);
        }
    }

    // Dependencies of every chart the bundle holds.
    let disabled = bundle
        .spec
        .options
        .helm
        .as_ref()
        .is_some_and(|h| h.disable_dependency_update);
    if !disabled {
        let roots: Vec<String> = out
            .content
            .files
            .keys()
            .filter_map(|p| p.strip_suffix("Chart.yaml"))
            .map(|d| d.trim_end_matches('/').to_owned())
            .filter(|d| !d.split('/').any(|s| s == "charts"))
            .collect();
        for root in roots {
            let fetched =
                vendor_dependencies(resolver, &mut out.content.files, &root, access_for).await?;
            for r in fetched {
                vendored.push(VendoredChart {
                    name: r.chart.name.clone(),
                    version: r.version.clone(),
                    digest: r.digest.clone(),
                    source: r.source.clone(),
                    path: format!("{root}/charts/{}", r.chart.name),
                    downloaded: r.downloaded,
                });
            }
        }
    }

    let total = out.content.total_bytes();
    if total > limits.max_bundle_bytes {
        return Err(ChartError::TooLarge {
            chart: format!("bundle {} with its charts", bundle.name),
            size: total,
            limit: limits.max_bundle_bytes,
        });
    }
    let gz =
        out.content.gzip().len().div_ceil(3) * 4 + flotilla_bundle::compile::OBJECT_OVERHEAD_BYTES;
    if gz > limits.max_object_bytes {
        return Err(ChartError::TooLarge {
            chart: format!(
                "bundle {} with its charts (its Content, gzipped and base64-encoded)",
                bundle.name
            ),
            size: gz,
            limit: limits.max_object_bytes,
        });
    }
    out.spec.content_id = out.content.content_id();
    if !vendored.is_empty() {
        out.annotations.insert(
            CHARTS_ANNOTATION.to_owned(),
            vendored
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    Ok((out, vendored))
}
