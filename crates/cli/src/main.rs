//! The `flotilla` binary. Argument parsing and wiring live in [`cli`].

#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

mod agent;
mod cli;
mod controller;
mod crds;
mod plan;

fn main() -> std::process::ExitCode {
    cli::run()
}

/// A client from a kubeconfig file, else the in-cluster service account,
/// then $KUBECONFIG and ~/.kube/config.
async fn kube_client(path: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match path {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}
