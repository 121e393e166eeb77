//! Two embedded API servers, management and downstream, and an agent
//! between them.

use flotilla_agent::{Agent, AgentConfig};
use flotilla_api::k8s_openapi::ByteString;
use flotilla_api::k8s_openapi::api::core::v1::Namespace;
use flotilla_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use flotilla_api::{
    BundleDeployment, BundleDeploymentOptions, BundleDeploymentSpec, BundleRef, Cluster,
    ClusterSpec, Content, ContentFields, keys,
};
use flotilla_apiserver::http::HttpConfig;
use flotilla_apiserver::{MemoryStore, Server, Store};
use flotilla_bundle::{BundleContent, Tools, deployment_id};
use flotilla_runtime::Metrics;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const WORKSPACE: &str = "fleet-default";
pub const CLUSTER_NS: &str = "cluster-fleet-default-c1";
pub const INVENTORY_NS: &str = "flotilla-system";

pub fn server() -> Server {
    Server::new(flotilla_apiserver::Config {
        http: HttpConfig {
            bookmark_interval: Duration::from_secs(5),
            ..HttpConfig::default()
        },
        history: 0,
    })
}

pub async fn create_ns(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns).await.unwrap();
}

/// A management server with the CRDs, a workspace with Cluster `c1`, and
/// that cluster's namespace.
pub async fn management() -> (Server, kube::Client) {
    let server = server();
    let client = kube::Client::new(server.router(), "default");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in flotilla_api::crds::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    create_ns(&client, WORKSPACE).await;
    create_ns(&client, CLUSTER_NS).await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), WORKSPACE);
    clusters
        .create(
            &PostParams::default(),
            &Cluster::new("c1", ClusterSpec::default()),
        )
        .await
        .unwrap();
    (server, client)
}

pub fn config() -> AgentConfig {
    AgentConfig {
        cluster_name: "c1".into(),
        cluster_workspace: WORKSPACE.into(),
        cluster_namespace: CLUSTER_NS.into(),
        workers: 4,
        contact_interval: Duration::from_secs(3600),
        inventory_namespace: INVENTORY_NS.into(),
        crd_timeout: Duration::from_secs(10),
        tools: Tools::default(),
    }
}

pub struct Running {
    pub metrics: Arc<Metrics>,
    active: Option<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn writes(&self) -> f64 {
        flotilla_runtime::metrics::sum_samples(
            &self.metrics.encode(),
            "flotilla_agent_writes_total",
            None,
        )
    }

    pub fn contacts(&self) -> f64 {
        flotilla_runtime::metrics::sum_samples(
            &self.metrics.encode(),
            "flotilla_agent_contact_writes_total",
            None,
        )
    }

    pub fn reconciles(&self) -> f64 {
        flotilla_runtime::metrics::sum_samples(
            &self.metrics.encode(),
            "flotilla_reconciles_total",
            Some(r#"controller="agent""#),
        )
    }

    pub async fn stop(mut self) {
        drop(self.active.take());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the agent stops")
            .unwrap();
    }
}

/// Starts an agent and waits until it has listed its BundleDeployments.
pub async fn start(mgmt: &kube::Client, down: &kube::Client, config: AgentConfig) -> Running {
    let metrics = Arc::new(Metrics::new());
    let agent = Agent::new(mgmt.clone(), down.clone(), config, Arc::clone(&metrics)).unwrap();
    let mut synced = agent.synced();
    let (active, rx) = watch::channel(true);
    let task = tokio::spawn(agent.run(rx));
    tokio::time::timeout(Duration::from_secs(20), synced.wait_for(|s| *s))
        .await
        .expect("agent synced")
        .unwrap();
    Running {
        metrics,
        active: Some(active),
        task,
    }
}

pub use flotilla_apiserver::testing::eventually;

pub fn files(list: &[(&str, String)]) -> BundleContent {
    BundleContent {
        files: list
            .iter()
            .map(|(p, c)| (p.to_string(), c.clone().into_bytes()))
            .collect(),
    }
}

pub fn configmap(name: &str, ns: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\ndata:\n  value: \"{value}\"\n"
    )
}

/// Stores the content and creates or updates BundleDeployment `name` to
/// deploy it with `options`. Returns the deploymentID.
pub async fn deploy(
    mgmt: &kube::Client,
    name: &str,
    content: &BundleContent,
    options: BundleDeploymentOptions,
) -> String {
    deploy_with(mgmt, name, content, options, |_| {}).await
}

pub async fn deploy_with(
    mgmt: &kube::Client,
    name: &str,
    content: &BundleContent,
    options: BundleDeploymentOptions,
    edit: impl FnOnce(&mut BundleDeploymentSpec),
) -> String {
    let content_id = content.content_id();
    let contents: Api<Content> = Api::all(mgmt.clone());
    let stored = Content::new(
        &content_id,
        ContentFields {
            content: ByteString(content.gzip()),
            sha256sum: content.sha256_hex(),
        },
    );
    match contents.create(&PostParams::default(), &stored).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
    let id = deployment_id(&content_id, &options);
    let mut spec = BundleDeploymentSpec {
        deployment_id: id.clone(),
        content_id,
        options,
        ..Default::default()
    };
    edit(&mut spec);
    let bds: Api<BundleDeployment> = Api::namespaced(mgmt.clone(), CLUSTER_NS);
    let mut bd = BundleDeployment::new(name, spec);
    bd.metadata.labels = Some(BTreeMap::from([
        (keys::BUNDLE_NAME.to_string(), name.to_string()),
        (
            keys::MANAGED_BY.to_string(),
            keys::MANAGED_BY_VALUE.to_string(),
        ),
    ]));
    bds.patch(
        name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&bd),
    )
    .await
    .unwrap();
    id
}

pub fn depends_on(names: &[&str]) -> impl FnOnce(&mut BundleDeploymentSpec) {
    let refs: Vec<BundleRef> = names
        .iter()
        .map(|n| BundleRef {
            name: Some(n.to_string()),
            selector: None,
            accepted_states: Vec::new(),
        })
        .collect();
    move |spec| spec.depends_on = refs
}

pub async fn bd(mgmt: &kube::Client, name: &str) -> Option<BundleDeployment> {
    Api::<BundleDeployment>::namespaced(mgmt.clone(), CLUSTER_NS)
        .get_opt(name)
        .await
        .unwrap()
}

/// Waits until BundleDeployment `name` reports `id` applied and the
/// state `state`.
pub async fn wait_state(
    mgmt: &kube::Client,
    name: &str,
    id: &str,
    state: &str,
) -> BundleDeployment {
    eventually(&format!("{name} {state} at {id}"), || async {
        let bd = bd(mgmt, name).await?;
        let st = bd.status.as_ref()?;
        (st.applied_deployment_id == id && st.display.state == state).then_some(bd)
    })
    .await
}

pub fn gvk(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = format!("{}s", kind.to_ascii_lowercase());
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural)
}

pub fn api(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    let ar = gvk(api_version, kind);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

pub async fn get(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Option<Value> {
    api(client, api_version, kind, ns)
        .get_opt(name)
        .await
        .unwrap()
        .map(|o| serde_json::to_value(o).unwrap())
}

pub async fn cm_value(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    let cm = get(client, "v1", "ConfigMap", Some(ns), name).await?;
    cm["data"]["value"].as_str().map(str::to_owned)
}

pub fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Marks a Deployment's rollout complete, as a kube-controller-manager
/// would.
pub async fn roll_out(client: &kube::Client, ns: &str, name: &str) {
    let d = get(client, "apps/v1", "Deployment", Some(ns), name)
        .await
        .unwrap();
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = json!({"status": {
        "observedGeneration": d["metadata"]["generation"],
        "replicas": replicas, "updatedReplicas": replicas,
        "readyReplicas": replicas, "availableReplicas": replicas,
    }});
    api(client, "apps/v1", "Deployment", Some(ns))
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

pub fn deployment(name: &str, ns: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: main\n        image: nginx:1.27\n"
    )
}

/// A downstream server over TCP behind a proxy that can drop every
/// connection and refuse new ones, as a restarting API server does. The
/// store survives, as etcd would.
pub struct Restartable {
    pub store: Arc<dyn Store>,
    pub addr: std::net::SocketAddr,
    server: Option<Server>,
    backend: std::net::SocketAddr,
    proxy: Option<tokio::task::JoinHandle<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl Restartable {
    pub async fn start() -> Restartable {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut r = Restartable {
            store,
            addr,
            server: None,
            backend: addr,
            proxy: None,
            serving: None,
        };
        r.up().await;
        r
    }

    async fn up(&mut self) {
        let server = Server::with_store(Arc::clone(&self.store), HttpConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.backend = listener.local_addr().unwrap();
        let router = server.router();
        self.serving = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
        self.server = Some(server);
        let front = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let backend = self.backend;
        self.proxy = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = front.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Drops every connection, stays away for `down`, then serves again.
    pub async fn restart(&mut self, down: Duration) {
        if let Some(p) = self.proxy.take() {
            p.abort();
            let _ = p.await;
        }
        if let Some(s) = self.serving.take() {
            s.abort();
        }
        self.server = None;
        tokio::time::sleep(down).await;
        self.up().await;
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(kube::Config::new(
            format!("http://{}", self.addr).parse().unwrap(),
        ))
        .unwrap()
    }
}
