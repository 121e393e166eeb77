//! `flotilla dev` as a user runs it: the binary starts, the demo reaches
//! every cluster (a Helm chart from the demo chart repository through the
//! GitRepo and through a HelmOp among it), kubectl and `flotilla status`
//! work with the printed kubeconfig, Ctrl-C stops it cleanly, and
//! `--data-dir` keeps what the user changed across a restart.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Dev {
    fn start(data_dir: &Path) -> Dev {
        // The real Helm v4 engine renders the demo's chart.
        let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/helm-shim");
        let path = std::env::join_paths(std::iter::once(shim).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .env("PATH", path)
            .args(["dev", "--data-dir"])
            .arg(data_dir)
            .args(["--rollout-time", "200ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("flotilla dev starts");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Dev {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a printed line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "flotilla dev never printed {needle:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Ctrl-C, then waits for a clean exit.
    fn interrupt(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(ok.success());
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.try_iter());
        assert!(status.success(), "exit {status}: {}", self.seen.join("\n"));
        self.seen
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("status")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn dev_runs_the_demo_stops_on_ctrl_c_and_keeps_state_in_its_data_dir() {
    let data: PathBuf =
        std::env::temp_dir().join(format!("flotilla-dev-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mgmt = data.join("kubeconfigs/management.kubeconfig");

    let mut dev = Dev::start(&data);
    dev.wait_for("registered 3 Clusters");
    dev.wait_for("demo repository:");
    dev.wait_for("kubectl get bundledeployments -A");
    dev.wait_for("gitrepo fleet-default/demo: commit");
    dev.wait_for("helmop fleet-default/guestbook: chart guestbook 0.1.1, clusters ready 3/3");
    eventually("every BundleDeployment Ready", || {
        let bds = kubectl(&mgmt, &["get", "bundledeployments", "-A", "--no-headers"]);
        bds.lines().count() == 14 && bds.lines().all(|l| l.contains(" Ready "))
    });
    // Every cluster got the demo (dev clusters no monitoring), and the
    // chart twice: from the GitRepo and from the HelmOp.
    let bds = kubectl(&mgmt, &["get", "bundledeployments", "-A", "--no-headers"]);
    assert_eq!(
        bds.lines().filter(|l| l.contains("guestbook")).count(),
        6,
        "{bds}"
    );
    let helmops = kubectl(&mgmt, &["get", "helmops", "-A"]);
    assert!(
        helmops.contains("guestbook") && helmops.contains("0.1.1") && helmops.contains("3/3"),
        "{helmops}"
    );
    let charts = kubectl(
        &mgmt,
        &[
            "-n",
            "fleet-default",
            "get",
            "bundle",
            "demo-guestbook",
            "-o",
            "jsonpath={.metadata.annotations.flotilla\\.dev/charts}",
        ],
    );
    assert!(charts.starts_with("guestbook 0.1.1 sha256:"), "{charts}");
    let frontend = kubectl(
        &data.join("kubeconfigs/prod-1.kubeconfig"),
        &[
            "-n",
            "guestbook",
            "get",
            "deployment",
            "frontend",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    );
    assert_eq!(frontend, "2", "the chart's prod customization");
    let table = status(&mgmt, &["gitrepo", "demo"]);
    assert!(table.contains("clusters ready 3/3"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&status(&mgmt, &["gitrepo", "demo", "-o", "json"])).unwrap();
    assert_eq!(json["items"].as_array().unwrap().len(), 11);
    // A downstream cluster has what it was sent, rollout simulated.
    let web = kubectl(
        &data.join("kubeconfigs/prod-1.kubeconfig"),
        &[
            "-n",
            "demo",
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ],
    );
    assert_eq!(web, "3", "prod runs 3 replicas, all available");

    // The user narrows the targets; the others are cleaned up.
    kubectl(
        &mgmt,
        &[
            "-n",
            "fleet-default",
            "patch",
            "gitrepo",
            "demo",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"targets":[{"clusterSelector":{"matchLabels":{"env":"prod"}}}]}}"#,
        ],
    );
    // The GitRepo's four bundles on prod-1 only; the HelmOp's everywhere.
    eventually("only prod-1 deployed", || {
        kubectl(&mgmt, &["get", "bundledeployments", "-A", "--no-headers"])
            .lines()
            .count()
            == 7
    });
    let printed = dev.interrupt();
    assert!(
        printed.iter().any(|l| l == "stopped cleanly"),
        "{printed:?}"
    );
    assert!(
        printed
            .iter()
            .any(|l| l.contains("gone, its objects pruned downstream"))
    );

    // Restart on the same data: the edit and the deployments are there.
    let mut dev = Dev::start(&data);
    dev.wait_for("kept as you left it");
    dev.wait_for("Progress:");
    let targets = kubectl(
        &mgmt,
        &[
            "-n",
            "fleet-default",
            "get",
            "gitrepo",
            "demo",
            "-o",
            "jsonpath={.spec.targets[0].clusterSelector.matchLabels.env}",
        ],
    );
    assert_eq!(targets, "prod");
    let bds = kubectl(&mgmt, &["get", "bundledeployments", "-A", "--no-headers"]);
    assert_eq!(bds.lines().count(), 7, "{bds}");
    dev.interrupt();
    std::fs::remove_dir_all(&data).unwrap();
}
