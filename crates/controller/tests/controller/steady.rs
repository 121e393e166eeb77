//! Quiet when nothing changes: after convergence, zero reconciles and zero
//! writes.

use crate::support::*;
use flotilla_api::Bundle;
use kube::api::{Api, ListParams};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_100_clusters_by_10_bundles_is_silent_for_30s() {
    let env = env().await;
    let c = &env.client;
    let ctl = start(c, args()).await;
    let _agents = fake_agents(c, true);
    for i in 0..100 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        create(
            c,
            &cluster(&format!("c{i:03}"), &[("env", "prod"), ("tier", tier)]),
        )
        .await;
    }
    for b in 0..10 {
        create(
            c,
            &bundle(
                &format!("b{b}"),
                &format!("{b}"),
                vec![selector_target(&[("env", "prod")])],
            ),
        )
        .await;
    }
    let bundles: Api<Bundle> = Api::namespaced(c.clone(), NS);
    // Convergence speed is the benchmarks' business; with the rest of the
    // suite sharing two cores, 1,000 fake-agent round trips may take longer
    // than the usual wait.
    flotilla_apiserver::testing::eventually_within(
        "1000 deployments ready",
        Duration::from_secs(90),
        || async {
            let list = bundles.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .all(|b| {
                    b.status
                        .as_ref()
                        .is_some_and(|s| s.display.ready_clusters == "100/100")
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(deployments(c).await.len(), 1000);

    // Converged: queues drained and nothing moving for a moment.
    let mut last = (ctl.reconciles(), ctl.writes());
    eventually("quiescence", || {
        let now = (ctl.reconciles(), ctl.writes());
        let idle = now == last
            && ctl.ctx.fanout.is_empty()
            && ctl.ctx.gc.is_empty()
            && ctl.ctx.status.is_empty();
        last = now;
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            idle.then_some(())
        }
    })
    .await;

    let (reconciles, writes) = (ctl.reconciles(), ctl.writes());
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        ctl.reconciles() - reconciles,
        0.0,
        "reconciles at steady state"
    );
    assert_eq!(ctl.writes() - writes, 0.0, "API writes at steady state");
    ctl.stop().await;
}
