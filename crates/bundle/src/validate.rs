//! Deployment options that reach a subprocess or a path, checked where
//! they enter: when a `fleet.yaml` is compiled (the bundle's options and
//! each target customization's) and again when the agent renders, after
//! the customizations are merged, since a customization replaces values.
//!
//! `helm template` and `kubectl kustomize` parse their arguments as options
//! wherever they appear, so a release name of `--post-renderer=/bin/x`
//! would run a program. Every such value must be what its field says (a
//! DNS name, a version constraint, a relative path inside the bundle), and
//! positionals go after `--` besides.

use crate::error::{BundleError, Result};
use crate::fleetyaml::{is_dns1123_label, is_dns1123_subdomain};
use crate::tree::safe_path;
use flotilla_api::BundleDeploymentOptions;

/// The longest Helm release name (Helm's own limit).
pub const MAX_RELEASE_NAME: usize = 53;

/// Checks every option that reaches `helm`, `kubectl kustomize` or a path
/// inside the scratch directory. `prefix` is prepended to field names
/// (e.g. `targetCustomizations[2].`).
pub fn check_options(options: &BundleDeploymentOptions, prefix: &str) -> Result<()> {
    let bad = |field: &str, message: String| {
        Err(BundleError::InvalidOption {
            field: format!("{prefix}{field}"),
            message,
        })
    };
    for (field, ns) in [
        ("defaultNamespace", &options.default_namespace),
        ("namespace", &options.namespace),
    ] {
        if let Some(ns) = ns
            && !ns.is_empty()
            && !is_dns1123_label(ns)
        {
            return bad(field, format!("{ns:?} is not a valid namespace name"));
        }
    }
    if let Some(sa) = &options.service_account
        && !sa.is_empty()
        && !is_dns1123_subdomain(sa)
    {
        return bad(
            "serviceAccount",
            format!("{sa:?} is not a valid service account name"),
        );
    }
    if let Some(dir) = options.kustomize.as_ref().and_then(|k| k.dir.as_deref()) {
        safe_path("", dir, &format!("{prefix}kustomize.dir"))?;
    }
    for (i, overlay) in options
        .yaml
        .iter()
        .flat_map(|y| y.overlays.iter())
        .enumerate()
    {
        if overlay.is_empty() || overlay.contains('/') || overlay == "." || overlay == ".." {
            return bad(
                &format!("yaml.overlays[{i}]"),
                format!("{overlay:?} must name one directory under overlays/"),
            );
        }
    }
    let Some(helm) = &options.helm else {
        return Ok(());
    };
    if let Some(release) = helm.release_name.as_deref().filter(|r| !r.is_empty())
        && (release.len() > MAX_RELEASE_NAME || !is_dns1123_subdomain(release))
    {
        return bad(
            "helm.releaseName",
            format!("{release:?} must be a DNS-1123 name of at most {MAX_RELEASE_NAME} characters"),
        );
    }
    if let Some(version) = helm.version.as_deref().filter(|v| !v.is_empty())
        && !is_version_constraint(version)
    {
        return bad(
            "helm.version",
            format!("{version:?} is not a chart version or version constraint"),
        );
    }
    if let Some(repo) = helm.repo.as_deref().filter(|r| !r.is_empty())
        && !is_remote_url(repo)
    {
        return bad(
            "helm.repo",
            format!(
                "{:?} must be an https://, http:// or oci:// URL without credentials (put them in the GitRepo's helmSecretName)",
                without_userinfo(repo)
            ),
        );
    }
    if let Some(chart) = helm.chart.as_deref().filter(|c| !c.is_empty()) {
        if chart.contains("://") {
            if !is_remote_url(chart) {
                return bad(
                    "helm.chart",
                    format!(
                        "{:?} must be an https://, http:// or oci:// URL without credentials",
                        without_userinfo(chart)
                    ),
                );
            }
        } else if helm.repo.as_deref().is_some_and(|r| !r.is_empty()) {
            if !is_chart_name(chart) {
                return bad(
                    "helm.chart",
                    format!("{chart:?} is not a chart name in the repository"),
                );
            }
        } else {
            safe_path("", chart, &format!("{prefix}helm.chart"))?;
        }
    }
    for (i, f) in helm.values_files.iter().enumerate() {
        safe_path("", f, &format!("{prefix}helm.valuesFiles[{i}]"))?;
    }
    Ok(())
}

/// A URL as it may appear in a message: no userinfo.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let host = rest[..end]
                .rsplit_once('@')
                .map_or(&rest[..end], |(_, h)| h);
            format!("{scheme}://{host}{}", &rest[end..])
        }
        None => url.to_owned(),
    }
}

/// A Helm chart version or constraint (`1.2.3`, `~1.2`, `>= 1.0, < 2`,
/// `1.x`, `^2.0.0-rc.1`): the characters semver ranges use, starting with
/// something that cannot be an option.
pub fn is_version_constraint(v: &str) -> bool {
    v.len() <= 128
        && !v.starts_with('-')
        && v.chars().all(|c| {
            c.is_ascii_alphanumeric() || " .-+*^~<>=|,!".contains(c) || c == 'x' || c == 'X'
        })
}

/// A chart name as a Helm repository lists it.
pub fn is_chart_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 250
        && !s.starts_with(['-', '.'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// An `https://`, `http://` or `oci://` URL with a host, no credentials
/// (they belong in the GitRepo's `helmSecretName`, never in a bundle), and
/// no whitespace or control characters.
pub fn is_remote_url(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    matches!(scheme, "https" | "http" | "oci")
        && !authority.is_empty()
        && !authority.contains('@')
        && s.len() <= 2048
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::{HelmOptions, KustomizeOptions, YamlOptions};

    fn helm(h: HelmOptions) -> BundleDeploymentOptions {
        BundleDeploymentOptions {
            helm: Some(h),
            ..Default::default()
        }
    }

    #[test]
    fn values_that_reach_a_subprocess_are_refused_unless_safe() {
        let ok = [
            helm(HelmOptions {
                release_name: Some("shop-web".into()),
                version: Some(">= 1.2.0, < 2".into()),
                chart: Some("./chart".into()),
                values_files: vec!["values/prod.yaml".into()],
                ..Default::default()
            }),
            helm(HelmOptions {
                repo: Some("https://charts.example.com/stable".into()),
                chart: Some("redis".into()),
                version: Some("17.x".into()),
                ..Default::default()
            }),
            helm(HelmOptions {
                chart: Some("oci://registry.example.com/charts/redis".into()),
                version: Some("^17.3.0-rc.1".into()),
                ..Default::default()
            }),
            // Fleet treats an empty string as unset.
            helm(HelmOptions {
                release_name: Some(String::new()),
                chart: Some(String::new()),
                ..Default::default()
            }),
        ];
        for o in ok {
            check_options(&o, "").unwrap();
        }
        let bad = [
            (
                helm(HelmOptions {
                    release_name: Some("--values=/etc/kubeconfig".into()),
                    ..Default::default()
                }),
                "helm.releaseName",
            ),
            (
                helm(HelmOptions {
                    version: Some("--post-renderer=/bin/sh".into()),
                    ..Default::default()
                }),
                "helm.version",
            ),
            (
                helm(HelmOptions {
                    repo: Some("https://x".into()),
                    chart: Some("--kubeconfig=/x".into()),
                    ..Default::default()
                }),
                "helm.chart",
            ),
            (
                helm(HelmOptions {
                    repo: Some("file:///etc".into()),
                    chart: Some("x".into()),
                    ..Default::default()
                }),
                "helm.repo",
            ),
            (
                helm(HelmOptions {
                    repo: Some("https://bob:hunter2@charts.example.com".into()),
                    chart: Some("x".into()),
                    ..Default::default()
                }),
                "helm.repo",
            ),
            (
                helm(HelmOptions {
                    chart: Some("../../outside".into()),
                    ..Default::default()
                }),
                "helm.chart",
            ),
            (
                helm(HelmOptions {
                    values_files: vec!["/etc/passwd".into()],
                    ..Default::default()
                }),
                "helm.valuesFiles[0]",
            ),
            (
                BundleDeploymentOptions {
                    namespace: Some("--all".into()),
                    ..Default::default()
                },
                "namespace",
            ),
            (
                BundleDeploymentOptions {
                    kustomize: Some(KustomizeOptions {
                        dir: Some("../../etc".into()),
                    }),
                    ..Default::default()
                },
                "kustomize.dir",
            ),
            (
                BundleDeploymentOptions {
                    yaml: Some(YamlOptions {
                        overlays: vec!["../x".into()],
                    }),
                    ..Default::default()
                },
                "yaml.overlays[0]",
            ),
        ];
        for (o, field) in bad {
            let err = check_options(&o, "targetCustomizations[1].").unwrap_err();
            let text = err.to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(
                text.contains(&format!("targetCustomizations[1].{field}")),
                "{field}: {text}"
            );
        }
    }
}
