//! A client for the cluster a kubeconfig names, reached as real clusters
//! are: over HTTPS, trusting the kubeconfig's CA, authenticating with its
//! token or client certificate (kube's rustls stack). Shared by the
//! benchmark's `--kubeconfig` mode and the test that serves the embedded
//! API server over TLS to prove that mode works.

use std::path::Path;

/// The client for `path`'s current context.
pub async fn client(path: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
    kube::Client::try_from(config)
        .map_err(|e| anyhow::anyhow!("a client for {}: {e}", path.display()))
}
