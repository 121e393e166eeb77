//! Fan-out: BundleDeployments per matched cluster, customized options,
//! cluster namespaces, pause, rollout partitions and status aggregation.

use crate::support::*;
use flotilla_api::k8s_openapi::api::core::v1::Namespace;
use flotilla_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use flotilla_api::{
    Bundle, BundleDeployment, BundleDeploymentOptions, BundleState, Cluster, ClusterGroup, GitRepo,
    GitRepoSpec, Partition, RolloutStrategy, TargetCriteria, TargetCustomization, keys,
};
use flotilla_controller::{ObjectKey, cluster_namespace};
use kube::api::{Api, DeleteParams};
use serde_json::json;
use std::sync::atomic::Ordering;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_fan_out_with_customized_options_and_status_rolls_up() {
    let env = env().await;
    let c = &env.client;
    let ctl = start(c, args()).await;
    let _agents = fake_agents(c, false);
    for (name, env_label) in [("a", "prod"), ("b", "prod"), ("c", "dev")] {
        create(c, &cluster(name, &[("env", env_label)])).await;
    }
    create(c, &group("prod", match_labels(&[("env", "prod")]))).await;
    let mut repo = GitRepo::new(
        "repo",
        GitRepoSpec {
            repo: "https://example.com/r.git".into(),
            ..Default::default()
        },
    );
    repo.metadata.namespace = Some(NS.into());
    create(c, &repo).await;

    let mut app = bundle("app", "aaa", vec![selector_target(&[("env", "prod")])]);
    app.metadata.labels = Some(labels(&[(keys::REPO_NAME, "repo")]));
    app.spec.target_customizations = vec![TargetCustomization {
        criteria: TargetCriteria {
            cluster_name: Some("b".into()),
            ..Default::default()
        },
        options: BundleDeploymentOptions {
            default_namespace: Some("shop-b".into()),
            ..Default::default()
        },
        ..Default::default()
    }];
    create(c, &app).await;

    wait_for_pairs(c, &pairs(&[("a", "app"), ("b", "app")])).await;

    // Each cluster has its namespace, and the BundleDeployment lives there
    // with the customized options and their deployment id.
    let bd_b: BundleDeployment =
        Api::namespaced(c.clone(), &cluster_namespace(&ObjectKey::new(NS, "b")))
            .get("app")
            .await
            .unwrap();
    let opts = BundleDeploymentOptions {
        default_namespace: Some("shop-b".into()),
        ..Default::default()
    };
    assert_eq!(
        bd_b.spec.deployment_id,
        flotilla_bundle::deployment_id("s-aaa", &opts)
    );
    assert_eq!(bd_b.spec.staged_deployment_id, bd_b.spec.deployment_id);
    assert_eq!(bd_b.spec.options, opts);
    assert_eq!(bd_b.spec.content_id, "s-aaa");
    let l = bd_b.metadata.labels.clone().unwrap();
    assert_eq!(l[keys::REPO_NAME], "repo");
    assert_eq!(l[keys::BUNDLE_NAMESPACE], NS);
    let bd_a: BundleDeployment =
        Api::namespaced(c.clone(), &cluster_namespace(&ObjectKey::new(NS, "a")))
            .get("app")
            .await
            .unwrap();
    assert_eq!(
        bd_a.spec.deployment_id,
        flotilla_bundle::deployment_id("s-aaa", &BundleDeploymentOptions::default())
    );

    // The bundle holds the finalizer; status rolls up once agents report.
    let bundles: Api<Bundle> = Api::namespaced(c.clone(), NS);
    let b = eventually("bundle ready 2/2", || async {
        let b = bundles.get("app").await.ok()?;
        let st = b.status.clone()?;
        (st.display.ready_clusters == "2/2" && st.display.state == "Ready").then_some(b)
    })
    .await;
    assert!(
        b.metadata
            .finalizers
            .unwrap()
            .contains(&keys::BUNDLE_FINALIZER.to_string())
    );
    let st = b.status.unwrap();
    assert!(flotilla_api::condition::is_true(&st.conditions, "Ready"));
    assert_eq!(st.observed_generation, b.metadata.generation.unwrap());

    let clusters: Api<Cluster> = Api::namespaced(c.clone(), NS);
    eventually("cluster a status", || async {
        let st = clusters.get("a").await.ok()?.status?;
        (st.display.ready_bundles == "1/1"
            && st.namespace == cluster_namespace(&ObjectKey::new(NS, "a")))
        .then_some(())
    })
    .await;
    eventually("cluster c has nothing", || async {
        let st = clusters.get("c").await.ok()?.status?;
        (st.display.ready_bundles == "0/0").then_some(())
    })
    .await;
    let groups: Api<ClusterGroup> = Api::namespaced(c.clone(), NS);
    eventually("group status", || async {
        let st = groups.get("prod").await.ok()?.status?;
        (st.cluster_count == 2
            && st.display.ready_clusters == "2/2"
            && st.display.ready_bundles == "2/2")
            .then_some(())
    })
    .await;
    let repos: Api<GitRepo> = Api::namespaced(c.clone(), NS);
    eventually("gitrepo status", || async {
        let st = repos.get("repo").await.ok()?.status?;
        (st.ready_clusters == 2
            && st.desired_ready_clusters == 2
            && st.display.ready_clusters == "2/2")
            .then_some(())
    })
    .await;

    // A cluster deleted takes its namespace with it.
    clusters
        .delete("c", &DeleteParams::default())
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let gone = cluster_namespace(&ObjectKey::new(NS, "c"));
    eventually("namespace of c deleted", || async {
        namespaces
            .get_opt(&gone)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_bundle_keeps_the_old_deployment_and_shows_out_of_sync() {
    let env = env().await;
    let c = &env.client;
    let ctl = start(c, args()).await;
    let _agents = fake_agents(c, false);
    create(c, &cluster("a", &[("env", "prod")])).await;
    create(
        c,
        &bundle("app", "v1", vec![selector_target(&[("env", "prod")])]),
    )
    .await;
    wait_for_pairs(c, &pairs(&[("a", "app")])).await;
    let bds: Api<BundleDeployment> =
        Api::namespaced(c.clone(), &cluster_namespace(&ObjectKey::new(NS, "a")));
    let v1 = eventually("ready at v1", || async {
        let bd = bds.get("app").await.ok()?;
        (bd.state() == BundleState::Ready).then_some(bd.spec.deployment_id)
    })
    .await;

    merge_patch::<Bundle>(
        c,
        "app",
        json!({"spec": {"paused": true, "contentId": "s-v2"}}),
    )
    .await;
    let bd = eventually("v2 staged, v1 kept", || async {
        let bd = bds.get("app").await.ok()?;
        (bd.spec.paused && bd.spec.staged_deployment_id.starts_with("s-v2")).then_some(bd)
    })
    .await;
    assert_eq!(bd.spec.deployment_id, v1);
    assert_eq!(bd.state(), BundleState::OutOfSync);
    let bundles: Api<Bundle> = Api::namespaced(c.clone(), NS);
    eventually("bundle shows OutOfSync", || async {
        let st = bundles.get("app").await.ok()?.status?;
        (st.display.state == "OutOfSync" && st.summary.out_of_sync == 1).then_some(())
    })
    .await;

    merge_patch::<Bundle>(c, "app", json!({"spec": {"paused": null}})).await;
    eventually("unpaused: v2 deployed", || async {
        let bd = bds.get("app").await.ok()?;
        (!bd.spec.paused
            && bd.spec.deployment_id.starts_with("s-v2")
            && bd.state() == BundleState::Ready)
            .then_some(())
    })
    .await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_partitions_hold_clusters_back_until_the_canary_is_ready() {
    let env = env().await;
    let c = &env.client;
    let ctl = start(c, args()).await;
    let agents = fake_agents(c, false);
    for name in ["c0", "c1", "c2", "c3"] {
        create(c, &cluster(name, &[("env", "prod")])).await;
    }
    let mut app = bundle("app", "v1", vec![selector_target(&[("env", "prod")])]);
    app.spec.rollout_strategy = Some(RolloutStrategy {
        max_unavailable: Some(IntOrString::Int(1)),
        partitions: vec![
            Partition {
                name: Some("canary".into()),
                criteria: TargetCriteria {
                    cluster_name: Some("c0".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
            Partition {
                name: Some("rest".into()),
                criteria: TargetCriteria {
                    cluster_selector: Some(match_labels(&[("env", "prod")])),
                    ..Default::default()
                },
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    create(c, &app).await;
    let bundles: Api<Bundle> = Api::namespaced(c.clone(), NS);
    eventually("all four ready at v1", || async {
        let st = bundles.get("app").await.ok()?.status?;
        (st.display.ready_clusters == "4/4").then_some(())
    })
    .await;

    // Agents stop reporting: the canary takes v2, the rest wait.
    agents.ready.store(false, Ordering::SeqCst);
    merge_patch::<Bundle>(c, "app", json!({"spec": {"contentId": "s-v2"}})).await;
    let bd = |name: &'static str| {
        let api: Api<BundleDeployment> =
            Api::namespaced(c.clone(), &cluster_namespace(&ObjectKey::new(NS, name)));
        async move { api.get("app").await.unwrap() }
    };
    eventually("canary promoted, rest staged", || async {
        let canary = bd("c0").await;
        let mut rest = Vec::new();
        for n in ["c1", "c2", "c3"] {
            rest.push(bd(n).await);
        }
        let held = rest.iter().all(|b| {
            b.spec.deployment_id.starts_with("s-v1")
                && b.spec.staged_deployment_id.starts_with("s-v2")
                && b.state() == BundleState::Pending
        });
        (canary.spec.deployment_id.starts_with("s-v2") && held).then_some(())
    })
    .await;
    let st = eventually("partition status", || async {
        let st = bundles.get("app").await.ok()?.status?;
        (st.partitions.len() == 2 && st.summary.pending == 3).then_some(st)
    })
    .await;
    assert_eq!(st.partitions[0].name, "canary");
    assert_eq!(st.partitions[0].unavailable, 1);
    assert_eq!(st.unavailable, 1);
    assert_eq!(st.max_unavailable, 1);
    // Nothing moves while the canary is not ready.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(bd("c1").await.spec.deployment_id.starts_with("s-v1"));

    // The canary becomes ready: the rest follow, one at a time.
    agents.ready.store(true, Ordering::SeqCst);
    eventually("all four at v2 and ready", || async {
        let st = bundles.get("app").await.ok()?.status?;
        let mut all = true;
        for n in ["c0", "c1", "c2", "c3"] {
            all &= bd(n).await.spec.deployment_id.starts_with("s-v2");
        }
        (all && st.display.ready_clusters == "4/4").then_some(())
    })
    .await;
    ctl.stop().await;
}

/// Fleet's templated values, per cluster: each BundleDeployment gets its
/// cluster's values (and its own deploymentID); relabelling a cluster
/// re-plans it; a cluster whose template fails keeps its deployment, and
/// the pair shows ErrApplied, the Bundle Stalled, naming cluster and key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templated_values_are_worked_out_per_cluster() {
    let env = env().await;
    let c = &env.client;
    let ctl = start(c, args()).await;
    let _agents = fake_agents(c, false);
    create(
        c,
        &cluster("eu", &[("env", "prod"), ("region", "eu-west-1")]),
    )
    .await;
    let mut us = cluster("us", &[("env", "prod"), ("region", "us-east-1")]);
    us.spec.template_values = Some(json!({"replicas": 3}));
    create(c, &us).await;
    let mut app = bundle("app", "aaa", vec![selector_target(&[("env", "prod")])]);
    app.spec.options.helm = Some(flotilla_api::HelmOptions {
        values: Some(json!({"region": "${ .ClusterLabels.region }", "name": "${ .ClusterName }"})),
        ..Default::default()
    });
    create(c, &app).await;
    wait_for_pairs(c, &pairs(&[("eu", "app"), ("us", "app")])).await;
    let bd = |name: &'static str| async move {
        Api::<BundleDeployment>::namespaced(
            c.clone(),
            &cluster_namespace(&ObjectKey::new(NS, name)),
        )
        .get("app")
        .await
        .unwrap()
    };
    let values = |b: &BundleDeployment| {
        b.spec
            .options
            .helm
            .as_ref()
            .unwrap()
            .values
            .clone()
            .unwrap()
    };
    let (eu, us_bd) = (bd("eu").await, bd("us").await);
    assert_eq!(values(&eu), json!({"region": "eu-west-1", "name": "eu"}));
    assert_eq!(values(&us_bd), json!({"region": "us-east-1", "name": "us"}));
    assert_ne!(eu.spec.deployment_id, us_bd.spec.deployment_id);

    // A relabel that keeps the cluster targeted still moves its values.
    merge_patch::<Cluster>(
        c,
        "eu",
        json!({"metadata": {"labels": {"region": "eu-central-1"}}}),
    )
    .await;
    eventually("eu re-planned", || async {
        (values(&bd("eu").await)["region"] == "eu-central-1").then_some(())
    })
    .await;

    // A template that fails on one cluster: that deployment stays.
    let before = bd("eu").await.spec.deployment_id;
    merge_patch::<Bundle>(
        c,
        "app",
        json!({"spec": {"helm": {"values": {"replicas": "${ .ClusterValues.replicas }"}}}}),
    )
    .await;
    eventually("us gets its replicas", || async {
        (values(&bd("us").await)["replicas"] == 3).then_some(())
    })
    .await;
    let b = eventually("the Bundle names the failing cluster", || async {
        let b: Bundle = Api::namespaced(c.clone(), NS).get("app").await.ok()?;
        let cond = b
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?
            .clone();
        (cond.reason == "InvalidValues").then_some((b, cond))
    })
    .await;
    let (b, cond) = b;
    assert!(
        cond.message.contains("eu") && cond.message.contains("helm.values.replicas"),
        "{}",
        cond.message
    );
    assert!(b.status.unwrap().summary.err_applied >= 1);
    assert_eq!(
        bd("eu").await.spec.deployment_id,
        before,
        "what is deployed stays"
    );
    ctl.stop().await;
}
