use crate::load::load_dir;
use crate::render::{RenderInput, render};
use crate::{CompileInput, Limits, Tools, compile_repo};
use flotilla_api::{GitTarget, TargetCriteria, YamlOptions};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// Compares with `testdata/golden/<name>`, or rewrites it under UPDATE_GOLDEN.
fn golden(name: &str, actual: &str) {
    let path = testdata().join("golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_GOLDEN=1", path.display()));
    assert!(
        expected == actual,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn targets() -> Vec<GitTarget> {
    vec![GitTarget {
        name: Some("all".into()),
        criteria: TargetCriteria {
            cluster_group: Some("default".into()),
            ..Default::default()
        },
    }]
}

/// Loads `testdata/repos/<dir>` and compiles it as GitRepo `repo_name`.
fn compile_sample(
    dir: &str,
    repo_name: &str,
    paths: &[&str],
) -> crate::Result<Vec<crate::CompiledBundle>> {
    let tree = load_dir(&testdata().join("repos").join(dir)).unwrap();
    let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    let targets = targets();
    compile_repo(
        &tree,
        &CompileInput {
            repo_name,
            paths: &paths,
            targets: &targets,
            limits: Limits::default(),
            deadline: None,
        },
    )
}

/// Renders with empty annotations and no extra cluster-scoped kinds.
fn render_objects(
    content: &crate::BundleContent,
    options: &flotilla_api::BundleDeploymentOptions,
    bundle_name: &str,
    labels: &BTreeMap<String, String>,
    tools: &Tools,
) -> crate::Result<Vec<Value>> {
    render(&RenderInput {
        content,
        options,
        bundle_name,
        labels,
        annotations: &BTreeMap::new(),
        cluster_scoped: &BTreeSet::new(),
        tools,
    })
}

fn to_stream(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| format!("---\n{}", serde_saphyr::to_string(o).unwrap()))
        .collect()
}

fn compile_summary(repo: &str, paths: &[&str]) -> String {
    let summary = match compile_sample(repo, repo, paths) {
        Err(e) => json!({ "error": e.to_string() }),
        Ok(bundles) => json!({
            "bundles": bundles.iter().map(|b| json!({
                "name": b.name,
                "dir": b.dir,
                "kind": format!("{:?}", b.kind),
                "labels": b.labels,
                "files": b.content.files.keys().collect::<Vec<_>>(),
                "warnings": b.warnings,
                "spec": b.spec,
            })).collect::<Vec<_>>()
        }),
    };
    serde_saphyr::to_string(&summary).unwrap()
}

#[test]
fn compile_goldens() {
    let cases: [(&str, &[&str]); 6] = [
        ("multi-path", &["apps", "infra"]),
        ("kustomize", &[]),
        ("helm-local", &[]),
        ("broken-yaml", &[]),
        ("invalid-fleet-yaml", &[]),
        ("symlink-escape", &[]),
    ];
    for (repo, paths) in cases {
        golden(
            &format!("{repo}.compile.yaml"),
            &compile_summary(repo, paths),
        );
    }
}

#[test]
fn bad_input_names_the_offender() {
    let s = compile_summary("broken-yaml", &[]);
    assert!(s.contains("broken.yaml:5: invalid YAML: column 5:"), "{s}");
    let s = compile_summary("invalid-fleet-yaml", &[]);
    assert!(s.contains("fleet.yaml: field paused"), "{s}");
    let s = compile_summary("symlink-escape", &[]);
    assert!(s.contains("secrets.yaml: escapes the repository"), "{s}");
    let s = compile_summary("multi-path", &["../outside"]);
    assert!(s.contains("escapes the repository"), "{s}");
    let s = compile_summary("multi-path", &["nope"]);
    assert!(s.contains("no such directory"), "{s}");
}

fn render_yaml(repo: &str, paths: &[&str], bundle: &str, overlay: Option<&str>) -> String {
    let bundles = compile_sample(repo, repo, paths).unwrap();
    let b = bundles.iter().find(|b| b.name == bundle).unwrap();
    let mut options = b.spec.options.clone();
    if let Some(o) = overlay {
        options.yaml = Some(YamlOptions {
            overlays: vec![o.into()],
        });
    }
    let objects =
        render_objects(&b.content, &options, &b.name, &b.labels, &Tools::default()).unwrap();
    to_stream(&objects)
}

#[test]
fn raw_render_goldens() {
    golden(
        "multi-path.web.render.yaml",
        &render_yaml(
            "multi-path",
            &["apps", "infra"],
            "multi-path-apps-web",
            None,
        ),
    );
    golden(
        "multi-path.web-prod.render.yaml",
        &render_yaml(
            "multi-path",
            &["apps", "infra"],
            "multi-path-apps-web",
            Some("prod"),
        ),
    );
    golden(
        "multi-path.infra.render.yaml",
        &render_yaml("multi-path", &["apps", "infra"], "multi-path-infra", None),
    );
}

#[test]
fn raw_render_rules() {
    let web: Vec<Value> = crate::yaml::parse_documents(
        "x",
        &render_yaml(
            "multi-path",
            &["apps", "infra"],
            "multi-path-apps-web",
            Some("prod"),
        ),
    )
    .unwrap();
    let find = |kind: &str| web.iter().find(|o| o["kind"] == kind).unwrap();
    assert_eq!(
        find("Deployment")["spec"]["replicas"],
        5,
        "the overlay patch applied"
    );
    assert_eq!(
        find("PodDisruptionBudget")["metadata"]["namespace"],
        "web",
        "the overlay file added, defaulted"
    );
    assert_eq!(
        find("ConfigMap")["metadata"]["namespace"],
        "web-config",
        "an explicit namespace stays"
    );
    assert_eq!(
        find("Deployment")["metadata"]["labels"]["team"],
        "storefront",
        "bundle labels added"
    );

    let infra: Vec<Value> = crate::yaml::parse_documents(
        "x",
        &render_yaml("multi-path", &["apps", "infra"], "multi-path-infra", None),
    )
    .unwrap();
    assert!(
        infra
            .iter()
            .all(|o| o["metadata"].get("namespace").is_none()),
        "cluster-scoped kinds keep no namespace"
    );
    assert_eq!(
        infra.len(),
        2,
        "settings.yaml is not a manifest; drafts/ is ignored"
    );
}

#[test]
fn forced_namespace_refuses_cluster_scoped_kinds() {
    let bundles = compile_sample("multi-path", "r", &["infra"]).unwrap();
    let mut options = bundles[0].spec.options.clone();
    options.namespace = Some("forced".into());
    let err = render_objects(
        &bundles[0].content,
        &options,
        "r",
        &BTreeMap::new(),
        &Tools::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("Namespace platform: is cluster-scoped"),
        "{err}"
    );
}

#[test]
fn kustomize_render_goldens_through_kubectl() {
    let bundles = compile_sample("kustomize", "kustomize", &[]).unwrap();
    let b = &bundles[0];
    let render_with = |dir: &str| {
        let mut options = b.spec.options.clone();
        options.kustomize = Some(flotilla_api::KustomizeOptions {
            dir: Some(dir.into()),
        });
        options.default_namespace = Some("api".into());
        let objects =
            render_objects(&b.content, &options, &b.name, &b.labels, &Tools::default()).unwrap();
        to_stream(&objects)
    };
    let staging = render_with("overlays/staging");
    let prod = render_with("overlays/prod");
    assert!(
        staging.contains("name: staging-api") && staging.contains("replicas: 1"),
        "{staging}"
    );
    assert!(
        prod.contains("name: prod-api") && prod.contains("replicas: 4"),
        "{prod}"
    );
    golden("kustomize.staging.render.yaml", &staging);
    golden("kustomize.prod.render.yaml", &prod);
}

#[test]
fn kustomize_failure_carries_stderr() {
    let mut content = crate::BundleContent::default();
    content.files.insert(
        "kustomization.yaml".into(),
        b"resources: [broken.yaml]\n".to_vec(),
    );
    content
        .files
        .insert("broken.yaml".into(), b"kind: [unclosed\n".to_vec());
    let err = render_objects(
        &content,
        &Default::default(),
        "b",
        &BTreeMap::new(),
        &Tools::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("kubectl kustomize failed"),
        "{err}"
    );
    assert!(
        err.to_string().contains("broken.yaml"),
        "stderr is carried: {err}"
    );
}

#[test]
fn helm_without_a_binary_is_a_clear_error() {
    let bundles = compile_sample("helm-local", "h", &[]).unwrap();
    let tools = Tools {
        helm: None,
        ..Tools::default()
    };
    let err = render_objects(
        &bundles[0].content,
        &bundles[0].spec.options,
        "h",
        &BTreeMap::new(),
        &tools,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no `helm` binary is on PATH"),
        "{err}"
    );
}

#[test]
fn size_limits_name_the_offender() {
    let mut tree = crate::RepoTree::new();
    tree.insert_file(
        "app/big.yaml",
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{x: \"{}\"}}\n",
            "a".repeat(2000)
        ),
    );
    tree.insert_file(
        "app/small.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n",
    );
    let t = targets();
    let paths = vec!["app".to_string()];
    let compile = |limits| {
        compile_repo(
            &tree,
            &CompileInput {
                repo_name: "r",
                paths: &paths,
                targets: &t,
                limits,
                deadline: None,
            },
        )
    };
    let err = compile(Limits {
        max_manifest_bytes: 1000,
        ..Limits::default()
    })
    .unwrap_err();
    assert!(err.to_string().starts_with("app/big.yaml:"), "{err}");
    let err = compile(Limits {
        max_bundle_bytes: 1500,
        ..Limits::default()
    })
    .unwrap_err();
    assert!(err.to_string().starts_with("bundle r-app:"), "{err}");
    assert!(compile(Limits::default()).is_ok());
}

/// The real Helm v4 engine (helm-python-sdk) behind a `helm template` shim.
fn helm_shim() -> Tools {
    Tools {
        helm: Some(testdata().join("helm-shim/helm")),
        ..Tools::default()
    }
}

fn render_helm(
    options: &flotilla_api::BundleDeploymentOptions,
    content: &crate::BundleContent,
) -> crate::Result<String> {
    let labels = BTreeMap::from([(
        "flotilla.dev/repo-name".to_string(),
        "helm-local".to_string(),
    )]);
    let objects = render_objects(content, options, "helm-local", &labels, &helm_shim())?;
    Ok(to_stream(&objects))
}

#[test]
fn helm_render_goldens_with_the_real_engine() {
    let bundles = compile_sample("helm-local", "helm-local", &[]).unwrap();
    let b = &bundles[0];
    let base = render_helm(&b.spec.options, &b.content).unwrap();
    assert!(
        base.contains("replicas: 2"),
        "fleet.yaml values override the chart's: {base}"
    );
    assert!(
        base.contains("name: metrics") && base.contains("namespace: monitoring"),
        "{base}"
    );
    golden("helm-local.render.yaml", &base);

    // The prod customization, merged as targeting merges it.
    let mut prod = b.spec.options.clone();
    let cust = &b.spec.target_customizations[0];
    prod.helm.as_mut().unwrap().values = Some(json!({"replicas": 3}));
    assert_eq!(
        cust.options.helm.as_ref().unwrap().values,
        Some(json!({"replicas": 3}))
    );
    let prod = render_helm(&prod, &b.content).unwrap();
    assert!(prod.contains("replicas: 3"), "{prod}");
    golden("helm-local.prod.render.yaml", &prod);
}

#[test]
fn helm_values_files_and_template_errors() {
    let mut content = crate::BundleContent::default();
    content.files.insert(
        "Chart.yaml".into(),
        b"apiVersion: v2\nname: c\nversion: 0.1.0\n".to_vec(),
    );
    content.files.insert(
        "templates/cm.yaml".into(),
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}}\ndata: {color: {{ .Values.color | quote }}}\n".to_vec(),
    );
    content
        .files
        .insert("values-prod.yaml".into(), b"color: red\n".to_vec());
    let mut options = flotilla_api::BundleDeploymentOptions {
        helm: Some(flotilla_api::HelmOptions {
            values_files: vec!["values-prod.yaml".into()],
            release_name: Some("paint".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let out = render_helm(&options, &content).unwrap();
    assert!(
        out.contains("color: red") && out.contains("name: paint"),
        "{out}"
    );

    // Inline values win over values files.
    options.helm.as_mut().unwrap().values = Some(json!({"color": "blue"}));
    assert!(
        render_helm(&options, &content)
            .unwrap()
            .contains("color: blue")
    );

    content.files.insert(
        "templates/bad.yaml".into(),
        b"{{ .Values.missing.deeper }}\n".to_vec(),
    );
    let err = render_helm(&options, &content).unwrap_err();
    assert!(err.to_string().starts_with("helm template failed"), "{err}");
    assert!(
        err.to_string().contains("bad.yaml"),
        "the engine's message is carried: {err}"
    );
}

/// A chart's `crds/` are installed, as `helm install` (which Fleet runs)
/// installs them, ahead of the objects of their kinds.
#[test]
fn helm_charts_install_their_crds_directory() {
    let mut content = crate::BundleContent::default();
    for (path, text) in [
        (
            "Chart.yaml",
            "apiVersion: v2\nname: widgets\nversion: 1.0.0\n",
        ),
        (
            "crds/widgets.yaml",
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: widgets, singular: widget, kind: Widget}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n",
        ),
        (
            "templates/widget.yaml",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {{ .Release.Name }}\n",
        ),
    ] {
        content.files.insert(path.into(), text.as_bytes().to_vec());
    }
    let options = flotilla_api::BundleDeploymentOptions {
        default_namespace: Some("w".into()),
        ..Default::default()
    };
    let objects = render_objects(
        &content,
        &options,
        "widgets",
        &BTreeMap::new(),
        &helm_shim(),
    )
    .unwrap();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["CustomResourceDefinition", "Widget"]);
    assert!(
        objects[0]["metadata"].get("namespace").is_none(),
        "a CRD is cluster-scoped: {}",
        objects[0]
    );
}

/// The kind is decided per cluster, after customizations: a kustomize
/// directory named only by the prod customization gets every file it
/// needs (a configMapGenerator's `.properties`), while other clusters get
/// the raw manifests.
#[test]
fn a_kustomize_dir_named_only_by_a_customization_works_for_its_clusters() {
    let mut tree = crate::RepoTree::new();
    tree.insert_file(
        "app/fleet.yaml",
        "defaultNamespace: shop\ntargetCustomizations:\n- name: prod\n  clusterSelector: {matchLabels: {env: prod}}\n  kustomize:\n    dir: overlays/prod\n",
    );
    tree.insert_file(
        "app/base/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: base\ndata: {a: \"1\"}\n",
    );
    tree.insert_file("app/base/kustomization.yaml", "resources: [cm.yaml]\n");
    tree.insert_file(
        "app/overlays/prod/kustomization.yaml",
        "resources: [../../base]\nconfigMapGenerator:\n- name: settings\n  files: [app.properties]\ngeneratorOptions: {disableNameSuffixHash: true}\n",
    );
    tree.insert_file("app/overlays/prod/app.properties", "color=blue\n");
    let t = targets();
    let paths = vec!["app".to_string()];
    let bundles = compile_repo(
        &tree,
        &CompileInput {
            repo_name: "shop",
            paths: &paths,
            targets: &t,
            limits: Limits::default(),
            deadline: None,
        },
    )
    .unwrap();
    let b = &bundles[0];
    assert!(
        b.content.files.contains_key("overlays/prod/app.properties"),
        "{:?}",
        b.content.files.keys()
    );
    let prod = flotilla_targeting::resolve_options(&b.spec.options, &b.spec.target_customizations);
    let objects = render_objects(
        &b.content,
        &prod,
        &b.name,
        &BTreeMap::new(),
        &Tools::default(),
    )
    .unwrap();
    let settings = objects
        .iter()
        .find(|o| o["metadata"]["name"] == "settings")
        .unwrap_or_else(|| panic!("{objects:#?}"));
    assert_eq!(settings["data"]["app.properties"], "color=blue\n");
    // Elsewhere: the raw manifests, the overlay's files not among them.
    let dev = render_objects(
        &b.content,
        &b.spec.options,
        &b.name,
        &BTreeMap::new(),
        &Tools::default(),
    )
    .unwrap();
    let names: Vec<&str> = dev
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base"]);
}
