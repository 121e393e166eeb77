//! A packaged chart (`.tgz`) read safely: every entry is a plain file or
//! directory under one top directory, with a relative path that stays
//! inside it; the uncompressed total and the number of entries are bounded
//! as they are read, so a gzip bomb stops at the limit; and `Chart.yaml`
//! must parse and name the chart.

use crate::error::ChartError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;

/// What one chart may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The archive as downloaded.
    pub max_archive_bytes: usize,
    /// Everything in it, uncompressed.
    pub max_chart_bytes: usize,
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_archive_bytes: 16 << 20,
            max_chart_bytes: 16 << 20,
            max_entries: 10_000,
        }
    }
}

/// A chart's files, relative to its directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartFiles {
    pub name: String,
    pub version: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

/// The fields of `Chart.yaml` Flotilla reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartMeta {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub alias: Option<String>,
}

/// Reads a chart's `Chart.yaml`; `what` names the chart in errors.
pub fn chart_meta(what: &str, bytes: &[u8]) -> Result<ChartMeta, ChartError> {
    let invalid = |why: String| ChartError::Invalid {
        chart: what.to_owned(),
        message: why,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("Chart.yaml is not UTF-8".into()))?;
    let meta: ChartMeta = serde_saphyr::from_str(text).map_err(|e| {
        invalid(format!(
            "Chart.yaml: {}",
            e.to_string().lines().next().unwrap_or_default()
        ))
    })?;
    if meta.name.is_empty() {
        return Err(invalid("Chart.yaml names no chart".into()));
    }
    if meta.version.is_empty() {
        return Err(invalid("Chart.yaml has no version".into()));
    }
    Ok(meta)
}

/// Extracts a packaged chart. `what` names it in errors.
pub fn extract(what: &str, tgz: &[u8], limits: Limits) -> Result<ChartFiles, ChartError> {
    let invalid = |why: String| ChartError::Invalid {
        chart: what.to_owned(),
        message: why,
    };
    if tgz.len() > limits.max_archive_bytes {
        return Err(ChartError::TooLarge {
            chart: what.to_owned(),
            size: tgz.len(),
            limit: limits.max_archive_bytes,
        });
    }
    // The decompressed stream is read through a limit (tar headers and
    // padding included): past it the archive holds more than a chart may.
    let hit = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gz = Capped {
        inner: flate2::read::GzDecoder::new(tgz),
        remaining: limits.max_chart_bytes as u64 + 64 * 1024,
        hit: std::sync::Arc::clone(&hit),
    };
    let too_large_or = |e: std::io::Error| {
        if hit.load(std::sync::atomic::Ordering::Relaxed) {
            ChartError::TooLarge {
                chart: what.to_owned(),
                size: limits.max_chart_bytes + 1,
                limit: limits.max_chart_bytes,
            }
        } else {
            invalid(format!("the archive is damaged: {e}"))
        }
    };
    let mut archive = tar::Archive::new(gz);
    let mut top: Option<String> = None;
    let mut files = BTreeMap::new();
    let mut total = 0usize;
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("the archive is damaged: {e}")))?;
    for (n, entry) in entries.enumerate() {
        if n >= limits.max_entries {
            return Err(invalid(format!("more than {} entries", limits.max_entries)));
        }
        let mut entry = entry.map_err(too_large_or)?;
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let path =
            String::from_utf8(raw).map_err(|_| invalid("an entry name is not UTF-8".into()))?;
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
        {
            continue;
        }
        let rel = safe_relative(&path).map_err(|why| invalid(format!("entry {path:?} {why}")))?;
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(invalid(format!(
                "entry {path:?} is a {}; charts may hold only files and directories",
                if kind.is_symlink() {
                    "symlink"
                } else if kind.is_hard_link() {
                    "hard link"
                } else {
                    "special file"
                }
            )));
        }
        let (head, inner) = rel.split_once('/').ok_or_else(|| {
            invalid(format!(
                "entry {path:?} is not inside the chart's directory"
            ))
        })?;
        match &top {
            None => top = Some(head.to_owned()),
            Some(t) if t != head => {
                return Err(invalid(format!(
                    "entries under both {t:?} and {head:?}: a chart archive has one top directory"
                )));
            }
            _ => {}
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(too_large_or)?;
        total += bytes.len();
        if total > limits.max_chart_bytes {
            return Err(ChartError::TooLarge {
                chart: what.to_owned(),
                size: total,
                limit: limits.max_chart_bytes,
            });
        }
        files.insert(inner.to_owned(), bytes);
    }
    let top = top.ok_or_else(|| invalid("the archive is empty".into()))?;
    let meta = chart_meta(
        what,
        files
            .get("Chart.yaml")
            .ok_or_else(|| invalid(format!("no {top}/Chart.yaml")))?,
    )?;
    Ok(ChartFiles {
        name: meta.name,
        version: meta.version,
        files,
    })
}

/// A reader that fails once `remaining` bytes were read, and says so.
struct Capped<R> {
    inner: R,
    remaining: u64,
    hit: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            self.hit.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::other(
                "the uncompressed size limit was reached",
            ));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A relative path without `..`, absolute parts or empty segments.
fn safe_relative(path: &str) -> Result<String, &'static str> {
    let p = path.trim_start_matches("./");
    if p.starts_with('/') || p.starts_with('\\') || p.get(1..2) == Some(":") {
        return Err("is an absolute path");
    }
    let mut parts = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err("climbs out of the chart"),
            s if s.contains('\\') => return Err("holds a backslash"),
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return Err("is empty");
    }
    Ok(parts.join("/"))
}

/// Builds a chart archive (for tests and the benchmark): `files` are
/// relative to the chart's directory `name`.
pub fn package(name: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("{name}/{path}"), *bytes)
            .expect("in-memory tar");
    }
    builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .expect("in-memory gzip")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart_yaml(name: &str) -> String {
        format!("apiVersion: v2\nname: {name}\nversion: 1.2.3\n")
    }

    #[test]
    fn a_chart_extracts_relative_to_its_directory() {
        let y = chart_yaml("redis");
        let tgz = package(
            "redis",
            &[
                ("Chart.yaml", y.as_bytes()),
                ("templates/cm.yaml", b"kind: ConfigMap"),
            ],
        );
        let c = extract("redis", &tgz, Limits::default()).unwrap();
        assert_eq!(c.name, "redis");
        assert_eq!(c.version, "1.2.3");
        assert_eq!(
            c.files.keys().collect::<Vec<_>>(),
            ["Chart.yaml", "templates/cm.yaml"]
        );
    }

    use crate::testing::raw_archive as raw_tgz;

    #[test]
    fn hostile_archives_are_refused_naming_the_chart_and_why() {
        let y = chart_yaml("c");
        let ok = ("c/Chart.yaml", tar::EntryType::Regular, y.as_bytes());
        let rows: Vec<(Vec<u8>, &str)> = vec![
            (
                raw_tgz(&[ok, ("c/../../etc/x", tar::EntryType::Regular, b"x")]),
                "climbs out",
            ),
            (
                raw_tgz(&[ok, ("/etc/cron.d/x", tar::EntryType::Regular, b"x")]),
                "absolute",
            ),
            (
                raw_tgz(&[ok, ("c/link", tar::EntryType::Symlink, b"")]),
                "symlink",
            ),
            (
                raw_tgz(&[ok, ("d/other.yaml", tar::EntryType::Regular, b"x")]),
                "one top directory",
            ),
            (
                raw_tgz(&[("c/values.yaml", tar::EntryType::Regular, b"x")]),
                "no c/Chart.yaml",
            ),
            (
                raw_tgz(&[("c/Chart.yaml", tar::EntryType::Regular, b"name: [unclosed")]),
                "Chart.yaml",
            ),
            (b"not gzip at all".to_vec(), "damaged"),
        ];
        for (tgz, why) in rows {
            let err = extract("my-chart", &tgz, Limits::default()).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("my-chart") && text.contains(why),
                "{why}: {text}"
            );
        }
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 8 << 20];
        let y = chart_yaml("bomb");
        let tgz = package("bomb", &[("Chart.yaml", y.as_bytes()), ("big.bin", &zeros)]);
        assert!(tgz.len() < 100 << 10, "compresses well: {}", tgz.len());
        let limits = Limits {
            max_chart_bytes: 1 << 20,
            ..Limits::default()
        };
        let err = extract("bomb", &tgz, limits).unwrap_err();
        assert!(matches!(err, ChartError::TooLarge { .. }), "{err}");
        let small = Limits {
            max_archive_bytes: 1000,
            ..Limits::default()
        };
        let err = extract("bomb", &tgz, small).unwrap_err();
        assert!(matches!(err, ChartError::TooLarge { .. }), "{err}");
    }
}
