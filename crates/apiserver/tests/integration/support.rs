use flotilla_apiserver::http::HttpConfig;
use flotilla_apiserver::{Config, Server};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::future::Future;
use std::time::Duration;

/// A server with quick bookmarks and a small watch history.
pub fn server_with_history(history: usize) -> Server {
    Server::new(Config {
        http: HttpConfig {
            bookmark_interval: Duration::from_millis(200),
            ..HttpConfig::default()
        },
        history,
    })
}

/// A running server; dropping it stops it.
pub struct Harness {
    _server: Server,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(t) = &self.serving {
            t.abort();
        }
    }
}

/// A server and a kube client: in process (no socket) by default, over
/// TCP when `FLOTILLA_TEST_TRANSPORT=tcp` (`.ci/test` runs both).
pub async fn setup() -> (Harness, kube::Client) {
    let server = server_with_history(0);
    if std::env::var("FLOTILLA_TEST_TRANSPORT").as_deref() == Ok("tcp") {
        let (addr, serving) = serve_tcp(&server).await;
        return (
            Harness {
                _server: server,
                serving: Some(serving),
            },
            tcp_client(addr),
        );
    }
    let client = kube::Client::new(server.router(), "default");
    (
        Harness {
            _server: server,
            serving: None,
        },
        client,
    )
}

/// Polls `check` until it yields a value, or fails after 10 s.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    flotilla_apiserver::testing::eventually_within(what, Duration::from_secs(10), check).await
}

pub fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}
                ]
            }]
        }
    })
}

pub fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    )
}

/// Installs the Widget CRD and returns an API for widgets in `default`.
pub async fn widgets(client: &kube::Client) -> Api<DynamicObject> {
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_value(widget_crd()).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    Api::namespaced_with(client.clone(), "default", &widget_resource())
}

pub fn widget(name: &str, size: i64) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size}
    }))
    .unwrap()
}

/// The API error of a failed call.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A raw request through the client, for what typed APIs do not cover.
pub async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.send(req.body(body.into()).unwrap()).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (code, value)
}

/// Serves `server` on a free loopback port.
pub async fn serve_tcp(server: &Server) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = server.router();
    let serving = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (addr, serving)
}

/// A kube client over TCP, with no credentials.
pub fn tcp_client(addr: std::net::SocketAddr) -> kube::Client {
    kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap()
}
