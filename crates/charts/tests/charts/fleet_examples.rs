//! The repository laid out like the public fleet-examples Helm examples
//! (`testdata/repos/fleet-examples-helm`), compiled, its charts resolved
//! from a TLS chart server with a test CA, then rendered by the real Helm
//! engine (`testdata/helm-shim/helm`) and kustomize with the server gone:
//! what an agent does, with no network.

use flotilla_api::{BundleDeploymentOptions, GitTarget, TargetCriteria};
use flotilla_bundle::render::{RenderInput, render};
use flotilla_bundle::{CompileInput, CompiledBundle, Limits, RepoTree, Tools, compile_repo};
use flotilla_charts::testing::{
    ChartServer, ServerOptions, TempDir, TestCa, fleet_examples_replacements, publish_test_charts,
    repo_files,
};
use flotilla_charts::{Access, CHARTS_ANNOTATION, ChartSource, Resolver, resolve_bundle};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

fn testdata() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata"))
}

fn tools() -> Tools {
    Tools {
        helm: Some(testdata().join("helm-shim/helm")),
        ..Tools::default()
    }
}

fn render_with(b: &CompiledBundle, options: &BundleDeploymentOptions) -> Vec<Value> {
    render(&RenderInput {
        content: &b.content,
        options,
        bundle_name: &b.name,
        labels: &BTreeMap::new(),
        annotations: &BTreeMap::new(),
        cluster_scoped: &BTreeSet::new(),
        tools: &tools(),
    })
    .unwrap_or_else(|e| panic!("{}: {e}", b.name))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
}

#[tokio::test]
async fn fleet_examples_helm_compile_with_their_charts_and_render_offline() {
    let ca = TestCa::new();
    let server = ChartServer::start(ServerOptions {
        auth: None,
        tls: Some(&ca),
    });
    publish_test_charts(&server);
    let replace = fleet_examples_replacements(&server);
    let replace: Vec<(&str, &str)> = replace
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let mut tree = RepoTree::new();
    for (path, bytes) in repo_files(&testdata().join("repos/fleet-examples-helm"), &replace) {
        tree.insert_file(&path, bytes);
    }
    let targets = vec![GitTarget {
        name: Some("all".into()),
        criteria: TargetCriteria {
            cluster_group: Some("default".into()),
            ..Default::default()
        },
    }];
    let compiled = compile_repo(
        &tree,
        &CompileInput {
            repo_name: "examples",
            paths: &[],
            targets: &targets,
            limits: Limits::default(),
            deadline: None,
        },
    )
    .unwrap();
    let tmp = TempDir::new("flotilla-fleet-examples");
    let resolver = Resolver::new(tmp.path().join("cache"), Duration::from_secs(10));
    let access = Access {
        ca_bundle: Some(ca.ca_pem.clone()),
        ..Default::default()
    };
    let access_for = |_: &ChartSource| access.clone();
    let mut bundles = BTreeMap::new();
    for b in &compiled {
        let (out, _) = resolve_bundle(&resolver, b, Limits::default(), &access_for)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        bundles.insert(out.dir.clone(), out);
    }
    let dirs: Vec<&str> = bundles.keys().map(String::as_str).collect();
    assert_eq!(
        dirs,
        [
            "multi-cluster/helm-external",
            "multi-cluster/helm-target-customizations",
            "single-cluster/helm",
            "single-cluster/helm-kustomize",
            "single-cluster/helm-multi-chart/guestbook",
            "single-cluster/helm-multi-chart/monitoring-crd",
            "single-cluster/helm-oci",
        ]
    );
    // guestbook 0.0.0 is named by two bundles by URL and one through the
    // repository's index, whose digest finds it in the cache: one download.
    assert_eq!(server.fetches("/guestbook-0.0.0.tgz"), 1);
    assert_eq!(server.fetches("/index.yaml"), 1, "listings are shared");
    drop(server);

    // Local charts need nothing; remote ones say what they resolved.
    assert!(
        !bundles["single-cluster/helm"]
            .annotations
            .contains_key(CHARTS_ANNOTATION)
    );
    let shown =
        &bundles["single-cluster/helm-multi-chart/monitoring-crd"].annotations[CHARTS_ANNOTATION];
    assert!(
        shown.starts_with("monitoring-crd 104.1.0+up57.0.3 sha256:"),
        "{shown}"
    );
    let tc = &bundles["multi-cluster/helm-target-customizations"];
    let shown = &tc.annotations[CHARTS_ANNOTATION];
    assert!(
        shown.contains("guestbook 0.0.0 sha256:") && shown.contains("guestbook 0.1.0 sha256:"),
        "both versions: {shown}"
    );

    // Every bundle renders with the chart sources gone.
    for b in bundles.values() {
        let objects = render_with(b, &b.spec.options);
        assert!(!objects.is_empty(), "{}", b.name);
    }

    // helm-kustomize: kustomize over Helm's output (Fleet's post-render).
    let hk = &bundles["single-cluster/helm-kustomize"];
    let objects = render_with(hk, &hk.spec.options);
    let deploy = find(&objects, "Deployment", "frontend");
    assert_eq!(deploy["spec"]["replicas"], 3, "the overlay's patch");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/guestbook:v3",
        "the chart's own fields survive"
    );
    assert_eq!(
        find(&objects, "Service", "frontend")["spec"]["type"],
        "NodePort"
    );
    assert!(
        objects
            .iter()
            .all(|o| o["metadata"]["namespace"] == "fleet-helm-kustomize-example"),
        "{objects:#?}"
    );

    // helm-target-customizations: the test target renders 0.1.0.
    let base = render_with(tc, &tc.spec.options);
    assert_eq!(
        find(&base, "ConfigMap", "guestbook-settings")["data"]["chart-version"],
        "0.0.0"
    );
    let test =
        flotilla_targeting::resolve_options(&tc.spec.options, &tc.spec.target_customizations[..1]);
    let test = render_with(tc, &test);
    let settings = &find(&test, "ConfigMap", "guestbook-settings")["data"];
    assert_eq!(settings["chart-version"], "0.1.0");
    assert_eq!(settings["replicas"], "3");

    // helm-external: the prod target's values.
    let he = &bundles["multi-cluster/helm-external"];
    let prod =
        flotilla_targeting::resolve_options(&he.spec.options, &he.spec.target_customizations[1..2]);
    let prod = render_with(he, &prod);
    assert_eq!(
        find(&prod, "Service", "frontend")["spec"]["type"],
        "LoadBalancer"
    );

    // helm-oci, with the release name fleet.yaml gives.
    let oci = &bundles["single-cluster/helm-oci"];
    let objects = render_with(oci, &oci.spec.options);
    assert_eq!(
        find(&objects, "ConfigMap", "guestbook-settings")["data"]["release"],
        "guestbook"
    );
}
