//! A real kube-runtime Controller and Lease-based leader election against
//! the server, in process and over TCP.

use crate::support::*;
use flotilla_leader::{Config as LeaderConfig, Elector};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Ctx {
    api: Api<DynamicObject>,
    reconciles: AtomicUsize,
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    ctx.reconciles.fetch_add(1, Ordering::SeqCst);
    let generation = obj.metadata.generation.unwrap_or(0);
    if obj.data["status"]["observedGeneration"] != json!(generation) {
        let name = obj.metadata.name.clone().unwrap();
        let status = json!({"status": {"observedGeneration": generation, "doubled": obj.data["spec"]["size"].as_i64().unwrap_or(0) * 2}});
        ctx.api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
    }
    Ok(Action::await_change())
}

fn error_policy(_: Arc<DynamicObject>, _: &kube::Error, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test]
async fn a_controller_reconciles_and_then_rests() {
    let (_s, client) = setup().await;
    let api = widgets(&client).await;
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        reconciles: AtomicUsize::new(0),
    });
    let controller =
        Controller::new_with(api.clone(), watcher::Config::default(), widget_resource())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| async {});
    let task = tokio::spawn(controller);
    api.create(&PostParams::default(), &widget("w", 21))
        .await
        .unwrap();
    eventually("the controller to write status", || {
        let api = api.clone();
        async move {
            let w = api.get("w").await.ok()?;
            (w.data["status"]["doubled"] == 42).then_some(())
        }
    })
    .await;
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 5}})),
    )
    .await
    .unwrap();
    eventually("the controller to follow the spec", || {
        let api = api.clone();
        async move {
            let w = api.get("w").await.ok()?;
            (w.data["status"]["doubled"] == 10 && w.data["status"]["observedGeneration"] == 2)
                .then_some(())
        }
    })
    .await;
    // Steady state: no further reconciles once status is written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = ctx.reconciles.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        ctx.reconciles.load(Ordering::SeqCst),
        settled,
        "no reconcile storm"
    );
    task.abort();
}

fn leader_config(identity: &str) -> LeaderConfig {
    LeaderConfig {
        namespace: "kube-system".into(),
        name: "flotilla-test".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(100),
    }
}

#[tokio::test]
async fn lease_leader_election_fails_over() {
    let server = server_with_history(0);
    // Over TCP, as replicas would talk to a real server.
    let (addr, serving) = serve_tcp(&server).await;
    let client = tcp_client(addr);

    let a = Elector::new(client.clone(), leader_config("a")).unwrap();
    let b = Elector::new(client.clone(), leader_config("b")).unwrap();
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "the first candidate wins"
    );
    assert!(!b.try_acquire_or_renew().await.unwrap(), "the second waits");
    assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");
    assert!(!b.try_acquire_or_renew().await.unwrap());
    // a stops renewing (it died): b takes over after a lease duration.
    let started = tokio::time::Instant::now();
    eventually("b to take over", || {
        let b = &b;
        async move { b.try_acquire_or_renew().await.unwrap().then_some(()) }
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "not before the lease expired"
    );
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "a sees b's fresh lease"
    );

    // The run loop publishes leadership and releases the lease on stop.
    let (lead_tx, mut lead_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let c = Elector::new(client.clone(), leader_config("b")).unwrap();
    let run = tokio::spawn(c.run(lead_tx, stop_rx));
    tokio::time::timeout(Duration::from_secs(5), lead_rx.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    stop_tx.send(true).unwrap();
    run.await.unwrap();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-system");
    let lease = leases.get("flotilla-test").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "released on stop"
    );
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a released lease is free at once"
    );
    serving.abort();
}
