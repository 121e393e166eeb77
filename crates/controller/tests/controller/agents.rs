//! In-process agents: a Cluster whose kubeConfigSecret names a kubeconfig
//! gets its agent in the controller process, and the whole loop runs
//! against a second embedded API server.

use crate::support::*;
use flotilla_api::k8s_openapi::ByteString;
use flotilla_api::k8s_openapi::api::core::v1::{ConfigMap, Secret};
use flotilla_api::{BundleDeployment, Cluster, Content, ContentFields};
use flotilla_bundle::BundleContent;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_cluster_is_deployed_by_its_in_process_agent_and_pruned_when_untargeted() {
    let env = env().await;
    let c = &env.client;
    // The downstream cluster, reachable through a kubeconfig.
    let downstream = flotilla_apiserver::Server::new(flotilla_apiserver::Config::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = downstream.router();
    let serving = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("c1-kubeconfig".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            flotilla_controller::KUBECONFIG_KEY.to_string(),
            ByteString(flotilla_apiserver::server::kubeconfig(&addr, None).into_bytes()),
        )])),
        ..Default::default()
    };
    create(c, &secret).await;
    let mut c1 = cluster("c1", &[("env", "dev")]);
    c1.spec.kube_config_secret = Some("c1-kubeconfig".into());
    create(c, &c1).await;

    let content = BundleContent {
        files: BTreeMap::from([(
            "cm.yaml".to_string(),
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\n  namespace: demo\ndata:\n  greeting: hi\n".to_vec(),
        )]),
    };
    let contents: Api<Content> = Api::all(c.clone());
    contents
        .create(
            &PostParams::default(),
            &Content::new(
                &content.content_id(),
                ContentFields {
                    content: ByteString(content.gzip()),
                    sha256sum: content.sha256_hex(),
                },
            ),
        )
        .await
        .unwrap();
    create(
        c,
        &bundle(
            "hello",
            &content.sha256_hex(),
            vec![selector_target(&[("env", "dev")])],
        ),
    )
    .await;

    let running = start(c, args()).await;
    let down = kube::Client::new(downstream.router(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(down.clone(), "demo");
    eventually("the ConfigMap downstream", || async {
        cms.get_opt("hello").await.unwrap()
    })
    .await;
    let bds: Api<BundleDeployment> = Api::all(c.clone());
    eventually("the BundleDeployment Ready", || async {
        let list = bds.list(&Default::default()).await.unwrap().items;
        let st = list.first()?.status.clone()?;
        (st.display.state == "Ready").then_some(())
    })
    .await;
    let clusters: Api<Cluster> = Api::namespaced(c.clone(), NS);
    eventually("the agent's contact on the Cluster", || async {
        clusters.get("c1").await.unwrap().status?.agent.last_seen
    })
    .await;

    // The cluster leaves the target: GC deletes the BundleDeployment, the
    // agent prunes downstream and lets the finalizer go.
    merge_patch::<Cluster>(c, "c1", json!({"metadata": {"labels": {"env": "prod"}}})).await;
    eventually("the ConfigMap pruned", || async {
        cms.get_opt("hello").await.unwrap().is_none().then_some(())
    })
    .await;
    eventually("the BundleDeployment gone", || async {
        bds.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    running.stop().await;
    serving.abort();
}
