//! Hostile tenants and hand edits: each test is named after what it
//! protects and asserts the safe outcome (refused with a message, other
//! tenants unaffected, nothing deployed lost, a condition present, the
//! controller's own objects put back).

use crate::gitrepo::{bundles_of, cm, deploy, get_repo, git_args, gitrepo, ready, wait_reason};
use crate::support::*;
use flotilla_api::k8s_openapi::api::core::v1::Secret;
use flotilla_api::{Bundle, BundleDeployment, Content, GitRepo, condition};
use flotilla_controller::ControllerArgs;
use flotilla_git::testing::{HttpGitServer, TempDir, TestRepo};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

fn message(r: &GitRepo) -> String {
    ready(r).map(|(_, _, m)| m).unwrap_or_default()
}

#[tokio::test]
async fn local_repositories_are_refused_unless_allowed_and_mirrors_never() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-hostile-file");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write("cm.yaml", &cm("a", "1"));
    origin.commit("one");
    let c = start(
        &env.client,
        ControllerArgs {
            allow_file_repos: false,
            ..git_args(&tmp)
        },
    )
    .await;
    create(
        &env.client,
        &gitrepo("local", &origin.url(), json!({"branch": "main"})),
    )
    .await;
    let r = wait_reason(&env.client, "local", "InvalidRepo").await;
    assert!(
        message(&r).contains("--allow-file-repos"),
        "{}",
        message(&r)
    );
    assert!(bundles_of(&env.client, "local").await.is_empty());
    c.stop().await;

    // Allowed, a GitRepo still cannot read another tenant's mirror.
    let c = start(&env.client, git_args(&tmp)).await;
    let mirror = format!(
        "file://{}/0123abcd.git",
        tmp.path().join("mirrors").display()
    );
    create(
        &env.client,
        &gitrepo("peek", &mirror, json!({"branch": "main"})),
    )
    .await;
    let r = wait_reason(&env.client, "peek", "InvalidRepo").await;
    assert!(message(&r).contains("mirrors"), "{}", message(&r));
    c.stop().await;
}

/// A pinned commit the shared mirror already holds is not handed to a
/// GitRepo until its credentials have been proved against the remote:
/// after the password was rotated, a new GitRepo with the old one gets
/// nothing, though the mirror (same URL, same credentials) has the commit.
#[tokio::test]
async fn a_pinned_commit_is_reauthorized_before_another_gitrepo_gets_it() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-hostile-pin");
    let root = tmp.path().join("srv");
    let origin = TestRepo::init(&root.join("private"), "main");
    origin.write("app/cm.yaml", &cm("secret", "1"));
    let c1 = origin.commit("one").to_string();
    let server = HttpGitServer::start(&root, "bob", "hunter2");
    let port = server.port;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "git-auth", "namespace": NS},
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": "bob", "password": "hunter2"},
        "data": {"username": "Ym9i", "password": "aHVudGVyMg=="}
    }))
    .unwrap();
    secrets.create(&Default::default(), &secret).await.unwrap();
    let c = start(&env.client, git_args(&tmp)).await;
    let spec = json!({"revision": c1, "paths": ["app"], "clientSecretName": "git-auth"});
    deploy(
        &env.client,
        gitrepo("owner", &server.url("private"), spec.clone()),
        &c1,
    )
    .await;

    // The password is rotated upstream; the Secret still has the old one.
    drop(server);
    let _rotated = HttpGitServer::start_on(&root, "bob", "rotated", port);
    create(
        &env.client,
        &gitrepo("late", &format!("http://127.0.0.1:{port}/private"), spec),
    )
    .await;
    let r = wait_reason(&env.client, "late", "AuthenticationFailed").await;
    assert!(bundles_of(&env.client, "late").await.is_empty());
    assert!(r.status.unwrap().commit.is_none());
    c.stop().await;
}

#[tokio::test]
async fn credentials_never_show_in_status_or_the_repo_column() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-hostile-creds");
    let c = start(&env.client, git_args(&tmp)).await;
    let url = "https://bob:hunter2@127.0.0.1:9/r.git?access_token=t0k3n";
    create(
        &env.client,
        &gitrepo("leaky", url, json!({"branch": "main"})),
    )
    .await;
    let r = eventually("a failure on leaky", || async {
        let r = get_repo(&env.client, "leaky").await?;
        ready(&r).filter(|(s, _, _)| s == "False").map(|_| r)
    })
    .await;
    let status = serde_json::to_string(&r.status).unwrap();
    for secret in ["hunter2", "t0k3n", "bob"] {
        assert!(!status.contains(secret), "{secret} in {status}");
    }
    assert_eq!(
        r.status.as_ref().unwrap().display.repo,
        "https://127.0.0.1:9/r.git?access_token=<redacted>"
    );
    // What `kubectl get gitrepo` prints.
    let req = http::Request::get(format!(
        "/apis/flotilla.dev/v1alpha1/namespaces/{NS}/gitrepos"
    ))
    .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .unwrap();
    let table: serde_json::Value = env.client.request(req).await.unwrap();
    let row = serde_json::to_string(&table["rows"][0]["cells"]).unwrap();
    assert!(
        row.contains("access_token=<redacted>") && !row.contains("hunter2"),
        "{row}"
    );
    c.stop().await;
}

/// A server that accepts connections and never answers.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_git_server_that_never_answers_delays_no_other_gitrepo() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-hostile-slow");
    let (port, _silent) = silent_server().await;
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write("cm.yaml", &cm("healthy", "1"));
    let c1 = origin.commit("one").to_string();
    let c = start(
        &env.client,
        ControllerArgs {
            gitrepo_workers: 1,
            git_timeout: Duration::from_secs(12),
            ..git_args(&tmp)
        },
    )
    .await;
    for i in 0..5 {
        create(
            &env.client,
            &gitrepo(
                &format!("slow-{i}"),
                &format!("http://127.0.0.1:{port}/r{i}.git"),
                json!({"branch": "main", "pollingInterval": "1s"}),
            ),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    deploy(
        &env.client,
        gitrepo(
            "healthy",
            &origin.url(),
            json!({"branch": "main", "pollingInterval": "1s"}),
        ),
        &c1,
    )
    .await;
    // A new commit arrives by polling while the slow ones still hang.
    origin.write("cm.yaml", &cm("healthy", "2"));
    let c2 = origin.commit("two").to_string();
    crate::gitrepo::wait_ready(&env.client, "healthy", &c2).await;
    // No slow fetch has even timed out yet: the healthy GitRepo never
    // waited behind one (with one worker, it would have waited behind all
    // five).
    for i in 0..5 {
        let r = get_repo(&env.client, &format!("slow-{i}")).await.unwrap();
        let timed_out = ready(&r).is_some_and(|(_, why, _)| why == "Timeout");
        assert!(
            !timed_out,
            "slow-{i} timed out before the healthy GitRepo converged"
        );
    }
    // Each slow one reports on its own.
    for i in 0..5 {
        let r = wait_reason(&env.client, &format!("slow-{i}"), "Timeout").await;
        let rec = r.status.unwrap().conditions;
        assert!(
            rec.iter()
                .any(|c| c.type_ == condition::RECONCILING && c.status == "True"),
            "{rec:?}"
        );
    }
    c.stop().await;
}

/// A Bundle write the API server refuses (here an invalid label value
/// from fleet.yaml) is a condition on the GitRepo naming the bundle and the
/// reason; the last good Bundle stays.
#[tokio::test]
async fn a_refused_bundle_write_is_a_condition_and_nothing_deployed_is_lost() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-hostile-write");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write("app/cm.yaml", &cm("a", "1"));
    let c1 = origin.commit("one").to_string();
    let c = start(&env.client, git_args(&tmp)).await;
    deploy(
        &env.client,
        gitrepo(
            "shop",
            &origin.url(),
            json!({"branch": "main", "paths": ["app"], "pollingInterval": "1s"}),
        ),
        &c1,
    )
    .await;
    let before = bundles_of(&env.client, "shop").await;
    origin.write(
        "app/fleet.yaml",
        "labels:\n  team: \"not a valid label value\"\n",
    );
    origin.commit("bad label");
    let r = wait_reason(&env.client, "shop", "WriteFailed").await;
    let m = message(&r);
    assert!(m.contains("bundle shop-app") && m.contains("422"), "{m}");
    assert_eq!(r.status.unwrap().commit.as_deref(), Some(c1.as_str()));
    let after = bundles_of(&env.client, "shop").await;
    assert_eq!(
        after["shop-app"].spec, before["shop-app"].spec,
        "the deployed bundle is untouched"
    );
    c.stop().await;
}

/// A BundleDeployment the API server refuses (a Bundle whose values make
/// it too large for etcd) shows on the Bundle.
#[tokio::test]
async fn a_refused_deployment_write_is_a_condition_on_the_bundle() {
    let env = env().await;
    let c = start(&env.client, args()).await;
    let _agents = fake_agents(&env.client, false);
    create(&env.client, &cluster("c1", &[("env", "dev")])).await;
    let mut b = bundle("big", "s-abc", vec![selector_target(&[("env", "dev")])]);
    b.spec.options.helm = Some(flotilla_api::HelmOptions {
        values: Some(json!({"blob": "x".repeat(900 * 1024)})),
        ..Default::default()
    });
    create(&env.client, &b).await;
    let api: Api<Bundle> = Api::namespaced(env.client.clone(), NS);
    let got = eventually("the Bundle says its deployment was refused", || async {
        let b = api.get("big").await.ok()?;
        let cond = b
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == condition::READY && c.reason == "DeploymentWriteFailed")?;
        Some(cond.message)
    })
    .await;
    assert!(got.contains("etcdserver: request is too large"), "{got}");
    c.stop().await;
}

#[tokio::test]
async fn an_unreachable_repository_after_a_good_sync_shows_and_keeps_the_deployment() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-hostile-gone");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write("cm.yaml", &cm("a", "1"));
    let c1 = origin.commit("one").to_string();
    let c = start(&env.client, git_args(&tmp)).await;
    deploy(
        &env.client,
        gitrepo(
            "shop",
            &origin.url(),
            json!({"branch": "main", "pollingInterval": "1s"}),
        ),
        &c1,
    )
    .await;
    let before = bundles_of(&env.client, "shop").await;
    let moved = tmp.path().join("moved");
    std::fs::rename(tmp.path().join("origin"), &moved).unwrap();
    let r = wait_reason(&env.client, "shop", "RepoUnreachable").await;
    assert!(
        message(&r).contains("last good commit stays"),
        "{}",
        message(&r)
    );
    assert_eq!(bundles_of(&env.client, "shop").await.len(), before.len());
    std::fs::rename(&moved, tmp.path().join("origin")).unwrap();
    crate::gitrepo::wait_ready(&env.client, "shop", &c1).await;
    c.stop().await;
}

#[tokio::test]
async fn a_hand_edited_bundledeployment_is_put_back_whole() {
    let env = env().await;
    let c = start(&env.client, args()).await;
    let _agents = fake_agents(&env.client, false);
    create(&env.client, &cluster("c1", &[("env", "dev")])).await;
    let mut b = bundle("web", "s-abc", vec![selector_target(&[("env", "dev")])]);
    b.spec.options.default_namespace = Some("web".into());
    create(&env.client, &b).await;
    wait_for_pairs(&env.client, &pairs(&[("c1", "web")])).await;
    let ns = flotilla_controller::cluster_namespace(&flotilla_controller::ObjectKey::new(NS, "c1"));
    let bds: Api<BundleDeployment> = Api::namespaced(env.client.clone(), &ns);
    let want = bds.get("web").await.unwrap().spec;
    // A hijack: another namespace, and a field the fan-out never sets.
    bds.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"options": {"defaultNamespace": "kube-system", "keepResources": true}}})),
    )
    .await
    .unwrap();
    eventually("the spec is put back", || async {
        let got = bds.get("web").await.ok()?.spec;
        (got == want).then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn a_content_deleted_by_hand_is_written_again() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-hostile-content");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write("cm.yaml", &cm("a", "1"));
    let c1 = origin.commit("one").to_string();
    let c = start(&env.client, git_args(&tmp)).await;
    deploy(
        &env.client,
        gitrepo("shop", &origin.url(), json!({"branch": "main"})),
        &c1,
    )
    .await;
    let id = bundles_of(&env.client, "shop").await["shop"]
        .spec
        .content_id
        .clone();
    let contents: Api<Content> = Api::all(env.client.clone());
    let uid = contents.get(&id).await.unwrap().metadata.uid;
    contents
        .delete(&id, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Content is back", || async {
        let c = contents.get_opt(&id).await.ok()??;
        (c.metadata.uid != uid).then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn a_gitrepo_whose_finalizer_was_removed_still_takes_its_bundles() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-hostile-finalizer");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write("cm.yaml", &cm("a", "1"));
    let c1 = origin.commit("one").to_string();
    let c = start(&env.client, git_args(&tmp)).await;
    let _agents = fake_agents(&env.client, false);
    create(&env.client, &cluster("c1", &[])).await;
    create(&env.client, &group("default", match_labels(&[]))).await;
    deploy(
        &env.client,
        gitrepo("shop", &origin.url(), json!({"branch": "main"})),
        &c1,
    )
    .await;
    wait_for_pairs(&env.client, &pairs(&[("c1", "shop")])).await;
    let b = bundles_of(&env.client, "shop").await;
    let owners = b["shop"]
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| o.kind == "GitRepo" && o.name == "shop"),
        "{owners:?}"
    );

    let repos: Api<GitRepo> = Api::namespaced(env.client.clone(), NS);
    repos
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    repos
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the orphaned Bundle and its deployment go", || async {
        let left = bundles_of(&env.client, "shop").await;
        (left.is_empty() && deployments(&env.client).await.is_empty()).then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn a_flapping_problem_cannot_flood_the_api_with_events() {
    let env = env().await;
    let ctl = start(&env.client, args()).await;
    let reference = flotilla_api::k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("flotilla.dev/v1alpha1".into()),
        kind: Some("GitRepo".into()),
        name: Some("flappy".into()),
        namespace: Some(NS.into()),
        ..Default::default()
    };
    for i in 0..50 {
        ctl.ctx
            .events
            .warning(&reference, "RepoUnreachable", &format!("attempt {i}"))
            .await;
    }
    assert_eq!(
        events_for(&env.client, "flappy").await,
        [("RepoUnreachable".to_string(), "attempt 0".to_string())]
    );
    assert_eq!(ctl.metric("flotilla_events_suppressed_total", None), 49.0);
    ctl.stop().await;
}
