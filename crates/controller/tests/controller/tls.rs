//! The benchmark's `--kubeconfig` mode against an HTTPS cluster: the
//! embedded API server served over TLS with a test CA (made by `openssl`)
//! and a bearer token, reached through the same code the benchmark uses.

#[path = "../../benches/common/kubeconfig.rs"]
mod kubeconfig;

use base64::Engine;
use flotilla_api::k8s_openapi::api::core::v1::Namespace;
use flotilla_apiserver::http::HttpConfig;
use flotilla_git::testing::TempDir;
use kube::api::{Api, ListParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=flotilla-test-ca",
            "-days",
            "1",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "server.ext",
    ]);
}

/// TLS over a TCP listener, for `axum::serve`.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that fails the handshake is dropped, not served.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn kubeconfig_file(
    dir: &Path,
    name: &str,
    addr: std::net::SocketAddr,
    ca: &[u8],
    token: &str,
) -> std::path::PathBuf {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca}\nusers:\n- name: test\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\n"
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn the_benchmark_reaches_an_https_cluster_with_its_ca_and_token() {
    let tmp = TempDir::new("flotilla-tls");
    let dir = tmp.path();
    certificates(dir);
    let token = flotilla_apiserver::server::new_token();
    let server = flotilla_apiserver::Server::with_store(
        Arc::new(flotilla_apiserver::MemoryStore::default()),
        HttpConfig {
            token: Some(token.clone()),
            ..HttpConfig::default()
        },
    );
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = TlsListener {
        tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    let serving = tokio::spawn(axum::serve(listener, server.router()).into_future());

    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let good = kubeconfig_file(dir, "good", addr, &ca, &token);
    let client = kubeconfig::client(&good).await.expect("a client");
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .list(&ListParams::default())
        .await
        .expect("listed over HTTPS with the CA and token");

    // The wrong token is refused by the server; an untrusted CA by the
    // client, before any request is sent.
    let wrong = kubeconfig_file(dir, "wrong-token", addr, &ca, "not-the-token");
    let e = Api::<Namespace>::all(kubeconfig::client(&wrong).await.unwrap())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 401), "{e}");
    let other = TempDir::new("flotilla-tls-other");
    certificates(other.path());
    let other_ca = std::fs::read(other.path().join("ca.crt")).unwrap();
    let untrusted = kubeconfig_file(dir, "untrusted", addr, &other_ca, &token);
    assert!(
        Api::<Namespace>::all(kubeconfig::client(&untrusted).await.unwrap())
            .list(&ListParams::default())
            .await
            .is_err(),
        "a server the CA did not sign is not trusted"
    );
    serving.abort();
}
