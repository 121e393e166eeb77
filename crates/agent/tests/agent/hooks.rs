//! Helm hooks, run by the agent as Helm runs them on install and upgrade
//! (`helm template` emits them as plain objects): pre hooks first and
//! waited for, post hooks once the rest is Ready, delete policies and
//! weights honoured, test hooks never applied, `keep` objects never pruned.

use crate::support::*;
use flotilla_api::BundleDeploymentOptions;
use kube::api::{Patch, PatchParams};
use serde_json::json;

fn job(name: &str, ns: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations:\n{annotations}spec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: busybox:1.36\n"
    )
}

fn annotated_cm(name: &str, ns: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations:\n{annotations}data: {{}}\n"
    )
}

/// Marks a Job finished, as the Job controller would.
async fn finish_job(down: &kube::Client, ns: &str, name: &str, condition: &str) {
    let status = json!({"status": {"conditions": [{
        "type": condition, "status": "True", "reason": "Test",
        "message": format!("the test says {condition}"),
    }], "succeeded": i32::from(condition == "Complete")}});
    api(down, "batch/v1", "Job", Some(ns))
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn exists(down: &kube::Client, api_version: &str, kind: &str, ns: &str, name: &str) -> bool {
    get(down, api_version, kind, Some(ns), name).await.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_order_are_waited_for_and_cleaned_up_by_policy() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;
    let ns = "hooks";
    let bundle = |value: &str, with_keep: bool| {
        let mut list = vec![
            ("cm.yaml", configmap("settings", ns, value)),
            ("deploy.yaml", deployment("web", ns)),
            (
                "migrate.yaml",
                job(
                    "migrate",
                    ns,
                    &[
                        ("helm.sh/hook", "pre-install,pre-upgrade"),
                        ("helm.sh/hook-weight", "-5"),
                        ("helm.sh/hook-delete-policy", "hook-succeeded"),
                    ],
                ),
            ),
            (
                "after-migrate.yaml",
                annotated_cm("after-migrate", ns, &[("helm.sh/hook", "pre-install")]),
            ),
            // What the Job needs, made first and deleted only once every
            // pre-install hook succeeded (as Helm does).
            (
                "migrate-account.yaml",
                format!(
                    "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: migrate\n  namespace: {ns}\n  annotations:\n    helm.sh/hook: pre-install\n    helm.sh/hook-weight: \"-10\"\n    helm.sh/hook-delete-policy: hook-succeeded\n"
                ),
            ),
            (
                "notify.yaml",
                job("notify", ns, &[("helm.sh/hook", "post-install")]),
            ),
            ("smoke.yaml", job("smoke", ns, &[("helm.sh/hook", "test")])),
        ];
        if with_keep {
            list.push((
                "keep.yaml",
                annotated_cm("precious", ns, &[("helm.sh/resource-policy", "keep")]),
            ));
        }
        files(&list)
    };

    // Install: the weight -5 Job runs first and is waited for; nothing
    // else is applied meanwhile.
    let id = deploy(
        &mgmt,
        "app",
        &bundle("1", true),
        BundleDeploymentOptions::default(),
    )
    .await;
    eventually("the pre-install Job", || async {
        exists(&down, "batch/v1", "Job", ns, "migrate")
            .await
            .then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(
        cm_value(&down, ns, "settings").await.is_none(),
        "waits for the hook"
    );
    assert!(
        !exists(&down, "v1", "ConfigMap", ns, "after-migrate").await,
        "by weight"
    );
    assert!(
        exists(&down, "v1", "ServiceAccount", ns, "migrate").await,
        "an earlier hook-succeeded hook stays while the event's hooks run"
    );
    finish_job(&down, ns, "migrate", "Complete").await;

    // Then the next hook, then the resources; the succeeded Job is deleted.
    let bd = wait_state(&mgmt, "app", &id, "NotReady").await;
    assert!(exists(&down, "v1", "ConfigMap", ns, "after-migrate").await);
    assert_eq!(cm_value(&down, ns, "settings").await.as_deref(), Some("1"));
    eventually(
        "hook-succeeded deletes the Job and the ServiceAccount",
        || async {
            (!exists(&down, "batch/v1", "Job", ns, "migrate").await
                && !exists(&down, "v1", "ServiceAccount", ns, "migrate").await)
                .then_some(())
        },
    )
    .await;
    // Post hooks wait for Ready; test hooks never run.
    assert!(!exists(&down, "batch/v1", "Job", ns, "notify").await);
    assert!(!exists(&down, "batch/v1", "Job", ns, "smoke").await);
    let status = bd.status.unwrap();
    assert_eq!(status.non_ready_status[0].kind, "Deployment", "{status:?}");

    roll_out(&down, ns, "web").await;
    eventually("the post-install Job", || async {
        exists(&down, "batch/v1", "Job", ns, "notify")
            .await
            .then_some(())
    })
    .await;
    finish_job(&down, ns, "notify", "Complete").await;
    wait_state(&mgmt, "app", &id, "Ready").await;
    // No delete policy: before-hook-creation, so it stays until next time.
    assert!(exists(&down, "batch/v1", "Job", ns, "notify").await);
    assert!(!exists(&down, "batch/v1", "Job", ns, "smoke").await);
    // Hooks are not members: only the resources are in the inventory.
    let parent = get(&down, "v1", "ConfigMap", Some(INVENTORY_NS), "flotilla-app")
        .await
        .unwrap();
    let members = parent["data"]["members"].as_str().unwrap();
    assert!(
        !members.contains("migrate") && !members.contains("notify"),
        "{members}"
    );

    // Upgrade, dropping the `keep` ConfigMap: the pre-upgrade hook runs
    // again; post-install does not; the kept object is not pruned.
    let id2 = deploy(
        &mgmt,
        "app",
        &bundle("2", false),
        BundleDeploymentOptions::default(),
    )
    .await;
    eventually("the pre-upgrade Job", || async {
        exists(&down, "batch/v1", "Job", ns, "migrate")
            .await
            .then_some(())
    })
    .await;
    assert_eq!(cm_value(&down, ns, "settings").await.as_deref(), Some("1"));
    finish_job(&down, ns, "migrate", "Complete").await;
    roll_out(&down, ns, "web").await;
    wait_state(&mgmt, "app", &id2, "Ready").await;
    assert_eq!(cm_value(&down, ns, "settings").await.as_deref(), Some("2"));
    assert!(
        exists(&down, "v1", "ConfigMap", ns, "precious").await,
        "helm.sh/resource-policy: keep is never pruned"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pre_upgrade_hook_stops_the_upgrade_and_is_deleted_by_policy() {
    let (_m, mgmt) = management().await;
    let down_server = server();
    let down = kube::Client::new(down_server.router(), "default");
    let agent = start(&mgmt, &down, config()).await;
    let ns = "failing";
    let v1 = files(&[("cm.yaml", configmap("settings", ns, "1"))]);
    let id = deploy(&mgmt, "app", &v1, BundleDeploymentOptions::default()).await;
    wait_state(&mgmt, "app", &id, "Ready").await;

    let v2 = files(&[
        ("cm.yaml", configmap("settings", ns, "2")),
        (
            "check.yaml",
            job(
                "check",
                ns,
                &[
                    ("helm.sh/hook", "pre-upgrade"),
                    ("helm.sh/hook-delete-policy", "hook-failed"),
                ],
            ),
        ),
    ]);
    deploy(&mgmt, "app", &v2, BundleDeploymentOptions::default()).await;
    eventually("the pre-upgrade Job", || async {
        exists(&down, "batch/v1", "Job", ns, "check")
            .await
            .then_some(())
    })
    .await;
    finish_job(&down, ns, "check", "Failed").await;
    let failed = eventually("the failure on status", || async {
        let b = bd(&mgmt, "app").await?;
        b.status
            .as_ref()?
            .display
            .message
            .contains("pre-upgrade hook")
            .then_some(b)
    })
    .await;
    let message = failed.status.unwrap().display.message;
    assert!(
        message.contains("Job")
            && message.contains("check")
            && message.contains("the test says Failed"),
        "{message}"
    );
    eventually("hook-failed deletes the Job", || async {
        (!exists(&down, "batch/v1", "Job", ns, "check").await).then_some(())
    })
    .await;
    assert_eq!(
        cm_value(&down, ns, "settings").await.as_deref(),
        Some("1"),
        "nothing of the upgrade was applied"
    );
    // Not run again for this deployment, however long one waits (the
    // queue's retries would have come within this).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        !exists(&down, "batch/v1", "Job", ns, "check").await,
        "not run again"
    );
    let message = bd(&mgmt, "app")
        .await
        .unwrap()
        .status
        .unwrap()
        .display
        .message;
    assert!(message.contains("not run again"), "{message}");

    // A new deployment runs it again; this time it passes.
    let v3 = files(&[
        ("cm.yaml", configmap("settings", ns, "3")),
        (
            "check.yaml",
            job(
                "check",
                ns,
                &[
                    ("helm.sh/hook", "pre-upgrade"),
                    ("helm.sh/hook-delete-policy", "hook-failed"),
                ],
            ),
        ),
    ]);
    let id3 = deploy(&mgmt, "app", &v3, BundleDeploymentOptions::default()).await;
    eventually("the pre-upgrade Job again", || async {
        exists(&down, "batch/v1", "Job", ns, "check")
            .await
            .then_some(())
    })
    .await;
    finish_job(&down, ns, "check", "Complete").await;
    wait_state(&mgmt, "app", &id3, "Ready").await;
    assert_eq!(cm_value(&down, ns, "settings").await.as_deref(), Some("3"));

    // A hook whose object exists but is not this deployment's (left by a
    // Helm release) fails at once, naming it.
    let foreign: kube::Api<flotilla_api::k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(down.clone(), ns);
    foreign
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": "theirs"}, "data": {}})).unwrap(),
        )
        .await
        .unwrap();
    let v4 = files(&[
        ("cm.yaml", configmap("settings", ns, "4")),
        (
            "theirs.yaml",
            annotated_cm("theirs", ns, &[("helm.sh/hook", "pre-upgrade")]),
        ),
    ]);
    deploy(&mgmt, "app", &v4, BundleDeploymentOptions::default()).await;
    let message = eventually("the foreign object refused", || async {
        let m = bd(&mgmt, "app").await?.status?.display.message;
        m.contains("did not create").then_some(m)
    })
    .await;
    assert!(message.contains("theirs"), "{message}");
    agent.stop().await;
}
