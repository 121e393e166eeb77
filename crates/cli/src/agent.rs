//! `flotilla agent`: the agent of one downstream cluster, running inside
//! it as a Deployment. It reads its BundleDeployments (and their Content)
//! from the management cluster, and elects a leader among its replicas
//! with a Lease in the downstream cluster.

use flotilla_agent::{Agent, AgentConfig};
use flotilla_controller::config::{parse_duration, parse_workers};
use flotilla_runtime::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig of the management cluster. A credential limited to the
    /// cluster namespace (see charts/flotilla-agent) is enough.
    #[arg(long, env = "FLOTILLA_MANAGEMENT_KUBECONFIG", value_name = "FILE")]
    management_kubeconfig: PathBuf,
    /// The management-cluster namespace holding this cluster's
    /// BundleDeployments.
    #[arg(long, env = "FLOTILLA_CLUSTER_NAMESPACE", value_name = "NS")]
    cluster_namespace: String,
    /// The Cluster this agent serves, to record its contact on.
    #[arg(
        long,
        env = "FLOTILLA_CLUSTER_NAME",
        value_name = "NAME",
        requires = "cluster_workspace"
    )]
    cluster_name: Option<String>,
    /// The namespace (workspace) of that Cluster.
    #[arg(long, env = "FLOTILLA_CLUSTER_WORKSPACE", value_name = "NS")]
    cluster_workspace: Option<String>,
    /// Kubeconfig of the downstream cluster; defaults to the in-cluster
    /// service account, then $KUBECONFIG and ~/.kube/config.
    #[arg(long, env = "FLOTILLA_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// BundleDeployments reconciled at once.
    #[arg(long, env = "FLOTILLA_AGENT_WORKERS", default_value = "4", value_parser = parse_workers, value_name = "N")]
    agent_workers: usize,
    /// How often the agent records its contact on its Cluster.
    #[arg(long, env = "FLOTILLA_AGENT_CONTACT_INTERVAL", default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    agent_contact_interval: Duration,
    /// Downstream namespace of the inventory parents.
    #[arg(
        long,
        env = "FLOTILLA_AGENT_INVENTORY_NAMESPACE",
        default_value = "flotilla-system",
        value_name = "NS"
    )]
    inventory_namespace: String,
    /// How long a CRD may take to be Established.
    #[arg(long, env = "FLOTILLA_CRD_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    crd_timeout: Duration,
    /// Elect a leader among the agent's replicas; only the leader applies.
    #[arg(long, env = "FLOTILLA_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    leader_elect: bool,
    /// Namespace of the leader Lease, in the downstream cluster.
    #[arg(
        long,
        env = "FLOTILLA_LEASE_NAMESPACE",
        default_value = "flotilla-system",
        value_name = "NS"
    )]
    lease_namespace: String,
    #[arg(
        long,
        env = "FLOTILLA_LEASE_NAME",
        default_value = "flotilla-agent",
        value_name = "NAME"
    )]
    lease_name: String,
    #[arg(long, env = "FLOTILLA_LEASE_DURATION", default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    lease_duration: Duration,
    #[arg(long, env = "FLOTILLA_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    lease_renew_deadline: Duration,
    #[arg(long, env = "FLOTILLA_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    lease_retry_period: Duration,
    /// This replica's name in the lease; defaults to the pod name.
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    identity: Option<String>,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(
        long,
        env = "FLOTILLA_HTTP_ADDR",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR"
    )]
    http_addr: std::net::SocketAddr,
    /// The `helm` binary charts are rendered with (`helm template`; the
    /// charts themselves come with the bundle). Default: `helm` on PATH.
    #[arg(long = "helm", env = "FLOTILLA_HELM", value_name = "FILE")]
    helm: Option<std::path::PathBuf>,
    /// Log filter, e.g. `info` or `flotilla_agent=debug`.
    #[arg(
        long,
        env = "FLOTILLA_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    log: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .init();
    let config = AgentConfig {
        cluster_name: args.cluster_name.clone().unwrap_or_default(),
        cluster_workspace: args.cluster_workspace.clone().unwrap_or_default(),
        cluster_namespace: args.cluster_namespace.clone(),
        workers: args.agent_workers,
        contact_interval: args.agent_contact_interval,
        inventory_namespace: args.inventory_namespace.clone(),
        crd_timeout: args.crd_timeout,
        tools: flotilla_bundle::Tools {
            helm: args
                .helm
                .clone()
                .or_else(|| flotilla_bundle::tools::find_on_path("helm")),
            ..flotilla_bundle::Tools::default()
        },
    };
    if let Some(h) = &args.helm
        && !h.is_file()
    {
        anyhow::bail!("--helm {}: no such file", h.display());
    }
    config.validate().map_err(anyhow::Error::msg)?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "flotilla-agent".into());
        format!("{host}-{}", std::process::id())
    });
    let lease = flotilla_leader::Config {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity,
        lease_duration: args.lease_duration,
        renew_deadline: args.lease_renew_deadline,
        retry_period: args.lease_retry_period,
    };
    lease.validate().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mgmt = crate::kube_client(Some(&args.management_kubeconfig)).await?;
        let downstream = crate::kube_client(args.kubeconfig.as_deref()).await?;
        let metrics = Arc::new(Metrics::new());
        let agent = Agent::new(mgmt, downstream.clone(), config, Arc::clone(&metrics))
            .map_err(anyhow::Error::msg)?;

        let listener = tokio::net::TcpListener::bind(args.http_addr).await?;
        let m = Arc::clone(&metrics);
        let router = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let m = Arc::clone(&m);
                    async move { m.encode() }
                }),
            );
        tokio::spawn(flotilla_runtime::serve::serve(
            listener,
            router,
            flotilla_runtime::serve::ServeLimits::default(),
            "agent-http",
        ));

        let (stop_tx, stop_rx) = watch::channel(false);
        let (lead_tx, lead_rx) = watch::channel(!args.leader_elect);
        let mut without_election = None;
        let elector = if args.leader_elect {
            let elector =
                flotilla_leader::Elector::new(downstream, lease).map_err(anyhow::Error::msg)?;
            Some(tokio::spawn(elector.run(lead_tx, stop_rx)))
        } else {
            // Without election this replica leads until it stops.
            without_election = Some(lead_tx);
            None
        };
        let running = tokio::spawn(agent.run(lead_rx));
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        if let Some(e) = elector {
            let _ = tokio::time::timeout(Duration::from_secs(5), e).await;
        }
        drop(without_election);
        running.abort();
        Ok(())
    })
}

/// The agent chart, rendered with the real Helm engine (the shim
/// `.ci/test` installs): its settings parse as `flotilla agent` flags, and
/// its management RBAC grants what the agent uses and nothing more.
#[cfg(test)]
mod chart_tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use serde_json::Value;
    use std::path::Path;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn render(values: &str) -> Vec<Value> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let file = std::env::temp_dir().join(format!(
            "flotilla-agent-values-{}-{}.yaml",
            std::process::id(),
            values.len()
        ));
        std::fs::write(&file, values).unwrap();
        let out = std::process::Command::new("python3")
            .arg(root.join("testdata/helm-shim/helm"))
            .args(["template", "agent"])
            .arg(root.join("charts/flotilla-agent"))
            .args(["--namespace", "flotilla-system", "--values"])
            .arg(&file)
            .output()
            .expect("python3 runs the helm shim");
        assert!(
            out.status.success(),
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap()
    }

    #[test]
    fn the_deployment_settings_parse_as_flags() {
        let docs = render(
            "cluster: {namespace: cluster-x, name: c1, workspace: prod}\n\
             management: {kubeconfig: abc}\n\
             agent: {workers: 9, contactInterval: 2m, crdTimeout: 30s}\n",
        );
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        assert_eq!(deployment["spec"]["replicas"], 2, "replicas elect a leader");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        let cmd = Cli::command();
        let mut argv = vec!["flotilla".to_owned()];
        for e in container["env"].as_array().unwrap() {
            let (Some(name), Some(value)) = (e["name"].as_str(), e["value"].as_str()) else {
                continue;
            };
            if let Some(arg) = cmd
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|v| v == name))
            {
                argv.push(format!("--{}={value}", arg.get_long().unwrap()));
            }
        }
        let args = Cli::try_parse_from(argv)
            .expect("the chart's settings parse")
            .args;
        assert_eq!(args.cluster_namespace, "cluster-x");
        assert_eq!(args.cluster_name.as_deref(), Some("c1"));
        assert_eq!(args.cluster_workspace.as_deref(), Some("prod"));
        assert_eq!(args.agent_workers, 9);
        assert_eq!(args.agent_contact_interval, Duration::from_secs(120));
        assert_eq!(args.crd_timeout, Duration::from_secs(30));
        assert!(args.leader_elect);
        assert_eq!(
            args.management_kubeconfig,
            Path::new("/etc/flotilla/management/value")
        );
        let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
        assert_eq!(secret["data"]["value"], "YWJj");
        assert!(!docs.iter().any(|d| d["kind"] == "Pod"), "never a bare Pod");
    }

    #[test]
    fn management_rbac_is_limited_to_the_cluster_namespace_and_reads() {
        let docs = render(
            "cluster: {namespace: cluster-x, name: c1}\n\
             management: {rbacOnly: true}\n",
        );
        assert!(
            !docs
                .iter()
                .any(|d| d["kind"] == "Deployment" || d["kind"] == "Secret")
        );
        let role = docs
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "cluster-x")
            .unwrap();
        let verbs = |resource: &str| -> Vec<String> {
            role["rules"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| {
                    r["resources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x == resource)
                })
                .flat_map(|r| {
                    r["verbs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_owned())
                })
                .collect()
        };
        assert_eq!(
            verbs("bundledeployments"),
            ["get", "list", "watch", "patch"]
        );
        assert_eq!(verbs("bundledeployments/status"), ["get", "patch"]);
        let contents = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
        assert_eq!(contents["rules"][0]["verbs"], serde_json::json!(["get"]));
        let contact = docs
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "fleet-default")
            .unwrap();
        assert_eq!(
            contact["rules"][0]["resourceNames"],
            serde_json::json!(["c1"])
        );
        assert_eq!(contact["rules"][0]["verbs"], serde_json::json!(["patch"]));
    }
}
