//! Charts from real sources on 127.0.0.1 (testdata/chart-server/serve.py):
//! a Helm repository and an OCI registry, with basic auth and TLS from a
//! test CA. One binary, to keep builds short.

use flotilla_api::{BundleDeploymentOptions, BundleSpec, HelmOptions, TargetCustomization};
use flotilla_bundle::{BundleKind, CompiledBundle, Limits};
use flotilla_charts::testing::{ChartServer, ServerOptions, TempDir, TestCa, chart};
use flotilla_charts::{Access, ChartError, ChartSource, Resolver, resolve_bundle};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod fleet_examples;

fn resolver(dir: &TempDir) -> Resolver {
    Resolver::new(dir.path().join("cache"), Duration::from_secs(10)).with_index_ttl(Duration::ZERO)
}

fn repo(server: &ChartServer, chart: &str, version: &str) -> ChartSource {
    ChartSource::of(Some(&server.url()), Some(chart), Some(version)).unwrap()
}

#[tokio::test]
async fn a_range_picks_the_highest_match_and_the_archive_is_cached_by_digest() {
    let tmp = TempDir::new("flotilla-charts-range");
    let server = ChartServer::start(ServerOptions::default());
    for v in ["1.0.0", "1.2.0", "1.10.1", "2.0.0-rc.1", "2.0.0"] {
        server.publish("redis", v, &chart("redis", v, &[]), true);
    }
    let r = resolver(&tmp);
    let got = r
        .resolve(&repo(&server, "redis", "~1"), &Access::default())
        .await
        .unwrap();
    assert_eq!(got.version, "1.10.1");
    assert_eq!(got.chart.name, "redis");
    assert!(got.chart.files.contains_key("templates/configmap.yaml"));
    assert!(got.digest.starts_with("sha256:"));
    let again = r
        .resolve(&repo(&server, "redis", "1.10.x"), &Access::default())
        .await
        .unwrap();
    assert_eq!(again.digest, got.digest);
    assert_eq!(
        r.stats.downloads.load(Ordering::Relaxed),
        1,
        "the second came from the cache"
    );
    assert_eq!(server.fetches("/redis-1.10.1.tgz"), 1);
    // A fresh resolver on the same cache directory downloads nothing.
    let cold = resolver(&tmp);
    cold.resolve(&repo(&server, "redis", "1.10.1"), &Access::default())
        .await
        .unwrap();
    assert_eq!(cold.stats.downloads.load(Ordering::Relaxed), 0);
    assert_eq!(server.fetches("/redis-1.10.1.tgz"), 1);

    // A new upstream version within the range is picked up, with its own
    // digest.
    server.publish("redis", "1.11.0", &chart("redis", "1.11.0", &[]), true);
    let newer = r
        .resolve(&repo(&server, "redis", "~1"), &Access::default())
        .await
        .unwrap();
    assert_eq!(newer.version, "1.11.0");
    assert_ne!(newer.digest, got.digest);
    let any = r
        .resolve(&repo(&server, "redis", ""), &Access::default())
        .await
        .unwrap();
    assert_eq!(any.version, "2.0.0", "no pre-release unless asked for");
}

#[tokio::test]
async fn bad_sources_say_which_chart_and_why() {
    let tmp = TempDir::new("flotilla-charts-bad");
    let server = ChartServer::start(ServerOptions::default());
    server.publish("redis", "1.0.0", &chart("redis", "1.0.0", &[]), true);
    let r = resolver(&tmp);
    let none = Access::default();
    let err = r
        .resolve(&repo(&server, "nginx", "1.0.0"), &none)
        .await
        .unwrap_err();
    assert!(matches!(err, ChartError::UnknownChart { .. }), "{err}");
    let err = r
        .resolve(&repo(&server, "redis", "^5"), &none)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ChartError::NoMatchingVersion { available, .. } if available == "1.0.0"),
        "{err}"
    );
    assert!(err.to_string().contains("redis"), "{err}");
    let gone = ChartSource::of(Some("http://127.0.0.1:9"), Some("redis"), None).unwrap();
    let err = r.resolve(&gone, &none).await.unwrap_err();
    assert!(err.transient(), "{err}");
    assert_eq!(err.reason(), "ChartUnreachable");

    // The archive is not what the index says.
    server.tamper(
        "redis",
        "1.0.0",
        &chart("redis", "1.0.0", &[("values.yaml", "evil: true")]),
    );
    let err = r
        .resolve(&repo(&server, "redis", "1.0.0"), &none)
        .await
        .unwrap_err();
    assert!(matches!(err, ChartError::DigestMismatch { .. }), "{err}");

    // Too large.
    let mut x: u64 = 88172645463325252;
    let big: String = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    server.publish(
        "big",
        "1.0.0",
        &chart("big", "1.0.0", &[("data.txt", &big)]),
        true,
    );
    let mut small = resolver(&tmp);
    small.limits.max_archive_bytes = 1 << 20;
    let err = small
        .resolve(&repo(&server, "big", "1.0.0"), &none)
        .await
        .unwrap_err();
    assert!(matches!(err, ChartError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn credentials_are_needed_sent_and_never_shown() {
    let tmp = TempDir::new("flotilla-charts-auth");
    let server = ChartServer::start(ServerOptions {
        auth: Some(("bob", "hunter2")),
        ..Default::default()
    });
    server.publish("private", "1.0.0", &chart("private", "1.0.0", &[]), true);
    let r = resolver(&tmp);
    let err = r
        .resolve(&repo(&server, "private", "1.0.0"), &Access::default())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ChartAuthenticationFailed", "{err}");
    assert!(err.to_string().contains("helmSecretName"), "{err}");
    let wrong = Access {
        basic: Some(("bob".into(), "wrong-password".into())),
        ..Default::default()
    };
    let err = r
        .resolve(&repo(&server, "private", "1.0.0"), &wrong)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ChartAuthenticationFailed", "{err}");
    assert!(!err.to_string().contains("wrong-password"), "{err}");
    let right = Access {
        basic: Some(("bob".into(), "hunter2".into())),
        ..Default::default()
    };
    let got = r
        .resolve(&repo(&server, "private", "1.0.0"), &right)
        .await
        .unwrap();
    assert_eq!(got.version, "1.0.0");
    assert!(!format!("{got:?}").contains("hunter2"));

    // An index that sends the archive to another origin: the credentials
    // stay home (as Helm without --pass-credentials), so that server,
    // asking for them too, refuses.
    let elsewhere = ChartServer::start(ServerOptions {
        auth: Some(("bob", "hunter2")),
        ..Default::default()
    });
    let archive = chart("moved", "1.0.0", &[]);
    elsewhere.publish("moved", "1.0.0", &archive, true);
    server.link(
        "moved",
        "1.0.0",
        &format!("{}/moved-1.0.0.tgz", elsewhere.url()),
        Some(&flotilla_charts::resolver::sha256(&archive)),
    );
    let err = r
        .resolve(&repo(&server, "moved", "1.0.0"), &right)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ChartAuthenticationFailed", "{err}");
    assert_eq!(
        elsewhere.fetches("/moved-1.0.0.tgz"),
        1,
        "asked, without credentials"
    );

    // A private archive URL fetched with credentials is not served from
    // the cache to someone without them.
    let url = format!("{}/private-1.0.0.tgz", server.url());
    let by_url = ChartSource::of(None, Some(&url), None).unwrap();
    r.resolve(&by_url, &right).await.unwrap();
    let err = r.resolve(&by_url, &Access::default()).await.unwrap_err();
    assert_eq!(err.reason(), "ChartAuthenticationFailed", "{err}");
}

#[tokio::test]
async fn tls_needs_the_ca_or_an_explicit_skip() {
    let tmp = TempDir::new("flotilla-charts-tls");
    let ca = TestCa::new();
    let server = ChartServer::start(ServerOptions {
        tls: Some(&ca),
        ..Default::default()
    });
    server.publish("secure", "1.0.0", &chart("secure", "1.0.0", &[]), true);
    let r = resolver(&tmp);
    let err = r
        .resolve(&repo(&server, "secure", "1.0.0"), &Access::default())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ChartTLSFailed", "{err}");
    let trusted = Access {
        ca_bundle: Some(ca.ca_pem.clone()),
        ..Default::default()
    };
    r.resolve(&repo(&server, "secure", "1.0.0"), &trusted)
        .await
        .unwrap();
    let skip = Access {
        insecure_skip_verify: true,
        ..Default::default()
    };
    resolver(&TempDir::new("flotilla-charts-tls2"))
        .resolve(&repo(&server, "secure", "1.0.0"), &skip)
        .await
        .unwrap();
}

#[tokio::test]
async fn oci_charts_are_pulled_by_tag_or_range_with_auth_and_tls() {
    let tmp = TempDir::new("flotilla-charts-oci");
    let ca = TestCa::new();
    let server = ChartServer::start(ServerOptions {
        auth: Some(("bob", "hunter2")),
        tls: Some(&ca),
    });
    for v in ["0.9.0", "1.0.0", "1.1.0+up2.0"] {
        server.publish("guestbook", v, &chart("guestbook", v, &[]), true);
    }
    let access = Access {
        basic: Some(("bob".into(), "hunter2".into())),
        ca_bundle: Some(ca.ca_pem.clone()),
        ..Default::default()
    };
    let r = resolver(&tmp);
    let reference = format!("{}/guestbook", server.oci());
    let src = ChartSource::of(None, Some(&reference), Some("1.0.0")).unwrap();
    let got = r.resolve(&src, &access).await.unwrap();
    assert_eq!(
        (got.chart.name.as_str(), got.version.as_str()),
        ("guestbook", "1.0.0")
    );
    let ranged = ChartSource::of(Some(&server.oci()), Some("guestbook"), Some("^1")).unwrap();
    let got = r.resolve(&ranged, &access).await.unwrap();
    assert_eq!(got.version, "1.1.0+up2.0", "tags spell + as _");
    // No version: the highest release, as Helm picks it.
    let any = ChartSource::of(None, Some(&reference), None).unwrap();
    assert_eq!(
        r.resolve(&any, &access).await.unwrap().version,
        "1.1.0+up2.0"
    );
    // A tag that is not there.
    let missing = ChartSource::of(None, Some(&reference), Some("7.0.0")).unwrap();
    let err = r.resolve(&missing, &access).await.unwrap_err();
    assert_eq!(err.reason(), "ChartNotFound", "{err}");
    assert!(err.to_string().contains("guestbook"), "{err}");
    let err = r
        .resolve(
            &src,
            &Access {
                basic: None,
                ..access.clone()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ChartAuthenticationFailed", "{err}");
}

#[tokio::test]
async fn an_archive_url_is_fetched_as_it_is() {
    let tmp = TempDir::new("flotilla-charts-url");
    let server = ChartServer::start(ServerOptions::default());
    server.publish(
        "guestbook",
        "0.0.0",
        &chart("guestbook", "0.0.0", &[]),
        false,
    );
    let url = format!("{}/guestbook-0.0.0.tgz", server.url());
    let src = ChartSource::of(None, Some(&url), None).unwrap();
    let got = resolver(&tmp)
        .resolve(&src, &Access::default())
        .await
        .unwrap();
    assert_eq!(
        (got.chart.name.as_str(), got.version.as_str()),
        ("guestbook", "0.0.0")
    );
}

fn helm_bundle(helm: HelmOptions, customizations: Vec<TargetCustomization>) -> CompiledBundle {
    CompiledBundle {
        name: "shop-app".into(),
        dir: "app".into(),
        kind: BundleKind::Helm,
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        spec: BundleSpec {
            options: BundleDeploymentOptions {
                helm: Some(helm),
                ..Default::default()
            },
            target_customizations: customizations,
            ..Default::default()
        },
        content: Default::default(),
        warnings: Vec::new(),
    }
}

#[tokio::test]
async fn a_bundle_is_made_self_contained_with_its_charts_and_their_dependencies() {
    let tmp = TempDir::new("flotilla-charts-vendor");
    let server = ChartServer::start(ServerOptions::default());
    server.publish("common", "1.4.0", &chart("common", "1.4.0", &[]), true);
    let with_deps = format!(
        "apiVersion: v2\nname: app\nversion: 2.0.0\ndependencies:\n- name: common\n  version: \"~1.4\"\n  repository: {}\n",
        server.url()
    );
    server.publish(
        "app",
        "2.0.0",
        &chart("app", "2.0.0", &[("Chart.yaml", &with_deps)]),
        true,
    );
    server.publish("app", "2.1.0", &chart("app", "2.1.0", &[]), true);
    let r = resolver(&tmp);
    let b = helm_bundle(
        HelmOptions {
            repo: Some(server.url()),
            chart: Some("app".into()),
            version: Some("2.0.0".into()),
            values: Some(serde_json::json!({"value": "x"})),
            ..Default::default()
        },
        vec![TargetCustomization {
            name: Some("canary".into()),
            options: BundleDeploymentOptions {
                helm: Some(HelmOptions {
                    version: Some("2.1.x".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }],
    );
    let none = |_: &ChartSource| Access::default();
    let (out, vendored) = resolve_bundle(&r, &b, Limits::default(), &none)
        .await
        .unwrap();
    let base = out.spec.options.helm.as_ref().unwrap();
    let path = base.chart.clone().unwrap();
    assert!(
        path.starts_with(".chart/") && path.ends_with("/app"),
        "{path}"
    );
    assert_eq!(
        (base.repo.as_deref(), base.version.as_deref()),
        (None, None)
    );
    assert!(
        out.content
            .files
            .contains_key(&format!("{path}/Chart.yaml"))
    );
    assert!(
        out.content
            .files
            .contains_key(&format!("{path}/charts/common/Chart.yaml")),
        "the dependency is vendored"
    );
    let canary = out.spec.target_customizations[0]
        .options
        .helm
        .as_ref()
        .unwrap();
    let canary_path = canary.chart.clone().unwrap();
    assert_ne!(
        canary_path, path,
        "the customization's version is its own chart"
    );
    assert_eq!(vendored.len(), 3, "{vendored:?}");
    assert_ne!(out.spec.content_id, b.spec.content_id);
    let note = &out.annotations[flotilla_charts::CHARTS_ANNOTATION];
    assert!(
        note.contains("app 2.0.0 sha256:") && note.contains("app 2.1.0"),
        "{note}"
    );

    // disableDependencyUpdate leaves charts/ as it is: the dependency's
    // repository (the first server) is gone, and nothing asks it.
    drop(server);
    let server = ChartServer::start(ServerOptions::default());
    server.publish(
        "app",
        "2.0.0",
        &chart("app", "2.0.0", &[("Chart.yaml", &with_deps)]),
        true,
    );
    let b = helm_bundle(
        HelmOptions {
            repo: Some(server.url()),
            chart: Some("app".into()),
            version: Some("2.0.0".into()),
            disable_dependency_update: true,
            ..Default::default()
        },
        vec![],
    );
    let (out, _) = resolve_bundle(&resolver(&tmp), &b, Limits::default(), &none)
        .await
        .unwrap();
    let path = out
        .spec
        .options
        .helm
        .as_ref()
        .unwrap()
        .chart
        .clone()
        .unwrap();
    assert!(
        !out.content
            .files
            .contains_key(&format!("{path}/charts/common/Chart.yaml"))
    );
}

#[tokio::test]
async fn a_dependency_name_that_would_leave_its_charts_directory_is_refused() {
    let tmp = TempDir::new("flotilla-charts-depname");
    let r = resolver(&tmp);
    let mut b = helm_bundle(HelmOptions::default(), Vec::new());
    b.content.files.insert(
        "Chart.yaml".into(),
        b"apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: ../../escape\n  version: 1.0.0\n  repository: https://charts.example.invalid\n".to_vec(),
    );
    let none = |_: &ChartSource| Access::default();
    let err = resolve_bundle(&r, &b, Limits::default(), &none)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "InvalidChart", "{err}");
    assert!(err.to_string().contains("dependency name"), "{err}");
}
