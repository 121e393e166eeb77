//! Whole-system scenarios through what users do: commit to a watched
//! repository, edit GitRepo targets and Cluster labels with kubectl, and
//! read per-cluster status with kubectl and `flotilla status`.
//!
//! Each scenario runs twice: on embedded API servers, and on real clusters
//! when FLOTILLA_E2E_MANAGEMENT_KUBECONFIG and
//! FLOTILLA_E2E_DOWNSTREAM_KUBECONFIGS name them (otherwise that run says
//! why it was skipped). See e2e/README.md.

use flotilla::status::{Selection, fetch, render};
use flotilla_api::{Bundle, BundleState, GitRepo, condition};
use flotilla_e2e::{Fixture, deployment_yaml};
use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use std::collections::BTreeSet;

macro_rules! scenario {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                let f = flotilla_e2e::Fixture::embedded(stringify!($name)).await;
                super::$name(f).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real_clusters() {
                if let Some(f) = flotilla_e2e::Fixture::real(stringify!($name)).await {
                    super::$name(f).await;
                }
            }
        }
    };
}

fn prod_only() -> serde_json::Value {
    json!([{"clusterSelector": {"matchLabels": {"env": "prod"}}}])
}

const ALL: [&str; 3] = ["dev-1", "staging-1", "prod-1"];

fn everywhere(bundle: &str) -> Vec<(&'static str, &str)> {
    let mut v: Vec<(&str, &str)> = ALL.iter().map(|c| (*c, bundle)).collect();
    v.sort();
    v
}

async fn version_on(f: &Fixture, cluster: &str, cm: &str) -> Option<String> {
    f.configmap(cluster, cm)
        .await
        .and_then(|c| c.data?.get("version").cloned())
}

scenario!(a_commit_reaches_exactly_the_matching_clusters_and_turns_ready);
async fn a_commit_reaches_exactly_the_matching_clusters_and_turns_ready(f: Fixture) {
    f.write_app("app", "1", true);
    let first = f.repo.commit("app v1");
    f.create_gitrepo("shop", prod_only()).await;
    f.wait_ready(&[("prod-1", "shop-app")]).await;
    assert_eq!(
        version_on(&f, "prod-1", "settings-app").await.as_deref(),
        Some("1")
    );
    for other in ["dev-1", "staging-1"] {
        assert!(
            f.configmap(other, "settings-app").await.is_none(),
            "{other} is not targeted"
        );
    }
    let repo = f.gitrepo("shop").await.unwrap();
    assert_eq!(repo.status.unwrap().commit, Some(first.to_string()));

    // The next commit follows.
    f.write_app("app", "2", true);
    let second = f.repo.commit("app v2");
    f.eventually("v2 on prod-1", || async {
        (version_on(&f, "prod-1", "settings-app").await.as_deref() == Some("2")).then_some(())
    })
    .await;
    f.eventually("the GitRepo at the new commit", || async {
        let st = f.gitrepo("shop").await?.status?;
        (st.commit == Some(second.to_string())).then_some(())
    })
    .await;
    f.wait_ready(&[("prod-1", "shop-app")]).await;
    for other in ["dev-1", "staging-1"] {
        assert!(f.configmap(other, "settings-app").await.is_none());
    }
    f.cleanup().await;
}

scenario!(kubectl_patch_of_targets_removes_stale_deployments_and_prunes);
async fn kubectl_patch_of_targets_removes_stale_deployments_and_prunes(f: Fixture) {
    f.write_app("app", "1", false);
    f.repo.commit("app");
    // No targets: the `default` group, every cluster.
    f.create_gitrepo("web", json!([])).await;
    f.wait_ready(&everywhere("web-app")).await;
    let kept_uid = f
        .configmap("prod-1", "settings-app")
        .await
        .unwrap()
        .metadata
        .uid;

    let patch = json!({"spec": {"targets": prod_only()}}).to_string();
    f.kubectl(&[
        "-n",
        &f.workspace,
        "patch",
        "gitrepo",
        "web",
        "--type",
        "merge",
        "-p",
        &patch,
    ])
    .await;
    f.wait_ready(&[("prod-1", "web-app")]).await;
    for gone in ["dev-1", "staging-1"] {
        f.eventually(&format!("the ConfigMap pruned on {gone}"), || async {
            f.configmap(gone, "settings-app")
                .await
                .is_none()
                .then_some(())
        })
        .await;
    }
    assert_eq!(
        f.configmap("prod-1", "settings-app")
            .await
            .unwrap()
            .metadata
            .uid,
        kept_uid,
        "the still-targeted cluster is not touched"
    );
    f.cleanup().await;
}

scenario!(kubectl_label_on_a_cluster_moves_bundles_with_it);
async fn kubectl_label_on_a_cluster_moves_bundles_with_it(f: Fixture) {
    f.write_app("app", "1", false);
    f.repo.commit("app");
    f.create_gitrepo("labels", prod_only()).await;
    f.wait_ready(&[("prod-1", "labels-app")]).await;

    f.label_cluster("dev-1", "env=prod").await;
    f.wait_ready(&[("dev-1", "labels-app"), ("prod-1", "labels-app")])
        .await;
    assert_eq!(
        version_on(&f, "dev-1", "settings-app").await.as_deref(),
        Some("1")
    );

    f.label_cluster("dev-1", "env=dev").await;
    f.wait_ready(&[("prod-1", "labels-app")]).await;
    f.eventually("the ConfigMap pruned on dev-1", || async {
        f.configmap("dev-1", "settings-app")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    f.cleanup().await;
}

scenario!(kubectl_and_flotilla_status_show_the_per_cluster_state);
async fn kubectl_and_flotilla_status_show_the_per_cluster_state(f: Fixture) {
    f.write_app("app", "1", true);
    f.repo.write(
        "stuck/fleet.yaml",
        &format!("defaultNamespace: {}\n", f.target_ns),
    );
    f.repo
        .write("stuck/deployment.yaml", &deployment_yaml("stuck", false));
    f.repo
        .commit("one healthy bundle, one that never becomes ready");
    f.create_gitrepo("state", json!([])).await;
    f.eventually("app Ready and stuck NotReady on every cluster", || async {
        let d = f.deployments().await;
        let ok = ALL.iter().all(|c| {
            let state = |b: &str| d.get(&(c.to_string(), b.to_string())).map(|bd| bd.state());
            state("state-app") == Some(BundleState::Ready)
                && state("state-stuck") == Some(BundleState::NotReady)
        });
        (ok && d.len() == 6).then_some(())
    })
    .await;

    // kubectl: one row per cluster and bundle, with the state column.
    let table = f.kubectl(&["get", "bundledeployments", "-A"]).await;
    for c in ALL {
        let row = |b: &str| {
            table
                .lines()
                .find(|l| l.contains(&format!(" {b} ")) && l.contains(&format!(" {c} ")))
                .unwrap_or_else(|| panic!("no row for {c} {b} in\n{table}"))
                .to_owned()
        };
        assert!(row("state-app").contains(" Ready "), "{table}");
        assert!(row("state-stuck").contains(" NotReady "), "{table}");
    }

    // flotilla status: non-ready first, with why.
    let sel = Selection {
        namespace: Some(f.workspace.clone()),
        gitrepo: Some("state".into()),
    };
    let report = fetch(f.client(), &sel).await.unwrap();
    let states: Vec<(&str, &str, &str)> = report
        .items
        .iter()
        .map(|r| (r.state.as_str(), r.bundle.as_str(), r.cluster.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("NotReady", "state-stuck", "dev-1"),
            ("NotReady", "state-stuck", "prod-1"),
            ("NotReady", "state-stuck", "staging-1"),
            ("Ready", "state-app", "dev-1"),
            ("Ready", "state-app", "prod-1"),
            ("Ready", "state-app", "staging-1"),
        ]
    );
    assert!(
        report.items[0].message.contains("stuck"),
        "the message names the workload: {:?}",
        report.items[0]
    );
    let text = render(&report);
    assert!(text.contains("clusters ready 0/3"), "{text}");
    // The GitRepo is not Ready, and says why above the table, once.
    let why = text.lines().nth(1).unwrap();
    assert!(
        why.starts_with("  Reconciling: state-stuck: NotReady: "),
        "{text}"
    );
    assert!(
        text.lines().nth(3).unwrap().starts_with("CLUSTER"),
        "{text}"
    );
    assert!(text.lines().nth(4).unwrap().contains("NotReady"), "{text}");
    let as_json = serde_json::to_value(&report).unwrap();
    assert_eq!(as_json["items"].as_array().unwrap().len(), 6);
    assert_eq!(as_json["items"][0]["state"], "NotReady");
    assert_eq!(as_json["gitrepo"]["name"], "state");
    f.cleanup().await;
}

scenario!(a_broken_commit_keeps_the_previous_deployment_and_says_why);
async fn a_broken_commit_keeps_the_previous_deployment_and_says_why(f: Fixture) {
    f.write_app("app", "1", false);
    let good = f.repo.commit("good");
    f.create_gitrepo("broken", json!([])).await;
    let before = f.wait_ready(&everywhere("broken-app")).await;

    f.repo.write(
        "app/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [oops\n",
    );
    f.repo.commit("broken YAML");
    let message = f
        .eventually("a condition naming the broken file", || async {
            let st = f.gitrepo("broken").await?.status?;
            let stalled = st
                .conditions
                .iter()
                .find(|c| c.type_ == condition::STALLED && c.status == "True")?;
            Some(stalled.message.clone())
        })
        .await;
    assert!(message.contains("app/settings.yaml"), "{message}");
    let repo = f.gitrepo("broken").await.unwrap();
    let status = repo.status.unwrap();
    assert_eq!(
        status.commit,
        Some(good.to_string()),
        "the deployed commit stays"
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == condition::READY && c.status == "False"),
        "{:?}",
        status.conditions
    );
    // Nothing deployed moved.
    let after = f.wait_ready(&everywhere("broken-app")).await;
    for (k, bd) in &after {
        assert_eq!(bd.spec.deployment_id, before[k].spec.deployment_id, "{k:?}");
    }
    for c in ALL {
        assert_eq!(
            version_on(&f, c, "settings-app").await.as_deref(),
            Some("1"),
            "{c}"
        );
    }
    let report = fetch(
        f.client(),
        &Selection {
            namespace: Some(f.workspace.clone()),
            gitrepo: Some("broken".into()),
        },
    )
    .await
    .unwrap();
    assert!(
        report
            .gitrepo
            .unwrap()
            .problems
            .iter()
            .any(|p| p.contains("app/settings.yaml")),
        "flotilla status explains too"
    );

    // The fix is deployed.
    f.write_app("app", "2", false);
    f.repo.commit("fixed");
    for c in ALL {
        f.eventually(&format!("v2 on {c}"), || async {
            (version_on(&f, c, "settings-app").await.as_deref() == Some("2")).then_some(())
        })
        .await;
    }
    f.eventually("the condition cleared", || async {
        let st = f.gitrepo("broken").await?.status?;
        condition::is_true(&st.conditions, condition::READY).then_some(())
    })
    .await;
    f.cleanup().await;
}

scenario!(deleting_a_gitrepo_cleans_up_everywhere);
async fn deleting_a_gitrepo_cleans_up_everywhere(f: Fixture) {
    f.write_app("app", "1", true);
    f.repo.commit("app");
    f.create_gitrepo("gone", json!([])).await;
    f.wait_ready(&everywhere("gone-app")).await;

    f.kubectl(&[
        "-n",
        &f.workspace,
        "delete",
        "gitrepo",
        "gone",
        "--wait=false",
    ])
    .await;
    f.eventually(
        "the GitRepo, its Bundles and BundleDeployments gone",
        || async {
            let bundles: Api<Bundle> = Api::namespaced(f.client().clone(), &f.workspace);
            let none = f.gitrepo("gone").await.is_none()
                && bundles
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .is_empty()
                && f.all_deployments().await.is_empty();
            none.then_some(())
        },
    )
    .await;
    for c in ALL {
        assert!(
            f.configmap(c, "settings-app").await.is_none(),
            "pruned on {c}"
        );
        let deployments: Api<flotilla_api::k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(f.downstream(c).clone(), &f.target_ns);
        assert!(
            deployments.get_opt("app").await.unwrap().is_none(),
            "pruned on {c}"
        );
        // The agent's inventory parent went with it.
        let inventory: Api<flotilla_api::k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(f.downstream(c).clone(), "flotilla-system");
        let left: Vec<String> = inventory
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|cm| cm.metadata.name)
            .filter(|n| n.contains("gone-app"))
            .collect();
        assert!(left.is_empty(), "inventory left on {c}: {left:?}");
    }
    f.cleanup().await;
}

scenario!(a_controller_restart_mid_fan_out_converges_without_duplicates);
async fn a_controller_restart_mid_fan_out_converges_without_duplicates(mut f: Fixture) {
    const BUNDLES: usize = 40;
    for i in 0..BUNDLES {
        f.write_app(&format!("b{i:02}"), "1", false);
    }
    f.repo.commit("many bundles");
    // Crash on the first BundleDeployment the watch reports.
    let bds: Api<flotilla_api::BundleDeployment> = Api::all(f.client().clone());
    let selector = format!("{}={}", flotilla_api::keys::BUNDLE_NAMESPACE, f.workspace);
    let mut first = watcher(bds, watcher::Config::default().labels(&selector))
        .applied_objects()
        .boxed();
    f.create_gitrepo("many", json!([])).await;
    tokio::time::timeout(f.patience, first.next())
        .await
        .expect("the fan-out starts")
        .expect("a watch event")
        .expect("a BundleDeployment");
    f.stack.crash_controller();
    drop(first);
    let at_crash = f.all_deployments().await.len();
    let total = BUNDLES * ALL.len();
    assert!(
        at_crash < total,
        "the crash came after the fan-out ({at_crash} of {total})"
    );
    f.stack.start_controller().await.unwrap();

    let names: Vec<String> = (0..BUNDLES).map(|i| format!("many-b{i:02}")).collect();
    let mut want: Vec<(&str, &str)> = ALL
        .iter()
        .flat_map(|c| names.iter().map(move |b| (*c, b.as_str())))
        .collect();
    want.sort();
    let ready = f.wait_ready(&want).await;
    // One BundleDeployment per (cluster, bundle), no more.
    let all = f.all_deployments().await;
    assert_eq!(all.len(), total);
    let distinct: BTreeSet<(String, String)> = all
        .iter()
        .map(|bd| {
            (
                bd.metadata.namespace.clone().unwrap(),
                bd.metadata.name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(distinct.len(), total);
    assert_eq!(ready.len(), total);
    for c in ALL {
        let cms: Api<flotilla_api::k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(f.downstream(c).clone(), &f.target_ns);
        let n = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|cm| {
                cm.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("settings-b"))
            })
            .count();
        assert_eq!(n, BUNDLES, "{c} has each bundle's ConfigMap once");
    }
    let gitrepos: Api<GitRepo> = Api::namespaced(f.client().clone(), &f.workspace);
    assert_eq!(
        gitrepos
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    f.cleanup().await;
}

scenario!(a_chart_from_a_repository_deploys_and_renders_with_its_source_gone);
async fn a_chart_from_a_repository_deploys_and_renders_with_its_source_gone(f: Fixture) {
    use flotilla_charts::testing::{ChartServer, ServerOptions, package_dir};
    let server = ChartServer::start(ServerOptions::default());
    let guestbook =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/charts/guestbook");
    for version in ["0.1.0", "0.1.1", "0.2.0"] {
        let (name, archive) = package_dir(&guestbook, version);
        server.publish(&name, version, &archive, true);
    }
    // No replicas: Ready on a real cluster too, whatever the image.
    f.repo.write(
        "guestbook/fleet.yaml",
        &format!(
            "defaultNamespace: {}\nhelm:\n  repo: {}\n  chart: guestbook\n  version: 0.1.x\n  releaseName: guestbook\n  values:\n    replicas: 0\n",
            f.target_ns,
            server.url()
        ),
    );
    f.repo.commit("guestbook from a chart repository");
    f.create_gitrepo("charts", prod_only()).await;
    f.wait_ready(&[("prod-1", "charts-guestbook")]).await;
    let settings = f.configmap("prod-1", "guestbook-settings").await.unwrap();
    assert_eq!(
        settings.data.unwrap()["chart-version"],
        "0.1.1",
        "0.1.x picks the highest 0.1 release"
    );
    let bundle: Bundle = Api::namespaced(f.client().clone(), &f.workspace)
        .get("charts-guestbook")
        .await
        .unwrap();
    let shown = &bundle.metadata.annotations.unwrap()[flotilla_charts::CHARTS_ANNOTATION];
    assert!(shown.starts_with("guestbook 0.1.1 sha256:"), "{shown}");

    // The chart repository goes away; a cluster that now matches still
    // gets the chart: it is in the bundle's Content, not fetched.
    drop(server);
    f.label_cluster("dev-1", "env=prod").await;
    f.wait_ready(&[
        ("dev-1", "charts-guestbook"),
        ("prod-1", "charts-guestbook"),
    ])
    .await;
    let settings = f.configmap("dev-1", "guestbook-settings").await.unwrap();
    assert_eq!(settings.data.unwrap()["chart-version"], "0.1.1");
    f.label_cluster("dev-1", "env=dev").await;
    f.cleanup().await;
}
