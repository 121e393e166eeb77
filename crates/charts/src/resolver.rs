//! Fetching charts: a Helm repository's `index.yaml`, an OCI registry's
//! tags and manifests, or an archive URL; then the archive, verified
//! against the digest the source gives, and cached on disk by digest.
//!
//! - Archives are kept under `<cache>/sha256-<hex>.tgz`. A (source,
//!   version) whose digest is known is never downloaded again, and
//!   concurrent resolutions of one chart wait for one download.
//! - An index or tag listing is kept for `index_ttl`, so that GitRepos
//!   compiling at once ask a repository once; an archive URL, which may
//!   change upstream, is fetched again once that long has passed.
//! - Every network call has `timeout`; messages never carry a credential.

use crate::archive::{self, ChartFiles, Limits};
use crate::constraint;
use crate::error::ChartError;
use crate::oci::Registry;
use crate::source::{Access, ChartSource};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::oci::HELM_CHART_LAYER;
/// HTTP clients kept (each with its connection pool).
const MAX_CLIENTS: usize = 64;
/// The largest `index.yaml` read.
const MAX_INDEX_BYTES: usize = 64 << 20;

/// A resolved chart: where from, which version, its digest and files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The source as it may be shown.
    pub source: String,
    pub version: String,
    /// `sha256:<hex>` of the archive.
    pub digest: String,
    pub chart: ChartFiles,
    /// Whether this resolution downloaded the archive (not the cache).
    pub downloaded: bool,
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Archives fetched over the network.
    pub downloads: AtomicU64,
    /// Indexes and tag listings fetched over the network.
    pub index_fetches: AtomicU64,
    /// Archives found in the cache.
    pub cache_hits: AtomicU64,
}

/// A chart version a source offers.
#[derive(Clone, Debug)]
struct Offer {
    chart: String,
    version: String,
    urls: Vec<String>,
    digest: Option<String>,
}

/// Everything one index or tag listing offers.
type Listing = Arc<Vec<Offer>>;

#[derive(Debug, Default, Deserialize)]
struct Index {
    #[serde(default)]
    entries: BTreeMap<String, Vec<IndexEntry>>,
}

#[derive(Debug, Default, Deserialize)]
struct IndexEntry {
    #[serde(default)]
    version: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    digest: Option<String>,
}

pub struct Resolver {
    cache: PathBuf,
    pub(crate) timeout: Duration,
    index_ttl: Duration,
    pub limits: Limits,
    clients: Mutex<HashMap<String, reqwest::Client>>,
    listings: Mutex<HashMap<String, (Instant, Listing)>>,
    /// (source, version) -> the archive's digest, once known.
    /// The digest last fetched per source key; an archive URL's is
    /// trusted for `index_ttl` only (its bytes may change upstream).
    digests: Mutex<HashMap<String, (Instant, String)>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub stats: Stats,
}

impl Resolver {
    pub fn new(cache: impl Into<PathBuf>, timeout: Duration) -> Self {
        // reqwest and the OCI client use rustls with the ring provider, as
        // kube does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Resolver {
            cache: cache.into(),
            timeout,
            index_ttl: Duration::from_secs(30),
            limits: Limits::default(),
            clients: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
            digests: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        }
    }

    /// How long a listing is reused (tests set 0).
    pub fn with_index_ttl(mut self, ttl: Duration) -> Self {
        self.index_ttl = ttl;
        self
    }

    /// Resolves a chart: the version its constraint picks, the archive
    /// (from the cache when its digest is known), and its files.
    pub async fn resolve(
        &self,
        src: &ChartSource,
        access: &Access,
    ) -> Result<Resolved, ChartError> {
        let chart = src.chart();
        let shown = src.shown();
        let (version, key, expected, fetch) = match src {
            ChartSource::Repo {
                url, constraint, ..
            } => {
                let listing = self.repo_listing(url, &chart, access).await?;
                if !listing.iter().any(|o| o.chart == chart) {
                    return Err(ChartError::UnknownChart { chart, from: shown });
                }
                let offer = pick_offer(&chart, &shown, constraint, &listing)?;
                let (version, urls, digest) = (offer.version, offer.urls, offer.digest);
                let archive_url = join_url(
                    url,
                    urls.first().ok_or_else(|| ChartError::Invalid {
                        chart: chart.clone(),
                        message: format!("version {version} lists no download URL in {shown}"),
                    })?,
                );
                // As Helm without --pass-credentials: an archive on another
                // origin gets no credentials.
                let auth = if same_origin(url, &archive_url) {
                    Auth::Basic
                } else {
                    Auth::None
                };
                (
                    version.clone(),
                    format!("repo\0{url}\0{chart}\0{version}"),
                    digest,
                    Fetch::Http(archive_url, auth),
                )
            }
            // Keyed by the access too: a private archive fetched with one
            // tenant's credentials is not another's for the asking.
            ChartSource::Url { url } => (
                String::new(),
                format!("url\0{url}\0{}", access.digest()),
                None,
                Fetch::Http(url.clone(), Auth::Basic),
            ),
            ChartSource::Oci {
                reference,
                constraint,
            } => {
                let (tag, digest) = self
                    .oci_pick(reference, &chart, &shown, constraint, access)
                    .await?;
                (
                    tag.replace('_', "+"),
                    format!("oci\0{reference}\0{tag}"),
                    Some(digest),
                    Fetch::Oci {
                        reference: reference.clone(),
                    },
                )
            }
        };
        let (digest, bytes, downloaded) = self
            .archive(&chart, &shown, &key, expected.as_deref(), access, &fetch)
            .await?;
        let files = archive::extract(&chart, &bytes, self.limits)?;
        if matches!(src, ChartSource::Repo { .. }) && files.name != chart {
            return Err(ChartError::Invalid {
                chart,
                message: format!("the archive holds chart {:?}", files.name),
            });
        }
        Ok(Resolved {
            source: shown,
            version: if version.is_empty() {
                files.version.clone()
            } else {
                version
            },
            digest,
            chart: files,
            downloaded,
        })
    }

    /// What a repository's index offers, reused for `index_ttl`.
    async fn repo_listing(
        &self,
        url: &str,
        chart: &str,
        access: &Access,
    ) -> Result<Listing, ChartError> {
        let key = format!("index\0{url}\0{}", access.digest());
        let lock = self.lock(&key);
        let _guard = lock.lock().await;
        if let Some((at, listing)) = self.listings.lock().expect("listings").get(&key)
            && at.elapsed() < self.index_ttl
        {
            return Ok(Arc::clone(listing));
        }
        let shown = crate::source::redact(url);
        self.stats.index_fetches.fetch_add(1, Ordering::Relaxed);
        let index_url = format!("{}/index.yaml", url.trim_end_matches('/'));
        let bytes = self
            .get(
                &index_url,
                access,
                &Auth::Basic,
                None,
                MAX_INDEX_BYTES,
                chart,
                &shown,
            )
            .await?;
        let text = String::from_utf8(bytes).map_err(|_| ChartError::Invalid {
            chart: chart.to_owned(),
            message: format!("{shown}/index.yaml is not UTF-8"),
        })?;
        let index: Index =
            serde_saphyr::from_str_with_options(&text, index_options()).map_err(|e| {
                ChartError::Invalid {
                    chart: chart.to_owned(),
                    message: format!(
                        "{shown}/index.yaml does not parse: {}",
                        e.to_string().lines().next().unwrap_or_default()
                    ),
                }
            })?;
        let rows: Vec<Offer> = index
            .entries
            .into_iter()
            .flat_map(|(name, entries)| {
                entries.into_iter().map(move |e| Offer {
                    chart: name.clone(),
                    version: e.version,
                    urls: e.urls,
                    digest: e.digest.filter(|d| !d.is_empty()),
                })
            })
            .collect();
        let rows = Arc::new(rows);
        self.remember_listing(key, Arc::clone(&rows));
        Ok(rows)
    }

    /// The tag a constraint picks in an OCI repository, and the digest of
    /// its chart layer. No constraint picks the highest release, as Helm.
    async fn oci_pick(
        &self,
        reference: &str,
        chart: &str,
        shown: &str,
        constraint: &str,
        access: &Access,
    ) -> Result<(String, String), ChartError> {
        let registry = Registry::connect(self, reference, access, chart, shown).await?;
        let exact = !constraint.is_empty()
            && constraint::parse_version(constraint).is_some()
            && !constraint.contains(['*', 'x', 'X', '^', '~', '>', '<', ' ', ',', '|']);
        let tag = if exact {
            constraint.replace('+', "_")
        } else {
            let key = format!("tags\0{reference}\0{}", access.digest());
            let cached = self
                .listings
                .lock()
                .expect("listings")
                .get(&key)
                .filter(|(at, _)| at.elapsed() < self.index_ttl)
                .map(|(_, l)| Arc::clone(l));
            let tags: Vec<String> = match cached {
                Some(l) => l.iter().map(|o| o.version.clone()).collect(),
                None => {
                    self.stats.index_fetches.fetch_add(1, Ordering::Relaxed);
                    let tags = registry.tags().await?;
                    let rows = tags
                        .iter()
                        .map(|t| Offer {
                            chart: chart.to_owned(),
                            version: t.clone(),
                            urls: Vec::new(),
                            digest: None,
                        })
                        .collect();
                    self.remember_listing(key, Arc::new(rows));
                    tags
                }
            };
            let versions: Vec<String> = tags.iter().map(|t| t.replace('_', "+")).collect();
            let picked = constraint::pick(constraint, versions.iter().map(String::as_str))
                .map_err(|message| ChartError::Invalid {
                    chart: chart.to_owned(),
                    message,
                })?
                .ok_or_else(|| ChartError::NoMatchingVersion {
                    chart: chart.to_owned(),
                    from: shown.to_owned(),
                    constraint: constraint.to_owned(),
                    available: summarize(&versions.iter().map(String::as_str).collect::<Vec<_>>()),
                })?;
            picked.replace('+', "_")
        };
        let (digest, size) = registry.chart_layer(&tag).await?;
        if size > self.limits.max_archive_bytes as i64 {
            return Err(ChartError::TooLarge {
                chart: chart.to_owned(),
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit: self.limits.max_archive_bytes,
            });
        }
        Ok((tag, digest))
    }

    /// The archive of `key`: from the cache when its digest is known and
    /// held, else fetched (once, whoever else waits), verified and kept.
    async fn archive(
        &self,
        chart: &str,
        shown: &str,
        key: &str,
        expected: Option<&str>,
        access: &Access,
        fetch: &Fetch,
    ) -> Result<(String, Vec<u8>, bool), ChartError> {
        let lock = self.lock(key);
        let _guard = lock.lock().await;
        let known = expected.map(normalize_digest).or_else(|| {
            let digests = self.digests.lock().expect("digests");
            let (at, d) = digests.get(key)?;
            (!key.starts_with("url\0") || at.elapsed() < self.index_ttl).then(|| d.clone())
        });
        if let Some(d) = &known
            && let Ok(bytes) = std::fs::read(self.blob_path(d))
            && sha256(&bytes) == *d
        {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((d.clone(), bytes, false));
        }
        self.stats.downloads.fetch_add(1, Ordering::Relaxed);
        let limit = self.limits.max_archive_bytes;
        let bytes = match fetch {
            Fetch::Http(url, auth) => {
                self.get(url, access, auth, None, limit, chart, shown)
                    .await?
            }
            Fetch::Oci { reference } => {
                let digest = known.as_deref().ok_or_else(|| ChartError::Invalid {
                    chart: chart.to_owned(),
                    message: format!("{shown}: no chart layer digest"),
                })?;
                Registry::connect(self, reference, access, chart, shown)
                    .await?
                    .blob(digest, limit)
                    .await?
            }
        };
        let digest = sha256(&bytes);
        if let Some(want) = known.as_deref().filter(|_| expected.is_some())
            && want != digest
        {
            return Err(ChartError::DigestMismatch {
                chart: chart.to_owned(),
                expected: want.to_owned(),
                actual: digest,
            });
        }
        self.keep(&digest, &bytes);
        self.digests
            .lock()
            .expect("digests")
            .insert(key.to_owned(), (Instant::now(), digest.clone()));
        Ok((digest, bytes, true))
    }

    /// GET with the access's TLS trust and `auth`, refusing bodies over
    /// `limit` as they arrive. (reqwest drops the credentials when a
    /// redirect leaves the host.)
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn get(
        &self,
        url: &str,
        access: &Access,
        auth: &Auth,
        accept: Option<&str>,
        limit: usize,
        chart: &str,
        shown: &str,
    ) -> Result<Vec<u8>, ChartError> {
        let client = self.client(access).map_err(|message| ChartError::Tls {
            chart: chart.to_owned(),
            from: shown.to_owned(),
            message,
        })?;
        let mut req = client.get(url);
        match (auth, &access.basic) {
            (Auth::Basic, Some((u, p))) => req = req.basic_auth(u, Some(p)),
            (Auth::Bearer(token), _) => req = req.bearer_auth(token),
            _ => {}
        }
        if let Some(accept) = accept {
            req = req.header(reqwest::header::ACCEPT, accept);
        }
        let work = async {
            let mut resp = req
                .send()
                .await
                .map_err(|e| http_error(chart, shown, access, e))?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN
            {
                return Err(ChartError::Auth {
                    chart: chart.to_owned(),
                    from: shown.to_owned(),
                    message: format!(
                        "{} {}",
                        status.as_u16(),
                        if access.basic.is_some() {
                            "with the credentials of helmSecretName"
                        } else {
                            "without credentials: name a Secret in helmSecretName"
                        }
                    ),
                });
            }
            if status == reqwest::StatusCode::NOT_FOUND {
                return Err(ChartError::Missing {
                    chart: chart.to_owned(),
                    from: shown.to_owned(),
                    what: crate::source::redact(url),
                });
            }
            if !status.is_success() {
                return Err(ChartError::Unreachable {
                    chart: chart.to_owned(),
                    from: shown.to_owned(),
                    message: format!("{} answered {status}", crate::source::redact(url)),
                });
            }
            if resp.content_length().is_some_and(|n| n > limit as u64) {
                return Err(ChartError::TooLarge {
                    chart: chart.to_owned(),
                    size: usize::try_from(resp.content_length().unwrap_or(0)).unwrap_or(usize::MAX),
                    limit,
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| http_error(chart, shown, access, e))?
            {
                body.extend_from_slice(&chunk);
                if body.len() > limit {
                    return Err(ChartError::TooLarge {
                        chart: chart.to_owned(),
                        size: body.len(),
                        limit,
                    });
                }
            }
            Ok(body)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| self.timed_out(chart, shown))?
    }

    /// Keeps a listing for `index_ttl`, dropping the ones past theirs (an
    /// index may be tens of megabytes).
    fn remember_listing(&self, key: String, rows: Listing) {
        let mut listings = self.listings.lock().expect("listings");
        let ttl = self.index_ttl;
        listings.retain(|_, (at, _)| at.elapsed() < ttl);
        listings.insert(key, (Instant::now(), rows));
    }

    pub(crate) fn timed_out(&self, chart: &str, shown: &str) -> ChartError {
        ChartError::Unreachable {
            chart: chart.to_owned(),
            from: shown.to_owned(),
            message: format!("no answer within {}s", self.timeout.as_secs()),
        }
    }

    fn client(&self, access: &Access) -> Result<reqwest::Client, String> {
        let key = access.digest();
        if let Some(c) = self.clients.lock().expect("clients").get(&key) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(self.timeout)
            .danger_accept_invalid_certs(access.insecure_skip_verify);
        if let Some(pem) = &access.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the CA bundle does not parse: {e}"))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b.build().map_err(|e| e.to_string())?;
        let mut clients = self.clients.lock().expect("clients");
        // One per TLS setting and credential in use; rotated credentials
        // leave old ones behind, so the set is bounded.
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            self.locks
                .lock()
                .expect("locks")
                .entry(key.to_owned())
                .or_default(),
        )
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.cache.join(format!("{}.tgz", digest.replace(':', "-")))
    }

    /// Writes an archive to the cache (a temporary file, then a rename);
    /// a cache that cannot be written only costs a later download.
    fn keep(&self, digest: &str, bytes: &[u8]) {
        let path = self.blob_path(digest);
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let written = std::fs::create_dir_all(&self.cache)
            .and_then(|_| std::fs::write(&tmp, bytes))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(cache = %self.cache.display(), error = %e, "could not cache a chart archive");
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// The offer a constraint picks among a listing's versions of `chart`.
fn pick_offer(
    chart: &str,
    shown: &str,
    constraint: &str,
    listing: &[Offer],
) -> Result<Offer, ChartError> {
    let mine: Vec<&Offer> = listing.iter().filter(|o| o.chart == chart).collect();
    let versions: Vec<&str> = mine.iter().map(|o| o.version.as_str()).collect();
    let picked = constraint::pick(constraint, versions.iter().copied()).map_err(|message| {
        ChartError::Invalid {
            chart: chart.to_owned(),
            message,
        }
    })?;
    let Some(picked) = picked else {
        return Err(ChartError::NoMatchingVersion {
            chart: chart.to_owned(),
            from: shown.to_owned(),
            constraint: constraint.to_owned(),
            available: summarize(&versions),
        });
    };
    Ok(mine
        .into_iter()
        .find(|o| o.version == picked)
        .expect("picked from these")
        .clone())
}

enum Fetch {
    Http(String, Auth),
    Oci { reference: String },
}

/// What a request carries.
pub(crate) enum Auth {
    None,
    /// The access's basic credentials, if it has any.
    Basic,
    /// A registry's token.
    Bearer(String),
}

/// Whether two URLs share scheme, host and port.
fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

fn index_options() -> serde_saphyr::Options {
    // Public indexes run to tens of megabytes.
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 50_000_000;
    budget.max_nodes = 20_000_000;
    budget.max_total_scalar_bytes = MAX_INDEX_BYTES;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An index digest (bare hex, as Helm writes it) or an OCI digest, as
/// `sha256:<hex>`.
fn normalize_digest(d: &str) -> String {
    let d = d.trim().to_ascii_lowercase();
    if d.starts_with("sha256:") {
        d
    } else {
        format!("sha256:{d}")
    }
}

/// An index URL relative to the repository, as Helm resolves it.
fn join_url(repo: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_owned();
    }
    let base = format!("{}/", repo.trim_end_matches('/'));
    url::Url::parse(&base)
        .and_then(|b| b.join(url))
        .map(|u| u.to_string())
        .unwrap_or_else(|_| format!("{base}{url}"))
}

fn summarize(versions: &[&str]) -> String {
    let mut sorted: Vec<&str> = versions.to_vec();
    sorted.sort_by(
        |a, b| match (constraint::parse_version(a), constraint::parse_version(b)) {
            (Some(x), Some(y)) => y.cmp(&x),
            _ => b.cmp(a),
        },
    );
    let shown: Vec<&str> = sorted.iter().take(8).copied().collect();
    match sorted.len() {
        0 => "none".into(),
        n if n > 8 => format!("{}, and {} more", shown.join(", "), n - 8),
        _ => shown.join(", "),
    }
}

pub(crate) fn scrub(message: String, access: &Access) -> String {
    access
        .secrets()
        .into_iter()
        .fold(message, |m, s| m.replace(s, "<redacted>"))
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn http_error(chart: &str, shown: &str, access: &Access, e: reqwest::Error) -> ChartError {
    // The URL may carry a query credential; the source is named anyway.
    let message = scrub(error_chain(&e.without_url()), access);
    let lower = message.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("unknownissuer") {
        return ChartError::Tls {
            chart: chart.to_owned(),
            from: shown.to_owned(),
            message,
        };
    }
    ChartError::Unreachable {
        chart: chart.to_owned(),
        from: shown.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_urls_resolve_against_the_repository() {
        assert_eq!(
            join_url("https://charts.example.com/stable", "redis-1.0.0.tgz"),
            "https://charts.example.com/stable/redis-1.0.0.tgz"
        );
        assert_eq!(
            join_url("https://charts.example.com/stable/", "../other/x.tgz"),
            "https://charts.example.com/other/x.tgz"
        );
        assert_eq!(
            join_url("https://a.example.com", "https://b.example.com/x.tgz"),
            "https://b.example.com/x.tgz"
        );
        assert_eq!(normalize_digest("ABC"), "sha256:abc");
        assert_eq!(
            summarize(&["1.0.0", "2.0.0", "1.5.0"]),
            "2.0.0, 1.5.0, 1.0.0"
        );
    }
}
