//! In-process agents: one per Cluster whose `kubeConfigSecret` names a
//! kubeconfig, running the same code as `flotilla agent`.
//!
//! What wakes the supervisor: a Cluster created, deleted, or pointed at
//! another Secret (the hub notifies), and leadership changes. Agents run
//! their workers only while this replica leads, so one replica applies.
//! A deleted Cluster's agent keeps running until the Cluster's
//! BundleDeployments are gone, so their finalizers are released after
//! pruning rather than left behind.

use crate::{Context, ObjectKey, cluster_namespace};
use flotilla_agent::{Agent, AgentConfig};
use flotilla_api::Cluster;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The Secret key holding the kubeconfig.
pub const KUBECONFIG_KEY: &str = "value";

/// Which Secret a Cluster's agent was started from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Source {
    namespace: String,
    name: String,
}

fn source_of(cluster: &Cluster) -> Option<Source> {
    let name = cluster.spec.kube_config_secret.clone()?;
    let namespace = cluster
        .spec
        .kube_config_secret_namespace
        .clone()
        .or_else(|| cluster.metadata.namespace.clone())?;
    Some(Source { namespace, name })
}

struct Running {
    source: Source,
    active: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Builds a client from the kubeconfig in a Secret. The kubeconfig is
/// never logged.
async fn downstream_client(ctx: &Context, source: &Source) -> Result<kube::Client, String> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &source.namespace);
    let secret = secrets
        .get_opt(&source.name)
        .await
        .map_err(|e| format!("reading Secret {}/{}: {e}", source.namespace, source.name))?
        .ok_or_else(|| format!("Secret {}/{} not found", source.namespace, source.name))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KUBECONFIG_KEY))
        .map(|b| b.0.clone())
        .ok_or_else(|| {
            format!(
                "Secret {}/{} has no {KUBECONFIG_KEY:?} key",
                source.namespace, source.name
            )
        })?;
    let text = String::from_utf8(bytes).map_err(|_| "the kubeconfig is not UTF-8".to_owned())?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).map_err(|e| {
        format!(
            "the kubeconfig in {}/{} is invalid: {e}",
            source.namespace, source.name
        )
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| {
            format!(
                "the kubeconfig in {}/{} is unusable: {e}",
                source.namespace, source.name
            )
        })?;
    kube::Client::try_from(config)
        .map_err(|e| format!("a client for {}/{}: {e}", source.namespace, source.name))
}

/// Starts, restarts and stops the in-process agents.
pub async fn supervise(ctx: Arc<Context>, mut active: watch::Receiver<bool>) {
    let mut running: HashMap<ObjectKey, Running> = HashMap::new();
    loop {
        let leading = *active.borrow_and_update();
        let mut lingering = false;
        let mut failed = false;
        // Stop agents whose Cluster moved to another Secret, or is gone
        // with nothing left to prune.
        running.retain(|key, r| {
            let keep = match ctx.clusters.get(key) {
                Some(c) => source_of(&c).as_ref() == Some(&r.source),
                None => {
                    let left = ctx
                        .topo()
                        .bds_by_cluster
                        .get(key)
                        .is_some_and(|b| !b.is_empty());
                    lingering |= left;
                    left
                }
            };
            if !keep {
                tracing::info!(cluster = %key, "agent stopped");
                r.task.abort();
            }
            keep
        });
        for cluster in ctx.clusters.list() {
            let key = ObjectKey::of(&cluster.metadata);
            let Some(source) = source_of(&cluster) else {
                continue;
            };
            if running.contains_key(&key) || cluster.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match start(&ctx, &key, &source, leading).await {
                Ok(r) => {
                    running.insert(key, r);
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(cluster = %key, error = %e, "agent not started; retrying");
                }
            }
        }
        for r in running.values() {
            r.active.send_replace(leading);
        }
        let recheck = if failed {
            Duration::from_secs(10)
        } else if lingering {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            _ = ctx.agents_changed.notified() => {}
            r = active.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(recheck) => {}
        }
    }
    for (_, r) in running {
        drop(r.active);
        let _ = r.task.await;
    }
}

async fn start(
    ctx: &Arc<Context>,
    key: &ObjectKey,
    source: &Source,
    leading: bool,
) -> Result<Running, String> {
    let downstream = downstream_client(ctx, source).await?;
    let config = AgentConfig {
        cluster_name: key.name.to_string(),
        cluster_workspace: key.namespace.to_string(),
        cluster_namespace: cluster_namespace(key),
        workers: ctx.args.agent_workers,
        contact_interval: ctx.args.agent_contact_interval,
        inventory_namespace: ctx.args.agent_inventory_namespace.clone(),
        crd_timeout: Duration::from_secs(60),
        tools: flotilla_bundle::Tools {
            helm: ctx
                .args
                .helm
                .clone()
                .or_else(|| flotilla_bundle::tools::find_on_path("helm")),
            ..flotilla_bundle::Tools::default()
        },
    };
    let agent = Agent::new(
        ctx.client.clone(),
        downstream,
        config,
        Arc::clone(&ctx.metrics),
    )?;
    let (active, rx) = watch::channel(leading);
    tracing::info!(cluster = %key, secret = %format!("{}/{}", source.namespace, source.name), "agent starting in process");
    let task = tokio::spawn(agent.run(rx));
    Ok(Running {
        source: source.clone(),
        active,
        task,
    })
}
