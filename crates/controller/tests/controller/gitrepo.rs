//! The GitRepo controller against the embedded API server and real git
//! repositories: local ones over file://, and one behind `git http-backend`
//! with basic auth.

use crate::support::*;
use flotilla_api::k8s_openapi::ByteString;
use flotilla_api::k8s_openapi::api::core::v1::Secret;
use flotilla_api::{Bundle, Content, GitRepo, condition, keys};
use flotilla_controller::ControllerArgs;
use flotilla_git::testing::{HttpGitServer, TempDir, TestRepo};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn cm(name: &str, v: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: \"{v}\"\n")
}

pub fn git_args(tmp: &TempDir) -> ControllerArgs {
    ControllerArgs {
        git_dir: tmp.path().join("mirrors"),
        ..args()
    }
}

pub fn gitrepo(name: &str, url: &str, spec: serde_json::Value) -> GitRepo {
    let mut s = json!({"repo": url});
    s.as_object_mut()
        .unwrap()
        .extend(spec.as_object().cloned().unwrap_or_default());
    serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "GitRepo",
        "metadata": {"name": name, "namespace": NS},
        "spec": s,
    }))
    .unwrap()
}

pub async fn bundles_of(client: &kube::Client, repo: &str) -> BTreeMap<String, Bundle> {
    let api: Api<Bundle> = Api::namespaced(client.clone(), NS);
    api.list(&kube::api::ListParams::default().labels(&format!("{}={repo}", keys::REPO_NAME)))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|b| (b.metadata.name.clone().unwrap(), b))
        .collect()
}

pub async fn get_repo(client: &kube::Client, name: &str) -> Option<GitRepo> {
    Api::<GitRepo>::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .unwrap()
}

/// The Ready condition as (status, reason, message).
pub fn ready(r: &GitRepo) -> Option<(String, String, String)> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The Synced condition (the GitRepo controller's own) as (status,
/// reason, message).
pub fn synced(r: &GitRepo) -> Option<(String, String, String)> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::SYNCED)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until `commit` compiled (Synced); Ready also needs the clusters.
pub async fn wait_ready(client: &kube::Client, name: &str, commit: &str) -> GitRepo {
    eventually(&format!("{name} synced at {commit}"), || async {
        let r = get_repo(client, name).await?;
        let s = r.status.as_ref()?;
        (s.commit.as_deref() == Some(commit) && synced(&r).is_some_and(|(st, _, _)| st == "True"))
            .then_some(r)
    })
    .await
}

/// Creates a GitRepo and waits until it is Ready at `commit`.
pub async fn deploy(client: &kube::Client, repo: GitRepo, commit: &str) -> GitRepo {
    let name = repo.metadata.name.clone().unwrap();
    create(client, &repo).await;
    wait_ready(client, &name, commit).await
}

pub async fn wait_reason(client: &kube::Client, name: &str, reason: &str) -> GitRepo {
    eventually(&format!("{name} not Ready: {reason}"), || async {
        let r = get_repo(client, name).await?;
        ready(&r)
            .is_some_and(|(st, why, _)| st == "False" && why == reason)
            .then_some(r)
    })
    .await
}

fn git_op(c: &Running, op: &str) -> f64 {
    c.metric(
        "flotilla_git_operations_total",
        Some(&format!("op=\"{op}\"")),
    )
}

#[tokio::test]
async fn commits_become_bundles_recompiling_only_what_changed() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-gitrepo-commits");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin
        .write("apps/web/fleet.yaml", "defaultNamespace: web\n")
        .write("apps/web/cm.yaml", &cm("web", "1"))
        .write("apps/api/fleet.yaml", "defaultNamespace: api\n")
        .write("apps/api/cm.yaml", &cm("api", "1"));
    let c1 = origin.commit("one").to_string();
    let c = start(&env.client, git_args(&tmp)).await;
    create(
        &env.client,
        &gitrepo(
            "shop",
            &origin.url(),
            json!({"branch": "main", "paths": ["apps"], "pollingInterval": "1s"}),
        ),
    )
    .await;

    let r = wait_ready(&env.client, "shop", &c1).await;
    assert!(
        r.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&keys::GITREPO_FINALIZER.to_owned())
    );
    assert_eq!(r.status.unwrap().observed_generation, 1);
    let b1 = bundles_of(&env.client, "shop").await;
    assert_eq!(
        b1.keys().collect::<Vec<_>>(),
        ["shop-apps-api", "shop-apps-web"]
    );
    for b in b1.values() {
        assert!(
            b.metadata
                .finalizers
                .clone()
                .unwrap_or_default()
                .contains(&keys::BUNDLE_FINALIZER.to_owned()),
            "created with the finalizer"
        );
        assert_eq!(
            b.spec.targets[0].criteria.cluster_group.as_deref(),
            Some("default"),
            "no targets: the default group"
        );
        let content: Api<Content> = Api::all(env.client.clone());
        assert!(content.get_opt(&b.spec.content_id).await.unwrap().is_some());
    }
    assert_eq!(git_op(&c, "fetch"), 1.0);
    let compiled = git_op(&c, "compiled");

    // A commit that changes only web: web (and its empty parent, whose
    // tree id moved) recompile; api is reused and not written.
    origin.write("apps/web/cm.yaml", &cm("web", "2"));
    let c2 = origin.commit("web").to_string();
    wait_ready(&env.client, "shop", &c2).await;
    let b2 = bundles_of(&env.client, "shop").await;
    assert_ne!(
        b2["shop-apps-web"].spec.content_id,
        b1["shop-apps-web"].spec.content_id
    );
    assert_eq!(
        b2["shop-apps-api"].metadata.resource_version,
        b1["shop-apps-api"].metadata.resource_version,
        "an unchanged bundle is not written"
    );
    assert_eq!(git_op(&c, "compiled") - compiled, 2.0);
    assert_eq!(
        b2["shop-apps-web"].metadata.annotations.as_ref().unwrap()[keys::COMMIT],
        c2
    );

    // A path that leaves the repository takes its Bundle with it.
    origin.remove("apps/api");
    let c3 = origin.commit("drop api").to_string();
    wait_ready(&env.client, "shop", &c3).await;
    eventually("api bundle gone", || async {
        let b = bundles_of(&env.client, "shop").await;
        (b.len() == 1 && b.contains_key("shop-apps-web")).then_some(())
    })
    .await;

    // Someone deletes a Bundle the repository still wants: it comes back.
    let api: Api<Bundle> = Api::namespaced(env.client.clone(), NS);
    api.delete("shop-apps-web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("web bundle recreated", || async {
        let b = bundles_of(&env.client, "shop")
            .await
            .remove("shop-apps-web")?;
        (b.metadata.uid != b2["shop-apps-web"].metadata.uid
            && b.metadata.deletion_timestamp.is_none())
        .then_some(())
    })
    .await;

    // Someone edits a Bundle: it is put back as the repository says.
    merge_patch::<Bundle>(
        &env.client,
        "shop-apps-web",
        json!({"spec": {"paused": true}}),
    )
    .await;
    eventually("web bundle edit reverted", || async {
        let b = bundles_of(&env.client, "shop")
            .await
            .remove("shop-apps-web")?;
        (!b.spec.paused).then_some(())
    })
    .await;

    // Deleting the GitRepo deletes its Bundles, then releases it.
    Api::<GitRepo>::namespaced(env.client.clone(), NS)
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    eventually("gitrepo and bundles gone", || async {
        (get_repo(&env.client, "shop").await.is_none()
            && bundles_of(&env.client, "shop").await.is_empty())
        .then_some(())
    })
    .await;
    c.stop().await;
}

/// Ready, its reason and message, and the STATUS column.
fn headline(r: &GitRepo) -> (String, String, String, String) {
    let (status, reason, message) = ready(r).unwrap_or_default();
    let state = r
        .status
        .as_ref()
        .map(|s| s.display.state.clone())
        .unwrap_or_default();
    (status, reason, message, state)
}

#[tokio::test]
async fn a_gitrepo_is_ready_only_when_its_bundles_targets_and_clusters_are() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-gitrepo-truth");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write("app/cm.yaml", &cm("app", "1"));
    let c1 = origin.commit("good").to_string();
    let c = start(&env.client, git_args(&tmp)).await;
    create(&env.client, &cluster("a", &[("env", "prod")])).await;
    deploy(
        &env.client,
        gitrepo(
            "shop",
            &origin.url(),
            json!({"branch": "main", "paths": ["app"], "pollingInterval": "1s",
                   "targets": [{"clusterSelector": {"matchLabels": {"env": "prod"}}}]}),
        ),
        &c1,
    )
    .await;
    // Compiled, but no agent has applied it: not Ready, and it says where.
    let (_, reason, message, state) = eventually("NotReady with words", || async {
        let h = headline(&get_repo(&env.client, "shop").await?);
        (h.0 == "False" && h.1 == "NotReady").then_some(h)
    })
    .await;
    assert_eq!(reason, "NotReady");
    assert!(message.contains("shop-app"), "{message}");
    assert_ne!(state, "Ready");

    // The agent applies it: Ready, and the column says so.
    let _agents = fake_agents(&env.client, false);
    eventually("Ready", || async {
        let h = headline(&get_repo(&env.client, "shop").await?);
        (h.0 == "True" && h.3 == "Ready").then_some(())
    })
    .await;

    // A target the user broke: the GitRepo itself is Stalled, in words,
    // and nothing deployed is lost.
    merge_patch::<GitRepo>(
        &env.client,
        "shop",
        json!({"spec": {"targets": [{"clusterSelector": {"matchExpressions": [
            {"key": "env", "operator": "Inn", "values": ["prod"]}]}}]}}),
    )
    .await;
    let r = eventually("Stalled on the bad selector", || async {
        let r = get_repo(&env.client, "shop").await?;
        (headline(&r).1 == "InvalidTargets").then_some(r)
    })
    .await;
    let (status, _, message, state) = headline(&r);
    assert_eq!(status, "False");
    assert!(
        message.starts_with("bundle shop-app: ") && message.contains("\"Inn\""),
        "{message}"
    );
    assert_eq!(state, "Stalled");
    let st = r.status.unwrap();
    assert!(condition::is_true(&st.conditions, condition::STALLED));
    assert!(!condition::is_true(&st.conditions, condition::RECONCILING));
    assert_eq!(st.display.message, message);
    // ... and `kubectl describe gitrepo` shows it as an Event, as it shows
    // the commit that compiled.
    let note = wait_event(&env.client, "shop", "InvalidTargets").await;
    assert_eq!(note, message);
    assert!(
        wait_event(&env.client, "shop", "Synced")
            .await
            .starts_with(&format!("commit {}", &c1[..7])),
    );
    assert!(
        Api::<flotilla_api::BundleDeployment>::all(env.client.clone())
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len()
            == 1,
        "the deployment stays"
    );

    // Fixed: Ready again.
    merge_patch::<GitRepo>(
        &env.client,
        "shop",
        json!({"spec": {"targets": [{"clusterSelector": {"matchLabels": {"env": "prod"}}}]}}),
    )
    .await;
    eventually("Ready again", || async {
        let h = headline(&get_repo(&env.client, "shop").await?);
        (h.0 == "True" && h.3 == "Ready").then_some(())
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn a_broken_commit_keeps_the_bundles_and_a_fix_deploys() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-gitrepo-broken");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write("app/cm.yaml", &cm("app", "1"));
    let c1 = origin.commit("good").to_string();
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

    origin.write("app/broken.yaml", "kind: [unclosed\n");
    origin.commit("broken");
    let r = wait_reason(&env.client, "shop", "CompileFailed").await;
    let (_, _, message) = ready(&r).unwrap();
    assert!(message.contains("app/broken.yaml"), "{message}");
    let note = wait_event(&env.client, "shop", "CompileFailed").await;
    assert!(note.contains("app/broken.yaml"), "{note}");
    let status = r.status.unwrap();
    assert_eq!(
        status.commit.as_deref(),
        Some(c1.as_str()),
        "status.commit stays the deployed commit"
    );
    assert!(status.display.error);
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == condition::STALLED && c.status == "True")
    );
    // The STATUS column agrees with the conditions, and MESSAGE says why.
    assert_eq!(status.display.state, "Stalled");
    assert!(
        status.display.message.contains("app/broken.yaml"),
        "{}",
        status.display.message
    );
    // Polls keep finding the same broken head: nothing is recompiled or
    // written, and the bundles are untouched.
    let writes = c.writes();
    let compiled = git_op(&c, "compiled");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(c.writes(), writes);
    assert_eq!(git_op(&c, "compiled"), compiled);
    assert_eq!(
        bundles_of(&env.client, "shop").await["shop-app"]
            .metadata
            .resource_version,
        before["shop-app"].metadata.resource_version
    );

    origin.remove("app/broken.yaml");
    origin.write("app/cm.yaml", &cm("app", "fixed"));
    let fixed = origin.commit("fixed").to_string();
    let r = wait_ready(&env.client, "shop", &fixed).await;
    assert!(!r.status.unwrap().display.error);
    assert_ne!(
        bundles_of(&env.client, "shop").await["shop-app"]
            .spec
            .content_id,
        before["shop-app"].spec.content_id
    );
    c.stop().await;
}

#[tokio::test]
async fn a_targets_edit_updates_bundles_without_touching_git() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-gitrepo-targets");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write("app/cm.yaml", &cm("app", "1"));
    let c1 = origin.commit("one").to_string();
    let c = start(&env.client, git_args(&tmp)).await;
    deploy(
        &env.client,
        gitrepo("shop", &origin.url(), json!({"branch": "main", "paths": ["app"], "disablePolling": true,
                   "targets": [{"name": "dev", "clusterSelector": {"matchLabels": {"env": "dev"}}}]})),
        &c1,
    )
    .await;
    let (lists, fetches) = (git_op(&c, "ls-remote"), git_op(&c, "fetch"));

    merge_patch::<GitRepo>(
        &env.client,
        "shop",
        json!({"spec": {"paused": true, "keepResources": true,
               "targets": [{"name": "prod", "clusterSelector": {"matchLabels": {"env": "prod"}}}]}}),
    )
    .await;
    let b = eventually("bundle follows the targets edit", || async {
        let b = bundles_of(&env.client, "shop").await.remove("shop-app")?;
        (b.spec.targets[0].name.as_deref() == Some("prod")).then_some(b)
    })
    .await;
    assert!(b.spec.paused && b.spec.options.keep_resources);
    let r = eventually("observed generation 2", || async {
        let r = get_repo(&env.client, "shop").await?;
        (r.status.as_ref()?.observed_generation == 2).then_some(r)
    })
    .await;
    assert_eq!(ready(&r).unwrap().0, "True");
    assert_eq!(git_op(&c, "ls-remote"), lists, "no ls-remote");
    assert_eq!(git_op(&c, "fetch"), fetches, "no fetch");
    c.stop().await;
}

/// A push event's body, as GitHub and Gitea send it.
fn push_body(url: &str, commit: &str) -> String {
    json!({"ref": "refs/heads/main", "after": commit, "repository": {"clone_url": url}}).to_string()
}

/// The hex HMAC-SHA256 of `body` under `secret`.
fn signature(secret: &str, body: &str) -> String {
    hex::encode(flotilla_git::webhook::hmac_sha256(
        secret.as_bytes(),
        body.as_bytes(),
    ))
}

/// POSTs a webhook; returns the HTTP status.
async fn post(addr: std::net::SocketAddr, headers: &[(&str, String)], body: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST /webhook HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    resp.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn webhooks_trigger_at_once_and_bad_signatures_trigger_nothing() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-gitrepo-webhook");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write("app/cm.yaml", &cm("app", "1"));
    let c1 = origin.commit("one").to_string();
    let secret = "webhook-secret-1";
    let c = start(
        &env.client,
        ControllerArgs {
            webhook_addr: "127.0.0.1:0".parse().unwrap(),
            webhook_secret: Some(secret.parse().unwrap()),
            ..git_args(&tmp)
        },
    )
    .await;
    let addr = *c.ctx.webhook_addr.get().expect("webhook receiver bound");
    deploy(
        &env.client,
        gitrepo(
            "shop",
            &origin.url(),
            json!({"branch": "main", "paths": ["app"], "disablePolling": true}),
        ),
        &c1,
    )
    .await;

    origin.write("app/cm.yaml", &cm("app", "2"));
    let c2 = origin.commit("two").to_string();
    let body = push_body(&origin.url(), &c2);
    let good = format!("sha256={}", signature(secret, &body));
    let bad = format!("sha256={}", signature("not-the-secret", &body));
    let event = ("X-GitHub-Event", "push".to_owned());
    assert_eq!(
        post(addr, &[event.clone(), ("X-Hub-Signature-256", bad)], &body).await,
        401
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        get_repo(&env.client, "shop")
            .await
            .unwrap()
            .status
            .unwrap()
            .commit
            .as_deref(),
        Some(c1.as_str()),
        "a bad signature triggers nothing"
    );

    let started = std::time::Instant::now();
    assert_eq!(
        post(addr, &[event, ("X-Hub-Signature-256", good)], &body).await,
        200
    );
    wait_ready(&env.client, "shop", &c2).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    c.stop().await;
}

#[tokio::test]
async fn two_gitrepos_on_one_url_fetch_once() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-gitrepo-shared");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin
        .write("a/cm.yaml", &cm("a", "1"))
        .write("b/cm.yaml", &cm("b", "1"));
    let c1 = origin.commit("one").to_string();
    let c = start(&env.client, git_args(&tmp)).await;
    for (name, path) in [("team-a", "a"), ("team-b", "b")] {
        create(
            &env.client,
            &gitrepo(
                name,
                &origin.url(),
                json!({"branch": "main", "paths": [path], "pollingInterval": "1s"}),
            ),
        )
        .await;
    }
    wait_ready(&env.client, "team-a", &c1).await;
    wait_ready(&env.client, "team-b", &c1).await;
    assert_eq!(git_op(&c, "fetch"), 1.0);

    origin.write("a/cm.yaml", &cm("a", "2"));
    let c2 = origin.commit("two").to_string();
    wait_ready(&env.client, "team-a", &c2).await;
    wait_ready(&env.client, "team-b", &c2).await;
    assert_eq!(git_op(&c, "fetch"), 2.0, "one fetch per new commit");
    c.stop().await;
}

#[tokio::test]
async fn credentials_branches_and_unreachable_repos_give_clear_conditions() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-gitrepo-auth");
    let root = tmp.path().join("srv");
    let origin = TestRepo::init(&root.join("app"), "main");
    origin.write("app/cm.yaml", &cm("app", "1"));
    let c1 = origin.commit("one").to_string();
    let server = HttpGitServer::start(&root, "bob", "hunter2");
    let c = start(&env.client, git_args(&tmp)).await;

    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    let secret = |password: &str| Secret {
        metadata: ObjectMeta {
            name: Some("git-auth".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/basic-auth".into()),
        data: Some(
            [
                ("username".to_owned(), ByteString(b"bob".to_vec())),
                (
                    "password".to_owned(),
                    ByteString(password.as_bytes().to_vec()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret("wrong-password"))
        .await
        .unwrap();
    create(
        &env.client,
        &gitrepo(
            "private",
            &server.url("app"),
            json!({"branch": "main", "paths": ["app"], "clientSecretName": "git-auth"}),
        ),
    )
    .await;
    let r = wait_reason(&env.client, "private", "AuthenticationFailed").await;
    let text = serde_json::to_string(&r.status).unwrap();
    assert!(!text.contains("wrong-password"), "{text}");
    assert!(
        text.contains(&server.url("app")),
        "names the repository: {text}"
    );

    // The fixed Secret is picked up by the retry.
    secrets
        .replace("git-auth", &PostParams::default(), &secret("hunter2"))
        .await
        .unwrap();
    wait_ready(&env.client, "private", &c1).await;

    // An unknown branch and an unreachable repository.
    create(
        &env.client,
        &gitrepo(
            "nobranch",
            &origin.url(),
            json!({"branch": "nope", "paths": ["app"]}),
        ),
    )
    .await;
    let r = wait_reason(&env.client, "nobranch", "BranchNotFound").await;
    assert!(ready(&r).unwrap().2.contains("\"nope\""));
    create(
        &env.client,
        &gitrepo(
            "gone",
            &format!("file://{}/missing", tmp.path().display()),
            json!({"paths": ["app"]}),
        ),
    )
    .await;
    wait_reason(&env.client, "gone", "RepoUnreachable").await;
    create(
        &env.client,
        &gitrepo(
            "badpoll",
            &origin.url(),
            json!({"pollingInterval": "often"}),
        ),
    )
    .await;
    wait_reason(&env.client, "badpoll", "InvalidPollingInterval").await;
    c.stop().await;
}

#[tokio::test]
async fn polls_that_find_nothing_and_restarts_write_nothing() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-gitrepo-quiet");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin
        .write("a/cm.yaml", &cm("a", "1"))
        .write("b/cm.yaml", &cm("b", "1"));
    let c1 = origin.commit("one").to_string();
    let c = start(&env.client, git_args(&tmp)).await;
    deploy(
        &env.client,
        gitrepo(
            "shop",
            &origin.url(),
            json!({"branch": "main", "paths": ["a", "b"], "pollingInterval": "1s"}),
        ),
        &c1,
    )
    .await;
    // Let the status controller settle too.
    let mut last = (c.reconciles(), c.writes());
    eventually("quiescence", || {
        let now = (c.reconciles(), c.writes());
        let idle = now == last && c.ctx.gitrepo.is_empty() && c.ctx.status.is_empty();
        last = now;
        async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            idle.then_some(())
        }
    })
    .await;

    let (reconciles, writes, polls) = (c.reconciles(), c.writes(), git_op(&c, "ls-remote"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        git_op(&c, "ls-remote") - polls >= 3.0,
        "it polled every second: {} polls",
        git_op(&c, "ls-remote") - polls
    );
    assert_eq!(
        c.reconciles() - reconciles,
        0.0,
        "no reconcile without a new commit"
    );
    assert_eq!(c.writes() - writes, 0.0, "no write without a new commit");
    c.stop().await;

    // A new controller (same mirrors) reconciles each GitRepo once and
    // writes nothing: the Bundles, Content and status are already right.
    let c = start(&env.client, git_args(&tmp)).await;
    eventually("resync reconciled the GitRepo", || async {
        (c.metric("flotilla_reconciles_total", Some("controller=\"gitrepo\"")) >= 1.0
            && c.ctx.gitrepo.is_empty())
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.metric("flotilla_api_writes_total", Some("kind=\"Bundle\""))
            + c.metric("flotilla_api_writes_total", Some("kind=\"Content\""))
            + c.metric("flotilla_api_writes_total", Some("kind=\"GitRepo\"")),
        0.0,
        "a restart rewrites nothing"
    );
    assert_eq!(git_op(&c, "fetch"), 0.0, "the mirror still has the commit");
    c.stop().await;
}

#[tokio::test]
async fn a_follower_hands_a_webhook_push_to_the_leader() {
    let env = env().await;
    let tmp = TempDir::new("flotilla-gitrepo-handoff");
    let origin = TestRepo::init(&tmp.path().join("origin"), "main");
    origin.write("app/cm.yaml", &cm("app", "1"));
    let c1 = origin.commit("one").to_string();
    // A Lease someone else holds for an hour: the follower never leads.
    let lease: flotilla_api::k8s_openapi::api::coordination::v1::Lease =
        serde_json::from_value(json!({
            "metadata": {"name": "flotilla-controller", "namespace": "flotilla-system"},
            "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600,
                     "renewTime": flotilla_api::k8s_openapi::jiff::Timestamp::now().to_string()},
        }))
        .unwrap();
    Api::<flotilla_api::k8s_openapi::api::coordination::v1::Lease>::namespaced(
        env.client.clone(),
        "flotilla-system",
    )
    .create(&PostParams::default(), &lease)
    .await
    .unwrap();
    let leader = start(&env.client, git_args(&tmp)).await;
    let secret = "handoff-secret";
    let follower = start(
        &env.client,
        ControllerArgs {
            leader_elect: true,
            identity: Some("follower".into()),
            webhook_addr: "127.0.0.1:0".parse().unwrap(),
            webhook_secret: Some(secret.parse().unwrap()),
            git_dir: tmp.path().join("follower-mirrors"),
            ..args()
        },
    )
    .await;
    assert!(!*follower.ctx_leading().borrow());
    deploy(
        &env.client,
        gitrepo(
            "shop",
            &origin.url(),
            json!({"branch": "main", "paths": ["app"], "disablePolling": true}),
        ),
        &c1,
    )
    .await;

    origin.write("app/cm.yaml", &cm("app", "2"));
    let c2 = origin.commit("two").to_string();
    let body = push_body(&origin.url(), &c2);
    let sig = signature(secret, &body);
    let addr = *follower.ctx.webhook_addr.get().unwrap();
    assert_eq!(
        post(
            addr,
            &[
                ("X-Gitea-Event", "push".to_owned()),
                ("X-Gitea-Signature", sig)
            ],
            &body
        )
        .await,
        200
    );
    let r = wait_ready(&env.client, "shop", &c2).await;
    assert_eq!(
        r.metadata.annotations.unwrap()[keys::WEBHOOK_COMMIT],
        c2,
        "the follower recorded the push"
    );
    assert_eq!(
        follower.metric("flotilla_reconciles_total", None),
        0.0,
        "the follower reconciled nothing"
    );
    follower.stop().await;
    leader.stop().await;
}
