//! Hostile repositories: each test is named after what it protects and
//! asserts the safe outcome (refused with a message naming the offender,
//! nothing read or run that should not be).

use crate::render::{RenderInput, render};
use crate::tree::{BlobSource, RepoTree};
use crate::{BundleContent, BundleError, CompileInput, Deadline, Limits, Tools, compile_repo};
use flotilla_api::{BundleDeploymentOptions, HelmOptions, KustomizeOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The error of a compile or render expected to fail, without printing a
/// (possibly huge) successful result.
fn refused<T>(r: crate::Result<T>) -> BundleError {
    match r {
        Ok(_) => panic!("expected a refusal, got success"),
        Err(e) => e,
    }
}

fn compile(tree: &RepoTree) -> crate::Result<Vec<crate::CompiledBundle>> {
    compile_with(tree, Limits::default(), None)
}

fn compile_with(
    tree: &RepoTree,
    limits: Limits,
    deadline: Option<Deadline>,
) -> crate::Result<Vec<crate::CompiledBundle>> {
    compile_repo(
        tree,
        &CompileInput {
            repo_name: "r",
            paths: &[],
            targets: &[],
            limits,
            deadline,
        },
    )
}

fn render_with(
    content: &BundleContent,
    options: &BundleDeploymentOptions,
    tools: &Tools,
) -> crate::Result<Vec<serde_json::Value>> {
    render(&RenderInput {
        content,
        options,
        bundle_name: "r-app",
        labels: &BTreeMap::new(),
        annotations: &BTreeMap::new(),
        cluster_scoped: &BTreeSet::new(),
        tools,
    })
}

/// A `helm` that records its arguments, one per line, and prints nothing.
fn recording_helm(tag: &str) -> (Tools, PathBuf) {
    let dir = std::env::temp_dir().join(format!("flotilla-helm-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("argv");
    let script = dir.join("helm");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {}\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (
        Tools {
            helm: Some(script),
            ..Tools::default()
        },
        log,
    )
}

fn chart() -> BundleContent {
    let mut c = BundleContent::default();
    c.files.insert(
        "Chart.yaml".into(),
        b"apiVersion: v2\nname: c\nversion: 1.0.0\n".to_vec(),
    );
    c
}

#[test]
fn helm_release_name_from_a_customization_cannot_become_an_option() {
    let (tools, log) = recording_helm("inject");
    let options = BundleDeploymentOptions {
        helm: Some(HelmOptions {
            release_name: Some("--values=/var/run/secrets/kubeconfig".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = refused(render_with(&chart(), &options, &tools));
    assert!(
        matches!(&err, BundleError::InvalidOption { field, .. } if field == "helm.releaseName"),
        "{err}"
    );
    assert!(!log.exists(), "helm never ran");

    for (field, helm) in [
        (
            "helm.version",
            HelmOptions {
                version: Some("--post-renderer=/bin/sh".into()),
                ..Default::default()
            },
        ),
        (
            "helm.chart",
            HelmOptions {
                repo: Some("https://charts.example.com".into()),
                chart: Some("--kubeconfig=/etc/x".into()),
                ..Default::default()
            },
        ),
    ] {
        let options = BundleDeploymentOptions {
            helm: Some(helm),
            ..Default::default()
        };
        let err = refused(render_with(&chart(), &options, &tools));
        assert!(err.to_string().starts_with(field), "{field}: {err}");
    }
    assert!(!log.exists(), "helm never ran");
}

#[test]
fn helm_positionals_follow_a_double_dash() {
    let (tools, log) = recording_helm("argv");
    let options = BundleDeploymentOptions {
        default_namespace: Some("shop".into()),
        helm: Some(HelmOptions {
            release_name: Some("web".into()),
            version: Some("1.0.0".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    render_with(&chart(), &options, &tools).unwrap();
    let argv: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let dash = argv.iter().position(|a| a == "--").expect("a -- separator");
    assert_eq!(argv[0], "template");
    assert_eq!(argv.len(), dash + 3, "{argv:?}");
    assert_eq!(argv[dash + 1], "web");
    assert!(argv[dash + 2].starts_with('/'), "the chart dir: {argv:?}");
    for a in &argv[1..dash] {
        assert!(
            a.starts_with("--") && a.contains('=')
                || a == "--skip-schema-validation"
                || a == "--include-crds"
                || a == "--enable-dns",
            "{a}"
        );
    }
    assert!(argv.contains(&"--namespace=shop".to_owned()), "{argv:?}");
    assert!(argv.contains(&"--version=1.0.0".to_owned()), "{argv:?}");
}

#[test]
fn fleet_yaml_customizations_are_checked_when_compiled() {
    let mut tree = RepoTree::new();
    tree.insert_file(
        "fleet.yaml",
        "helm:\n  chart: ./chart\ntargetCustomizations:\n- name: prod\n  clusterSelector: {}\n  helm:\n    releaseName: --post-renderer=/bin/sh\n",
    );
    tree.insert_file(
        "chart/Chart.yaml",
        "apiVersion: v2\nname: c\nversion: 1.0.0\n",
    );
    let err = refused(compile(&tree));
    let text = err.to_string();
    assert!(
        text.starts_with("fleet.yaml: field targetCustomizations[0].helm.releaseName"),
        "{text}"
    );
}

#[test]
fn kustomize_cannot_leave_the_bundle_or_fetch_urls() {
    for resource in [
        "../../outside",
        "https://example.com/evil.yaml",
        "github.com/org/repo//deploy?ref=main",
    ] {
        let mut tree = RepoTree::new();
        tree.insert_file("kustomization.yaml", format!("resources: [{resource}]\n"));
        tree.insert_file("cm.yaml", "kind: ConfigMap");
        let err = refused(compile(&tree));
        let text = err.to_string();
        assert!(
            text.starts_with("kustomization.yaml: field resources[0]"),
            "{resource}: {text}"
        );
    }
    // The agent checks again before kubectl runs, whatever the Content says.
    let mut content = BundleContent::default();
    content.files.insert(
        "kustomization.yaml".into(),
        b"resources: [../../../../etc]\n".to_vec(),
    );
    let options = BundleDeploymentOptions {
        kustomize: Some(KustomizeOptions { dir: None }),
        ..Default::default()
    };
    let err = refused(render_with(&content, &options, &Tools::default()));
    assert!(err.to_string().contains("escapes the bundle"), "{err}");
}

/// Reads counted; `never` panics.
struct Blobs(AtomicUsize);

impl BlobSource for Blobs {
    fn read_blob(&self, id: &str) -> Result<Vec<u8>, String> {
        assert_ne!(id, "never", "an ignored or oversized blob was read");
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n".to_vec())
    }
}

#[test]
fn sizes_are_checked_before_reading_and_ignored_files_are_never_read() {
    let blobs = Arc::new(Blobs(AtomicUsize::new(0)));
    let mut tree = RepoTree::with_source(blobs.clone());
    tree.insert_file(".fleetignore", "huge.yaml\n");
    tree.insert_blob("huge.yaml", 500 << 20, "never");
    tree.insert_blob("cm.yaml", 50, "cm");
    let bundles = compile(&tree).unwrap();
    assert_eq!(bundles[0].content.files.len(), 1);
    assert_eq!(blobs.0.load(Ordering::Relaxed), 1, "only cm.yaml was read");

    let mut tree = RepoTree::with_source(blobs.clone());
    tree.insert_blob("huge.yaml", 500 << 20, "never");
    let err = refused(compile(&tree));
    assert!(
        matches!(&err, BundleError::ManifestTooLarge { path, .. } if path == "huge.yaml"),
        "{err}"
    );

    // Many files under the per-file limit: the bundle limit stops the
    // reading, not the end of the loop.
    let before = blobs.0.load(Ordering::Relaxed);
    let mut tree = RepoTree::with_source(blobs.clone());
    for i in 0..100 {
        tree.insert_blob(&format!("f{i:03}.yaml"), 1 << 20, "cm");
    }
    let err = refused(compile(&tree));
    assert!(matches!(err, BundleError::BundleTooLarge { .. }), "{err}");
    let read = blobs.0.load(Ordering::Relaxed) - before;
    assert_eq!(read, 16, "reading stopped at the 16 MiB bundle limit");
}

#[test]
fn a_compile_past_its_deadline_stops_with_a_message() {
    let mut tree = RepoTree::new();
    tree.insert_file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    );
    let spent = Deadline {
        at: std::time::Instant::now() - Duration::from_secs(1),
        seconds: 60,
    };
    let err = refused(compile_with(&tree, Limits::default(), Some(spent)));
    assert_eq!(err, BundleError::TimedOut { seconds: 60 });
    assert!(err.to_string().contains("within 60s"), "{err}");
    compile_with(
        &tree,
        Limits::default(),
        Some(Deadline::after(Duration::from_secs(60))),
    )
    .unwrap();
}

/// Incompressible text: what a large chart archive or binary looks like
/// to gzip.
fn noise(len: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

#[test]
fn a_bundle_etcd_would_refuse_is_refused_naming_the_bundle_and_size() {
    let mut tree = RepoTree::new();
    for i in 0..3 {
        tree.insert_file(
            &format!("cm{i}.yaml"),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\ndata:\n  blob: {}\n",
                noise(900_000, i)
            ),
        );
    }
    let err = refused(compile(&tree));
    let text = err.to_string();
    assert!(
        matches!(err, BundleError::ObjectTooLarge { .. }) && text.starts_with("bundle r:"),
        "{text}"
    );
    assert!(text.contains("1572864-byte limit"), "{text}");

    let mut tree = RepoTree::new();
    tree.insert_file(
        "cm.yaml",
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata:\n  a: {}\n  b: {}\n",
            "x".repeat(600_000),
            "y".repeat(600_000)
        ),
    );
    let limits = Limits {
        max_manifest_bytes: 2 << 20,
        ..Limits::default()
    };
    let err = refused(compile_with(&tree, limits, None));
    assert!(
        err.to_string()
            .starts_with("cm.yaml: ConfigMap \"big\" holds"),
        "{err}"
    );
}

#[test]
fn a_fleet_yaml_that_is_not_utf8_is_an_error() {
    let mut tree = RepoTree::new();
    tree.insert_file("fleet.yaml", b"defaultNamespace: caf\xe9\n".to_vec());
    let err = refused(compile(&tree));
    assert!(
        err.to_string()
            .starts_with("fleet.yaml:1: invalid YAML: the file is not UTF-8"),
        "{err}"
    );
}

#[test]
fn values_too_large_for_a_bundledeployment_are_refused_when_compiled() {
    let mut tree = RepoTree::new();
    tree.insert_file(
        "fleet.yaml",
        format!("helm:\n  values:\n    blob: {}\n", noise(800_000, 7)),
    );
    tree.insert_file("Chart.yaml", "apiVersion: v2\nname: c\nversion: 1.0.0\n");
    let err = refused(compile(&tree));
    let text = err.to_string();
    assert!(
        text.starts_with("bundle r:") && text.contains("BundleDeployment"),
        "{text}"
    );
}
