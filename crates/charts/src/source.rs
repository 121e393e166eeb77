//! Where a chart comes from, read off a bundle's Helm options as Fleet
//! reads them, and the access (credentials and TLS trust) used to fetch it.

use sha2::{Digest, Sha256};

/// A remote chart: what to fetch, and which versions are acceptable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChartSource {
    /// `helm.repo` (a Helm repository) and `helm.chart` (a name in it).
    Repo {
        url: String,
        chart: String,
        constraint: String,
    },
    /// `oci://registry/path/name`, as `helm.chart` or as `helm.repo` (with
    /// `helm.chart` a name under it, or empty).
    Oci {
        /// `registry[:port]/path/name`, without the scheme.
        reference: String,
        constraint: String,
    },
    /// `helm.chart` as an `https://` (or `http://`) URL of a packaged chart.
    Url { url: String },
}

impl ChartSource {
    /// The remote source `repo`, `chart` and `version` name, or `None` for
    /// a chart inside the bundle. Empty strings are unset, as in Fleet.
    pub fn of(
        repo: Option<&str>,
        chart: Option<&str>,
        version: Option<&str>,
    ) -> Option<ChartSource> {
        fn set(s: Option<&str>) -> Option<&str> {
            s.map(str::trim).filter(|s| !s.is_empty())
        }
        let (repo, chart) = (set(repo), set(chart));
        let constraint = set(version).unwrap_or_default().to_owned();
        match (repo, chart) {
            (Some(r), c) if r.starts_with("oci://") => {
                let base = r.trim_start_matches("oci://").trim_end_matches('/');
                let reference = match c {
                    Some(c) => format!("{base}/{c}"),
                    None => base.to_owned(),
                };
                Some(ChartSource::Oci {
                    reference,
                    constraint,
                })
            }
            (Some(r), Some(c)) if r.starts_with("https://") || r.starts_with("http://") => {
                Some(ChartSource::Repo {
                    url: r.trim_end_matches('/').to_owned(),
                    chart: c.to_owned(),
                    constraint,
                })
            }
            (None, Some(c)) if c.starts_with("oci://") => Some(ChartSource::Oci {
                reference: c
                    .trim_start_matches("oci://")
                    .trim_end_matches('/')
                    .to_owned(),
                constraint,
            }),
            (None, Some(c)) if c.starts_with("https://") || c.starts_with("http://") => {
                Some(ChartSource::Url { url: c.to_owned() })
            }
            _ => None,
        }
    }

    /// The chart's name as the source gives it (the last path segment of a
    /// reference or URL, the version suffix of an archive left on).
    pub fn chart(&self) -> String {
        match self {
            ChartSource::Repo { chart, .. } => chart.clone(),
            ChartSource::Oci { reference, .. } => {
                reference.rsplit('/').next().unwrap_or(reference).to_owned()
            }
            ChartSource::Url { url } => {
                let file = url
                    .split(['?', '#'])
                    .next()
                    .unwrap_or(url)
                    .rsplit('/')
                    .next()
                    .unwrap_or(url);
                file.trim_end_matches(".tgz").to_owned()
            }
        }
    }

    /// The source as it may be shown: no userinfo, query credentials masked.
    pub fn shown(&self) -> String {
        match self {
            ChartSource::Repo { url, .. } | ChartSource::Url { url } => redact(url),
            ChartSource::Oci { reference, .. } => format!("oci://{}", redact(reference)),
        }
    }

    /// The URL a credential regex is matched against: the repository, else
    /// the chart's own URL or reference (as Fleet matches it).
    pub fn url_for_credentials(&self) -> String {
        match self {
            ChartSource::Repo { url, .. } | ChartSource::Url { url } => url.clone(),
            ChartSource::Oci { reference, .. } => format!("oci://{reference}"),
        }
    }

    /// Whether `other` is served by the same host (scheme, host and port):
    /// credentials for one may go to the other.
    pub fn same_host(&self, other: &ChartSource) -> bool {
        let key = |s: &ChartSource| {
            let u = url::Url::parse(&s.url_for_credentials()).ok()?;
            Some((
                u.scheme().to_owned(),
                u.host_str()?.to_ascii_lowercase(),
                u.port_or_known_default(),
            ))
        };
        key(self).is_some_and(|k| Some(k) == key(other))
    }
}

/// A URL without userinfo, the values of credential-like query parameters
/// masked.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (base, query) = match path.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (path, None),
    };
    let mut out = match scheme {
        Some(s) => format!("{s}://{host}{base}"),
        None => format!("{host}{base}"),
    };
    if let Some(q) = query {
        let masked: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if is_secret_param(k) => format!("{k}=<redacted>"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&masked.join("&"));
    }
    out
}

fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "key",
        "sig",
        "auth",
        "credential",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// How to reach one source: basic credentials (sent only where the caller
/// decided they belong) and TLS trust. `Debug` shows no secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub basic: Option<(String, String)>,
    /// PEM certificates trusted beside the system's.
    pub ca_bundle: Option<Vec<u8>>,
    pub insecure_skip_verify: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("basic", &self.basic.as_ref().map(|_| "<redacted>"))
            .field("ca_bundle", &self.ca_bundle.as_ref().map(Vec::len))
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

impl Access {
    /// A digest of everything here, for cache keys (never the secrets).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        if let Some((u, p)) = &self.basic {
            h.update(b"basic\0");
            h.update(u.as_bytes());
            h.update(b"\0");
            h.update(p.as_bytes());
        }
        if let Some(ca) = &self.ca_bundle {
            h.update(b"\0ca\0");
            h.update(ca);
        }
        h.update([u8::from(self.insecure_skip_verify)]);
        hex::encode(&h.finalize()[..16])
    }

    /// The secrets, to scrub from any message.
    pub fn secrets(&self) -> Vec<&str> {
        self.basic
            .iter()
            .flat_map(|(u, p)| [u.as_str(), p.as_str()])
            .filter(|s| s.len() >= 3)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_compares_scheme_host_and_port() {
        let src = |r: &str, c: &str| ChartSource::of(Some(r), Some(c), None).unwrap();
        let home = src("https://charts.example.com/stable", "redis");
        assert!(home.same_host(&src("https://charts.example.com/other", "x")));
        assert!(home.same_host(&src("https://CHARTS.example.com:443", "x")));
        assert!(
            !home.same_host(&src("http://charts.example.com", "x")),
            "scheme"
        );
        assert!(
            !home.same_host(&src("https://charts.example.com:8443", "x")),
            "port"
        );
        assert!(
            !home.same_host(&src("https://evil.example.org", "x")),
            "host"
        );
        let oci = src("oci://registry.example.com:5000/charts", "redis");
        assert!(oci.same_host(&src("oci://registry.example.com:5000/other", "y")));
        assert!(!oci.same_host(&src("oci://registry.example.com/charts", "redis")));
    }

    #[test]
    fn sources_are_read_as_fleet_reads_them() {
        type Row<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<ChartSource>,
        );
        let rows: [Row<'_>; 8] = [
            (None, Some("./chart"), None, None),
            (Some(""), Some(""), Some(""), None),
            (
                Some("https://charts.example.com/"),
                Some("redis"),
                Some("17.*"),
                Some(ChartSource::Repo {
                    url: "https://charts.example.com".into(),
                    chart: "redis".into(),
                    constraint: "17.*".into(),
                }),
            ),
            (
                None,
                Some("oci://ghcr.io/org/charts/redis"),
                Some("1.0.0"),
                Some(ChartSource::Oci {
                    reference: "ghcr.io/org/charts/redis".into(),
                    constraint: "1.0.0".into(),
                }),
            ),
            (
                Some("oci://ghcr.io/org/charts"),
                Some("redis"),
                None,
                Some(ChartSource::Oci {
                    reference: "ghcr.io/org/charts/redis".into(),
                    constraint: String::new(),
                }),
            ),
            (
                Some("oci://ghcr.io/org/charts/redis"),
                Some(""),
                None,
                Some(ChartSource::Oci {
                    reference: "ghcr.io/org/charts/redis".into(),
                    constraint: String::new(),
                }),
            ),
            (
                None,
                Some("https://host/releases/guestbook-0.0.0.tgz"),
                None,
                Some(ChartSource::Url {
                    url: "https://host/releases/guestbook-0.0.0.tgz".into(),
                }),
            ),
            (None, Some("chart"), Some("1.0.0"), None),
        ];
        for (repo, chart, version, want) in rows {
            assert_eq!(
                ChartSource::of(repo, chart, version),
                want,
                "{repo:?} {chart:?}"
            );
        }
    }

    #[test]
    fn sources_show_no_credentials() {
        let s = ChartSource::Repo {
            url: "https://u:p4ss@charts.example.com/x?token=abc".into(),
            chart: "c".into(),
            constraint: String::new(),
        };
        assert_eq!(s.shown(), "https://charts.example.com/x?token=<redacted>");
        let a = Access {
            basic: Some(("bob".into(), "hunter2".into())),
            ..Default::default()
        };
        assert!(!format!("{a:?}").contains("hunter2"));
        assert_ne!(a.digest(), Access::default().digest());
    }
}
