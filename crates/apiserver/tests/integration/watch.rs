//! Watches: events from a version, bookmarks, 410 Gone, filtered watches,
//! and kube-runtime's watcher and reflector.

use crate::support::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use std::time::Duration;

fn cm(name: &str, tier: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"tier": tier}}, "data": {"k": "v"}}),
    )
    .unwrap()
}

async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> WatchEvent<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("a valid event")
}

fn describe(e: &WatchEvent<ConfigMap>) -> String {
    match e {
        WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

#[tokio::test]
async fn watch_from_a_version_sees_added_modified_deleted() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("before", "web"))
        .await
        .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("a", "web"))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next_event(&mut stream).await));
    }
    assert_eq!(seen, ["ADDED a", "MODIFIED a", "DELETED a"]);

    // Resuming from an old version replays what came after it.
    let mut replay = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(describe(&next_event(&mut replay).await));
    }
    assert_eq!(again, seen);
}

#[tokio::test]
async fn label_filtered_watch_sees_objects_enter_and_leave() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut stream = api
        .watch(
            &WatchParams::default()
                .labels("tier=web")
                .disable_bookmarks(),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("x", "db"))
        .await
        .unwrap();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "web"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "db"}}})),
    )
    .await
    .unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED x");
    assert_eq!(describe(&next_event(&mut stream).await), "DELETED x");
}

#[tokio::test]
async fn bookmarks_carry_the_latest_version() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("tier=none"), &rv)
        .await
        .unwrap()
        .boxed();
    // Writes this watch does not match still advance the bookmark.
    api.create(&PostParams::default(), &cm("b", "web"))
        .await
        .unwrap();
    let latest = api
        .get("b")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let bookmark = loop {
        match next_event(&mut stream).await {
            WatchEvent::Bookmark(b) => {
                if b.metadata.resource_version == latest {
                    break b;
                }
            }
            other => panic!("unexpected {}", describe(&other)),
        }
    };
    assert_eq!(bookmark.metadata.resource_version, latest);
}

#[tokio::test]
async fn a_too_old_version_is_gone() {
    let server = server_with_history(5);
    let client = kube::Client::new(server.router(), "default");
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..20 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), "web"))
            .await
            .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default(), "2")
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected 410, got {}", describe(&other)),
    }
}

#[tokio::test]
async fn kube_runtime_watcher_and_reflector_track_the_server() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("pre{i}"), "web"))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store();
    let stream = watcher(api.clone(), watcher::Config::default().page_size(2))
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(r) = s.next().await {
            r.expect("the watcher runs without errors");
        }
    });
    reader.wait_until_ready().await.unwrap();
    eventually("the initial list", || {
        let reader = reader.clone();
        async move { (reader.state().len() == 3).then_some(()) }
    })
    .await;
    api.create(&PostParams::default(), &cm("live", "db"))
        .await
        .unwrap();
    api.delete("pre0", &DeleteParams::default()).await.unwrap();
    api.patch(
        "pre1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "new"}})),
    )
    .await
    .unwrap();
    eventually("the reflector to follow", || {
        let reader = reader.clone();
        async move {
            let mut names: Vec<String> = reader
                .state()
                .iter()
                .map(|c| c.metadata.name.clone().unwrap())
                .collect();
            names.sort();
            let pre1 = reader
                .state()
                .into_iter()
                .find(|c| c.metadata.name.as_deref() == Some("pre1"))?;
            (names == ["live", "pre1", "pre2"] && pre1.data.as_ref()?["k"] == "new").then_some(())
        }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn watcher_streams_across_many_writes_without_loss() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let events = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .map_ok(|c| c.metadata.name.unwrap())
        .take(200);
    let collect = tokio::spawn(async move { events.try_collect::<Vec<String>>().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..200 {
        api.create(&PostParams::default(), &cm(&format!("n{i:03}"), "web"))
            .await
            .unwrap();
    }
    let names = tokio::time::timeout(Duration::from_secs(20), collect)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 200);
}

#[tokio::test]
async fn a_watch_on_one_object() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("one", "web"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("other", "web"))
        .await
        .unwrap();
    let (code, body) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps/one?watch=true&resourceVersion=0&timeoutSeconds=1",
        &[],
        vec![],
    )
    .await;
    assert_eq!(code, 200);
    // One JSON line: the ADDED event of "one" only.
    let text = body
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    assert!(
        text.contains("\"ADDED\"") && text.contains("\"one\"") && !text.contains("\"other\""),
        "{text}"
    );
}

#[tokio::test]
async fn watch_list_streams_the_objects_then_an_end_bookmark() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for n in ["a", "b"] {
        api.create(&PostParams::default(), &cm(n, "web"))
            .await
            .unwrap();
    }
    // The raw protocol: ADDED for each object, then the marked bookmark.
    let (code, _) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
        &[],
        vec![],
    )
    .await;
    assert_eq!(code, 422, "watch-list needs allowWatchBookmarks");
    let mut stream = api
        .watch(&WatchParams::default().initial_events(), "")
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    loop {
        match next_event(&mut stream).await {
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => seen.push(describe(&other)),
        }
    }
    assert_eq!(seen, ["ADDED a", "ADDED b"]);
    api.create(&PostParams::default(), &cm("c", "web"))
        .await
        .unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED c");

    // kube-runtime's streaming-list watcher fills a store from it.
    let (reader, writer) = reflector::store::<ConfigMap>();
    let cfg = watcher::Config::default().streaming_lists();
    let stream = reflector(writer, watcher(api.clone(), cfg)).applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.try_next().await.is_ok() {}
    });
    eventually("the reflector holds a, b and c", || {
        let reader = reader.clone();
        async move { (reader.state().len() == 3).then_some(()) }
    })
    .await;
    task.abort();
}
