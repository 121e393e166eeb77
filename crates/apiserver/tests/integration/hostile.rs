//! Hostile clients: each test is named after what it protects and asserts
//! the safe outcome (refused in the real server's words, the server alive,
//! the store reopening, slow watchers closed).

use crate::support::{api_err, raw, serve_tcp, setup, widget, widgets};
use flotilla_apiserver::http::HttpConfig;
use flotilla_apiserver::{Config, Server};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn nested(levels: usize) -> Value {
    let mut v = json!("x");
    for _ in 0..levels {
        v = json!({ "a": v });
    }
    v
}

/// The JSON pointer of the innermost `a` of [`nested`].
fn innermost(prefix: &str, levels: usize) -> String {
    format!("{prefix}{}", "/a".repeat(levels))
}

#[tokio::test]
async fn patches_cannot_deepen_an_object_past_the_limit_and_the_server_lives() {
    let (_h, client) = setup().await;
    let api = widgets(&client).await;
    api.create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();

    // A merge patch deeper than the limit (but within the parser's).
    let patch = json!({"spec": {"deep": nested(110)}});
    let err = api_err(
        api.patch("w", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(err.code, 400, "{err:?}");
    assert!(err.message.contains("exceeded max depth of 100"), "{err:?}");

    // A JSON patch whose adds deepen the object step by step.
    let mut ops = vec![json!({"op": "add", "path": "/spec/deep", "value": nested(40)})];
    for i in 1..20 {
        ops.push(
            json!({"op": "add", "path": innermost("/spec/deep", 40 * i), "value": nested(40)}),
        );
    }
    let err = api_err(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(Value::Array(ops)).unwrap()),
        )
        .await,
    );
    assert_eq!(err.code, 400, "{err:?}");
    assert!(err.message.contains("exceeded max depth"), "{err:?}");

    // Nothing was stored, and everything still answers.
    let w = api.get("w").await.unwrap();
    assert!(w.data["spec"].get("deep").is_none());
    let shallow = json!({"spec": {"deep": nested(20)}});
    api.patch("w", &PatchParams::default(), &Patch::Merge(&shallow))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_durable_store_reopens_after_deep_writes_were_attempted() {
    let dir = std::env::temp_dir().join(format!("flotilla-hostile-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let server = Server::durable(Config::default(), &dir).unwrap();
        let client = kube::Client::new(server.router(), "default");
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "keep"}, "data": {"k": "v"}}))
                .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
        let (code, body) = raw(
            &kube::Client::new(server.router(), "default"),
            "PATCH",
            "/api/v1/namespaces/default/configmaps/keep",
            &[("content-type", "application/merge-patch+json")],
            serde_json::to_vec(
                &json!({"metadata": {"annotations": {"x": "y"}}, "extra": nested(120)}),
            )
            .unwrap(),
        )
        .await;
        assert_eq!(code, 400, "{body}");
    }
    let server = Server::durable(Config::default(), &dir).expect("the store reopens");
    let cms: Api<ConfigMap> =
        Api::namespaced(kube::Client::new(server.router(), "default"), "default");
    assert_eq!(cms.get("keep").await.unwrap().data.unwrap()["k"], "v");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn request_size_and_patch_length_are_refused_in_the_real_servers_words() {
    let (_h, client) = setup().await;
    let big = vec![b' '; 3 * 1024 * 1024 + 1];
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("content-type", "application/json")],
        big,
    )
    .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["reason"], "RequestEntityTooLarge");
    assert_eq!(
        body["message"],
        "Request entity too large: limit is 3145728"
    );

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "p"}, "data": {}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let ops: Vec<Value> = (0..10_001)
        .map(|i| json!({"op": "add", "path": format!("/data/k{i}"), "value": "v"}))
        .collect();
    let (code, body) = raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/p",
        &[("content-type", "application/json-patch+json")],
        serde_json::to_vec(&ops).unwrap(),
    )
    .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(
        body["message"],
        "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
    );

    // Under the request limit, over etcd's: what a real cluster answers.
    let huge: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "huge"}, "data": {"k": "x".repeat(1600 * 1024)}}),
    )
    .unwrap();
    let err = api_err(cms.create(&PostParams::default(), &huge).await);
    assert_eq!(err.code, 500, "{err:?}");
    assert_eq!(err.message, "etcdserver: request is too large");
}

fn config(http: HttpConfig) -> Config {
    Config { http, history: 0 }
}

/// A watcher whose client never reads is closed once its buffer stayed
/// full past the timeout, instead of holding every event in memory.
#[tokio::test]
async fn a_watcher_that_stops_reading_is_closed() {
    let server = Server::new(config(HttpConfig {
        watch_buffer_bytes: 64 * 1024,
        slow_watcher_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    }));
    let (addr, _serving) = serve_tcp(&server).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /api/v1/namespaces/default/configmaps?watch=true HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let client = kube::Client::new(server.router(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let total = 80;
    for i in 0..total {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": format!("big-{i}")},
            "data": {"k": "x".repeat(400 * 1024)}
        }))
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    // Now read: some events, then the end of the stream, well before all
    // of them.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server closed the slow watcher's stream");
    let events = got
        .windows(br#""type":"ADDED""#.len())
        .filter(|w| *w == br#""type":"ADDED""#)
        .count();
    assert!(
        events < total,
        "{events} of {total} events were buffered for a client that did not read"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains(r#""type":"ERROR""#) && text.contains(r#""code":410"#),
        "the closed watcher is told to watch again (410)"
    );
}

#[tokio::test]
async fn watches_beyond_the_limit_get_429() {
    let server = Server::new(config(HttpConfig {
        max_watches: 2,
        ..HttpConfig::default()
    }));
    let (addr, _serving) = serve_tcp(&server).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET /api/v1/configmaps?watch=true HTTP/1.1\r\nHost: {addr}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        open.push(s);
    }
    let client = kube::Client::new(server.router(), "default");
    let (code, body) = raw(&client, "GET", "/api/v1/configmaps?watch=true", &[], vec![]).await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["reason"], "TooManyRequests");
    // A closed watch frees its place.
    drop(open.pop());
    crate::support::eventually("a watch slot frees up", || {
        let client = client.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            s.write_all(
                format!("GET /api/v1/configmaps?watch=true HTTP/1.1\r\nHost: {addr}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).await.ok()?;
            drop(client);
            (&head == b"HTTP/1.1 200").then_some(())
        }
    })
    .await;
}
