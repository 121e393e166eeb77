//! The agent between two embedded API servers: management (with the
//! BundleDeployments and Contents) and downstream (where it applies).
//! One binary, to keep link time down.

mod fleet;
mod hooks;
mod support;

use flotilla_api::{BundleDeploymentOptions, CorrectDrift, keys};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;
use support::*;

fn opts() -> BundleDeploymentOptions {
    BundleDeploymentOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_a_bundle_with_its_namespace_inventory_and_finalizer() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;

    let content = files(&[
        ("cm.yaml", configmap("settings", "shop", "1")),
        ("deploy.yaml", deployment("web", "shop")),
        (
            "default-ns.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nameless\ndata: {}\n".into(),
        ),
    ]);
    let id = deploy(&mgmt, "shop", &content, opts()).await;

    // Applied but the Deployment has not rolled out: NotReady, saying why.
    let bd = wait_state(&mgmt, "shop", &id, "NotReady").await;
    let status = bd.status.unwrap();
    assert!(!status.ready);
    assert_eq!(status.non_ready_status.len(), 1);
    assert_eq!(status.non_ready_status[0].kind, "Deployment");
    assert!(
        bd.metadata
            .finalizers
            .unwrap()
            .contains(&keys::BUNDLE_DEPLOYMENT_FINALIZER.to_string())
    );
    let deployed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Deployed")
        .unwrap();
    assert_eq!(deployed.status, "True");

    // The namespace was created; objects carry the inventory labels and
    // the agent's field manager; an object naming no namespace went to
    // `default`.
    assert!(get(&down, "v1", "Namespace", None, "shop").await.is_some());
    let cm = get(&down, "v1", "ConfigMap", Some("shop"), "settings")
        .await
        .unwrap();
    let labels = &cm["metadata"]["labels"];
    assert_eq!(labels[keys::BUNDLE_DEPLOYMENT], "shop");
    let applyset = labels[keys::PART_OF].as_str().unwrap().to_owned();
    assert!(applyset.starts_with("applyset-"));
    assert!(
        cm["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["manager"] == keys::AGENT_FIELD_MANAGER)
    );
    assert!(
        get(&down, "v1", "ConfigMap", Some("default"), "nameless")
            .await
            .is_some()
    );

    // The parent records every member and carries the ApplySet id.
    let parent = get(
        &down,
        "v1",
        "ConfigMap",
        Some(INVENTORY_NS),
        "flotilla-shop",
    )
    .await
    .unwrap();
    assert_eq!(
        parent["metadata"]["labels"]["applyset.kubernetes.io/id"],
        applyset.as_str()
    );
    assert_eq!(
        parent["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"],
        "ConfigMap,Deployment.apps"
    );
    let members: Vec<serde_json::Value> =
        serde_json::from_str(parent["data"]["members"].as_str().unwrap()).unwrap();
    assert_eq!(members.len(), 3);

    // The rollout completes: Ready.
    roll_out(&down, "shop", "web").await;
    let bd = wait_state(&mgmt, "shop", &id, "Ready").await;
    assert!(bd.status.unwrap().non_ready_status.is_empty());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_changes_only_what_changed_and_prunes_what_left() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;

    let v1 = files(&[
        ("same.yaml", configmap("same", "app", "1")),
        ("changed.yaml", configmap("changed", "app", "1")),
        ("removed.yaml", configmap("removed", "app", "1")),
    ]);
    let id1 = deploy(&mgmt, "app", &v1, opts()).await;
    wait_state(&mgmt, "app", &id1, "Ready").await;
    let same_rv = rv(&get(&down, "v1", "ConfigMap", Some("app"), "same")
        .await
        .unwrap());
    let writes_before = agent.writes();

    let v2 = files(&[
        ("same.yaml", configmap("same", "app", "1")),
        ("changed.yaml", configmap("changed", "app", "2")),
        ("added.yaml", configmap("added", "app", "1")),
    ]);
    let id2 = deploy(&mgmt, "app", &v2, opts()).await;
    wait_state(&mgmt, "app", &id2, "Ready").await;
    assert_eq!(
        cm_value(&down, "app", "changed").await.as_deref(),
        Some("2")
    );
    assert_eq!(cm_value(&down, "app", "added").await.as_deref(), Some("1"));
    eventually("removed is pruned", || async {
        cm_value(&down, "app", "removed")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let same = get(&down, "v1", "ConfigMap", Some("app"), "same")
        .await
        .unwrap();
    assert_eq!(rv(&same), same_rv, "an unchanged object is not written");
    // Two applies, one prune, the inventory twice (during and after) and
    // the status: nothing for the unchanged object.
    let text = agent.metrics.encode();
    assert_eq!(agent.writes() - writes_before, 6.0, "{text}");

    // keepResources: an object that leaves the bundle stays.
    let keep = BundleDeploymentOptions {
        keep_resources: true,
        ..opts()
    };
    let v3 = files(&[("same.yaml", configmap("same", "app", "1"))]);
    let id3 = deploy(&mgmt, "app", &v3, keep).await;
    wait_state(&mgmt, "app", &id3, "Ready").await;
    assert_eq!(cm_value(&down, "app", "added").await.as_deref(), Some("1"));
    assert_eq!(
        cm_value(&down, "app", "changed").await.as_deref(),
        Some("2")
    );
    agent.stop().await;
}

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_and_namespaces_go_first_then_their_objects() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;

    // File names sort the custom resource before its CRD and the
    // namespaced object before its Namespace: the agent reorders.
    let content = files(&[
        ("a-widget.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: tools\nspec:\n  size: 3\n".into()),
        ("b-cm.yaml", configmap("c", "tools", "1")),
        ("y-ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tools\n".into()),
        ("z-crd.yaml", CRD.into()),
    ]);
    let id = deploy(&mgmt, "widgets", &content, opts()).await;
    wait_state(&mgmt, "widgets", &id, "Ready").await;
    let w = get(&down, "example.com/v1", "Widget", Some("tools"), "w1")
        .await
        .unwrap();
    assert_eq!(w["spec"]["size"], 3);
    assert!(get(&down, "v1", "Namespace", None, "tools").await.is_some());

    // Deleting the BundleDeployment prunes custom resources and namespace
    // but keeps the CRD (as Fleet, unless deleteCRDResources), then
    // releases the finalizer.
    let bds = kube::Api::<flotilla_api::BundleDeployment>::namespaced(mgmt.clone(), CLUSTER_NS);
    let crd = || {
        get(
            &down,
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            "widgets.example.com",
        )
    };
    bds.delete("widgets", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the BundleDeployment is gone", || async {
        bd(&mgmt, "widgets").await.is_none().then_some(())
    })
    .await;
    assert!(crd().await.is_some(), "the CRD stays");
    assert!(
        get(&down, "example.com/v1", "Widget", Some("tools"), "w1")
            .await
            .is_none()
    );
    // With deleteCRDResources, it goes too.
    let id = deploy(
        &mgmt,
        "widgets",
        &content,
        BundleDeploymentOptions {
            delete_crd_resources: true,
            ..opts()
        },
    )
    .await;
    wait_state(&mgmt, "widgets", &id, "Ready").await;
    bds.delete("widgets", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the BundleDeployment is gone again", || async {
        bd(&mgmt, "widgets").await.is_none().then_some(())
    })
    .await;
    assert!(crd().await.is_none(), "deleteCRDResources deletes it");
    assert!(
        get(
            &down,
            "v1",
            "ConfigMap",
            Some(INVENTORY_NS),
            "flotilla-widgets"
        )
        .await
        .is_none()
    );
    eventually("the namespace is pruned", || async {
        let ns = get(&down, "v1", "Namespace", None, "tools").await;
        (ns.is_none() || ns.unwrap()["metadata"]["deletionTimestamp"].is_string()).then_some(())
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_and_corrected_when_asked() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;

    let content = files(&[
        ("a.yaml", configmap("a", "d", "1")),
        ("b.yaml", configmap("b", "d", "1")),
    ]);
    let id = deploy(&mgmt, "drift", &content, opts()).await;
    wait_state(&mgmt, "drift", &id, "Ready").await;

    // Someone edits an object: Modified, saying what differs; nothing is
    // re-applied without correctDrift.
    let cms = api(&down, "v1", "ConfigMap", Some("d"));
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"value": "edited"}})),
    )
    .await
    .unwrap();
    let drifted = wait_state(&mgmt, "drift", &id, "Modified").await;
    let modified = &drifted.status.unwrap().modified_status;
    assert_eq!(modified.len(), 1);
    assert_eq!(modified[0].name, "a");
    assert_eq!(
        modified[0].patch,
        r#"data.value: applied "1", found "edited""#
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cm_value(&down, "d", "a").await.as_deref(), Some("edited"));

    // Deleted objects are drift too.
    cms.delete("b", &DeleteParams::default()).await.unwrap();
    eventually("b reported missing", || async {
        let st = bd(&mgmt, "drift").await?.status?;
        st.modified_status
            .iter()
            .any(|m| m.name == "b" && m.missing)
            .then_some(())
    })
    .await;

    // correctDrift re-applies both, and the state returns to Ready.
    let correct = BundleDeploymentOptions {
        correct_drift: Some(CorrectDrift {
            enabled: true,
            ..Default::default()
        }),
        ..opts()
    };
    let id2 = deploy(&mgmt, "drift", &content, correct).await;
    wait_state(&mgmt, "drift", &id2, "Ready").await;
    assert_eq!(cm_value(&down, "d", "a").await.as_deref(), Some("1"));
    assert_eq!(cm_value(&down, "d", "b").await.as_deref(), Some("1"));
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"value": "again"}})),
    )
    .await
    .unwrap();
    eventually("drift corrected", || async {
        (cm_value(&down, "d", "a").await.as_deref() == Some("1")).then_some(())
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depends_on_waits_for_the_named_bundle_to_be_ready() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;

    let app = files(&[("app.yaml", configmap("app", "apps", "1"))]);
    let app_id = deploy_with(&mgmt, "app", &app, opts(), depends_on(&["db"])).await;
    eventually("app waits for db", || async {
        let st = bd(&mgmt, "app").await?.status?;
        (st.display.message == "waiting for bundles to be Ready here: db (not deployed)")
            .then_some(())
    })
    .await;
    assert!(cm_value(&down, "apps", "app").await.is_none());

    let db = files(&[("db.yaml", deployment("db", "data"))]);
    let db_id = deploy(&mgmt, "db", &db, opts()).await;
    wait_state(&mgmt, "db", &db_id, "NotReady").await;
    eventually("app waits for db to be ready", || async {
        let st = bd(&mgmt, "app").await?.status?;
        st.display.message.contains("db (NotReady)").then_some(())
    })
    .await;
    assert!(cm_value(&down, "apps", "app").await.is_none());

    roll_out(&down, "data", "db").await;
    wait_state(&mgmt, "db", &db_id, "Ready").await;
    wait_state(&mgmt, "app", &app_id, "Ready").await;
    assert_eq!(cm_value(&down, "apps", "app").await.as_deref(), Some("1"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_resource_is_errapplied_and_the_rest_still_lands() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;

    let v1 = files(&[("keep.yaml", configmap("keep", "r", "1"))]);
    let id1 = deploy(&mgmt, "rej", &v1, opts()).await;
    wait_state(&mgmt, "rej", &id1, "Ready").await;

    // v2 drops `keep`, adds `fresh`, and holds an object the cluster
    // rejects (a kind it does not serve).
    let v2 = files(&[
        ("fresh.yaml", configmap("fresh", "r", "1")),
        (
            "gizmo.yaml",
            "apiVersion: example.com/v1\nkind: Gizmo\nmetadata:\n  name: g\n  namespace: r\n"
                .into(),
        ),
    ]);
    let id2 = deploy(&mgmt, "rej", &v2, opts()).await;
    let failed = eventually("ErrApplied", || async {
        let b = bd(&mgmt, "rej").await?;
        (b.status.as_ref()?.display.state == "ErrApplied").then_some(b)
    })
    .await;
    let status = failed.status.unwrap();
    assert_eq!(
        status.applied_deployment_id, id1,
        "the failed deployment is not marked applied"
    );
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Deployed")
        .unwrap();
    assert_eq!(cond.status, "False");
    assert!(
        cond.message.contains("Gizmo.example.com r/g"),
        "{}",
        cond.message
    );
    assert!(
        cond.message.contains("does not serve Gizmo"),
        "{}",
        cond.message
    );
    // The rest was applied; nothing previously deployed was pruned.
    assert_eq!(cm_value(&down, "r", "fresh").await.as_deref(), Some("1"));
    assert_eq!(cm_value(&down, "r", "keep").await.as_deref(), Some("1"));
    assert_ne!(status.applied_deployment_id, id2);

    // Broken YAML: a clear condition, and still nothing deployed is lost.
    let broken = files(&[(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n".into(),
    )]);
    deploy(&mgmt, "rej", &broken, opts()).await;
    let failed = eventually("RenderFailed", || async {
        let b = bd(&mgmt, "rej").await?;
        let st = b.status?;
        st.conditions
            .iter()
            .find(|c| c.type_ == "Deployed" && c.reason == "RenderFailed")
            .cloned()
    })
    .await;
    assert!(failed.message.contains("bad.yaml"), "{}", failed.message);
    assert_eq!(cm_value(&down, "r", "keep").await.as_deref(), Some("1"));
    assert_eq!(cm_value(&down, "r", "fresh").await.as_deref(), Some("1"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resumes_with_zero_writes() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;
    let content = files(&[
        ("a.yaml", configmap("a", "z", "1")),
        ("web.yaml", deployment("web", "z")),
    ]);
    let id = deploy(&mgmt, "z", &content, opts()).await;
    wait_state(&mgmt, "z", &id, "NotReady").await;
    roll_out(&down, "z", "web").await;
    let before = wait_state(&mgmt, "z", &id, "Ready").await;

    // Idle: no reconciles, no writes (once the rollout's own events have
    // been handled: under load one may still be in flight when the status
    // says Ready).
    let mut prev = (agent.reconciles(), agent.writes());
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = (agent.reconciles(), agent.writes());
        if now == prev {
            break;
        }
        prev = now;
    }
    let (r0, w0) = (agent.reconciles(), agent.writes());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((agent.reconciles(), agent.writes()), (r0, w0), "idle agent");
    agent.stop().await;

    let again = start(&mgmt, &down, config()).await;
    eventually("the restarted agent has looked", || async {
        (again.reconciles() >= 1.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(again.writes(), 0.0, "a no-op resync writes nothing");
    let after = bd(&mgmt, "z").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_survives_a_downstream_api_server_restart() {
    let (_m, mgmt) = management().await;
    let mut down_server = Restartable::start().await;
    let down = down_server.client();
    let mut cfg = config();
    cfg.contact_interval = Duration::from_secs(1);
    let agent = start(&mgmt, &down, cfg).await;
    let correct = BundleDeploymentOptions {
        correct_drift: Some(CorrectDrift {
            enabled: true,
            ..Default::default()
        }),
        ..opts()
    };
    let content = files(&[("a.yaml", configmap("a", "s", "1"))]);
    let id = deploy(&mgmt, "s", &content, correct.clone()).await;
    wait_state(&mgmt, "s", &id, "Ready").await;

    down_server.restart(Duration::from_secs(1)).await;
    // After the restart, an edit made behind the agent's back is seen
    // through the re-established watch and corrected.
    let fresh = down_server.client();
    api(&fresh, "v1", "ConfigMap", Some("s"))
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"value": "x"}})),
        )
        .await
        .unwrap();
    eventually("drift corrected after the restart", || async {
        (cm_value(&fresh, "s", "a").await.as_deref() == Some("1")).then_some(())
    })
    .await;
    // And a new deployment still lands.
    let v2 = files(&[("a.yaml", configmap("a", "s", "2"))]);
    let id2 = deploy(&mgmt, "s", &v2, correct).await;
    wait_state(&mgmt, "s", &id2, "Ready").await;
    assert_eq!(cm_value(&fresh, "s", "a").await.as_deref(), Some("2"));

    // Contact is recorded on the Cluster, at the interval.
    let clusters = kube::Api::<flotilla_api::Cluster>::namespaced(mgmt.clone(), WORKSPACE);
    let c = clusters.get("c1").await.unwrap();
    assert!(c.status.unwrap().agent.last_seen.is_some());
    eventually("a second contact", || async {
        (agent.contacts() >= 2.0).then_some(())
    })
    .await;
    agent.stop().await;
}

/// What the agent is handed is checked again when it renders, after the
/// customizations were merged: an option that would reach `helm` as a
/// flag, a kustomization that leaves the bundle, and an inventory too
/// large for its ConfigMap are each a RenderFailed condition naming the
/// reason, and nothing is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_options_and_oversized_bundles_are_refused_when_rendered() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;
    let refused = |name: &'static str| {
        let mgmt = mgmt.clone();
        async move {
            eventually(&format!("{name} RenderFailed"), || async {
                let b = bd(&mgmt, name).await?;
                b.status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Deployed" && c.reason == "RenderFailed")
            })
            .await
            .message
        }
    };

    let chart = files(&[(
        "Chart.yaml",
        "apiVersion: v2\nname: c\nversion: 1.0.0\n".into(),
    )]);
    let injected = BundleDeploymentOptions {
        helm: Some(flotilla_api::HelmOptions {
            release_name: Some("--post-renderer=/bin/sh".into()),
            ..Default::default()
        }),
        ..opts()
    };
    deploy(&mgmt, "injected", &chart, injected).await;
    let m = refused("injected").await;
    assert!(m.contains("helm.releaseName"), "{m}");

    let escaping = files(&[(
        "kustomization.yaml",
        "resources: [../../../../etc/kubernetes]\n".into(),
    )]);
    deploy(&mgmt, "escaping", &escaping, opts()).await;
    let m = refused("escaping").await;
    assert!(m.contains("escapes the bundle"), "{m}");

    let many: Vec<(String, String)> = (0..5)
        .map(|f| {
            let docs: String = (0..1000)
                .map(|i| configmap(&format!("{}-{f}-{i}", "x".repeat(200)), "big", "1") + "---\n")
                .collect();
            (format!("many-{f}.yaml"), docs)
        })
        .collect();
    let many: Vec<(&str, String)> = many.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    deploy(&mgmt, "huge", &files(&many), opts()).await;
    let m = refused("huge").await;
    assert!(m.contains("the inventory of 5000 objects"), "{m}");

    let cms: kube::Api<flotilla_api::k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(down.clone(), "big");
    assert!(
        cms.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    agent.stop().await;
}

/// A downstream server that stores quantities canonically (as a real one
/// does) is not drift: with correctDrift on, a Deployment asking for
/// `cpu: 0.5` and `memory: 1024Mi` (stored as `500m` and `1Gi`) stays
/// Ready and unmodified, and the agent writes nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalized_quantities_are_not_drift_and_correct_drift_stays_quiet() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;
    let manifest = deployment("web", "shop").replace(
        "        image: nginx:1.27\n",
        "        image: nginx:1.27\n        resources:\n          requests: {cpu: 0.5, memory: 1024Mi}\n          limits: {cpu: \"1.5\", memory: 0.5Gi}\n",
    );
    let correct = BundleDeploymentOptions {
        correct_drift: Some(CorrectDrift {
            enabled: true,
            ..Default::default()
        }),
        ..opts()
    };
    let id = deploy(&mgmt, "q", &files(&[("d.yaml", manifest)]), correct).await;
    wait_state(&mgmt, "q", &id, "NotReady").await;
    roll_out(&down, "shop", "web").await;
    let ready = wait_state(&mgmt, "q", &id, "Ready").await;
    assert!(ready.status.unwrap().non_modified);
    let live = get(&down, "apps/v1", "Deployment", Some("shop"), "web")
        .await
        .unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["resources"],
        json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1500m", "memory": "512Mi"}})
    );
    let writes = agent.writes();
    let version = rv(&live);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(agent.writes(), writes, "no re-apply, no status write");
    let live = get(&down, "apps/v1", "Deployment", Some("shop"), "web")
        .await
        .unwrap();
    assert_eq!(rv(&live), version);
    let after = bd(&mgmt, "q").await.unwrap();
    assert!(after.status.unwrap().modified_status.is_empty());
    agent.stop().await;
}
