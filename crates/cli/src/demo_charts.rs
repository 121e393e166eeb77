//! The demo chart repository of `flotilla dev`: the `guestbook` chart of
//! `testdata/charts`, built into the binary, packaged at a few versions and
//! served as a Helm repository (`index.yaml` with digests, and the
//! archives) on 127.0.0.1. The demo repository's `guestbook/fleet.yaml`
//! and the HelmOp `guestbook` name it. Its port is kept in the data
//! directory, so a restart serves the URL the demo repository names.

use anyhow::Context as _;
use axum::extract::Path as UrlPath;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

const CHART: &str = "guestbook";
/// The versions served: `0.1.x` picks 0.1.1.
pub const VERSIONS: &[&str] = &["0.1.0", "0.1.1", "0.2.0"];

const FILES: &[(&str, &str)] = &[
    (
        "Chart.yaml",
        include_str!("../../../testdata/charts/guestbook/Chart.yaml"),
    ),
    (
        "values.yaml",
        include_str!("../../../testdata/charts/guestbook/values.yaml"),
    ),
    (
        "templates/config.yaml",
        include_str!("../../../testdata/charts/guestbook/templates/config.yaml"),
    ),
    (
        "templates/frontend-deployment.yaml",
        include_str!("../../../testdata/charts/guestbook/templates/frontend-deployment.yaml"),
    ),
    (
        "templates/frontend-service.yaml",
        include_str!("../../../testdata/charts/guestbook/templates/frontend-service.yaml"),
    ),
];

/// The repository's files: `index.yaml` and one archive per version.
fn repository() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut index = format!("apiVersion: v1\nentries:\n  {CHART}:\n");
    for version in VERSIONS {
        let chart_yaml = FILES[0]
            .1
            .replace("version: 0.0.0", &format!("version: {version}"));
        let mut entries: Vec<(&str, &[u8])> = vec![("Chart.yaml", chart_yaml.as_bytes())];
        entries.extend(FILES[1..].iter().map(|(p, c)| (*p, c.as_bytes())));
        let archive = flotilla_charts::archive::package(CHART, &entries);
        let digest = flotilla_charts::resolver::sha256(&archive);
        let file = format!("{CHART}-{version}.tgz");
        index.push_str(&format!(
            "  - name: {CHART}\n    version: {version}\n    urls: [{file}]\n    digest: {}\n",
            digest.trim_start_matches("sha256:")
        ));
        files.insert(file, archive);
    }
    files.insert("index.yaml".into(), index.into_bytes());
    files
}

/// Where the repository was last served, from the data directory.
fn remembered(state_dir: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(state_dir.join("demo-charts.addr"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Serves the demo chart repository until the returned task is dropped
/// with the runtime. Returns its URL.
pub async fn serve(state_dir: &Path) -> anyhow::Result<String> {
    let listener = match remembered(state_dir) {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                println!(
                    "warning: the demo chart repository's port {} is taken ({e}); serving it elsewhere. The demo repository's guestbook/fleet.yaml still names the old URL: edit and commit it",
                    addr.port()
                );
                tokio::net::TcpListener::bind("127.0.0.1:0").await?
            }
        },
        None => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    };
    let addr = listener.local_addr()?;
    std::fs::write(state_dir.join("demo-charts.addr"), addr.to_string())
        .context("recording the demo chart repository's address")?;
    let files = Arc::new(repository());
    let router = axum::Router::new().route(
        "/{file}",
        axum::routing::get(move |UrlPath(file): UrlPath<String>| {
            let files = Arc::clone(&files);
            async move {
                match files.get(&file) {
                    Some(bytes) => {
                        let kind = if file.ends_with(".yaml") {
                            "application/yaml"
                        } else {
                            "application/gzip"
                        };
                        ([(header::CONTENT_TYPE, kind)], bytes.clone()).into_response()
                    }
                    None => (StatusCode::NOT_FOUND, "not found").into_response(),
                }
            }
        }),
    );
    tokio::spawn(flotilla_runtime::serve::serve(
        listener,
        router,
        flotilla_runtime::serve::ServeLimits::default(),
        "demo-charts",
    ));
    Ok(format!("http://{addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_chart_is_testdata_charts_guestbook() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/charts/guestbook");
        let mut on_disk = Vec::new();
        fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        walk(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut built_in: Vec<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        built_in.sort();
        assert_eq!(built_in, on_disk, "update demo_charts::FILES");
        for (rel, contents) in FILES {
            assert_eq!(std::fs::read_to_string(root.join(rel)).unwrap(), *contents);
        }
        let repo = repository();
        assert_eq!(repo.len(), VERSIONS.len() + 1);
        let index = String::from_utf8(repo["index.yaml"].clone()).unwrap();
        assert!(
            index.contains("version: 0.1.1") && index.contains("digest: "),
            "{index}"
        );
        let files = flotilla_charts::archive::extract(
            "guestbook",
            &repo["guestbook-0.1.1.tgz"],
            Default::default(),
        )
        .unwrap();
        assert_eq!(files.version, "0.1.1");
    }
}
