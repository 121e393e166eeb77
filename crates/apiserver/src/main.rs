//! `flotilla-apiserver`: the embedded API server, standalone.

#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use flotilla_apiserver::http::HttpConfig;
use flotilla_apiserver::server::{kubeconfig, needs_token, new_token, write_kubeconfig};
use flotilla_apiserver::{Config, Server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A Kubernetes-compatible API server for development and tests. Bound
/// to loopback it needs no credentials; bound anywhere else it requires
/// the bearer token it writes into the kubeconfig.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to serve on (port 0 picks a free port).
    #[arg(
        long,
        env = "FLOTILLA_APISERVER_LISTEN",
        default_value = "127.0.0.1:6443"
    )]
    listen: SocketAddr,
    /// Where to write a kubeconfig for kubectl.
    #[arg(long, env = "FLOTILLA_APISERVER_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Watch events kept so that watchers can resume (at least 1).
    #[arg(long, env = "FLOTILLA_APISERVER_HISTORY", default_value_t = flotilla_apiserver::store::DEFAULT_HISTORY as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    history: u64,
    /// Keep the data here across restarts (an fsync'd log plus snapshots).
    /// Without it, everything is in memory and gone at exit.
    #[arg(long, env = "FLOTILLA_APISERVER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Seconds between watch bookmarks (1..=600).
    #[arg(long, env = "FLOTILLA_APISERVER_BOOKMARK_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    bookmark_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let token = needs_token(&addr).then(new_token);
    let config = Config {
        http: HttpConfig {
            token: token.clone(),
            bookmark_interval: Duration::from_secs(args.bookmark_seconds),
            ..HttpConfig::default()
        },
        history: usize::try_from(args.history)?,
    };
    let server = match &args.data_dir {
        Some(dir) => Server::durable(config, dir)
            .with_context(|| format!("opening the data directory {}", dir.display()))?,
        None => Server::new(config),
    };
    if let Some(path) = &args.kubeconfig {
        write_kubeconfig(path, &kubeconfig(&addr, token.as_deref()))
            .with_context(|| format!("writing kubeconfig {}", path.display()))?;
    }
    tracing::info!(%addr, auth = token.is_some(), kubeconfig = ?args.kubeconfig, "serving");
    // Scripts wait for this line to learn the port.
    println!("listening on http://{addr}");
    server
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
