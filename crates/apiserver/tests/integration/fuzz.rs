//! Fuzzing by proptest (cargo-fuzz needs a nightly toolchain these
//! machines do not have): request decoding never panics or answers 5xx on
//! arbitrary bodies (JSON, YAML, protobuf, every patch type), and the
//! server answers normally afterwards. CI runs a few hundred cases;
//! `FLOTILLA_FUZZ_CASES=20000 cargo test -p flotilla-apiserver --test
//! integration fuzz` runs longer by hand.

use crate::support::raw;
use flotilla_apiserver::{Config, Server};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

fn runner() -> TestRunner {
    let cases = std::env::var("FLOTILLA_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(300);
    TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

/// Bytes that are often almost JSON, YAML or a protobuf envelope.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let json_token = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("\"metadata\":".to_owned()),
        Just("\"name\":\"x\"".to_owned()),
        Just("\"data\":{\"k\":\"v\"}".to_owned()),
        Just("\"op\":\"add\",\"path\":\"/data/a\",\"value\":".to_owned()),
        Just(",".to_owned()),
        Just("null".to_owned()),
        Just("1e400".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        "[a-z0-9:\" ]{0,8}",
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(json_token, 0..40).prop_map(|t| t.concat().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|mut b| {
            let mut v = b"k8s\0".to_vec();
            v.append(&mut b);
            v
        }),
    ]
}

fn content_type() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("application/json"),
        Just("application/yaml"),
        Just("application/vnd.kubernetes.protobuf"),
        Just("application/merge-patch+json"),
        Just("application/json-patch+json"),
        Just("application/strategic-merge-patch+json"),
        Just("application/apply-patch+yaml"),
    ]
}

#[test]
fn protobuf_decoding_never_panics() {
    runner()
        .run(&body(), |b| {
            let _ = flotilla_apiserver::protobuf::decode(&b);
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn request_decoding_never_panics_or_answers_5xx() {
    let server = Server::new(Config::default());
    let client = kube::Client::new(server.router(), "default");
    let (code, _) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("content-type", "application/json")],
        br#"{"metadata":{"name":"target"},"data":{"a":"b"}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 201);
    let mut cases = Vec::new();
    let mut r = runner();
    let strategy = (body(), content_type(), any::<bool>());
    for _ in 0..r.config().cases {
        cases.push(strategy.new_tree(&mut r).unwrap().current());
    }
    for (body, ct, create) in cases {
        let (method, path) = if create || !ct.contains("patch") {
            ("POST", "/api/v1/namespaces/default/configmaps")
        } else {
            ("PATCH", "/api/v1/namespaces/default/configmaps/target")
        };
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (code, answer) = raw(
            &client,
            method,
            &format!("{path}?fieldManager=fuzz"),
            &[("content-type", ct)],
            body,
        )
        .await;
        assert!(
            code < 500,
            "{method} {ct} {shown:?} answered {code}: {answer}"
        );
    }
    let (code, _) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps/target",
        &[],
        vec![],
    )
    .await;
    assert_eq!(code, 200, "the server still answers");
}
