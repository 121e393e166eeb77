//! API server benchmark. Prints `BENCH <name> <value> <unit>` lines:
//! - resident memory per 100,000 stored 2 KB custom objects;
//! - creates and updates per second of 2 KB custom objects from 16
//!   concurrent kube-rs clients over TCP (median of 3 rounds);
//! - watch delivery latency p50/p99 with 100 watchers over TCP;
//! - with `--data-dir` (every write fsync'd): creates per second from 16
//!   clients, and the time to recover the store at start (median of 3).
//!
//! Run: `cargo bench -p flotilla-apiserver --bench apiserver`.

use flotilla_apiserver::api::WriteOptions;
use flotilla_apiserver::{Config, Server};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 500;
const WATCHERS: usize = 100;
const WATCH_WRITES: usize = 200;
const MEMORY_OBJECTS: usize = 100_000;

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "payloads.bench.flotilla.dev"},
        "spec": {
            "group": "bench.flotilla.dev",
            "scope": "Namespaced",
            "names": {"plural": "payloads", "singular": "payload", "kind": "Payload"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}}]
        }
    })
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("bench.flotilla.dev", "v1", "Payload"),
        "payloads",
    )
}

/// A custom object whose JSON is about 2 KB.
fn payload(name: &str, round: usize) -> Value {
    let blob: String = (0..1900)
        .map(|i| (b'a' + ((i + round) % 26) as u8) as char)
        .collect();
    json!({
        "apiVersion": "bench.flotilla.dev/v1",
        "kind": "Payload",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"round": round, "blob": blob}
    })
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn memory() {
    let server = Server::new(Config::default());
    let api = server.api().clone();
    let crds = api
        .registry
        .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .unwrap();
    api.create(&crds, None, crd(), &WriteOptions::default())
        .unwrap();
    let rt = api
        .registry
        .get("bench.flotilla.dev", "v1", "payloads")
        .unwrap();
    let opts = WriteOptions {
        field_manager: Some("bench".into()),
        ..Default::default()
    };
    let before = rss_bytes();
    for i in 0..MEMORY_OBJECTS {
        api.create(&rt, Some("default"), payload(&format!("m{i}"), i), &opts)
            .unwrap();
    }
    let after = rss_bytes();
    assert_eq!(api.store.len(), MEMORY_OBJECTS + 5);
    let per_100k = (after.saturating_sub(before)) as f64 / (MEMORY_OBJECTS as f64 / 100_000.0);
    println!(
        "BENCH apiserver_rss_per_100k_objects {:.1} MiB",
        per_100k / (1024.0 * 1024.0)
    );
}

async fn tcp_server(server: &Server) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server.router();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (format!("http://{addr}"), task)
}

fn client(url: &str) -> kube::Client {
    kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
}

async fn install_crd(c: &kube::Client) {
    let crds: Api<DynamicObject> = Api::all_with(
        c.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_value(crd()).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
}

async fn throughput() {
    let mut create_rates = Vec::new();
    let mut update_rates = Vec::new();
    for round in 0..3 {
        let server = Server::new(Config::default());
        let (url, task) = tcp_server(&server).await;
        install_crd(&client(&url)).await;
        let clients: Vec<Api<DynamicObject>> = (0..CLIENTS)
            .map(|_| Api::namespaced_with(client(&url), "default", &resource()))
            .collect();
        let started = Instant::now();
        let mut jobs = Vec::new();
        for (c, api) in clients.iter().enumerate() {
            let api = api.clone();
            jobs.push(tokio::spawn(async move {
                for i in 0..PER_CLIENT {
                    let obj: DynamicObject =
                        serde_json::from_value(payload(&format!("c{c}-{i}"), round)).unwrap();
                    api.create(&PostParams::default(), &obj).await.unwrap();
                }
            }));
        }
        for j in jobs {
            j.await.unwrap();
        }
        create_rates.push((CLIENTS * PER_CLIENT) as f64 / started.elapsed().as_secs_f64());

        let started = Instant::now();
        let mut jobs = Vec::new();
        for (c, api) in clients.iter().enumerate() {
            let api = api.clone();
            jobs.push(tokio::spawn(async move {
                for i in 0..PER_CLIENT {
                    let name = format!("c{c}-{i}");
                    let mut obj: DynamicObject =
                        serde_json::from_value(payload(&name, round + 1)).unwrap();
                    // Read-modify-write, as controllers do.
                    let current = api.get(&name).await.unwrap();
                    obj.metadata.resource_version = current.metadata.resource_version;
                    api.replace(&name, &PostParams::default(), &obj)
                        .await
                        .unwrap();
                }
            }));
        }
        for j in jobs {
            j.await.unwrap();
        }
        update_rates.push((CLIENTS * PER_CLIENT) as f64 / started.elapsed().as_secs_f64());
        task.abort();
    }
    println!(
        "BENCH apiserver_creates_per_s_16_clients {:.0} obj/s",
        median(create_rates)
    );
    // Each update is a read-modify-write (get, then replace), as controllers do.
    println!(
        "BENCH apiserver_updates_per_s_16_clients {:.0} obj/s",
        median(update_rates)
    );
}

async fn watch_latency() {
    let server = Server::new(Config::default());
    let (url, task) = tcp_server(&server).await;
    let c = client(&url);
    install_crd(&c).await;
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &resource());
    let obj: DynamicObject = serde_json::from_value(payload("watched", 0)).unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    let rv = created.metadata.resource_version.unwrap();

    // Send time by spec.round, recorded before each write goes out.
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let samples: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut watchers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(WATCHERS);
    for w in 0..WATCHERS {
        // Spread watchers over 10 connections' worth of clients.
        let api: Api<DynamicObject> = Api::namespaced_with(
            if w % 10 == 0 { client(&url) } else { c.clone() },
            "default",
            &resource(),
        );
        let (sent, samples, rv, ready) =
            (sent.clone(), samples.clone(), rv.clone(), ready_tx.clone());
        watchers.push(tokio::spawn(async move {
            let mut stream = api
                .watch(&WatchParams::default().disable_bookmarks(), &rv)
                .await
                .unwrap()
                .boxed();
            ready.send(()).await.unwrap();
            let mut seen = 0;
            while seen < WATCH_WRITES {
                match stream.next().await {
                    Some(Ok(WatchEvent::Modified(o))) => {
                        let now = Instant::now();
                        let key = o.data["spec"]["round"].as_u64().unwrap();
                        let at = sent.lock().unwrap().get(&key).copied();
                        if let Some(at) = at {
                            samples.lock().unwrap().push((now - at).as_secs_f64());
                        }
                        seen += 1;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("watch ended: {other:?}"),
                }
            }
        }));
    }
    for _ in 0..WATCHERS {
        ready_rx.recv().await.unwrap();
    }
    // The watch requests are answered; give the streams a moment to start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..WATCH_WRITES {
        let round = i as u64 + 1;
        let patch = Patch::Merge(json!({"spec": {"round": round}}));
        sent.lock().unwrap().insert(round, Instant::now());
        api.patch("watched", &PatchParams::default(), &patch)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .unwrap()
            .unwrap();
    }
    let mut s = samples.lock().unwrap().clone();
    s.sort_by(f64::total_cmp);
    println!("BENCH apiserver_watch_watchers {WATCHERS} watchers");
    println!("BENCH apiserver_watch_samples {} events", s.len());
    println!(
        "BENCH apiserver_watch_latency_p50 {:.3} ms",
        percentile(&s, 0.5) * 1e3
    );
    println!(
        "BENCH apiserver_watch_latency_p99 {:.3} ms",
        percentile(&s, 0.99) * 1e3
    );
    task.abort();
}

const DURABLE_PER_CLIENT: usize = 125;

async fn durable() {
    let dir = std::env::temp_dir().join(format!("flotilla-bench-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = Server::durable(Config::default(), &dir).unwrap();
    let (url, task) = tcp_server(&server).await;
    install_crd(&client(&url)).await;
    let started = Instant::now();
    let mut jobs = Vec::new();
    for c in 0..CLIENTS {
        let api: Api<DynamicObject> = Api::namespaced_with(client(&url), "default", &resource());
        jobs.push(tokio::spawn(async move {
            for i in 0..DURABLE_PER_CLIENT {
                let obj: DynamicObject =
                    serde_json::from_value(payload(&format!("d{c}-{i}"), 0)).unwrap();
                api.create(&PostParams::default(), &obj).await.unwrap();
            }
        }));
    }
    for j in jobs {
        j.await.unwrap();
    }
    let rate = (CLIENTS * DURABLE_PER_CLIENT) as f64 / started.elapsed().as_secs_f64();
    task.abort();
    drop(server);
    println!("BENCH apiserver_durable_creates_per_s_16_clients {rate:.0} obj/s");
    let mut opens = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let store = flotilla_apiserver::MemoryStore::open(&dir, 10_000, 20_000).unwrap();
        opens.push(started.elapsed().as_secs_f64());
        assert!(flotilla_apiserver::Store::len(&store) >= CLIENTS * DURABLE_PER_CLIENT);
    }
    println!(
        "BENCH apiserver_recovery_{}_objects {:.3} s",
        CLIENTS * DURABLE_PER_CLIENT,
        median(opens)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        memory().await;
        throughput().await;
        watch_latency().await;
        durable().await;
    });
}
