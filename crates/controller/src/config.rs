//! The controller's settings: one flag per setting, each also read from an
//! environment variable (the Helm chart sets those), each validated with an
//! error that names the flag.

use std::net::SocketAddr;
use std::time::Duration;

/// Every worker pool accepts 1..=1024 workers.
pub const MAX_WORKERS: u16 = 1024;

/// Parses a worker count: a whole number in 1..=[`MAX_WORKERS`].
pub fn parse_workers(s: &str) -> Result<usize, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of workers"))?;
    if n == 0 || n > u64::from(MAX_WORKERS) {
        return Err(format!("{n} is not in 1..={MAX_WORKERS}"));
    }
    Ok(n as usize)
}

/// Parses `250ms`, `30s`, `10m` or `1h` (a bare number is seconds). Zero
/// is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 500ms, 30s, 10m or 1h"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use ms, s, m or h"
            ));
        }
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 30.0 * 86400.0 {
        return Err(format!("{s:?} must be above zero and at most 30 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(clap::Args, Clone, Debug)]
pub struct ControllerArgs {
    /// Workers of the GitRepo controller.
    #[arg(long, env = "FLOTILLA_GITREPO_WORKERS", default_value = "4", value_parser = parse_workers, value_name = "N")]
    pub gitrepo_workers: usize,
    /// Workers of the HelmOp controller (its chart fetches run beside
    /// them, within --git-connections).
    #[arg(long, env = "FLOTILLA_HELMOP_WORKERS", default_value = "2", value_parser = parse_workers, value_name = "N")]
    pub helmop_workers: usize,
    /// Workers of the fan-out controller (Bundles -> BundleDeployments, and
    /// the cluster namespaces).
    #[arg(long, env = "FLOTILLA_FANOUT_WORKERS", default_value = "8", value_parser = parse_workers, value_name = "N")]
    pub fanout_workers: usize,
    /// Workers of the GC controller.
    #[arg(long, env = "FLOTILLA_GC_WORKERS", default_value = "8", value_parser = parse_workers, value_name = "N")]
    pub gc_workers: usize,
    /// Workers of the status controller.
    #[arg(long, env = "FLOTILLA_STATUS_WORKERS", default_value = "4", value_parser = parse_workers, value_name = "N")]
    pub status_workers: usize,
    /// Workers of the in-process agents (one pool per downstream cluster).
    #[arg(long, env = "FLOTILLA_AGENT_WORKERS", default_value = "4", value_parser = parse_workers, value_name = "N")]
    pub agent_workers: usize,
    /// How often each in-process agent records its contact on its Cluster
    /// (`status.agent.lastSeen`): the only periodic write.
    #[arg(long, env = "FLOTILLA_AGENT_CONTACT_INTERVAL", default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub agent_contact_interval: Duration,
    /// Downstream namespace of the in-process agents' inventory parents.
    #[arg(
        long,
        env = "FLOTILLA_AGENT_INVENTORY_NAMESPACE",
        default_value = "flotilla-system",
        value_name = "NS"
    )]
    pub agent_inventory_namespace: String,
    /// The `helm` binary in-process agents render charts with (`helm
    /// template`; charts themselves come with the bundle). Default: `helm`
    /// on PATH.
    #[arg(long = "helm", env = "FLOTILLA_HELM", value_name = "FILE")]
    pub helm: Option<std::path::PathBuf>,
    /// How often the GC safety sweep looks for stale BundleDeployments it
    /// should already have deleted.
    #[arg(long, env = "FLOTILLA_GC_SWEEP_INTERVAL", default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub gc_sweep_interval: Duration,
    /// Elect a leader through a Lease; only the leader writes.
    #[arg(long, env = "FLOTILLA_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(
        long,
        env = "FLOTILLA_LEASE_NAMESPACE",
        default_value = "flotilla-system",
        value_name = "NS"
    )]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "FLOTILLA_LEASE_NAME",
        default_value = "flotilla-controller",
        value_name = "NAME"
    )]
    pub lease_name: String,
    /// How long a lease lasts without renewal before another replica may
    /// take it.
    #[arg(long, env = "FLOTILLA_LEASE_DURATION", default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down.
    #[arg(long, env = "FLOTILLA_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub lease_renew_deadline: Duration,
    /// How often replicas try to acquire or renew the lease.
    #[arg(long, env = "FLOTILLA_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub lease_retry_period: Duration,
    /// This replica's name in the lease; defaults to the pod name, else the
    /// host name and process id.
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub identity: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(
        long,
        env = "FLOTILLA_HTTP_ADDR",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR"
    )]
    pub http_addr: SocketAddr,
    /// Where the GitRepo controller keeps its shared bare mirrors (one per
    /// repository URL and credentials). An emptyDir is enough: a new
    /// replica fetches again.
    #[arg(long, env = "FLOTILLA_GIT_DIR", default_value_os_t = default_git_dir(), value_name = "DIR")]
    pub git_dir: std::path::PathBuf,
    /// The longest a single git operation (ls-remote or fetch) may take.
    #[arg(long, env = "FLOTILLA_GIT_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub git_timeout: Duration,
    /// Git network operations (polls and fetches) in flight at once. They
    /// run beside the GitRepo workers, so a server that never answers holds
    /// one of these for at most --git-timeout and delays no other GitRepo.
    #[arg(long, env = "FLOTILLA_GIT_CONNECTIONS", default_value = "64", value_parser = parse_workers, value_name = "N")]
    pub git_connections: usize,
    /// The longest compiling one commit may take; past it the commit is
    /// reported as failed and what is deployed stays.
    #[arg(long, env = "FLOTILLA_COMPILE_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub compile_timeout: Duration,
    /// How long a chart repository's index (or a registry's tag list) is
    /// reused: GitRepos compiling at once ask a repository once, and a new
    /// upstream version in a range is seen after at most this long.
    #[arg(long, env = "FLOTILLA_CHART_INDEX_TTL", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub chart_index_ttl: Duration,
    /// Allow GitRepos to read `file://` URLs and local paths. Off by
    /// default: a tenant could otherwise read any repository on the
    /// controller's host. `flotilla dev` turns it on. Even when on, the
    /// controller's own mirrors (--git-dir) stay out of reach.
    #[arg(long, env = "FLOTILLA_ALLOW_FILE_REPOS", default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub allow_file_repos: bool,
    /// Where push webhooks from GitHub, GitLab, Gitea and Gogs are received
    /// (`POST /webhook`). Served only when a webhook secret is set.
    #[arg(
        long,
        env = "FLOTILLA_WEBHOOK_ADDR",
        default_value = "0.0.0.0:8081",
        value_name = "ADDR"
    )]
    pub webhook_addr: SocketAddr,
    /// The webhooks' shared secret (GitHub/Gitea/Gogs HMAC key, GitLab
    /// token). Prefer the environment variable, from a Secret.
    #[arg(
        long,
        env = "FLOTILLA_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<WebhookSecret>,
}

fn default_git_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("flotilla-git")
}

/// The webhook secret: never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(pub String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl std::str::FromStr for WebhookSecret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() < 8 {
            return Err("a webhook secret needs at least 8 characters".into());
        }
        Ok(WebhookSecret(s.to_owned()))
    }
}

impl Default for ControllerArgs {
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: ControllerArgs,
        }
        <Wrap as clap::Parser>::parse_from(["flotilla"]).args
    }
}

impl ControllerArgs {
    /// Checks what one flag alone cannot: the lease timings together.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(h) = &self.helm
            && !h.is_file()
        {
            return Err(format!("--helm {}: no such file", h.display()));
        }
        self.leader_config("validate").validate()
    }

    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "flotilla".into());
            format!("{host}-{}", std::process::id())
        })
    }

    pub fn leader_config(&self, identity: &str) -> flotilla_leader::Config {
        flotilla_leader::Config {
            namespace: self.lease_namespace.clone(),
            name: self.lease_name.clone(),
            identity: identity.to_owned(),
            lease_duration: self.lease_duration,
            renew_deadline: self.lease_renew_deadline,
            retry_period: self.lease_retry_period,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: ControllerArgs,
    }

    fn parse(args: &[&str]) -> Result<ControllerArgs, String> {
        let mut argv = vec!["flotilla"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_documented_values() {
        let a = ControllerArgs::default();
        assert_eq!(
            (
                a.gitrepo_workers,
                a.fanout_workers,
                a.gc_workers,
                a.status_workers,
                a.agent_workers
            ),
            (4, 8, 8, 4, 4)
        );
        assert_eq!(a.gc_sweep_interval, Duration::from_secs(600));
        assert_eq!(a.lease_duration, Duration::from_secs(15));
        assert_eq!(a.git_connections, 64);
        assert_eq!(a.compile_timeout, Duration::from_secs(60));
        assert_eq!(a.chart_index_ttl, Duration::from_secs(30));
        assert!(!a.allow_file_repos, "local repositories are off by default");
        assert!(a.leader_elect);
        a.validate().unwrap();
    }

    #[test]
    fn worker_flags_accept_the_range_and_name_the_flag_when_refusing() {
        for flag in [
            "--gitrepo-workers",
            "--helmop-workers",
            "--fanout-workers",
            "--gc-workers",
            "--status-workers",
            "--agent-workers",
            "--git-connections",
        ] {
            assert!(parse(&[flag, "1"]).is_ok(), "{flag} 1");
            assert!(parse(&[flag, "1024"]).is_ok(), "{flag} 1024");
            for bad in ["0", "1025", "-3", "many", ""] {
                let arg = format!("{flag}={bad}");
                let err = parse(&[&arg]).expect_err(bad);
                assert!(err.contains(flag), "{flag} {bad:?}: {err}");
            }
        }
        assert_eq!(parse(&["--gc-workers", "17"]).unwrap().gc_workers, 17);
    }

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        let table = [
            ("250ms", Some(Duration::from_millis(250))),
            ("30s", Some(Duration::from_secs(30))),
            ("30", Some(Duration::from_secs(30))),
            ("10m", Some(Duration::from_secs(600))),
            ("1h", Some(Duration::from_secs(3600))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("0s", None),
            ("-1s", None),
            ("10d", None),
            ("soon", None),
            ("", None),
        ];
        for (input, want) in table {
            assert_eq!(parse_duration(input).ok(), want, "{input:?}");
        }
        let err = parse(&["--gc-sweep-interval", "0s"]).unwrap_err();
        assert!(err.contains("--gc-sweep-interval"), "{err}");
    }

    #[test]
    fn lease_timings_are_checked_together() {
        let mut a = parse(&["--lease-duration", "5s", "--lease-renew-deadline", "10s"]).unwrap();
        assert!(a.validate().is_err(), "renew deadline above the duration");
        a.lease_renew_deadline = Duration::from_secs(3);
        a.lease_retry_period = Duration::from_secs(1);
        a.validate().unwrap();
    }
}

/// The Helm chart sets every setting through its environment variable; these
/// tests render it with the real Helm engine (the shim `.ci/test` installs)
/// and parse the result as the binary would.
#[cfg(test)]
mod chart_tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use std::path::Path;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: ControllerArgs,
    }

    fn render(values: Option<&str>) -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(root.join("testdata/helm-shim/helm"))
            .args(["template", "flotilla"])
            .arg(root.join("charts/flotilla"))
            .args(["--namespace", "flotilla-system"]);
        let dir = std::env::temp_dir().join(format!("flotilla-chart-{}", std::process::id()));
        if let Some(v) = values {
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!("values-{}.yaml", v.len()));
            std::fs::write(&file, v).unwrap();
            cmd.arg("--values").arg(file);
        }
        let out = cmd.output().expect("python3 runs the helm shim");
        assert!(
            out.status.success(),
            "helm template failed (bash .ci/test installs helm-python-sdk): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).expect("rendered YAML");
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                let value = match (e["value"].as_str(), &e["valueFrom"]["secretKeyRef"]) {
                    (Some(v), _) => v.to_owned(),
                    // A Secret reference, as a placeholder that names it.
                    (None, r) if r.is_object() => {
                        format!("from-secret:{}/{}", r["name"].as_str()?, r["key"].as_str()?)
                    }
                    _ => return None,
                };
                Some((e["name"].as_str()?.to_owned(), value))
            })
            .collect()
    }

    /// Maps each rendered variable to its flag, as clap's `env` would.
    fn parse_env(env: &[(String, String)]) -> ControllerArgs {
        let cmd = Cli::command();
        let mut argv = vec!["flotilla".to_owned()];
        for (name, value) in env {
            if let Some(arg) = cmd
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
            {
                argv.push(format!("--{}={value}", arg.get_long().unwrap()));
            }
        }
        Cli::try_parse_from(argv)
            .expect("the chart's settings parse")
            .args
    }

    #[test]
    fn default_values_match_the_flag_defaults() {
        let args = parse_env(&render(None));
        let d = ControllerArgs::default();
        assert_eq!(
            (
                args.gitrepo_workers,
                args.fanout_workers,
                args.gc_workers,
                args.status_workers,
                args.agent_workers
            ),
            (
                d.gitrepo_workers,
                d.fanout_workers,
                d.gc_workers,
                d.status_workers,
                d.agent_workers
            )
        );
        assert_eq!(args.helmop_workers, d.helmop_workers);
        assert_eq!(args.gc_sweep_interval, d.gc_sweep_interval);
        assert_eq!(args.agent_contact_interval, d.agent_contact_interval);
        assert_eq!(args.agent_inventory_namespace, d.agent_inventory_namespace);
        assert_eq!(args.lease_duration, d.lease_duration);
        assert!(args.leader_elect);
        assert_eq!(args.git_timeout, d.git_timeout);
        assert_eq!(args.git_connections, d.git_connections);
        assert_eq!(args.compile_timeout, d.compile_timeout);
        assert_eq!(args.chart_index_ttl, d.chart_index_ttl);
        assert!(!args.allow_file_repos);
        assert_eq!(
            args.git_dir,
            Path::new("/var/cache/flotilla/git"),
            "on the emptyDir"
        );
        assert!(args.webhook_secret.is_none(), "webhooks off by default");
        args.validate().unwrap();
    }

    #[test]
    fn every_pool_interval_and_lease_setting_is_a_value() {
        let env = render(Some(
            "workers: {gitrepo: 2, helmop: 3, fanout: 64, gc: 32, status: 16, agent: 12}\n\
             gc: {sweepInterval: 90s}\n\
             agent: {contactInterval: 30s, inventoryNamespace: fleet-inventory}\n\
             leaderElection: {enabled: false, leaseDuration: 30s, renewDeadline: 20s, retryPeriod: 5s}\n\
             metrics: {port: 9090}\n\
             git: {timeout: 2m, connections: 8, compileTimeout: 90s, chartIndexTTL: 5m, allowFileRepos: true}\n\
             webhook: {port: 9443, secretName: git-hooks}\n",
        ));
        let args = parse_env(&env);
        assert_eq!(
            (
                args.gitrepo_workers,
                args.fanout_workers,
                args.gc_workers,
                args.status_workers,
                args.agent_workers
            ),
            (2, 64, 32, 16, 12)
        );
        assert_eq!(args.helmop_workers, 3);
        assert_eq!(args.gc_sweep_interval, Duration::from_secs(90));
        assert_eq!(args.agent_contact_interval, Duration::from_secs(30));
        assert_eq!(args.agent_inventory_namespace, "fleet-inventory");
        assert!(!args.leader_elect);
        assert_eq!(args.lease_duration, Duration::from_secs(30));
        assert_eq!(args.lease_renew_deadline, Duration::from_secs(20));
        assert_eq!(args.lease_retry_period, Duration::from_secs(5));
        assert_eq!(args.lease_namespace, "flotilla-system");
        assert_eq!(args.http_addr.port(), 9090);
        assert_eq!(args.git_timeout, Duration::from_secs(120));
        assert_eq!(args.git_connections, 8);
        assert_eq!(args.compile_timeout, Duration::from_secs(90));
        assert_eq!(args.chart_index_ttl, Duration::from_secs(300));
        assert!(args.allow_file_repos);
        assert_eq!(args.webhook_addr.port(), 9443);
        assert_eq!(
            args.webhook_secret.as_ref().map(|s| s.0.as_str()),
            Some("from-secret:git-hooks/token"),
            "the secret comes from a Secret, never a plain value"
        );
        args.validate().unwrap();
    }
}
