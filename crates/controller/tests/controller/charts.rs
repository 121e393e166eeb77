//! Helm charts named by GitRepos, resolved by the controller from chart
//! sources on 127.0.0.1 (testdata/chart-server/serve.py): vendored into the
//! bundles' Content, shown on the Bundles, re-resolved on a new commit or
//! forceSyncGeneration, downloaded once for many GitRepos; every bad
//! source a condition that names the chart, with nothing deployed lost.

use crate::gitrepo::{bundles_of, deploy, get_repo, git_args, gitrepo, ready, wait_ready};
use crate::support::*;
use flotilla_api::k8s_openapi::ByteString;
use flotilla_api::k8s_openapi::api::core::v1::Secret;
use flotilla_api::{Bundle, BundleDeployment, Content, GitRepo, keys};
use flotilla_bundle::BundleContent;
use flotilla_charts::CHARTS_ANNOTATION;
use flotilla_charts::testing::{
    ChartServer, EntryType, ServerOptions, TestCa, chart, fleet_examples_replacements, gzip_bomb,
    publish_test_charts, raw_archive, repo_files,
};
use flotilla_git::testing::{TempDir, TestRepo};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use serde_json::json;
use std::path::Path;

pub fn helm_secret(name: &str, user: &str, password: &str, ca: Option<&[u8]>) -> Secret {
    let mut data = vec![
        ("username".to_owned(), ByteString(user.as_bytes().to_vec())),
        (
            "password".to_owned(),
            ByteString(password.as_bytes().to_vec()),
        ),
    ];
    if let Some(ca) = ca {
        data.push(("cacerts".to_owned(), ByteString(ca.to_vec())));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(data.into_iter().collect()),
        ..Default::default()
    }
}

async fn content_of(client: &kube::Client, b: &Bundle) -> BundleContent {
    let c = Api::<Content>::all(client.clone())
        .get(&b.spec.content_id)
        .await
        .unwrap();
    BundleContent::from_gzip(&c.spec.content.0).unwrap()
}

fn charts_shown(b: &Bundle) -> String {
    b.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHARTS_ANNOTATION))
        .cloned()
        .unwrap_or_default()
}

async fn deployment_ids(client: &kube::Client) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Api::<BundleDeployment>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|bd| {
            let l = bd.metadata.labels.clone().unwrap_or_default();
            (l[keys::BUNDLE_NAME].clone(), bd.spec.deployment_id)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn fleet_examples_helm_deploy_with_charts_from_an_authenticated_tls_repository() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-charts-examples");
    let ca = TestCa::new();
    let server = ChartServer::start(ServerOptions {
        auth: Some(("bob", "hunter2")),
        tls: Some(&ca),
    });
    publish_test_charts(&server);
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    let replace = fleet_examples_replacements(&server);
    let replace: Vec<(&str, &str)> = replace
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let examples =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/repos/fleet-examples-helm");
    for (path, bytes) in repo_files(&examples, &replace) {
        origin.write(&path, std::str::from_utf8(&bytes).unwrap());
    }
    let c1 = origin.commit("fleet-examples").to_string();
    create(
        &env.client,
        &helm_secret("helm-creds", "bob", "hunter2", Some(&ca.ca_pem)),
    )
    .await;
    let c = start(&env.client, git_args(&tmp)).await;
    deploy(
        &env.client,
        gitrepo(
            "examples",
            &origin.url(),
            json!({"branch": "main", "helmSecretName": "helm-creds", "pollingInterval": "1s"}),
        ),
        &c1,
    )
    .await;
    let bundles = bundles_of(&env.client, "examples").await;
    assert_eq!(bundles.len(), 7, "{:?}", bundles.keys());
    let by_dir = |dir: &str| {
        let name = format!("examples-{}", dir.replace('/', "-"));
        bundles
            .get(&name)
            .unwrap_or_else(|| panic!("no bundle {name} in {:?}", bundles.keys()))
    };
    let hk = by_dir("single-cluster/helm-kustomize");
    assert!(
        charts_shown(hk).starts_with("guestbook 0.0.0 sha256:"),
        "{}",
        charts_shown(hk)
    );
    let helm = hk.spec.options.helm.as_ref().unwrap();
    let path = helm.chart.clone().unwrap();
    assert!(
        path.starts_with(".chart/") && helm.repo.is_none(),
        "{helm:?}"
    );
    let files = content_of(&env.client, hk).await;
    assert!(files.files.contains_key(&format!("{path}/Chart.yaml")));
    assert!(files.files.contains_key("overlays/dev/kustomization.yaml"));
    // Credentials stay in their Secret.
    for b in bundles.values() {
        let text = serde_json::to_string(b).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
    }
    let tc = by_dir("multi-cluster/helm-target-customizations");
    assert!(
        charts_shown(tc).contains("guestbook 0.1.0"),
        "{}",
        charts_shown(tc)
    );
    assert!(
        charts_shown(by_dir("single-cluster/helm")).is_empty(),
        "a local chart"
    );
    assert!(
        c.metric(
            "flotilla_git_operations_total",
            Some("op=\"chart-download\"")
        ) >= 1.0
    );
    c.stop().await;
}

#[tokio::test]
async fn a_version_range_moves_to_a_new_upstream_version_on_a_new_commit_or_sync() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-charts-range");
    let server = ChartServer::start(ServerOptions::default());
    server.publish("redis", "1.0.0", &chart("redis", "1.0.0", &[]), true);
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write(
        "redis/fleet.yaml",
        &format!(
            "defaultNamespace: cache\nhelm:\n  repo: {}\n  chart: redis\n  version: \"~1\"\n",
            server.url()
        ),
    );
    let c1 = origin.commit("redis").to_string();
    create(&env.client, &cluster("c1", &[("env", "dev")])).await;
    let c = start(
        &env.client,
        flotilla_controller::ControllerArgs {
            chart_index_ttl: std::time::Duration::from_millis(1),
            ..git_args(&tmp)
        },
    )
    .await;
    deploy(
        &env.client,
        gitrepo(
            "cache",
            &origin.url(),
            json!({"branch": "main", "pollingInterval": "1s",
                   "targets": [{"clusterSelector": {"matchLabels": {"env": "dev"}}}]}),
        ),
        &c1,
    )
    .await;
    let first = eventually("a BundleDeployment", || async {
        let ids = deployment_ids(&env.client).await;
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    let b = bundles_of(&env.client, "cache").await;
    assert!(charts_shown(&b["cache-redis"]).starts_with("redis 1.0.0 "));

    // A new version in range: the next commit (anywhere) picks it up, as
    // a new deploymentID.
    server.publish("redis", "1.1.0", &chart("redis", "1.1.0", &[]), true);
    origin.write("README.md", "docs\n");
    let c2 = origin.commit("docs").to_string();
    wait_ready(&env.client, "cache", &c2).await;
    let second = eventually("a new deploymentID", || async {
        let ids = deployment_ids(&env.client).await;
        (ids != first).then_some(ids)
    })
    .await;
    let b = bundles_of(&env.client, "cache").await;
    assert!(
        charts_shown(&b["cache-redis"]).starts_with("redis 1.1.0 "),
        "{}",
        charts_shown(&b["cache-redis"])
    );

    // Or forceSyncGeneration, with no commit at all.
    server.publish("redis", "1.2.0", &chart("redis", "1.2.0", &[]), true);
    merge_patch::<GitRepo>(
        &env.client,
        "cache",
        json!({"spec": {"forceSyncGeneration": 1}}),
    )
    .await;
    eventually("1.2.0 after a sync", || async {
        let b = bundles_of(&env.client, "cache").await;
        charts_shown(b.get("cache-redis")?)
            .starts_with("redis 1.2.0 ")
            .then_some(())
    })
    .await;
    eventually("another deploymentID", || async {
        let ids = deployment_ids(&env.client).await;
        (ids != second && ids != first).then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn twenty_gitrepos_naming_one_chart_download_it_once() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-charts-twenty");
    let server = ChartServer::start(ServerOptions::default());
    server.publish("redis", "1.0.0", &chart("redis", "1.0.0", &[]), true);
    let c = start(&env.client, git_args(&tmp)).await;
    let mut commits = Vec::new();
    for i in 0..20 {
        let origin = TestRepo::init(&tmp.path().join(format!("origin-{i}")), "main");
        origin.write(
            "app/fleet.yaml",
            &format!(
                "defaultNamespace: app-{i}\nhelm:\n  repo: {}\n  chart: redis\n  version: 1.0.0\n",
                server.url()
            ),
        );
        let commit = origin.commit("app").to_string();
        create(
            &env.client,
            &gitrepo(&format!("r{i}"), &origin.url(), json!({"branch": "main"})),
        )
        .await;
        commits.push((origin, commit));
    }
    for (i, (_, commit)) in commits.iter().enumerate() {
        wait_ready(&env.client, &format!("r{i}"), commit).await;
    }
    assert_eq!(server.fetches("/redis-1.0.0.tgz"), 1);
    assert_eq!(
        c.metric(
            "flotilla_git_operations_total",
            Some("op=\"chart-download\"")
        ),
        1.0
    );
    c.stop().await;
}

/// Each bad source, one commit at a time, over a good deployment: the
/// condition names the chart and says why; the Bundle stays as it was.
#[tokio::test]
async fn bad_chart_sources_get_conditions_and_keep_what_is_deployed() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-charts-bad");
    let ca = TestCa::new();
    let server = ChartServer::start(ServerOptions {
        auth: Some(("bob", "hunter2")),
        tls: Some(&ca),
    });
    server.publish("app", "1.0.0", &chart("app", "1.0.0", &[]), true);
    let evil = |entry: &str| {
        let y = "apiVersion: v2\nname: evil\nversion: 1.0.0\n";
        raw_archive(&[
            ("evil/Chart.yaml", EntryType::Regular, y.as_bytes()),
            (entry, EntryType::Regular, b"x"),
        ])
    };
    server.publish("dotdot", "1.0.0", &evil("evil/../../etc/cron.d/x"), true);
    server.publish("absolute", "1.0.0", &evil("/etc/cron.d/x"), true);
    let link = raw_archive(&[
        (
            "link/Chart.yaml",
            EntryType::Regular,
            b"apiVersion: v2\nname: link\nversion: 1.0.0\n",
        ),
        ("link/templates/x.yaml", EntryType::Symlink, b""),
    ]);
    server.publish("link", "1.0.0", &link, true);
    server.publish("bomb", "1.0.0", &gzip_bomb("bomb", 64 << 20), true);
    server.publish(
        "broken",
        "1.0.0",
        &chart("broken", "1.0.0", &[("Chart.yaml", "name: [unclosed")]),
        true,
    );
    create(
        &env.client,
        &helm_secret("helm-creds", "bob", "hunter2", Some(&ca.ca_pem)),
    )
    .await;
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    let fleet = |repo: &str, chart: &str, version: &str| {
        format!(
            "defaultNamespace: app\nhelm:\n  repo: {repo}\n  chart: {chart}\n  version: \"{version}\"\n"
        )
    };
    origin.write("app/fleet.yaml", &fleet(&server.url(), "app", "1.0.0"));
    let c1 = origin.commit("good").to_string();
    let c = start(&env.client, git_args(&tmp)).await;
    deploy(
        &env.client,
        gitrepo(
            "shop",
            &origin.url(),
            json!({"branch": "main", "helmSecretName": "helm-creds", "pollingInterval": "1s"}),
        ),
        &c1,
    )
    .await;
    let good = bundles_of(&env.client, "shop").await["shop-app"].clone();

    // `at`: the commit (short) or generation the condition must be for.
    let check = |reason: &'static str, chart: &'static str, says: &'static str, at: String| {
        let client = env.client.clone();
        let good = good.clone();
        async move {
            let r = eventually(&format!("{reason} for {chart}"), || async {
                let r = get_repo(&client, "shop").await?;
                ready(&r)
                    .is_some_and(|(st, why, m)| st == "False" && why == reason && m.contains(&at))
                    .then_some(r)
            })
            .await;
            let (_, _, message) = ready(&r).unwrap();
            assert!(
                message.contains(chart),
                "{reason}: names the chart: {message}"
            );
            assert!(message.contains(says), "{reason}: says {says:?}: {message}");
            assert!(
                !message.contains("hunter2") && !message.contains("wrong-pass"),
                "{message}"
            );
            let now = bundles_of(&client, "shop").await["shop-app"].clone();
            // What the last good commit deployed stays (a forceSyncGeneration
            // still reaches it: that is the user asking to deploy again).
            let spec = |b: &Bundle| {
                let mut v = serde_json::to_value(&b.spec).unwrap();
                v.as_object_mut().unwrap().remove("forceSyncGeneration");
                v
            };
            assert_eq!(spec(&now), spec(&good), "{reason}: nothing changed");
            assert_eq!(charts_shown(&now), charts_shown(&good));
        }
    };
    let url = server.url();
    let cases: Vec<(String, &'static str, &'static str, &'static str)> = vec![
        (
            fleet(&url, "nginx", "1.0.0"),
            "ChartNotFound",
            "nginx",
            "is not in",
        ),
        (
            fleet(&url, "app", "^9"),
            "ChartVersionNotFound",
            "app",
            "1.0.0",
        ),
        (
            fleet("https://127.0.0.1:9", "app", "1.0.0"),
            "ChartUnreachable",
            "app",
            "unreachable",
        ),
        (
            fleet(&url, "dotdot", "1.0.0"),
            "InvalidChart",
            "dotdot",
            "..",
        ),
        (
            fleet(&url, "absolute", "1.0.0"),
            "InvalidChart",
            "absolute",
            "absolute",
        ),
        (fleet(&url, "link", "1.0.0"), "InvalidChart", "link", "link"),
        (
            fleet(&url, "bomb", "1.0.0"),
            "ChartTooLarge",
            "bomb",
            "limit",
        ),
        (
            fleet(&url, "broken", "1.0.0"),
            "InvalidChart",
            "broken",
            "Chart.yaml",
        ),
    ];
    for (text, reason, chart, says) in cases {
        origin.write("app/fleet.yaml", &text);
        let commit = origin.commit(reason).to_string();
        check(reason, chart, says, commit[..7].to_owned()).await;
    }

    // Credentials: a wrong password, then no CA. A changed Secret is read
    // on the next reconcile: here, forceSyncGeneration.
    origin.write("app/fleet.yaml", &fleet(&url, "app", "1.0.0"));
    let back = origin.commit("good again").to_string();
    wait_ready(&env.client, "shop", &back).await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    let put = |s: Secret| {
        let secrets = secrets.clone();
        async move {
            secrets
                .patch(
                    "helm-creds",
                    &PatchParams::apply("test").force(),
                    &Patch::Apply(&s),
                )
                .await
                .unwrap();
        }
    };
    put(helm_secret(
        "helm-creds",
        "bob",
        "wrong-pass",
        Some(&ca.ca_pem),
    ))
    .await;
    merge_patch::<GitRepo>(
        &env.client,
        "shop",
        json!({"spec": {"forceSyncGeneration": 1}}),
    )
    .await;
    check(
        "ChartAuthenticationFailed",
        "app",
        "authentication failed",
        String::new(),
    )
    .await;
    let mut no_ca = helm_secret("helm-creds", "bob", "hunter2", None);
    no_ca
        .data
        .as_mut()
        .unwrap()
        .insert("cacerts".into(), ByteString(Vec::new()));
    put(no_ca).await;
    merge_patch::<GitRepo>(
        &env.client,
        "shop",
        json!({"spec": {"forceSyncGeneration": 2}}),
    )
    .await;
    check("ChartTLSFailed", "app", "TLS", String::new()).await;
    c.stop().await;
}
