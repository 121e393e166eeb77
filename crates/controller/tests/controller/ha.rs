//! Leader election, failover, worker settings and the HTTP endpoints.

use crate::support::*;
use flotilla_api::Cluster;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ha_args(identity: &str) -> flotilla_controller::ControllerArgs {
    flotilla_controller::ControllerArgs {
        leader_elect: true,
        identity: Some(identity.into()),
        lease_duration: Duration::from_secs(3),
        lease_renew_deadline: Duration::from_secs(2),
        lease_retry_period: Duration::from_millis(500),
        ..args()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_takes_over_a_crashed_leader_and_converges_without_duplicates() {
    let env = env().await;
    let c = &env.client;
    let one = start(c, ha_args("one")).await;
    let two = start(c, ha_args("two")).await;
    let leader_is = |r: &Running| *r.ctx_leading().borrow();
    let one_leads = eventually("one leader", || async {
        match (leader_is(&one), leader_is(&two)) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    })
    .await;
    let (leader, follower) = if one_leads { (one, two) } else { (two, one) };
    let _agents = fake_agents(c, false);
    for i in 0..5 {
        create(
            c,
            &cluster(
                &format!("c{i}"),
                &[("env", if i < 3 { "prod" } else { "dev" })],
            ),
        )
        .await;
    }
    create(
        c,
        &bundle("web", "w", vec![selector_target(&[("env", "prod")])]),
    )
    .await;
    create(c, &bundle("all", "a", vec![selector_target(&[])])).await;
    let before = wait_for_pairs(
        c,
        &pairs(&[
            ("c0", "web"),
            ("c1", "web"),
            ("c2", "web"),
            ("c0", "all"),
            ("c1", "all"),
            ("c2", "all"),
            ("c3", "all"),
            ("c4", "all"),
        ]),
    )
    .await;
    assert_eq!(follower.writes(), 0.0, "the follower wrote nothing");
    // The follower watches too: its caches catch up without leading.
    eventually("the follower's caches are warm", || async {
        (follower.ctx.bds.len() >= 8).then_some(())
    })
    .await;

    // The leader dies without releasing the lease; targets change meanwhile.
    let crashed = Instant::now();
    leader.crash();
    merge_patch::<Cluster>(c, "c3", json!({"metadata": {"labels": {"env": "prod"}}})).await;
    merge_patch::<Cluster>(c, "c0", json!({"metadata": {"labels": {"env": "dev"}}})).await;
    let mut leading = follower.ctx_leading();
    tokio::time::timeout(Duration::from_secs(20), leading.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    let took = crashed.elapsed();
    assert!(
        took <= Duration::from_secs(3) + Duration::from_millis(2 * 500) + Duration::from_secs(1),
        "took over after {took:?}, beyond the lease duration"
    );
    let after = wait_for_pairs(
        c,
        &pairs(&[
            ("c1", "web"),
            ("c2", "web"),
            ("c3", "web"),
            ("c0", "all"),
            ("c1", "all"),
            ("c2", "all"),
            ("c3", "all"),
            ("c4", "all"),
        ]),
    )
    .await;
    for (pair, uid) in &after {
        if let Some(old) = before.get(pair) {
            assert_eq!(old, uid, "{pair:?} was recreated");
        }
    }
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_settings_reach_the_pools_and_endpoints_answer() {
    let env = env().await;
    let c = &env.client;
    let mut a = args();
    a.fanout_workers = 3;
    a.gc_workers = 5;
    a.status_workers = 2;
    let ctl = start(c, a).await;
    eventually("pools sized", || async {
        (ctl.metric("flotilla_workers", Some(r#"controller="fanout""#)) == 3.0
            && ctl.metric("flotilla_workers", Some(r#"controller="gc""#)) == 5.0
            && ctl.metric("flotilla_workers", Some(r#"controller="status""#)) == 2.0)
            .then_some(())
    })
    .await;
    // Under load, the fan-out pool never runs more reconciles at once than
    // its setting.
    for i in 0..30 {
        create(c, &cluster(&format!("c{i}"), &[("env", "prod")])).await;
    }
    for b in 0..20 {
        create(
            c,
            &bundle(
                &format!("b{b}"),
                "x",
                vec![selector_target(&[("env", "prod")])],
            ),
        )
        .await;
    }
    eventually("600 deployments", || async {
        (deployments(c).await.len() == 600).then_some(())
    })
    .await;
    assert!(
        ctl.ctx.fanout.max_busy() <= 3,
        "{}",
        ctl.ctx.fanout.max_busy()
    );
    assert!(ctl.ctx.fanout.max_busy() >= 2, "the pool ran in parallel");

    let addr = *ctl.ctx.http_addr.get().expect("bound");
    let metrics = http_get(addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("flotilla_reconciles_total{controller=\"fanout\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("flotilla_api_writes_total{kind=\"BundleDeployment\",verb=\"apply\"}")
    );
    assert!(http_get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(http_get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    ctl.stop().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
