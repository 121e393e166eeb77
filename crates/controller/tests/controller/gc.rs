//! The GC controller: each trigger deletes exactly the stale
//! BundleDeployments, respects the agent's finalizer, and releases a
//! deleted Bundle once its deployments are gone.

use crate::support::*;
use flotilla_api::{Bundle, BundleDeployment, Cluster, ClusterGroup, keys};
use flotilla_controller::{ObjectKey, cluster_namespace};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Clusters a (prod, eu), b (prod, us), c (dev, eu); group `eu`;
/// bundle `web` on env=prod, `mon` on group eu, `all` on everything.
async fn fleet(c: &kube::Client) -> BTreeMap<(String, String), String> {
    create(c, &cluster("a", &[("env", "prod"), ("region", "eu")])).await;
    create(c, &cluster("b", &[("env", "prod"), ("region", "us")])).await;
    create(c, &cluster("c", &[("env", "dev"), ("region", "eu")])).await;
    create(c, &group("eu", match_labels(&[("region", "eu")]))).await;
    create(
        c,
        &bundle("web", "w", vec![selector_target(&[("env", "prod")])]),
    )
    .await;
    create(c, &bundle("mon", "m", vec![group_target("eu")])).await;
    create(c, &bundle("all", "x", vec![selector_target(&[])])).await;
    wait_for_pairs(
        c,
        &pairs(&[
            ("a", "web"),
            ("b", "web"),
            ("a", "mon"),
            ("c", "mon"),
            ("a", "all"),
            ("b", "all"),
            ("c", "all"),
        ]),
    )
    .await
}

/// Waits for exactly `want`, and checks that every survivor is the very
/// object it was (same uid): GC deleted the stale ones and no others.
async fn only_stale_deleted(
    c: &kube::Client,
    before: &BTreeMap<(String, String), String>,
    want: &[(&str, &str)],
) -> BTreeMap<(String, String), String> {
    let now = wait_for_pairs(c, &pairs(want)).await;
    for (pair, uid) in &now {
        if let Some(old) = before.get(pair) {
            assert_eq!(old, uid, "{pair:?} was recreated or touched");
        }
    }
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_trigger_deletes_exactly_the_stale_deployments() {
    let env = env().await;
    let c = &env.client;
    let ctl = start(c, args()).await;
    let before = fleet(c).await;

    // 1. A bundle's targets change (what a GitRepo targets edit does).
    merge_patch::<Bundle>(
        c,
        "web",
        json!({"spec": {"targets": [{"clusterName": "a"}]}}),
    )
    .await;
    let before = only_stale_deleted(
        c,
        &before,
        &[
            ("a", "web"),
            ("a", "mon"),
            ("c", "mon"),
            ("a", "all"),
            ("b", "all"),
            ("c", "all"),
        ],
    )
    .await;

    // 2. A cluster's labels change: c leaves the eu group.
    merge_patch::<Cluster>(c, "c", json!({"metadata": {"labels": {"region": "us"}}})).await;
    let before = only_stale_deleted(
        c,
        &before,
        &[
            ("a", "web"),
            ("a", "mon"),
            ("a", "all"),
            ("b", "all"),
            ("c", "all"),
        ],
    )
    .await;

    // 3. A group's selector changes: eu now means env=prod (a and b).
    merge_patch::<ClusterGroup>(
        c,
        "eu",
        json!({"spec": {"selector": {"matchLabels": {"region": null, "env": "prod"}}}}),
    )
    .await;
    let before = only_stale_deleted(
        c,
        &before,
        &[
            ("a", "web"),
            ("a", "mon"),
            ("b", "mon"),
            ("a", "all"),
            ("b", "all"),
            ("c", "all"),
        ],
    )
    .await;

    // 4. A group is deleted.
    let groups: Api<ClusterGroup> = Api::namespaced(c.clone(), NS);
    groups.delete("eu", &DeleteParams::default()).await.unwrap();
    let before = only_stale_deleted(
        c,
        &before,
        &[("a", "web"), ("a", "all"), ("b", "all"), ("c", "all")],
    )
    .await;

    // 5. A cluster is deleted.
    let clusters: Api<Cluster> = Api::namespaced(c.clone(), NS);
    clusters
        .delete("b", &DeleteParams::default())
        .await
        .unwrap();
    let before = only_stale_deleted(c, &before, &[("a", "web"), ("a", "all"), ("c", "all")]).await;

    // 6. A bundle is deleted; its finalizer goes once its deployments did.
    let bundles: Api<Bundle> = Api::namespaced(c.clone(), NS);
    bundles
        .delete("all", &DeleteParams::default())
        .await
        .unwrap();
    only_stale_deleted(c, &before, &[("a", "web")]).await;
    eventually("bundle `all` released and gone", || async {
        bundles
            .get_opt("all")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    // 7. A BundleDeployment nobody targets (as a racing fan-out could
    // leave) is deleted on sight.
    let stray_ns = cluster_namespace(&ObjectKey::new(NS, "a"));
    let mut stray = BundleDeployment::new("ghost", Default::default());
    stray.metadata.labels = Some(labels(&[
        (keys::MANAGED_BY, keys::MANAGED_BY_VALUE),
        (keys::BUNDLE_NAME, "ghost"),
        (keys::BUNDLE_NAMESPACE, NS),
        (keys::CLUSTER_NAME, "a"),
        (keys::CLUSTER_NAMESPACE, NS),
    ]));
    let bds: Api<BundleDeployment> = Api::namespaced(c.clone(), &stray_ns);
    bds.create(&PostParams::default(), &stray).await.unwrap();
    // An object without Flotilla's labels is never touched.
    let mut foreign = BundleDeployment::new("foreign", Default::default());
    foreign.metadata.labels = Some(labels(&[("team", "x")]));
    bds.create(&PostParams::default(), &foreign).await.unwrap();
    eventually("ghost deleted", || async {
        bds.get_opt("ghost").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(bds.get_opt("foreign").await.unwrap().is_some());

    assert!(ctl.metric("flotilla_gc_deleted_total", None) >= 6.0);
    assert_eq!(ctl.metric("flotilla_gc_sweep_stale_found_total", None), 0.0);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_waits_for_the_agent_finalizer_and_then_releases_the_bundle() {
    let env = env().await;
    let c = &env.client;
    let ctl = start(c, args()).await;
    let agents = fake_agents(c, true);
    create(c, &cluster("a", &[("env", "prod")])).await;
    create(
        c,
        &bundle("app", "v1", vec![selector_target(&[("env", "prod")])]),
    )
    .await;
    let bds: Api<BundleDeployment> =
        Api::namespaced(c.clone(), &cluster_namespace(&ObjectKey::new(NS, "a")));
    eventually("agent finalizer on the deployment", || async {
        let bd = bds.get_opt("app").await.unwrap()?;
        bd.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&keys::BUNDLE_DEPLOYMENT_FINALIZER.to_string())
            .then_some(())
    })
    .await;

    // The agent is slow to prune: the deployment and the bundle wait.
    agents.release.store(false, Ordering::SeqCst);
    let bundles: Api<Bundle> = Api::namespaced(c.clone(), NS);
    bundles
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    eventually("deployment marked for deletion", || async {
        bds.get_opt("app")
            .await
            .unwrap()?
            .metadata
            .deletion_timestamp
            .map(|_| ())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        bds.get_opt("app").await.unwrap().is_some(),
        "held by the agent"
    );
    let b = bundles
        .get_opt("app")
        .await
        .unwrap()
        .expect("held by its finalizer");
    assert!(b.metadata.deletion_timestamp.is_some());
    assert_eq!(agents.released.load(Ordering::SeqCst), 0);

    // The agent has pruned and lets go: the deployment goes, then the
    // bundle, without any polling interval in between.
    agents.release.store(true, Ordering::SeqCst);
    eventually("bundle gone after its deployment", || async {
        (bds.get_opt("app").await.unwrap().is_none()
            && bundles.get_opt("app").await.unwrap().is_none())
        .then_some(())
    })
    .await;
    assert_eq!(agents.released.load(Ordering::SeqCst), 1);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_selector_deletes_nothing_and_says_why() {
    let env = env().await;
    let c = &env.client;
    let ctl = start(c, args()).await;
    create(c, &cluster("a", &[("env", "prod")])).await;
    create(
        c,
        &bundle("app", "v1", vec![selector_target(&[("env", "prod")])]),
    )
    .await;
    let before = wait_for_pairs(c, &pairs(&[("a", "app")])).await;
    merge_patch::<Bundle>(
        c,
        "app",
        json!({"spec": {"targets": [{"clusterSelector": {"matchExpressions": [{"key": "env", "operator": "Sideways"}]}}]}}),
    )
    .await;
    let bundles: Api<Bundle> = Api::namespaced(c.clone(), NS);
    let st = eventually("stalled condition", || async {
        let st = bundles.get("app").await.ok()?.status?;
        flotilla_api::condition::is_true(&st.conditions, "Stalled").then_some(st)
    })
    .await;
    let stalled = st.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.reason, "InvalidTargets");
    assert!(
        stalled.message.contains("targets[0].clusterSelector"),
        "{}",
        stalled.message
    );
    assert_eq!(deployments(c).await, before, "nothing deployed was lost");

    // Fixing the selector to exclude the cluster deletes then.
    merge_patch::<Bundle>(
        c,
        "app",
        json!({"spec": {"targets": [{"clusterName": "b"}]}}),
    )
    .await;
    wait_for_pairs(c, &pairs(&[])).await;
    // One Event for the burst, with the count, for `kubectl describe`.
    let note = wait_event(c, "app", "StaleDeploymentsDeleted").await;
    assert_eq!(
        note,
        format!(
            "deleted {} stale BundleDeployment(s) of clusters it no longer targets",
            before.len()
        )
    );
    assert_eq!(
        events_for(c, "app")
            .await
            .iter()
            .filter(|(r, _)| r == "StaleDeploymentsDeleted")
            .count(),
        1
    );
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_safety_sweep_runs_and_finds_nothing_stale() {
    let env = env().await;
    let c = &env.client;
    let mut a = args();
    a.gc_sweep_interval = std::time::Duration::from_millis(100);
    let ctl = start(c, a).await;
    fleet(c).await;
    merge_patch::<Cluster>(c, "a", json!({"metadata": {"labels": {"env": "dev"}}})).await;
    wait_for_pairs(
        c,
        &pairs(&[
            ("b", "web"),
            ("a", "mon"),
            ("c", "mon"),
            ("a", "all"),
            ("b", "all"),
            ("c", "all"),
        ]),
    )
    .await;
    eventually("several sweeps", || async {
        (ctl.metric("flotilla_gc_sweeps_total", None) >= 3.0).then_some(())
    })
    .await;
    assert_eq!(ctl.metric("flotilla_gc_sweep_stale_found_total", None), 0.0);
    ctl.stop().await;
}
