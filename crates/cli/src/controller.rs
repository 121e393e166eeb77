//! `flotilla controller`: the management-cluster controllers.

use flotilla_controller::{Controller, ControllerArgs};
use tokio::sync::watch;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig of the management cluster; defaults to the in-cluster
    /// service account, then $KUBECONFIG and ~/.kube/config.
    #[arg(long, env = "FLOTILLA_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Log filter, e.g. `info` or `flotilla_controller=debug`.
    #[arg(
        long,
        env = "FLOTILLA_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    log: String,
    #[command(flatten)]
    controller: ControllerArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .init();
    args.controller.validate().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = crate::kube_client(args.kubeconfig.as_deref()).await?;
        let controller = Controller::new(client, args.controller).map_err(anyhow::Error::msg)?;
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = stop.send(true);
        });
        controller.run(stopped).await
    })
}
