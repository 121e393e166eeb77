//! The git source against real repositories: local ones over file://, and
//! one served by `git http-backend` behind basic auth.

use flotilla_bundle::{CompileInput, Limits};
use flotilla_git::testing::{HttpGitServer, TempDir, TestRepo};
use flotilla_git::{CompileCache, Credentials, GitError, Mirrors, Source, Want, compile_commit};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

const CM: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: \"{v}\"\n";

fn cm(name: &str, v: &str) -> String {
    CM.replace("{name}", name).replace("{v}", v)
}

fn mirrors(dir: &TempDir) -> Mirrors {
    Mirrors::new(dir.path().join("mirrors"), Duration::from_secs(30))
}

fn branch(b: &str) -> Want {
    Want::Branch(b.into())
}

#[tokio::test]
async fn sync_fetches_once_per_commit_and_shares_the_mirror() {
    let tmp = TempDir::new("flotilla-git-sync");
    let repo = TestRepo::init(&tmp.path().join("origin"), "main");
    repo.write("app/cm.yaml", &cm("a", "1"));
    let c1 = repo.commit("one");
    let m = mirrors(&tmp);
    let src = Source::public(repo.url());

    let refs = m.ls_remote(&src).await.unwrap();
    assert_eq!(refs.pick(&branch("main")).unwrap().0, c1);
    let s = m.sync(&src, &branch("main"), Some(&refs)).await.unwrap();
    assert_eq!((s.commit, s.fetched), (c1, true));
    // A second GitRepo on the same URL (another spelling) finds it there.
    let same = Source::public(format!("{}/", repo.url()));
    let s = m.sync(&same, &branch("main"), None).await.unwrap();
    assert_eq!((s.commit, s.fetched), (c1, false));
    assert_eq!(m.stats.fetches.load(Ordering::Relaxed), 1);

    // Concurrent syncs of a new commit: one fetch.
    repo.write("app/cm.yaml", &cm("a", "2"));
    let c2 = repo.commit("two");
    let main = branch("main");
    let (a, b) = tokio::join!(m.sync(&src, &main, None), m.sync(&same, &main, None));
    assert_eq!(a.unwrap().commit, c2);
    assert_eq!(b.unwrap().commit, c2);
    assert_eq!(
        m.stats.fetches.load(Ordering::Relaxed),
        2,
        "one fetch for c2"
    );

    // Other credentials never share a mirror.
    let data: BTreeMap<String, Vec<u8>> = [("password".to_owned(), b"team-b".to_vec())].into();
    let other = Source {
        credentials: Credentials::from_secret(None, &data).unwrap(),
        ..src.clone()
    };
    assert_ne!(m.path(&other), m.path(&src));
}

#[tokio::test]
async fn revisions_tags_and_errors() {
    let tmp = TempDir::new("flotilla-git-rev");
    let repo = TestRepo::init(&tmp.path().join("origin"), "main");
    repo.write("cm.yaml", &cm("a", "1"));
    let c1 = repo.commit("one");
    let tagged = repo.tag("v1");
    assert_eq!(tagged, c1);
    repo.write("cm.yaml", &cm("a", "2"));
    let c2 = repo.commit("two");
    let m = mirrors(&tmp);
    let src = Source::public(repo.url());

    let s = m
        .sync(&src, &Want::Revision("v1".into()), None)
        .await
        .unwrap();
    assert_eq!(s.commit, c1, "an annotated tag peels to its commit");
    let s = m
        .sync(&src, &Want::Revision(c2.to_string()), None)
        .await
        .unwrap();
    assert_eq!(s.commit, c2, "a pinned SHA");
    let fetches = m.stats.fetches.load(Ordering::Relaxed);
    let lists = m.stats.ls_remotes.load(Ordering::Relaxed);
    let s = m
        .sync(&src, &Want::Revision(c2.to_string()), None)
        .await
        .unwrap();
    assert!(!s.fetched);
    assert_eq!(m.stats.fetches.load(Ordering::Relaxed), fetches);
    assert_eq!(
        m.stats.ls_remotes.load(Ordering::Relaxed),
        lists,
        "a pinned SHA the mirror has needs no network at all"
    );

    let e = m.sync(&src, &branch("nope"), None).await.unwrap_err();
    assert!(matches!(e, GitError::BranchNotFound { .. }), "{e}");
    assert_eq!(e.reason(), "BranchNotFound");
    let e = m
        .sync(&src, &Want::Revision("v9".into()), None)
        .await
        .unwrap_err();
    assert!(matches!(e, GitError::RevisionNotFound { .. }), "{e}");
    let missing = "0123456789012345678901234567890123456789";
    let e = m
        .sync(&src, &Want::Revision(missing.into()), None)
        .await
        .unwrap_err();
    assert!(matches!(e, GitError::RevisionNotFound { .. }), "{e}");

    let gone = Source::public(format!("file://{}/nowhere", tmp.path().display()));
    let e = m.ls_remote(&gone).await.unwrap_err();
    assert_eq!(e.reason(), "RepoUnreachable", "{e}");
    let refused = Source::public("http://127.0.0.1:9/repo.git");
    let e = m.ls_remote(&refused).await.unwrap_err();
    assert_eq!(e.reason(), "RepoUnreachable", "{e}");
}

#[tokio::test]
async fn basic_auth_over_http_and_no_secret_in_errors() {
    let tmp = TempDir::new("flotilla-git-http");
    let root = tmp.path().join("srv");
    let repo = TestRepo::init(&root.join("app"), "main");
    repo.write("cm.yaml", &cm("a", "1"));
    let c1 = repo.commit("one");
    let server = HttpGitServer::start(&root, "bob", "hunter2");
    let m = mirrors(&tmp);
    let creds = |pw: &str| {
        let data: BTreeMap<String, Vec<u8>> = [
            ("username".to_owned(), b"bob".to_vec()),
            ("password".to_owned(), pw.as_bytes().to_vec()),
        ]
        .into();
        Credentials::from_secret(Some("kubernetes.io/basic-auth"), &data).unwrap()
    };
    let good = Source {
        url: server.url("app"),
        credentials: creds("hunter2"),
        ..Default::default()
    };
    let s = m.sync(&good, &branch("main"), None).await.unwrap();
    assert_eq!((s.commit, s.fetched), (c1, true));

    let bad = Source {
        credentials: creds("wrong-password"),
        ..good.clone()
    };
    let e = m.ls_remote(&bad).await.unwrap_err();
    assert_eq!(e.reason(), "AuthenticationFailed", "{e}");
    assert!(!e.to_string().contains("wrong-password"), "{e}");

    let none = Source::public(server.url("app"));
    let e = m.ls_remote(&none).await.unwrap_err();
    assert_eq!(e.reason(), "AuthenticationFailed", "{e}");
    assert!(e.to_string().contains("clientSecretName"), "{e}");

    // Credentials in the URL work and never show.
    let inline = Source::public(format!("http://bob:hunter2@127.0.0.1:{}/app", server.port));
    assert_eq!(inline.display_url(), server.url("app"));
    let debug = format!("{inline:?} {good:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    let refs = m.ls_remote(&inline).await.unwrap();
    assert_eq!(refs.pick(&branch("main")).unwrap().0, c1);
    let e = m
        .sync(&inline, &branch("nope"), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
}

/// A token given as the URL's user name (`https://TOKEN@host/...`, as
/// GitHub users write it) authenticates, with an empty password, and
/// never shows.
#[tokio::test]
async fn a_token_as_the_url_user_name_authenticates() {
    let tmp = TempDir::new("flotilla-git-token");
    let root = tmp.path().join("srv");
    let repo = TestRepo::init(&root.join("app"), "main");
    repo.write("cm.yaml", &cm("a", "1"));
    let c1 = repo.commit("one");
    let server = HttpGitServer::start(&root, "ghp_t0ken", "");
    let m = mirrors(&tmp);
    let src = Source::public(format!("http://ghp_t0ken@127.0.0.1:{}/app", server.port));
    assert_eq!(src.display_url(), server.url("app"));
    assert!(!format!("{src:?}").contains("ghp_t0ken"));
    let refs = m.ls_remote(&src).await.unwrap();
    assert_eq!(refs.pick(&branch("main")).unwrap().0, c1);
    let e = m.sync(&src, &branch("nope"), None).await.unwrap_err();
    assert!(!e.to_string().contains("ghp_t0ken"), "{e}");
}

/// Credentials given in the URL are part of the mirror key: a GitRepo with
/// the same URL and no credentials, pinning a commit the credentialed
/// mirror holds, does not get it without authenticating.
#[tokio::test]
async fn mirrors_are_keyed_by_the_credentials_actually_used() {
    let tmp = TempDir::new("flotilla-git-key");
    let root = tmp.path().join("srv");
    let repo = TestRepo::init(&root.join("private"), "main");
    repo.write("cm.yaml", &cm("secret", "1"));
    let c1 = repo.commit("one");
    let server = HttpGitServer::start(&root, "bob", "hunter2");
    let m = mirrors(&tmp);
    let pinned = Want::Revision(c1.to_string());
    let owner = Source::public(format!(
        "http://bob:hunter2@127.0.0.1:{}/private",
        server.port
    ));
    let s = m.sync(&owner, &pinned, None).await.unwrap();
    assert_eq!((s.commit, s.fetched), (c1, true));

    let intruder = Source::public(server.url("private"));
    assert_ne!(m.path(&intruder), m.path(&owner), "no shared mirror");
    let e = m.sync(&intruder, &pinned, None).await.unwrap_err();
    assert_eq!(e.reason(), "AuthenticationFailed", "{e}");
    let e = m.authorize(&intruder).await.unwrap_err();
    assert_eq!(e.reason(), "AuthenticationFailed", "{e}");

    // The owner is re-authorized against the remote before a new use of
    // the commit it holds; with the remote gone, that fails.
    m.authorize(&owner).await.unwrap();
    drop(server);
    assert!(m.authorize(&owner).await.is_err());
    let offline = m.sync(&owner, &pinned, None).await.unwrap();
    assert!(
        !offline.fetched,
        "sync alone needs no network for a held commit"
    );
}

/// Size checks come from the object headers, before any blob is read: a
/// huge ignored file compiles fine, the same file not ignored is refused
/// naming it.
#[tokio::test]
async fn blob_sizes_are_checked_before_reading_and_ignored_blobs_are_skipped() {
    let tmp = TempDir::new("flotilla-git-size");
    let repo = TestRepo::init(&tmp.path().join("origin"), "main");
    repo.write("app/cm.yaml", &cm("a", "1"));
    repo.write("app/huge.yaml", &"#".repeat(24 << 20));
    repo.write("app/.fleetignore", "huge.yaml\n");
    let c1 = repo.commit("ignored");
    let m = mirrors(&tmp);
    let src = Source::public(repo.url());
    m.sync(&src, &branch("main"), None).await.unwrap();
    let git = m.open(&src).unwrap();
    let paths = vec!["app".to_owned()];
    let out = compile_commit(&git, c1, &input(&paths), &CompileCache::default()).unwrap();
    assert_eq!(out.bundles[0].content.files.len(), 1);

    repo.remove("app/.fleetignore");
    let c2 = repo.commit("not ignored");
    m.sync(&src, &branch("main"), None).await.unwrap();
    let git = m.open(&src).unwrap();
    let err = compile_commit(&git, c2, &input(&paths), &CompileCache::default()).unwrap_err();
    assert!(
        err.to_string().starts_with("app/huge.yaml: 25165824 bytes"),
        "{err}"
    );
}

fn input<'a>(paths: &'a [String]) -> CompileInput<'a> {
    CompileInput {
        repo_name: "shop",
        paths,
        targets: &[],
        limits: Limits::default(),
        deadline: None,
    }
}

#[tokio::test]
async fn only_changed_directories_recompile() {
    let tmp = TempDir::new("flotilla-git-compile");
    let repo = TestRepo::init(&tmp.path().join("origin"), "main");
    repo.write("apps/web/cm.yaml", &cm("web", "1"))
        .write("apps/web/fleet.yaml", "defaultNamespace: web\n")
        .write("apps/api/cm.yaml", &cm("api", "1"))
        .write("apps/api/fleet.yaml", "defaultNamespace: api\n")
        .write("infra/cm.yaml", &cm("infra", "1"));
    let c1 = repo.commit("one");
    let m = mirrors(&tmp);
    let src = Source::public(repo.url());
    m.sync(&src, &branch("main"), None).await.unwrap();
    let paths = vec!["apps".to_owned(), "infra".to_owned()];
    let git = m.open(&src).unwrap();

    let first = compile_commit(&git, c1, &input(&paths), &CompileCache::default()).unwrap();
    let names: Vec<&str> = first.bundles.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["shop-apps-api", "shop-apps-web", "shop-infra"]);
    assert_eq!(
        first.compiled.len(),
        4,
        "apps (empty parent), api, web, infra"
    );
    assert_eq!(first.reused, 0);

    repo.write("apps/web/cm.yaml", &cm("web", "2"));
    let c2 = repo.commit("web only");
    m.sync(&src, &branch("main"), None).await.unwrap();
    let git = m.open(&src).unwrap();
    let second = compile_commit(&git, c2, &input(&paths), &first.cache).unwrap();
    assert_eq!(
        second.compiled,
        ["apps", "apps/web"],
        "only web and its parent directory (whose tree id moved) recompile"
    );
    assert_eq!(second.reused, 2);
    assert_ne!(
        second.bundles[1].spec.content_id,
        first.bundles[1].spec.content_id
    );
    assert_eq!(
        second.bundles[0].spec.content_id,
        first.bundles[0].spec.content_id
    );

    // A .fleetignore anywhere may change any bundle: everything recompiles.
    repo.write(".fleetignore", "*.txt\n");
    let c3 = repo.commit("ignore");
    m.sync(&src, &branch("main"), None).await.unwrap();
    let git = m.open(&src).unwrap();
    let third = compile_commit(&git, c3, &input(&paths), &second.cache).unwrap();
    assert_eq!(third.reused, 0);

    // The same commit again: nothing recompiles.
    let again = compile_commit(&git, c3, &input(&paths), &third.cache).unwrap();
    assert!(again.compiled.is_empty());
    assert_eq!(again.cache.len(), third.cache.len());

    // A broken file fails the compile, naming the file.
    repo.write("infra/bad.yaml", "kind: [unclosed\n");
    let c4 = repo.commit("broken");
    m.sync(&src, &branch("main"), None).await.unwrap();
    let git = m.open(&src).unwrap();
    let e = compile_commit(&git, c4, &input(&paths), &again.cache).unwrap_err();
    assert!(e.to_string().contains("infra/bad.yaml"), "{e}");
}

#[tokio::test]
async fn incremental_equals_a_full_compile() {
    let tmp = TempDir::new("flotilla-git-equal");
    let repo = TestRepo::init(&tmp.path().join("origin"), "main");
    repo.write("a/cm.yaml", &cm("a", "1"))
        .write("a/nested/fleet.yaml", "namespace: nested\n")
        .write("a/nested/cm.yaml", &cm("n", "1"))
        .write("b/cm.yaml", &cm("b", "1"))
        .write("b/.fleetignore", "skip.yaml\n")
        .write("b/skip.yaml", &cm("skip", "1"));
    let m = mirrors(&tmp);
    let src = Source::public(repo.url());
    let paths = vec!["a".to_owned(), "b".to_owned()];
    let mut cache = CompileCache::default();
    for step in 0..4 {
        repo.write("a/nested/cm.yaml", &cm("n", &step.to_string()));
        if step == 2 {
            repo.remove("b/skip.yaml");
        }
        let c = repo.commit(&format!("step {step}"));
        m.sync(&src, &branch("main"), None).await.unwrap();
        let git = m.open(&src).unwrap();
        let inc = compile_commit(&git, c, &input(&paths), &cache).unwrap();
        let tree = git.find_commit(c).unwrap().tree().unwrap();
        let mut full_tree = flotilla_bundle::RepoTree::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
            if e.kind() == Some(git2::ObjectType::Blob) {
                let blob = git.find_blob(e.id()).unwrap();
                full_tree.insert_file(&format!("{dir}{}", e.name().unwrap()), blob.content());
            }
            git2::TreeWalkResult::Ok
        })
        .unwrap();
        let full = flotilla_bundle::compile_repo(&full_tree, &input(&paths)).unwrap();
        let inc: Vec<_> = inc.bundles.iter().map(|b| (**b).clone()).collect();
        assert_eq!(inc, full, "step {step}");
        cache = compile_commit(&git, c, &input(&paths), &cache)
            .unwrap()
            .cache;
    }
}

/// A name that is not UTF-8 is skipped and said so, as `plan` does, not
/// dropped silently (with its whole directory).
#[tokio::test]
async fn non_utf8_names_in_a_commit_are_reported() {
    let tmp = TempDir::new("flotilla-git-utf8");
    let path = tmp.path().join("origin");
    let repo = flotilla_git::git2::Repository::init(&path).unwrap();
    let blob = repo.blob(cm("a", "1").as_bytes()).unwrap();
    let mut dir = repo.treebuilder(None).unwrap();
    dir.insert(&b"ok.yaml"[..], blob, 0o100644).unwrap();
    dir.insert(&b"bad-\xff.yaml"[..], blob, 0o100644).unwrap();
    let dir = dir.write().unwrap();
    let mut root = repo.treebuilder(None).unwrap();
    root.insert("app", dir, 0o040000).unwrap();
    let root = repo.find_tree(root.write().unwrap()).unwrap();
    let sig = flotilla_git::git2::Signature::now("t", "t@example.com").unwrap();
    let commit = repo
        .commit(Some("HEAD"), &sig, &sig, "one", &root, &[])
        .unwrap();
    let paths = vec!["app".to_owned()];
    let out = compile_commit(&repo, commit, &input(&paths), &CompileCache::default()).unwrap();
    assert_eq!(
        out.bundles[0].content.files.keys().collect::<Vec<_>>(),
        ["ok.yaml"]
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.starts_with("app/bad-") && w.contains("not UTF-8")),
        "{:?}",
        out.warnings
    );
}
