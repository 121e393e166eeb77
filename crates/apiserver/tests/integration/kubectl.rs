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

impl Kubectl {
    /// Runs kubectl; returns (stdout, stderr), failing the test on error.
    async fn ok_with_stderr(&self, args: &[&str]) -> (String, String) {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .expect("kubectl finishes")
            .expect("kubectl runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kubectl {args:?} failed: {stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    }
}

#[tokio::test]
async fn kubectl_typed_create_commands_and_api_resources() {
    let k = start().await;
    // These send protobuf bodies.
    for args in [
        &["create", "namespace", "shop"][..],
        &[
            "create",
            "configmap",
            "cfg",
            "-n",
            "shop",
            "--from-literal=a=1",
            "--from-literal=b=two",
        ],
        &[
            "create",
            "secret",
            "generic",
            "creds",
            "-n",
            "shop",
            "--from-literal=password=s3cr3t",
        ],
        &["create", "serviceaccount", "robot", "-n", "shop"],
        &[
            "create",
            "deployment",
            "web",
            "-n",
            "shop",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=80",
        ],
        &[
            "create",
            "service",
            "clusterip",
            "web",
            "-n",
            "shop",
            "--tcp=80:8080",
        ],
    ] {
        let (out, stderr) = k.ok_with_stderr(args).await;
        assert!(out.contains("created"), "{args:?}: {out}");
        assert!(!stderr.contains("Warning"), "{args:?}: {stderr}");
    }
    let get = |what: &'static str, path: &'static str| {
        let k = &k;
        async move {
            k.ok(&["get", what, "-n", "shop", "-o", &format!("jsonpath={path}")])
                .await
        }
    };
    assert_eq!(get("cm/cfg", "{.data.a} {.data.b}").await, "1 two");
    assert_eq!(
        get("secret/creds", "{.type} {.data.password}").await,
        "Opaque czNjcjN0"
    );
    assert_eq!(get("sa/robot", "{.metadata.name}").await, "robot");
    assert_eq!(
        get(
            "deploy/web",
            "{.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.spec.strategy.type} {.spec.progressDeadlineSeconds}"
        )
        .await,
        "2 nginx:1.27 80 RollingUpdate 600"
    );
    let svc = get("svc/web", "{.spec.type} {.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.sessionAffinity} {.spec.clusterIP}").await;
    let parts: Vec<&str> = svc.split(' ').collect();
    assert_eq!(parts[..4], ["ClusterIP", "80", "8080", "None"], "{svc}");
    assert!(parts[4].starts_with("10.96."), "{svc}");
    assert_eq!(get("ns/shop", "{.status.phase}").await, "Active");

    let resources = k.ok(&["api-resources"]).await;
    for row in [
        ("deployments", "deploy", "apps/v1", "true", "Deployment"),
        ("namespaces", "ns", "v1", "false", "Namespace"),
        (
            "customresourcedefinitions",
            "crd,crds",
            "apiextensions.k8s.io/v1",
            "false",
            "CustomResourceDefinition",
        ),
    ] {
        assert!(
            resources
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == [row.0, row.1, row.2, row.3, row.4]),
            "{row:?} in {resources}"
        );
    }
}

const DEPLOY: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
    tier: front
spec:
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
        env:
        - name: A
          value: "1"
        - name: B
          value: "2"
"#;

#[tokio::test]
async fn kubectl_apply_edit_patch_describe_and_wait_on_a_deployment() {
    let k = start().await;
    let f = k.write("d.yaml", DEPLOY);
    assert!(
        k.ok(&["apply", "-f", &f])
            .await
            .contains("deployment.apps/web created")
    );
    // An update that removes a label and an env entry.
    let f = k.write(
        "d.yaml",
        &DEPLOY
            .replace("    tier: front\n", "")
            .replace("        - name: B\n          value: \"2\"\n", ""),
    );
    assert!(k.ok(&["apply", "-f", &f]).await.contains("configured"));
    let env = "{range .spec.template.spec.containers[0].env[*]}{.name}={.value} {end}";
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", &format!("jsonpath={env}")])
            .await,
        "A=1 "
    );
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.labels}"])
            .await,
        r#"{"app":"web"}"#
    );

    // Strict field validation, as kubectl asks for it.
    let bad = k.write(
        "bad.yaml",
        &DEPLOY.replace("  selector:", "  replicaz: 2\n  selector:"),
    );
    let err = k.fails(&["apply", "-f", &bad]).await;
    assert!(err.contains(r#"unknown field "spec.replicaz""#), "{err}");
    let bad = k.write(
        "bad.yaml",
        &DEPLOY.replace("  selector:", "  replicas: two\n  selector:"),
    );
    let err = k.fails(&["apply", "-f", &bad]).await;
    assert!(
        err.contains("spec.replicas") && err.contains("integer"),
        "{err}"
    );

    // Strategic merge: a new container goes first; a new env entry in a
    // patch naming only it goes first too, as on a real server.
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox"}]}}}}"#,
    ])
    .await;
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ])
        .await,
        "side web"
    );
    k.ok(&["patch", "deploy", "web", "--type=strategic", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"C","value":"3"}]}]}}}}"#]).await;
    let web_env = "{range .spec.template.spec.containers[?(@.name==\"web\")].env[*]}{.name} {end}";
    assert_eq!(
        k.ok(&["get", "deploy", "web", "-o", &format!("jsonpath={web_env}")])
            .await,
        "C A "
    );
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ])
    .await;
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.spec.minReadySeconds}"
        ])
        .await,
        "3 5"
    );

    // kubectl edit: the script appends an env entry and bumps the image;
    // kubectl sends $setElementOrder, so the new entry goes last.
    let script = k.write(
        "edit.sh",
        "#!/bin/sh\nsed -i -e 's/image: nginx:1.27/image: nginx:1.28/' -e 's/^\\(\\s*\\)- name: A$/\\1- name: A\\n\\1  value: \"one\"\\n\\1- name: D/' \"$1\"\n",
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = k
        .command(&["edit", "deploy", "web"])
        .env("KUBE_EDITOR", &script)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[?(@.name==\"web\")].image}"
        ])
        .await,
        "nginx:1.28"
    );
    let names = k
        .ok(&["get", "deploy", "web", "-o", &format!("jsonpath={web_env}")])
        .await;
    assert!(names.trim_end().ends_with('D'), "{names}");

    // label, annotate, and the table, wide and describe views.
    assert!(
        k.ok(&["label", "deploy", "web", "team=blue"])
            .await
            .contains("labeled")
    );
    assert!(
        k.ok(&["annotate", "deploy", "web", "owner=ops"])
            .await
            .contains("annotated")
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "-l",
            "team=blue",
            "-o",
            "jsonpath={.items[0].metadata.annotations.owner}"
        ])
        .await,
        "ops"
    );
    let wide = k.ok(&["get", "deploy", "-o", "wide"]).await;
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{wide}"
    );
    assert!(
        wide.contains("side,web") && wide.contains("app=web"),
        "{wide}"
    );
    let described = k.ok(&["describe", "deploy", "web"]).await;
    for want in [
        "Name:",
        "web",
        "Replicas:",
        "StrategyType:",
        "RollingUpdate",
        "Pod Template:",
        "nginx:1.28",
        "team=blue",
    ] {
        assert!(described.contains(want), "{want} in {described}");
    }

    // wait --for=condition, once the status says so.
    let waiting = k
        .command(&[
            "wait",
            "--for=condition=Available",
            "deploy/web",
            "--timeout=30s",
        ])
        .spawn()
        .unwrap();
    k.ok(&["patch", "deploy", "web", "--subresource=status", "--type=merge", "-p", r#"{"status":{"conditions":[{"type":"Available","status":"True","reason":"MinimumReplicasAvailable"}]}}"#]).await;
    let out = waiting.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
}

#[tokio::test]
async fn kubectl_delete_cascades_and_wait_for_delete() {
    let k = start().await;
    let owner_of = |owner: &str, uid: &str, name: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: {owner}\n    uid: {uid}\n"
        )
    };
    for round in ["orphan", "foreground"] {
        let owner = format!("owner-{round}");
        let child = format!("child-{round}");
        k.ok(&["create", "configmap", &owner]).await;
        let uid = k
            .ok(&["get", "cm", &owner, "-o", "jsonpath={.metadata.uid}"])
            .await;
        let f = k.write("child.yaml", &owner_of(&owner, &uid, &child));
        k.ok(&["apply", "-f", &f]).await;
        let cascade = format!("--cascade={round}");
        k.ok(&["delete", "cm", &owner, &cascade]).await;
        k.ok(&[
            "wait",
            "--for=delete",
            &format!("cm/{owner}"),
            "--timeout=30s",
        ])
        .await;
        if round == "orphan" {
            let refs = k
                .ok(&[
                    "get",
                    "cm",
                    &child,
                    "-o",
                    "jsonpath={.metadata.ownerReferences}",
                ])
                .await;
            assert_eq!(refs, "", "the orphan lost its owner reference");
        } else {
            // Foreground: the dependent went first, then the owner.
            let err = k.fails(&["get", "cm", &child]).await;
            assert!(err.contains("not found"), "{err}");
        }
    }
}

fn documented_crd() -> String {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}, {"name": "Color", "type": "string", "jsonPath": ".spec.color", "priority": 1}],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A Gadget is a thing with a size.",
                    "properties": {
                        "spec": {"type": "object", "description": "What the gadget should be.", "properties": {
                            "size": {"type": "integer", "description": "How big the gadget is, in units."},
                            "color": {"type": "string", "description": "Its color."}
                        }},
                        "status": {"type": "object", "properties": {"conditions": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}
                    }
                }}
            }]
        }
    })
    .to_string()
}

#[tokio::test]
async fn kubectl_custom_kinds_explain_describe_formats_and_events() {
    let k = start().await;
    let crd = k.write("crd.json", &documented_crd());
    k.ok(&["apply", "-f", &crd]).await;
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/gadgets.example.com",
        "--timeout=30s",
    ])
    .await;
    let g = k.write("g.yaml", "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g1\nspec:\n  size: 3\n  color: red\n");
    k.ok(&["apply", "-f", &g]).await;
    let bad = k.write(
        "bad.yaml",
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g2\nspec:\n  sizee: 3\n",
    );
    let err = k.fails(&["apply", "-f", &bad]).await;
    assert!(err.contains(r#"unknown field "spec.sizee""#), "{err}");

    let explained = k.ok(&["explain", "gadgets.spec"]).await;
    assert!(
        explained.contains("What the gadget should be."),
        "{explained}"
    );
    assert!(
        explained.contains("size") && explained.contains("How big the gadget is"),
        "{explained}"
    );

    let wide = k.ok(&["get", "gadgets", "-o", "wide"]).await;
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    // As on a real server: the CRD's columns (no implicit AGE once it
    // declares some), with priority-1 ones only in the wide view.
    assert_eq!(header, ["NAME", "SIZE", "COLOR"], "{wide}");
    let narrow = k.ok(&["get", "gadgets"]).await;
    assert_eq!(
        narrow
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAME", "SIZE"]
    );
    assert_eq!(
        k.ok(&["get", "gadget", "g1", "-o", "jsonpath={.spec.color}"])
            .await,
        "red"
    );
    assert!(
        k.ok(&["get", "gadget", "g1", "-o", "yaml"])
            .await
            .contains("size: 3")
    );
    let described = k.ok(&["describe", "gadget", "g1"]).await;
    for want in [
        "Name:",
        "g1",
        "API Version:",
        "example.com/v1",
        "Spec:",
        "Size:",
        "3",
        "Color:",
        "red",
    ] {
        assert!(described.contains(want), "{want} in {described}");
    }

    // Events, selected by the object they are about.
    for (name, about) in [("e1", "g1"), ("e2", "other")] {
        let ev = format!(
            "apiVersion: v1\nkind: Event\nmetadata:\n  name: {name}\ninvolvedObject:\n  apiVersion: example.com/v1\n  kind: Gadget\n  name: {about}\n  namespace: default\nreason: Tested\nmessage: about {about}\ntype: Normal\n"
        );
        let f = k.write("ev.yaml", &ev);
        k.ok(&["apply", "-f", &f]).await;
    }
    let events = k
        .ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=g1",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(events.trim(), "event/e1");

    // A watch printing event types.
    let mut watch = k
        .command(&[
            "get",
            "gadgets",
            "-w",
            "--output-watch-events",
            "--no-headers",
        ])
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        first.starts_with("ADDED") && first.contains("g1"),
        "{first}"
    );
    k.ok(&[
        "patch",
        "gadget",
        "g1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":4}}"#,
    ])
    .await;
    let next = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let fields: Vec<&str> = next.split_whitespace().collect();
    assert_eq!(fields[..3], ["MODIFIED", "g1", "4"], "{next}");
    watch.kill().await.unwrap();
}

#[tokio::test]
async fn the_binary_keeps_its_data_across_kill_9_and_watchers_resume() {
    let exe = env!("CARGO_BIN_EXE_flotilla-apiserver");
    let dir = std::env::temp_dir().join(format!("flotilla-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let kc = dir.join("kubeconfig");
    let spawn = || {
        let mut child = tokio::process::Command::new(exe)
            .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kc)
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        async move {
            let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let port: u16 = line.rsplit(':').next().unwrap().parse().unwrap();
            (child, port)
        }
    };
    let (mut first, _) = spawn().await;
    let k = Kubectl {
        dir: dir.clone(),
        kubeconfig: kc.clone(),
        _server: server_with_history(0),
        serving: tokio::spawn(async {}),
    };
    k.ok(&["create", "namespace", "keep"]).await;
    k.ok(&[
        "create",
        "configmap",
        "a",
        "-n",
        "keep",
        "--from-literal=k=1",
    ])
    .await;
    let seen = k
        .ok(&[
            "get",
            "cm",
            "a",
            "-n",
            "keep",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .await;
    let f = k.write("d.yaml", DEPLOY);
    k.ok(&["apply", "-n", "keep", "-f", &f]).await;
    k.ok(&[
        "create",
        "configmap",
        "b",
        "-n",
        "keep",
        "--from-literal=k=2",
    ])
    .await;
    let last: u64 = k
        .ok(&[
            "get",
            "cm",
            "b",
            "-n",
            "keep",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .await
        .parse()
        .unwrap();
    first.start_kill().unwrap();
    first.wait().await.unwrap();

    let (mut second, port) = spawn().await;
    // Everything acknowledged is there.
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "-n",
            "keep",
            "-o",
            "jsonpath={.items[*].data.k}"
        ])
        .await,
        "1 2"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "keep",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ])
        .await,
        "nginx:1.27"
    );
    // Versions keep increasing.
    k.ok(&["create", "configmap", "c", "-n", "keep"]).await;
    let next: u64 = k
        .ok(&[
            "get",
            "cm",
            "c",
            "-n",
            "keep",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .await
        .parse()
        .unwrap();
    assert!(next > last, "{next} > {last}");
    // A watcher resuming from what it saw before the crash gets what it missed.
    let client = tcp_client(([127, 0, 0, 1], port).into());
    let (code, body) = raw(
        &client,
        "GET",
        &format!(
            "/api/v1/namespaces/keep/configmaps?watch=true&resourceVersion={seen}&timeoutSeconds=1"
        ),
        &[],
        vec![],
    )
    .await;
    assert_eq!(code, 200);
    let text = body
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    let names: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap_or(""),
                e["object"]["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(names, ["ADDED b", "ADDED c"], "{text}");
    second.start_kill().unwrap();
    let _ = second.wait().await;
}
