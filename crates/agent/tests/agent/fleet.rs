//! Fleet options the agent carries out downstream: `helm.valuesFrom`
//! (ConfigMaps and Secrets of the downstream cluster) and
//! `namespaceLabels` / `namespaceAnnotations`.

use crate::support::*;
use flotilla_api::k8s_openapi::ByteString;
use flotilla_api::k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use flotilla_api::{BundleDeploymentOptions, HelmOptions, KeyRef, ValuesFrom};
use flotilla_bundle::Tools;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;

fn helm_config() -> flotilla_agent::AgentConfig {
    flotilla_agent::AgentConfig {
        tools: Tools {
            helm: Some(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../testdata/helm-shim/helm"),
            ),
            ..Tools::default()
        },
        ..config()
    }
}

fn chart() -> flotilla_bundle::BundleContent {
    files(&[
        ("Chart.yaml", "apiVersion: v2\nname: c\nversion: 1.0.0\n".into()),
        (
            "templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: out\ndata:\n  color: {{ .Values.color | quote }}\n  size: {{ .Values.size | quote }}\n  token: {{ .Values.token | default \"none\" | quote }}\n".into(),
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_reads_downstream_config_maps_and_secrets() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    create_ns(&down, "vals").await;
    let agent = start(&mgmt, &down, helm_config()).await;
    let options = BundleDeploymentOptions {
        default_namespace: Some("vals".into()),
        helm: Some(HelmOptions {
            values: Some(json!({"color": "red", "size": "s"})),
            values_from: vec![ValuesFrom {
                config_map_key_ref: Some(KeyRef {
                    name: "overrides".into(),
                    ..Default::default()
                }),
                secret_key_ref: Some(KeyRef {
                    name: "secret-values".into(),
                    key: "extra.yaml".into(),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = deploy(&mgmt, "vf", &chart(), options).await;
    // Missing: a condition naming the object, retried.
    let message = eventually("valuesFrom missing", || async {
        let m = bd(&mgmt, "vf").await?.status?.display.message;
        m.contains("valuesFrom").then_some(m)
    })
    .await;
    assert!(
        message.contains("configmap vals/overrides not found"),
        "{message}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(down.clone(), "vals");
    cms.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some("overrides".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "values.yaml".into(),
                "color: blue\n".into(),
            )])),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let message = eventually("the Secret's key missing", || async {
        let m = bd(&mgmt, "vf").await?.status?.display.message;
        m.contains("secret").then_some(m)
    })
    .await;
    assert!(message.contains("not found"), "{message}");
    Api::<Secret>::namespaced(down.clone(), "vals")
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("secret-values".into()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    "extra.yaml".into(),
                    ByteString(b"size: xl\ntoken: s3cr3t-value\n".to_vec()),
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_state(&mgmt, "vf", &id, "Ready").await;
    let out = get(&down, "v1", "ConfigMap", Some("vals"), "out")
        .await
        .unwrap();
    assert_eq!(out["data"]["color"], "blue", "the ConfigMap over values");
    assert_eq!(out["data"]["size"], "xl", "then the Secret");
    assert_eq!(out["data"]["token"], "s3cr3t-value");
    // The Secret's data never reaches the management cluster.
    let text = serde_json::to_string(&bd(&mgmt, "vf").await.unwrap()).unwrap();
    assert!(!text.contains("s3cr3t-value"), "{text}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_labels_and_annotations_follow_the_options() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;
    let options = |labels: &[(&str, &str)]| BundleDeploymentOptions {
        default_namespace: Some("team".into()),
        namespace_labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        namespace_annotations: Some(BTreeMap::from([("owner".into(), "team-a".into())])),
        ..Default::default()
    };
    let content = files(&[(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: {}\n".into(),
    )]);
    let id = deploy(
        &mgmt,
        "ns",
        &content,
        options(&[
            ("tier", "gold"),
            ("pod-security.kubernetes.io/enforce", "privileged"),
        ]),
    )
    .await;
    wait_state(&mgmt, "ns", &id, "Ready").await;
    let nss: Api<Namespace> = Api::all(down.clone());
    let ns = nss.get("team").await.unwrap();
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("tier").map(String::as_str), Some("gold"));
    assert!(
        !labels.contains_key("pod-security.kubernetes.io/enforce"),
        "never set: {labels:?}"
    );
    assert_eq!(ns.metadata.annotations.unwrap()["owner"], "team-a");
    // Someone else's label stays; a label dropped from the options goes.
    nss.patch(
        "team",
        &PatchParams::apply("someone-else"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team", "labels": {"theirs": "yes"}}})),
    )
    .await
    .unwrap();
    let id = deploy(&mgmt, "ns", &content, options(&[("zone", "a")])).await;
    wait_state(&mgmt, "ns", &id, "Ready").await;
    let labels = eventually("labels moved", || async {
        let l = nss.get("team").await.ok()?.metadata.labels?;
        (l.get("zone").map(String::as_str) == Some("a")).then_some(l)
    })
    .await;
    assert!(!labels.contains_key("tier"), "{labels:?}");
    assert_eq!(labels.get("theirs").map(String::as_str), Some("yes"));
    agent.stop().await;
}
