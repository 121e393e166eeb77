//! The real kubectl against the server over TCP. `.ci/test` installs
//! kubectl when it is missing; these tests fail without it.

use crate::support::*;
use flotilla_apiserver::server::{kubeconfig, write_kubeconfig};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Kubectl {
    dir: PathBuf,
    kubeconfig: PathBuf,
    _server: flotilla_apiserver::Server,
    serving: tokio::task::JoinHandle<()>,
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        self.serving.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static N: AtomicUsize = AtomicUsize::new(0);

async fn start() -> Kubectl {
    let server = server_with_history(0);
    let (addr, serving) = serve_tcp(&server).await;
    let dir = std::env::temp_dir().join(format!(
        "flotilla-kubectl-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    write_kubeconfig(&kc, &kubeconfig(&addr, None)).unwrap();
    Kubectl {
        dir,
        kubeconfig: kc,
        _server: server,
        serving,
    }
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl; returns stdout, or fails the test with stderr.
    async fn ok(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .expect("kubectl finishes")
            .expect("kubectl runs (is it installed? .ci/test installs it)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl {args:?} failed: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.command(args).output().await.unwrap();
        assert!(!out.status.success(), "kubectl {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, contents).unwrap();
        p.to_string_lossy().into_owned()
    }
}

const CM_V1: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  labels:\n    app: demo\ndata:\n  a: \"1\"\n  b: \"2\"\n";
const CM_V2: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  labels:\n    app: demo\ndata:\n  a: \"10\"\n";

#[tokio::test]
async fn kubectl_get_apply_label_patch_delete() {
    let k = start().await;
    let table = k.ok(&["get", "namespaces"]).await;
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("STATUS") && header.contains("AGE"),
        "{table}"
    );
    assert!(
        table.contains("kube-system") && table.contains("Active"),
        "{table}"
    );

    // Client-side apply: create, then an update that also removes a key.
    let f = k.write("cm.yaml", CM_V1);
    assert!(
        k.ok(&["apply", "-f", &f])
            .await
            .contains("configmap/demo created")
    );
    let f = k.write("cm.yaml", CM_V2);
    assert!(
        k.ok(&["apply", "-f", &f])
            .await
            .contains("configmap/demo configured")
    );
    let data = k
        .ok(&["get", "configmap", "demo", "-o", "jsonpath={.data}"])
        .await;
    assert_eq!(
        data, r#"{"a":"10"}"#,
        "b was removed with the last-applied configuration"
    );

    let yaml = k.ok(&["get", "configmap", "demo", "-o", "yaml"]).await;
    assert!(
        yaml.contains("kind: ConfigMap") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    let listed = k.ok(&["get", "cm"]).await;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("demo") && l.split_whitespace().nth(1) == Some("1")),
        "{listed}"
    );

    // Server-side apply: a conflict with the client-side owner, then forced.
    let ssa = k.write("ssa.yaml", &CM_V2.replace("\"10\"", "\"20\""));
    let err = k.fails(&["apply", "--server-side", "-f", &ssa]).await;
    assert!(err.contains("conflict"), "{err}");
    assert!(
        k.ok(&["apply", "--server-side", "--force-conflicts", "-f", &ssa])
            .await
            .contains("serverside-applied")
    );
    assert_eq!(
        k.ok(&["get", "cm", "demo", "-o", "jsonpath={.data.a}"])
            .await,
        "20"
    );

    assert!(
        k.ok(&["label", "cm", "demo", "tier=web"])
            .await
            .contains("labeled")
    );
    assert_eq!(
        k.ok(&["get", "cm", "-l", "tier=web", "-o", "name"])
            .await
            .trim(),
        "configmap/demo"
    );
    k.ok(&[
        "patch",
        "cm",
        "demo",
        "--type=merge",
        "-p",
        r#"{"data":{"m":"merge"}}"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "cm",
        "demo",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/j","value":"json"}]"#,
    ])
    .await;
    let data = k
        .ok(&["get", "cm", "demo", "-o", "jsonpath={.data.m} {.data.j}"])
        .await;
    assert_eq!(data, "merge json");

    assert!(k.ok(&["delete", "cm", "demo"]).await.contains("deleted"));
    let err = k.fails(&["get", "cm", "demo"]).await;
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}

#[tokio::test]
async fn kubectl_custom_resources_show_printer_columns() {
    let k = start().await;
    let crd = k.write("crd.json", &widget_crd().to_string());
    k.ok(&["apply", "-f", &crd]).await;
    let w = k.write(
        "w.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n",
    );
    k.ok(&["apply", "-f", &w]).await;
    let w2 = k.write(
        "w.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 4\n",
    );
    assert!(k.ok(&["apply", "-f", &w2]).await.contains("configured"));
    let table = k.ok(&["get", "widgets"]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "READY"], "{table}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["w1", "4"], "{table}");
    assert!(
        k.ok(&["get", "wd", "w1", "-o", "yaml"])
            .await
            .contains("size: 4")
    );
    k.ok(&["delete", "crd", "widgets.example.com"]).await;
}

#[tokio::test]
async fn kubectl_get_watch_sees_a_later_change() {
    let k = start().await;
    let f = k.write("cm.yaml", CM_V1);
    k.ok(&["apply", "-f", &f]).await;
    let mut watch = k
        .command(&[
            "get",
            "cm",
            "demo",
            "-w",
            "-o",
            "jsonpath={.data.a}{\"\\n\"}",
        ])
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_deref(), Some("1"));
    k.ok(&[
        "patch",
        "cm",
        "demo",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"changed"}}"#,
    ])
    .await;
    let next = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.as_deref(), Some("changed"));
    watch.kill().await.unwrap();
}

#[tokio::test]
async fn the_binary_serves_with_a_token_off_loopback() {
    let exe = env!("CARGO_BIN_EXE_flotilla-apiserver");
    let dir = std::env::temp_dir().join(format!("flotilla-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kc = dir.join("kubeconfig");
    let mut child = tokio::process::Command::new(exe)
        .args(["--listen", "0.0.0.0:0", "--kubeconfig"])
        .arg(&kc)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let port: u16 = line.rsplit(':').next().unwrap().parse().unwrap();
    let config = std::fs::read_to_string(&kc).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the kubeconfig holds a token");
    }
    let token = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("a token")
        .to_owned();
    let anonymous = tcp_client(([127, 0, 0, 1], port).into());
    let (code, body) = raw(&anonymous, "GET", "/api/v1/namespaces", &[], vec![]).await;
    assert_eq!((code, body["reason"].as_str()), (401, Some("Unauthorized")));
    let bearer = format!("Bearer {token}");
    let (code, _) = raw(
        &anonymous,
        "GET",
        "/api/v1/namespaces",
        &[("authorization", &bearer)],
        vec![],
    )
    .await;
    assert_eq!(code, 200);
    // A kube-rs client reads the kubeconfig and uses its token. (kubectl
    // sends credentials only over TLS, so off loopback it needs a
    // TLS-terminating proxy in front; the README says so.)
    let kubeconfig = kube::config::Kubeconfig::read_from(&kc).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let nss: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    assert!(nss.get("default").await.is_ok());
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
