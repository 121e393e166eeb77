//! Agent benchmarks, between two embedded API servers:
//! - `agent_apply_200_objects_p50/_max`: from a new BundleDeployment of
//!   200 objects to its status reporting them applied and Ready;
//! - `agent_update_1_of_200_writes`: writes made when one object of 200
//!   changes (one apply and one status write are expected);
//! - `agent_noop_resync_writes`: writes made by a restarted agent that
//!   finds everything as it left it (target 0).
//!
//! `cargo bench -p flotilla-agent --bench agent [-- --runs N --objects N]`

#[path = "../../controller/benches/common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../tests/agent/support.rs"]
mod support;

use common::{bench, flags, percentile};
use std::time::Instant;
use support::*;

fn bundle(objects: usize, ns: &str, version: &str) -> flotilla_bundle::BundleContent {
    let list: Vec<(String, String)> = (0..objects)
        .map(|i| {
            let value = if i == 0 { version } else { "1" };
            (
                format!("cm-{i:03}.yaml"),
                configmap(&format!("cm-{i:03}"), ns, value),
            )
        })
        .collect();
    let refs: Vec<(&str, String)> = list.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
    files(&refs)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut runs = 5usize;
    let mut objects = 200usize;
    for (k, v) in flags() {
        match k.as_str() {
            "--runs" => runs = v.parse().expect("--runs N"),
            "--objects" => objects = v.parse().expect("--objects N"),
            _ => {}
        }
    }
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;

    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let name = format!("bench-{run}");
        let content = bundle(objects, &name, "1");
        let started = Instant::now();
        let id = deploy(&mgmt, &name, &content, Default::default()).await;
        wait_state(&mgmt, &name, &id, "Ready").await;
        samples.push(started.elapsed().as_secs_f64());
    }
    let max = samples.iter().cloned().fold(0.0, f64::max);
    bench(
        &format!("agent_apply_{objects}_objects_p50"),
        percentile(&mut samples, 0.5),
        "s",
    );
    bench(&format!("agent_apply_{objects}_objects_max"), max, "s");

    let before = agent.writes();
    let content = bundle(objects, "bench-0", "2");
    let id = deploy(&mgmt, "bench-0", &content, Default::default()).await;
    wait_state(&mgmt, "bench-0", &id, "Ready").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    bench(
        &format!("agent_update_1_of_{objects}_writes"),
        agent.writes() - before,
        "writes",
    );
    agent.stop().await;

    let again = start(&mgmt, &down, config()).await;
    eventually("every deployment looked at", || async {
        (again.reconciles() >= runs as f64).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    bench("agent_noop_resync_writes", again.writes(), "writes");
    bench(
        "agent_noop_resync_reconciles",
        again.reconciles(),
        "reconciles",
    );
    again.stop().await;
}
