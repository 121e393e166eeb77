//! What the `flotilla` binary shares with the e2e suite: the whole system
//! on embedded (or real) API servers ([`stack`]), the readiness simulation
//! of the embedded downstream servers ([`simulate`]), the demo repository
//! ([`demo`]) and its chart repository ([`demo_charts`]), and the per-cluster status table ([`status`]).

#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod demo;
pub mod demo_charts;
pub mod plan;
pub mod simulate;
pub mod stack;
pub mod status;

/// A client from a kubeconfig file, else the in-cluster service account,
/// then $KUBECONFIG and ~/.kube/config.
pub async fn kube_client(path: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match path {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}
