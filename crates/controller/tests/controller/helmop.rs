//! HelmOps: a chart deployed without Git, resolved from a chart source on
//! 127.0.0.1 behind basic auth and TLS, through the same chart code as a
//! GitRepo's; a range followed by polling; bad input on the conditions
//! with the Bundle kept; the Bundle deleted with the HelmOp.

use crate::charts::helm_secret;
use crate::support::*;
use flotilla_api::{Bundle, BundleDeployment, HelmOp, condition, keys};
use flotilla_charts::CHARTS_ANNOTATION;
use flotilla_charts::testing::{ChartServer, ServerOptions, TestCa, chart};
use flotilla_controller::ControllerArgs;
use flotilla_git::testing::TempDir;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use std::time::Duration;

fn helmop(name: &str, spec: serde_json::Value) -> HelmOp {
    serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "HelmOp",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
    .unwrap()
}

async fn get_op(client: &kube::Client, name: &str) -> Option<HelmOp> {
    Api::<HelmOp>::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .unwrap()
}

async fn get_bundle(client: &kube::Client, name: &str) -> Option<Bundle> {
    Api::<Bundle>::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .unwrap()
}

/// The Synced condition (the HelmOp controller's own).
fn synced(op: &HelmOp) -> Option<(String, String, String)> {
    op.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::SYNCED)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The Ready condition as (status, reason, message).
fn ready(op: &HelmOp) -> Option<(String, String, String)> {
    op.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_version(client: &kube::Client, name: &str, version: &str) -> HelmOp {
    eventually(&format!("{name} Ready at {version}"), || async {
        let op = get_op(client, name).await?;
        let st = op.status.as_ref()?;
        (st.version == version && synced(&op).is_some_and(|(s, _, _)| s == "True")).then_some(op)
    })
    .await
}

async fn deployment_ids(client: &kube::Client) -> Vec<String> {
    let mut ids: Vec<String> = Api::<BundleDeployment>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|bd| bd.spec.deployment_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_helmop_deploys_a_chart_follows_its_range_and_keeps_it_through_bad_input() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-helmop");
    let ca = TestCa::new();
    let server = ChartServer::start(ServerOptions {
        auth: Some(("bob", "hunter2")),
        tls: Some(&ca),
    });
    server.publish("redis", "1.0.0", &chart("redis", "1.0.0", &[]), true);
    create(
        &env.client,
        &helm_secret("redis-creds", "bob", "hunter2", Some(&ca.ca_pem)),
    )
    .await;
    create(&env.client, &cluster("c1", &[("env", "dev")])).await;
    let c = start(
        &env.client,
        ControllerArgs {
            git_dir: tmp.path().join("cache"),
            chart_index_ttl: Duration::from_millis(1),
            ..args()
        },
    )
    .await;
    let spec = |version: &str| {
        json!({
            "helm": {"repo": server.url(), "chart": "redis", "version": version,
                     "releaseName": "cache", "values": {"value": "from-helmop"}},
            "defaultNamespace": "cache",
            "targets": [{"clusterSelector": {"matchLabels": {"env": "dev"}}}],
            "helmSecretName": "redis-creds",
            "pollingInterval": "1s",
            "labels": {"team": "data"},
        })
    };
    create(&env.client, &helmop("redis", spec("~1"))).await;
    let op = wait_version(&env.client, "redis", "1.0.0").await;
    let status = op.status.unwrap();
    assert!(status.digest.starts_with("sha256:"), "{status:?}");
    assert_eq!(status.display.repo, server.url());
    assert!(
        op.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&keys::HELMOP_FINALIZER.to_owned())
    );
    let b = get_bundle(&env.client, "redis").await.unwrap();
    let labels = b.metadata.labels.clone().unwrap();
    assert_eq!(labels[keys::HELMOP_NAME], "redis");
    assert_eq!(labels["team"], "data");
    assert!(!labels.contains_key(keys::REPO_NAME));
    let owner = &b.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("HelmOp", "redis")
    );
    assert!(
        b.metadata.annotations.as_ref().unwrap()[CHARTS_ANNOTATION]
            .starts_with("redis 1.0.0 sha256:")
    );
    let helm = b.spec.options.helm.as_ref().unwrap();
    assert!(
        helm.chart.as_deref().unwrap().starts_with(".chart/"),
        "vendored: {helm:?}"
    );
    assert_eq!(helm.release_name.as_deref(), Some("cache"));
    assert!(!serde_json::to_string(&b).unwrap().contains("hunter2"));
    let first = eventually("a BundleDeployment", || async {
        let ids = deployment_ids(&env.client).await;
        (ids.len() == 1).then_some(ids)
    })
    .await;
    eventually("HelmOp readiness rolled up", || async {
        let op = get_op(&env.client, "redis").await?;
        (op.status?.display.ready_clusters == "0/1").then_some(())
    })
    .await;

    // Polling finds nothing new: no writes.
    let writes = c.writes();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(c.writes(), writes, "an idle poll writes nothing");

    // A new version in the range: the next poll deploys it.
    server.publish("redis", "1.1.0", &chart("redis", "1.1.0", &[]), true);
    wait_version(&env.client, "redis", "1.1.0").await;
    eventually("a new deploymentID", || async {
        let ids = deployment_ids(&env.client).await;
        (ids.len() == 1 && ids != first).then_some(())
    })
    .await;

    // A spec edit: Ready for the new generation only once its Bundle
    // carries it; a label dropped from spec.labels leaves the Bundle.
    merge_patch::<HelmOp>(
        &env.client,
        "redis",
        json!({"spec": {"helm": {"values": {"value": "v2"}}, "labels": null}}),
    )
    .await;
    let op = eventually("Ready at the new generation", || async {
        let op = get_op(&env.client, "redis").await?;
        let st = op.status.as_ref()?;
        (Some(st.observed_generation) == op.metadata.generation
            && synced(&op).is_some_and(|(s, _, _)| s == "True"))
        .then_some(op)
    })
    .await;
    let b = get_bundle(&env.client, "redis").await.unwrap();
    assert_eq!(
        b.spec.options.helm.as_ref().unwrap().values,
        Some(json!({"value": "v2"})),
        "generation {:?} claimed Ready before its Bundle had it",
        op.metadata.generation
    );
    eventually("the dropped label removed", || async {
        let b = get_bundle(&env.client, "redis").await?;
        (!b.metadata.labels?.contains_key("team")).then_some(())
    })
    .await;
    let kept = get_bundle(&env.client, "redis").await.unwrap();

    // Bad input: the condition names the chart; the Bundle stays.
    merge_patch::<HelmOp>(
        &env.client,
        "redis",
        json!({"spec": {"helm": {"version": "^9"}}}),
    )
    .await;
    let op = eventually("ChartVersionNotFound", || async {
        let op = get_op(&env.client, "redis").await?;
        ready(&op)
            .is_some_and(|(s, r, _)| s == "False" && r == "ChartVersionNotFound")
            .then_some(op)
    })
    .await;
    let (_, _, message) = ready(&op).unwrap();
    assert!(
        message.contains("redis") && message.contains("1.1.0"),
        "{message}"
    );
    assert!(message.contains("stays deployed"), "{message}");
    assert_eq!(op.status.unwrap().version, "1.1.0", "what is deployed");
    let now = get_bundle(&env.client, "redis").await.unwrap();
    assert_eq!(now.spec, kept.spec);
    merge_patch::<HelmOp>(
        &env.client,
        "redis",
        json!({"spec": {"helm": {"version": "~1", "repo": null, "chart": "./local"}}}),
    )
    .await;
    eventually("InvalidSpec", || async {
        let op = get_op(&env.client, "redis").await?;
        ready(&op)
            .is_some_and(|(s, r, m)| {
                s == "False" && r == "InvalidSpec" && m.contains("spec.helm.chart")
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        get_bundle(&env.client, "redis").await.unwrap().spec,
        kept.spec
    );

    // Deleted: its Bundle goes, then it does.
    Api::<HelmOp>::namespaced(env.client.clone(), NS)
        .delete("redis", &DeleteParams::default())
        .await
        .unwrap();
    eventually("HelmOp and Bundle gone", || async {
        (get_op(&env.client, "redis").await.is_none()
            && get_bundle(&env.client, "redis").await.is_none())
        .then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn a_helmop_whose_name_a_gitrepo_bundle_holds_is_refused_and_an_unreachable_source_retried() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-helmop-conflict");
    let c = start(
        &env.client,
        ControllerArgs {
            git_dir: tmp.path().join("cache"),
            ..args()
        },
    )
    .await;
    let mut b = bundle("shop-web", "aaa", vec![]);
    b.metadata.labels = Some(labels(&[(keys::REPO_NAME, "shop")]));
    create(&env.client, &b).await;
    let server = ChartServer::start(ServerOptions::default());
    server.publish("web", "1.0.0", &chart("web", "1.0.0", &[]), true);
    create(
        &env.client,
        &helmop(
            "shop-web",
            json!({"helm": {"repo": server.url(), "chart": "web", "version": "1.0.0"}}),
        ),
    )
    .await;
    eventually("BundleNameConflict", || async {
        let op = get_op(&env.client, "shop-web").await?;
        ready(&op)
            .is_some_and(|(s, r, m)| {
                s == "False" && r == "BundleNameConflict" && m.contains("GitRepo shop's")
            })
            .then_some(())
    })
    .await;
    let still = get_bundle(&env.client, "shop-web").await.unwrap();
    assert_eq!(
        still.spec.content_id, "s-aaa",
        "the GitRepo's Bundle is not touched"
    );

    create(
        &env.client,
        &helmop(
            "gone",
            json!({"helm": {"repo": "http://127.0.0.1:9", "chart": "web"}}),
        ),
    )
    .await;
    eventually("ChartUnreachable, Reconciling", || async {
        let op = get_op(&env.client, "gone").await?;
        let st = op.status.as_ref()?;
        let reconciling = st
            .conditions
            .iter()
            .any(|c| c.type_ == condition::RECONCILING && c.status == "True");
        (ready(&op).is_some_and(|(_, r, m)| r == "ChartUnreachable" && m.contains("web"))
            && reconciling)
            .then_some(())
    })
    .await;
    assert!(get_bundle(&env.client, "gone").await.is_none());
    // And it is tried again, backing off (1 s, 2 s, ...).
    let resolves = || {
        c.metric(
            "flotilla_git_operations_total",
            Some("op=\"helmop-resolve\""),
        )
    };
    let before = resolves();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        resolves() - before >= 1.0,
        "retried: {} -> {}",
        before,
        resolves()
    );
    c.stop().await;
}
