//! Controller benchmark. Prints `BENCH <name> <value> <unit>` lines.
//!
//! ```text
//! cargo bench -p flotilla-controller --bench controller -- [--kubeconfig FILE]
//!     [--clusters 1000] [--bundles 10] [--samples 20] [--idle-seconds 30]
//!     [--rss-clusters 10000]
//! ```
//!
//! - GC latency: from an edit until a watcher has seen every stale
//!   BundleDeployment deleted, p50 and p99, for: a Bundle's targets
//!   (untargeting 10% of the clusters); a Cluster relabel (untargeting all
//!   its bundles); and a GitRepo's targets (10% of the clusters), which
//!   adds the GitRepo controller's hop (GitRepo -> Bundle, no fetch).
//! - Fan-out: from 50 new bundles until all 2,500 BundleDeployments exist,
//!   and until simulated agents report them all Ready.
//! - Idle: reconciles and writes per minute once converged.
//! - Controller RSS at `--rss-clusters` x `--bundles`, with the API server
//!   in a child process so that only the controller is measured.
//!
//! Without `--kubeconfig` everything runs on the embedded API server (in
//! process, except for the RSS run). With it, the same steps run against a
//! real cluster, in throwaway namespaces `bench-*` that the run deletes.

mod common;
#[path = "common/kubeconfig.rs"]
mod kubeconfig;

const GC_NS: &str = "bench-gc";
use common::{bench, percentile};
use flotilla_api::k8s_openapi::api::core::v1::Namespace;
use flotilla_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement,
};
use flotilla_api::{
    Bundle, BundleDeployment, BundleSpec, BundleTarget, Cluster, ClusterSpec, GitRepo,
    TargetCriteria,
};
use flotilla_controller::{Controller, ControllerArgs, metrics::sum_samples};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

struct Opts {
    kubeconfig: Option<String>,
    clusters: usize,
    bundles: usize,
    samples: usize,
    idle_seconds: u64,
    rss_clusters: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        kubeconfig: None,
        clusters: 1000,
        bundles: 10,
        samples: 20,
        idle_seconds: 30,
        rss_clusters: 10_000,
    };
    for (flag, value) in common::flags() {
        let num = || value.parse::<usize>().expect("a number");
        match flag.as_str() {
            "--kubeconfig" => o.kubeconfig = Some(value.clone()),
            "--clusters" => o.clusters = num(),
            "--bundles" => o.bundles = num(),
            "--samples" => o.samples = num().max(1),
            "--idle-seconds" => o.idle_seconds = num() as u64,
            "--rss-clusters" => o.rss_clusters = num(),
            _ => {}
        }
    }
    o
}

fn main() {
    // The RSS run re-executes this binary as the API server.
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--serve-apiserver") {
        let addr = args[pos + 1].clone();
        return tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(serve_child(addr));
    }
    if let Ok(filter) = std::env::var("FLOTILLA_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let o = opts();
    if args.iter().any(|a| a == "--rss-run") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        return rt.block_on(rss(&o));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&o));
}

async fn serve_child(addr: String) {
    let server = flotilla_apiserver::Server::new(flotilla_apiserver::Config {
        http: Default::default(),
        history: 0,
    });
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    axum::serve(listener, server.router()).await.unwrap();
}

/// Keeps the embedded server (if any) alive with its client.
struct Cluster0 {
    client: kube::Client,
    _server: Option<flotilla_apiserver::Server>,
}

async fn connect(o: &Opts) -> Cluster0 {
    match &o.kubeconfig {
        Some(path) => {
            let client = match kubeconfig::client(std::path::Path::new(path)).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
            };
            Cluster0 {
                client,
                _server: None,
            }
        }
        None => {
            // A watch history that covers a whole fan-out of this size:
            // with the default 10,000 events a lagging watcher relists, and
            // the embedded server can then lose objects (see the README).
            let server = flotilla_apiserver::Server::new(flotilla_apiserver::Config {
                http: Default::default(),
                history: 200_000,
            });
            Cluster0 {
                client: kube::Client::new(server.router(), "default"),
                _server: Some(server),
            }
        }
    }
}

async fn install(client: &kube::Client, namespaces: &[&str]) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in flotilla_api::crds::all() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("flotilla-bench").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        let obj = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let _ = api.create(&PostParams::default(), &obj).await;
    }
}

fn args() -> ControllerArgs {
    ControllerArgs {
        leader_elect: false,
        http_addr: "127.0.0.1:0".parse().unwrap(),
        ..ControllerArgs::default()
    }
}

async fn start(client: &kube::Client) -> (Arc<flotilla_controller::Metrics>, watch::Sender<bool>) {
    let controller = Controller::new(client.clone(), args()).unwrap();
    let metrics = controller.metrics();
    let mut synced = controller.synced();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(controller.run(stopped));
    synced.wait_for(|s| *s).await.unwrap();
    (metrics, stop)
}

fn cluster(ns: &str, name: &str, labels: &[(&str, String)]) -> Cluster {
    let mut c = Cluster::new(name, ClusterSpec::default());
    c.metadata.namespace = Some(ns.into());
    c.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    );
    c
}

fn prod_target(exclude_shard: Option<&str>) -> BundleTarget {
    BundleTarget {
        criteria: TargetCriteria {
            cluster_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("env".into(), "prod".into())])),
                match_expressions: exclude_shard.map(|s| {
                    vec![LabelSelectorRequirement {
                        key: "shard".into(),
                        operator: "NotIn".into(),
                        values: Some(vec![s.into()]),
                    }]
                }),
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn bundle(ns: &str, name: &str, targets: Vec<BundleTarget>) -> Bundle {
    let mut b = Bundle::new(
        name,
        BundleSpec {
            content_id: format!("s-{name}"),
            targets,
            rollout_strategy: Some(flotilla_api::RolloutStrategy {
                max_new: Some(100_000),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    b.metadata.namespace = Some(ns.into());
    b
}

/// Creates objects 32 at a time.
async fn create_all<K>(client: &kube::Client, ns: &str, objs: Vec<K>)
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(objs)
        .map(|o| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &o).await.map(|_| ()) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
}

/// Watches BundleDeployments: live set, deletions and readiness, with a
/// notification on every change.
#[derive(Default)]
struct Observed {
    live: HashSet<(String, String)>,
    ready: HashSet<(String, String)>,
    deleted_at: BTreeMap<(String, String), Instant>,
}

fn observe(client: &kube::Client) -> (Arc<Mutex<Observed>>, Arc<Notify>) {
    let seen = Arc::new(Mutex::new(Observed::default()));
    let notify = Arc::new(Notify::new());
    let (s, n) = (Arc::clone(&seen), Arc::clone(&notify));
    let api: Api<BundleDeployment> = Api::all(client.clone());
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(Ok(ev)) = events.next().await {
            let now = Instant::now();
            let mut o = s.lock().unwrap();
            let key = |bd: &BundleDeployment| {
                (
                    bd.metadata.namespace.clone().unwrap_or_default(),
                    bd.metadata.name.clone().unwrap_or_default(),
                )
            };
            let mut upsert = |bd: BundleDeployment| {
                let k = key(&bd);
                let ready = bd.status.as_ref().is_some_and(|st| {
                    st.ready
                        && st.applied_deployment_id == bd.spec.deployment_id
                        && !bd.spec.deployment_id.is_empty()
                });
                if ready {
                    o.ready.insert(k.clone());
                } else {
                    o.ready.remove(&k);
                }
                o.deleted_at.remove(&k);
                o.live.insert(k);
            };
            match ev {
                watcher::Event::Apply(bd) | watcher::Event::InitApply(bd) => upsert(bd),
                watcher::Event::Delete(bd) => {
                    let k = key(&bd);
                    o.live.remove(&k);
                    o.ready.remove(&k);
                    o.deleted_at.insert(k, now);
                }
                _ => {}
            }
            drop(o);
            n.notify_waiters();
        }
    });
    (seen, notify)
}

async fn wait_until(
    seen: &Arc<Mutex<Observed>>,
    notify: &Notify,
    timeout: Duration,
    mut done: impl FnMut(&Observed) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done(&seen.lock().unwrap()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
    }
}

async fn merge<K>(api: &Api<K>, name: &str, patch: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// One GC latency sample: applies `edit`, waits until the watcher saw every
/// `stale` deployment deleted, then `revert`s and waits for them to be
/// back. Returns seconds from the edit to the last deletion.
async fn gc_sample<E, R, EF, RF>(
    seen: &Arc<Mutex<Observed>>,
    notify: &Notify,
    stale: &[(String, String)],
    edit: E,
    revert: R,
) -> f64
where
    E: FnOnce() -> EF,
    R: FnOnce() -> RF,
    EF: std::future::Future<Output = ()>,
    RF: std::future::Future<Output = ()>,
{
    let t0 = Instant::now();
    edit().await;
    let gone = wait_until(seen, notify, Duration::from_secs(60), |o| {
        stale.iter().all(|k| o.deleted_at.contains_key(k))
    })
    .await;
    assert!(gone, "stale deployments were not deleted");
    let last = {
        let o = seen.lock().unwrap();
        stale.iter().map(|k| o.deleted_at[k]).max().unwrap()
    };
    revert().await;
    let back = wait_until(seen, notify, Duration::from_secs(60), |o| {
        stale.iter().all(|k| o.live.contains(k))
    })
    .await;
    assert!(back, "deployments did not come back");
    (last - t0).as_secs_f64()
}

/// GC latency samples of targets edits that exclude one shard (10% of the
/// clusters) at a time: sample `s` edits the object `pick(s).0` (a Bundle
/// or a GitRepo, whose `spec.targets` has the same shape), whose bundle
/// `pick(s).1` then leaves that shard, and reverts it.
async fn shard_edit_samples<K>(
    o: &Opts,
    seen: &Arc<Mutex<Observed>>,
    notify: &Notify,
    api: &Api<K>,
    pick: impl Fn(usize) -> (String, String),
) -> Vec<f64>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let shards = 10;
    let mut samples = Vec::new();
    for s in 0..o.samples {
        let (object, bundle) = pick(s);
        let shard = format!("s{}", s % shards);
        let stale: Vec<(String, String)> = (0..o.clusters)
            .filter(|i| i % shards == s % shards)
            .map(|i| {
                let ns = flotilla_controller::cluster_namespace(
                    &flotilla_controller::ObjectKey::new(GC_NS, &format!("c{i:05}")),
                );
                (ns, bundle.clone())
            })
            .collect();
        let targets = |t| json!({"spec": {"targets": [t]}});
        samples.push(
            gc_sample(
                seen,
                notify,
                &stale,
                || merge(api, &object, targets(prod_target(Some(&shard)))),
                || merge(api, &object, targets(prod_target(None))),
            )
            .await,
        );
    }
    samples
}

/// Simulated agents: mark every BundleDeployment applied and ready.
fn simulated_agents(client: &kube::Client) {
    let api: Api<BundleDeployment> = Api::all(client.clone());
    let client = client.clone();
    tokio::spawn(async move {
        watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .filter_map(|r| async move { r.ok() })
            .filter(|bd| {
                let id = bd.spec.deployment_id.clone();
                let done = bd
                    .status
                    .as_ref()
                    .is_some_and(|s| s.ready && s.applied_deployment_id == id);
                async move { !id.is_empty() && !done }
            })
            .for_each_concurrent(16, |bd| {
                let client = client.clone();
                async move {
                    let api: Api<BundleDeployment> = Api::namespaced(
                        client,
                        bd.metadata.namespace.as_deref().unwrap_or_default(),
                    );
                    let _ = api
                        .patch_status(
                            bd.metadata.name.as_deref().unwrap_or_default(),
                            &PatchParams::default(),
                            &Patch::Merge(&json!({"status": {
                                "appliedDeploymentID": bd.spec.deployment_id,
                                "ready": true, "nonModified": true}})),
                        )
                        .await;
                }
            })
            .await;
    });
}

async fn run(o: &Opts) {
    let env = connect(o).await;
    let c = &env.client;
    const FAN_NS: &str = "bench-fanout";
    install(c, &[GC_NS, FAN_NS]).await;
    let (seen, notify) = observe(c);
    simulated_agents(c);
    let (metrics, stop) = start(c).await;
    let shards = 10;

    // ---- GC latency at clusters x bundles ---------------------------------
    let started = Instant::now();
    let clusters: Vec<Cluster> = (0..o.clusters)
        .map(|i| {
            cluster(
                GC_NS,
                &format!("c{i:05}"),
                &[
                    ("env", "prod".into()),
                    ("shard", format!("s{}", i % shards)),
                ],
            )
        })
        .collect();
    create_all(c, GC_NS, clusters).await;
    let bundles: Vec<Bundle> = (0..o.bundles)
        .map(|b| bundle(GC_NS, &format!("b{b}"), vec![prod_target(None)]))
        .collect();
    create_all(c, GC_NS, bundles).await;
    let total = o.clusters * o.bundles;
    let ok = wait_until(&seen, &notify, Duration::from_secs(120), |s| {
        s.live.len() >= total
    })
    .await;
    if !ok {
        let listed = Api::<BundleDeployment>::all(c.clone())
            .list(&Default::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or_default();
        let text = metrics.encode();
        eprintln!(
            "server lists {listed}; gc deleted {}; reconcile errors {}",
            sum_samples(&text, "flotilla_gc_deleted_total", None),
            sum_samples(
                &text,
                "flotilla_reconciles_total",
                Some(r#"result="error""#)
            )
        );
    }
    assert!(
        ok,
        "fan-out of {total} did not complete: {} seen; controller: {} applies, {} in queues",
        seen.lock().unwrap().live.len(),
        sum_samples(
            &metrics.encode(),
            "flotilla_api_writes_total",
            Some(r#"verb="apply""#)
        ),
        sum_samples(&metrics.encode(), "flotilla_queue_depth", None),
    );
    eprintln!(
        "setup: {total} deployments in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    settle(&metrics).await;
    let bundles_api: Api<Bundle> = Api::namespaced(c.clone(), GC_NS);
    let clusters_api: Api<Cluster> = Api::namespaced(c.clone(), GC_NS);
    let ns_of = |cluster: &str| {
        flotilla_controller::cluster_namespace(&flotilla_controller::ObjectKey::new(GC_NS, cluster))
    };

    // A bundle's targets exclude one shard: 10% of its deployments go.
    let mut edit = shard_edit_samples(o, &seen, &notify, &bundles_api, |s| {
        let b = format!("b{}", s % o.bundles);
        (b.clone(), b)
    })
    .await;
    bench(
        "gc_latency_targets_edit_p50",
        percentile(&mut edit, 0.5),
        "s",
    );
    bench(
        "gc_latency_targets_edit_p99",
        percentile(&mut edit, 0.99),
        "s",
    );

    // A cluster relabel: every bundle leaves it.
    let mut relabel = Vec::new();
    for s in 0..o.samples {
        let name = format!("c{:05}", (s * 37) % o.clusters);
        let stale: Vec<(String, String)> = (0..o.bundles)
            .map(|b| (ns_of(&name), format!("b{b}")))
            .collect();
        let env = |e: &str| json!({"metadata": {"labels": {"env": e}}});
        let latency = gc_sample(
            &seen,
            &notify,
            &stale,
            || merge(&clusters_api, &name, env("staging")),
            || merge(&clusters_api, &name, env("prod")),
        )
        .await;
        relabel.push(latency);
    }
    bench("gc_latency_relabel_p50", percentile(&mut relabel, 0.5), "s");
    bench(
        "gc_latency_relabel_p99",
        percentile(&mut relabel, 0.99),
        "s",
    );
    println!("BENCH gc_latency_setup {} clusters_x_bundles", total);

    // A GitRepo targets edit: the GitRepo controller rewrites its Bundle
    // (no fetch), then fan-out and GC act. Edit to last deletion.
    let tmp = flotilla_git::testing::TempDir::new("flotilla-bench-gc-gitrepo");
    let origin = flotilla_git::testing::TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n",
    );
    origin.commit("one");
    let gitrepos: Api<GitRepo> = Api::namespaced(c.clone(), GC_NS);
    let repo: GitRepo = serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "GitRepo",
        "metadata": {"name": "gitbench", "namespace": GC_NS},
        "spec": {"repo": origin.url(), "branch": "main", "paths": ["app"],
                 "disablePolling": true, "targets": [prod_target(None)]},
    }))
    .unwrap();
    gitrepos
        .create(&PostParams::default(), &repo)
        .await
        .unwrap();
    let ok = wait_until(&seen, &notify, Duration::from_secs(120), |s| {
        s.live.len() >= total + o.clusters
    })
    .await;
    assert!(ok, "the GitRepo's bundle did not reach every cluster");
    settle(&metrics).await;
    let mut gitrepo_edit = shard_edit_samples(o, &seen, &notify, &gitrepos, |_| {
        ("gitbench".to_owned(), "gitbench-app".to_owned())
    })
    .await;
    bench(
        "gc_latency_gitrepo_edit_p50",
        percentile(&mut gitrepo_edit, 0.5),
        "s",
    );
    bench(
        "gc_latency_gitrepo_edit_p99",
        percentile(&mut gitrepo_edit, 0.99),
        "s",
    );

    // ---- Fan-out: 50 bundles x 50 clusters --------------------------------
    let fan_clusters: Vec<Cluster> = (0..50)
        .map(|i| cluster(FAN_NS, &format!("f{i:02}"), &[("env", "prod".into())]))
        .collect();
    create_all(c, FAN_NS, fan_clusters).await;
    let fan_ns: HashSet<String> = (0..50)
        .map(|i| {
            flotilla_controller::cluster_namespace(&flotilla_controller::ObjectKey::new(
                FAN_NS,
                &format!("f{i:02}"),
            ))
        })
        .collect();
    // Let the namespaces appear before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let count = |o: &Observed, ready: bool| {
        let set = if ready { &o.ready } else { &o.live };
        set.iter().filter(|(ns, _)| fan_ns.contains(ns)).count()
    };
    let t0 = Instant::now();
    let fan_bundles: Vec<Bundle> = (0..50)
        .map(|b| bundle(FAN_NS, &format!("fb{b:02}"), vec![prod_target(None)]))
        .collect();
    create_all(c, FAN_NS, fan_bundles).await;
    assert!(
        wait_until(&seen, &notify, Duration::from_secs(120), |o| count(
            o, false
        ) >= 2500)
        .await
    );
    bench("fanout_2500_created", t0.elapsed().as_secs_f64(), "s");
    assert!(
        wait_until(&seen, &notify, Duration::from_secs(120), |o| count(o, true)
            >= 2500)
        .await
    );
    bench("fanout_2500_ready", t0.elapsed().as_secs_f64(), "s");

    // ---- Idle ---------------------------------------------------------------
    let totals = || {
        let text = metrics.encode();
        (
            sum_samples(&text, "flotilla_reconciles_total", None),
            sum_samples(&text, "flotilla_api_writes_total", None),
        )
    };
    settle(&metrics).await;
    let (r0, w0) = totals();
    tokio::time::sleep(Duration::from_secs(o.idle_seconds)).await;
    let (r1, w1) = totals();
    let per_min = 60.0 / o.idle_seconds.max(1) as f64;
    bench(
        "idle_reconciles_per_min",
        (r1 - r0) * per_min,
        "reconciles/min",
    );
    bench("idle_writes_per_min", (w1 - w0) * per_min, "writes/min");
    let _ = stop.send(true);

    if o.kubeconfig.is_some() {
        for ns in [GC_NS, FAN_NS] {
            let _ = Api::<Namespace>::all(c.clone())
                .delete(ns, &DeleteParams::default())
                .await;
        }
    }
    drop(env);
    if o.rss_clusters > 0 && o.kubeconfig.is_none() {
        // A fresh process, so that nothing of the runs above is counted.
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .arg("--rss-run")
            .status()
            .unwrap();
        assert!(status.success(), "rss run failed");
    }
}

/// Waits until the controllers made no reconcile for two seconds: the
/// status of a large setup is written before anything is measured.
async fn settle(metrics: &flotilla_controller::Metrics) {
    let reconciles = || sum_samples(&metrics.encode(), "flotilla_reconciles_total", None);
    let mut last = reconciles();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = reconciles();
        if now == last {
            return;
        }
        last = now;
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Controller RSS with the API server in a child process.
async fn rss(o: &Opts) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--serve-apiserver", &addr])
        .spawn()
        .unwrap();
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    const NS: &str = "bench-rss";
    install(&client, &[NS]).await;
    let clusters: Vec<Cluster> = (0..o.rss_clusters)
        .map(|i| cluster(NS, &format!("r{i:05}"), &[("env", "prod".into())]))
        .collect();
    create_all(&client, NS, clusters).await;
    let bundles: Vec<Bundle> = (0..o.bundles)
        .map(|b| bundle(NS, &format!("rb{b}"), vec![prod_target(None)]))
        .collect();
    create_all(&client, NS, bundles).await;
    let before = rss_mib();
    let (metrics, stop) = start(&client).await;
    let want = (o.rss_clusters * o.bundles) as f64;
    let t0 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = metrics.encode();
        let applied = sum_samples(
            &text,
            "flotilla_api_writes_total",
            Some(r#"kind="BundleDeployment""#),
        );
        let queued = sum_samples(&text, "flotilla_queue_depth", None);
        if (applied >= want && queued == 0.0) || t0.elapsed() > Duration::from_secs(900) {
            break;
        }
    }
    eprintln!(
        "rss: {} deployments in {:.1}s",
        want,
        t0.elapsed().as_secs_f64()
    );
    bench(
        &format!("controller_rss_{}x{}", o.rss_clusters, o.bundles),
        rss_mib(),
        "MiB",
    );
    bench("controller_rss_before_start", before, "MiB");
    let _ = stop.send(true);
    let _ = child.kill();
    let _ = child.wait();
}
