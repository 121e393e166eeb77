//! `flotilla dev`: the whole system on this machine, no cluster needed.
//! An embedded management API server and N downstream ones on 127.0.0.1,
//! registered as Clusters; the controllers with their in-process agents;
//! a demo repository the user edits and commits to; simulated workload
//! readiness; progress printed as it happens. Ctrl-C stops it all.

use clap::parser::ValueSource;
use flotilla::stack::{
    Stack, StackConfig, create_if_missing, default_clusters, embedded_endpoints,
};
use flotilla_api::{BundleDeployment, GitRepo, GitRepoSpec, HelmOp, keys};
use flotilla_controller::ControllerArgs;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The namespace of the demo's Clusters, ClusterGroup and GitRepo.
const WORKSPACE: &str = "fleet-default";
const GITREPO: &str = "demo";
const HELMOP: &str = "guestbook";

fn parse_clusters(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of clusters"))?;
    if !(1..=50).contains(&n) {
        return Err(format!("{n} is not in 1..=50"));
    }
    Ok(n)
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep everything here across restarts: the API servers' data, the
    /// kubeconfigs, the demo repository and the git mirrors. Without it a
    /// temporary directory is used and removed at exit.
    #[arg(long, env = "FLOTILLA_DEV_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How many downstream clusters to run (1..=50): dev-1, staging-1,
    /// prod-1, dev-2, ...
    #[arg(long, env = "FLOTILLA_DEV_CLUSTERS", default_value = "3", value_parser = parse_clusters, value_name = "N")]
    clusters: usize,
    /// How long a simulated rollout takes before a Deployment, StatefulSet
    /// or DaemonSet reports ready.
    #[arg(long, env = "FLOTILLA_DEV_ROLLOUT_TIME", default_value = "2s", value_parser = flotilla_controller::config::parse_duration, value_name = "DURATION")]
    rollout_time: Duration,
    /// Log filter for the components (stderr). Progress goes to stdout.
    #[arg(
        long,
        env = "FLOTILLA_LOG",
        default_value = "warn",
        value_name = "FILTER"
    )]
    log: String,
    /// The controllers' settings, as for `flotilla controller`. In dev mode
    /// leader election is off, metrics listen on a free loopback port and
    /// the git mirrors live in the data directory, unless set.
    #[command(flatten)]
    controller: ControllerArgs,
}

pub fn run(mut args: Args, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .with_writer(std::io::stderr)
        .init();
    let defaulted = |id: &str| matches.value_source(id) == Some(ValueSource::DefaultValue);
    let (state_dir, durable) = match &args.data_dir {
        Some(dir) => (dir.clone(), true),
        None => (
            std::env::temp_dir().join(format!("flotilla-dev-{}", std::process::id())),
            false,
        ),
    };
    std::fs::create_dir_all(&state_dir)?;
    let state_dir = state_dir.canonicalize()?;
    if defaulted("leader_elect") {
        args.controller.leader_elect = false;
    }
    if defaulted("http_addr") {
        args.controller.http_addr = "127.0.0.1:0".parse()?;
    }
    if defaulted("git_dir") {
        args.controller.git_dir = state_dir.join("git-mirrors");
    }
    // The demo repository is local; everything listens on loopback only.
    if defaulted("allow_file_repos") {
        args.controller.allow_file_repos = true;
    }
    if defaulted("webhook_addr") {
        args.controller.webhook_addr = "127.0.0.1:8081".parse()?;
    }
    args.controller.validate().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(dev(args, state_dir.clone(), durable));
    if !durable {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    result
}

async fn dev(args: Args, state_dir: PathBuf, durable: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "flotilla dev: state in {} ({})",
        state_dir.display(),
        if durable {
            "kept across restarts"
        } else {
            "temporary, removed at exit; --data-dir keeps it"
        }
    );
    let defs = default_clusters(args.clusters);
    let (management, downstream) = embedded_endpoints(&state_dir, durable, &defs).await?;
    println!("started the management API server at {}", management.url);
    for (def, e) in defs.iter().zip(&downstream) {
        let labels: Vec<String> = def.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "started cluster {:<10} at {}  ({})",
            def.name,
            e.url,
            labels.join(", ")
        );
    }
    let kubeconfigs = state_dir.join("kubeconfigs");
    println!("kubeconfigs are in {}", kubeconfigs.display());

    let mut stack = Stack::new(
        StackConfig {
            workspace: WORKSPACE.to_owned(),
            controller: args.controller.clone(),
            simulate: Some(args.rollout_time),
        },
        management,
        defs.into_iter().zip(downstream).collect(),
    );
    stack.register().await?;
    println!(
        "registered {} Clusters and the ClusterGroup `default` in {WORKSPACE}",
        stack.clusters.len()
    );

    let charts_url = flotilla::demo_charts::serve(&state_dir).await?;
    println!(
        "demo chart repository at {charts_url} (guestbook {})",
        flotilla::demo_charts::VERSIONS.join(", ")
    );
    if flotilla_bundle::tools::find_on_path("helm").is_none() {
        println!(
            "note: no `helm` on PATH: the agents render charts with `helm template`, so the guestbook bundles will report RenderFailed until one is (see the README)"
        );
    }
    let repo_dir = state_dir.join("demo-repo");
    let created = flotilla::demo::init(&repo_dir, &charts_url)?;
    println!(
        "demo repository: {} ({})",
        repo_dir.display(),
        if created {
            "created from testdata/demo"
        } else {
            "kept as you left it"
        }
    );
    let mut gitrepo = GitRepo::new(
        GITREPO,
        GitRepoSpec {
            repo: format!("file://{}", repo_dir.display()),
            branch: Some(flotilla::demo::BRANCH.to_owned()),
            polling_interval: Some("2s".to_owned()),
            ..Default::default()
        },
    );
    gitrepo.metadata.namespace = Some(WORKSPACE.to_owned());
    let repos: Api<GitRepo> = Api::namespaced(stack.client().clone(), WORKSPACE);
    create_if_missing(&repos, &gitrepo).await?;
    // The same chart without Git; its source follows the demo chart
    // repository wherever it is served.
    let helmop: HelmOp = serde_json::from_value(serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "HelmOp",
        "metadata": {"name": HELMOP, "namespace": WORKSPACE},
        "spec": {
            "helm": {"repo": charts_url, "chart": "guestbook", "version": "0.1.x",
                     "releaseName": "guestbook", "values": {"replicas": 1}},
            "defaultNamespace": "guestbook-helmop",
            "pollingInterval": "30s",
        },
    }))?;
    let helmops: Api<HelmOp> = Api::namespaced(stack.client().clone(), WORKSPACE);
    if !create_if_missing(&helmops, &helmop).await? {
        helmops
            .patch(
                HELMOP,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    serde_json::json!({"spec": {"helm": {"repo": charts_url}}}),
                ),
            )
            .await?;
    }
    println!("created the GitRepo {GITREPO} and the HelmOp {HELMOP} in {WORKSPACE}");

    stack.start_simulation();
    stack.start_controller().await?;
    println!(
        "controllers and {} in-process agents running; metrics at http://{}/metrics",
        stack.clusters.len(),
        stack
            .metrics_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "?".into())
    );
    println!(
        "workload readiness on the embedded clusters is simulated ({} per rollout)",
        seconds(args.rollout_time)
    );
    print_next_steps(&kubeconfigs, &repo_dir);

    let progress = tokio::spawn(progress(stack.client().clone(), started));
    wait_for_signal().await;
    println!("\nshutting down");
    progress.abort();
    stack.shutdown().await?;
    println!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn print_next_steps(kubeconfigs: &std::path::Path, repo: &std::path::Path) {
    let mgmt = kubeconfigs.join("management.kubeconfig");
    println!(
        r#"
Try, in another terminal:

  export KUBECONFIG={mgmt}
  kubectl get gitrepos,helmops,bundles -A
  kubectl get bundledeployments -A
  cargo run -p flotilla -- status gitrepo {GITREPO}

  # Deploy to production clusters only: the others are cleaned up at once.
  kubectl -n {WORKSPACE} patch gitrepo {GITREPO} --type merge \
    -p '{{"spec":{{"targets":[{{"clusterSelector":{{"matchLabels":{{"env":"prod"}}}}}}]}}}}'
  kubectl -n {WORKSPACE} edit gitrepo {GITREPO}
  kubectl -n {WORKSPACE} label cluster dev-1 env=prod --overwrite

  # Change what is deployed: edit, commit, watch the clusters follow.
  cd {repo}
  sed -i 's/replicas: 1/replicas: 2/' web/deployment.yaml
  git commit -am "two web replicas"

  # What a cluster received:
  kubectl --kubeconfig {down} get all,configmaps -n demo

Progress:"#,
        mgmt = mgmt.display(),
        repo = repo.display(),
        down = kubeconfigs.join("dev-1.kubeconfig").display(),
    );
}

/// Prints each change of a GitRepo's commit or health and of each
/// (cluster, bundle) state.
async fn progress(client: kube::Client, started: Instant) {
    let stamp = || format!("[{:>6.1}s]", started.elapsed().as_secs_f64());
    let bds: Api<BundleDeployment> = Api::all(client.clone());
    let repos: Api<GitRepo> = Api::all(client.clone());
    let helmops: Api<HelmOp> = Api::all(client);
    let bd_events = watcher(bds, watcher::Config::default())
        .default_backoff()
        .map(|r| Either::Bd(Box::new(r)));
    let repo_events = watcher(repos, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .map(|r| Either::Repo(Box::new(r)));
    let op_events = watcher(helmops, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .map(|r| Either::HelmOp(Box::new(r)));
    let mut events =
        futures::stream::select_all([bd_events.boxed(), repo_events.boxed(), op_events.boxed()]);
    let mut op_seen: HashMap<String, String> = HashMap::new();
    let mut states: HashMap<(String, String), String> = HashMap::new();
    let mut repo_seen: HashMap<String, (String, String, Vec<String>)> = HashMap::new();
    while let Some(ev) = events.next().await {
        match ev {
            Either::Bd(r) if r.is_ok() => {
                let Ok(ev) = *r else { continue };
                let (bd, gone) = match ev {
                    watcher::Event::Apply(bd) | watcher::Event::InitApply(bd) => (bd, false),
                    watcher::Event::Delete(bd) => (bd, true),
                    watcher::Event::Init | watcher::Event::InitDone => continue,
                };
                let labels = bd.metadata.labels.clone().unwrap_or_default();
                let key = (
                    labels.get(keys::CLUSTER_NAME).cloned().unwrap_or_default(),
                    labels.get(keys::BUNDLE_NAME).cloned().unwrap_or_default(),
                );
                let now = if gone {
                    "gone, its objects pruned downstream".to_owned()
                } else if bd.metadata.deletion_timestamp.is_some() {
                    "removing: the agent prunes downstream".to_owned()
                } else {
                    let state = bd.state();
                    let msg = bd.state_message();
                    if state == flotilla_api::BundleState::Ready || msg.is_empty() {
                        state.as_str().to_owned()
                    } else {
                        format!("{} ({msg})", state.as_str())
                    }
                };
                if states.get(&key) != Some(&now) {
                    println!(
                        "{} cluster {:<10} bundle {:<18} {now}",
                        stamp(),
                        key.0,
                        key.1
                    );
                    if gone {
                        states.remove(&key);
                    } else {
                        states.insert(key, now);
                    }
                }
            }
            Either::Repo(r) if r.is_ok() => {
                let Ok(repo) = *r else { continue };
                let s = flotilla::status::summarize(&repo);
                let name = format!("{}/{}", s.namespace, s.name);
                let seen = (
                    s.commit.clone(),
                    s.ready_clusters.clone(),
                    s.problems.clone(),
                );
                if repo_seen.get(&name) != Some(&seen) {
                    let commit = &s.commit[..s.commit.len().min(12)];
                    if !commit.is_empty() {
                        println!(
                            "{} gitrepo {name}: commit {commit}, clusters ready {}",
                            stamp(),
                            s.ready_clusters
                        );
                    }
                    for p in &s.problems {
                        println!("{} gitrepo {name}: {p}", stamp());
                    }
                    repo_seen.insert(name, seen);
                }
            }
            Either::HelmOp(r) if r.is_ok() => {
                let Ok(op) = *r else { continue };
                let name = format!(
                    "{}/{}",
                    op.metadata.namespace.as_deref().unwrap_or_default(),
                    op.metadata.name.as_deref().unwrap_or_default()
                );
                let st = op.status.clone().unwrap_or_default();
                let reason = st
                    .conditions
                    .iter()
                    .find(|c| c.type_ == flotilla_api::condition::READY)
                    .map(|c| c.reason.clone())
                    .unwrap_or_default();
                let line = if st.display.error {
                    format!("{reason}: {}", st.display.message)
                } else if st.version.is_empty() {
                    continue;
                } else {
                    format!(
                        "chart {} {}, clusters ready {}",
                        op.spec
                            .bundle
                            .options
                            .helm
                            .as_ref()
                            .and_then(|h| h.chart.clone())
                            .unwrap_or_default(),
                        st.version,
                        st.display.ready_clusters
                    )
                };
                if op_seen.get(&name) != Some(&line) {
                    println!("{} helmop {name}: {line}", stamp());
                    op_seen.insert(name, line);
                }
            }
            Either::Bd(_) | Either::Repo(_) | Either::HelmOp(_) => {}
        }
    }
}

enum Either {
    Bd(Box<Result<watcher::Event<BundleDeployment>, watcher::Error>>),
    Repo(Box<Result<GitRepo, watcher::Error>>),
    HelmOp(Box<Result<HelmOp, watcher::Error>>),
}
