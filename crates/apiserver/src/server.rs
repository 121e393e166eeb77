//! Running the server: in process (a `Router` for `kube::Client::new`),
//! or over TCP with a kubeconfig for kubectl.

use crate::api::Api;
use crate::http::{HttpConfig, Shared, router};
use crate::store::{MemoryStore, Store};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Settings of a server.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub http: HttpConfig,
    /// Watch history kept for resuming (0: the store's default).
    pub history: usize,
}

/// An API server: its logic, its background controllers and its routes.
pub struct Server {
    api: Arc<Api>,
    config: HttpConfig,
    gc: tokio::task::JoinHandle<()>,
    /// Open watches, over every router of this server.
    watches: Arc<std::sync::atomic::AtomicUsize>,
    /// Watch events waiting for their clients, over every router.
    watch_buffers: Arc<tokio::sync::Semaphore>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.gc.abort();
    }
}

impl Server {
    /// A server over a fresh in-memory store. Needs a Tokio runtime.
    pub fn new(config: Config) -> Self {
        let store: Arc<dyn Store> = if config.history > 0 {
            Arc::new(MemoryStore::with_history(config.history))
        } else {
            Arc::new(MemoryStore::default())
        };
        Self::with_store(store, config.http)
    }

    /// A server whose store is durable in `dir` (created if missing): what
    /// is there is recovered first. Needs a Tokio runtime.
    pub fn durable(config: Config, dir: &Path) -> std::io::Result<Self> {
        let history = if config.history > 0 {
            config.history
        } else {
            crate::store::DEFAULT_HISTORY
        };
        let store = MemoryStore::open(dir, history, crate::wal::DEFAULT_SNAPSHOT_EVERY)?;
        Ok(Self::with_store(Arc::new(store), config.http))
    }

    pub fn with_store(store: Arc<dyn Store>, config: HttpConfig) -> Self {
        let api = Api::new(store);
        let gc = crate::gc::spawn(api.clone());
        let watch_buffers = Arc::new(tokio::sync::Semaphore::new(
            config.watch_buffer_total_bytes.max(1),
        ));
        Server {
            api,
            config,
            gc,
            watches: Default::default(),
            watch_buffers,
        }
    }

    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// The routes; `kube::Client::new(server.router(), "default")` talks
    /// to them with no socket.
    pub fn router(&self) -> axum::Router {
        router(Arc::new(Shared {
            api: self.api.clone(),
            config: self.config.clone(),
            watches: Arc::clone(&self.watches),
            watch_buffers: Arc::clone(&self.watch_buffers),
        }))
    }

    /// Serves HTTP on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Does an address need a bearer token? Only loopback is trusted.
pub fn needs_token(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// A fresh bearer token: 256 bits from the operating system's random
/// source, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A kubeconfig for kubectl pointing at `addr`, with the token if any.
pub fn kubeconfig(addr: &SocketAddr, token: Option<&str>) -> String {
    let host = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => format!("127.0.0.1:{}", addr.port()),
            SocketAddr::V6(_) => format!("[::1]:{}", addr.port()),
        }
    } else {
        addr.to_string()
    };
    let user = match token {
        Some(t) => format!("    token: {t}\n"),
        None => "    {}\n".to_owned(),
    };
    let user = if token.is_some() {
        format!("  user:\n{user}")
    } else {
        "  user: {}\n".to_owned()
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: flotilla\n  cluster:\n    server: http://{host}\ncontexts:\n- name: flotilla\n  context:\n    cluster: flotilla\n    user: flotilla\n    namespace: default\ncurrent-context: flotilla\nusers:\n- name: flotilla\n{user}preferences: {{}}\n"
    )
}

/// Writes a kubeconfig readable by its owner only (it may hold a token).
pub fn write_kubeconfig(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_goes_without_a_token() {
        assert!(!needs_token(&"127.0.0.1:1".parse().unwrap()));
        assert!(!needs_token(&"[::1]:1".parse().unwrap()));
        assert!(needs_token(&"0.0.0.0:1".parse().unwrap()));
        assert!(needs_token(&"10.1.2.3:1".parse().unwrap()));
        assert_eq!(new_token().len(), 64);
    }

    #[test]
    fn kubeconfig_names_the_server_and_the_token() {
        let k = kubeconfig(&"0.0.0.0:6443".parse().unwrap(), Some("abc"));
        assert!(k.contains("server: http://127.0.0.1:6443"), "{k}");
        assert!(k.contains("token: abc"), "{k}");
        let k = kubeconfig(&"127.0.0.1:6443".parse().unwrap(), None);
        assert!(k.contains("user: {}"), "{k}");
    }
}
