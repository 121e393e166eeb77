//! Helm's version constraints (Masterminds/semver v3), evaluated with the
//! `semver` crate by translating each comparator:
//!
//! - `||` separates alternatives; within one, comparators are separated by
//!   `,` or spaces (`>= 1.2, < 3`, `>=1.2 <3`);
//! - a bare or `=` version is exact, and partial or wildcard versions
//!   (`1.2`, `1.2.x`, `1.*`) match everything they leave open;
//! - `~` (and `~>`) and `^` ranges, `>`, `>=` (`=>`), `<`, `<=` (`=<`),
//!   `!=`, and hyphen ranges (`1.2 - 1.4.5`);
//! - `*`, `x` and `X` wildcards, and an empty constraint, match any version;
//! - pre-releases match only a comparator that names a pre-release (so
//!   `*` never picks `2.0.0-rc.1`), as in Helm.
//!
//! Versions are read loosely, as Helm reads them: a leading `v`, and
//! missing minor or patch numbers (`1.2` is `1.2.0`).

use semver::{Version, VersionReq};

/// One constraint: alternatives, each the comparators that must all hold.
/// The positive comparators of an alternative form one requirement, so
/// that a pre-release named by one of them counts for all (`>= 3.0.0-0,
/// < 3.1.0` matches `3.0.0-beta.2`).
#[derive(Clone, Debug)]
pub struct Constraint {
    alternatives: Vec<(VersionReq, Vec<VersionReq>)>,
}

impl Constraint {
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let bad = |why: &str| format!("{text:?} is not a version constraint: {why}");
        let text = text.trim();
        if text.is_empty() {
            return Ok(Constraint {
                alternatives: vec![(VersionReq::STAR, Vec::new())],
            });
        }
        let mut alternatives = Vec::new();
        for alt in text.split("||") {
            let mut positive = Vec::new();
            let mut negative = Vec::new();
            for (op, version) in tokens(alt).map_err(|e| bad(&e))? {
                match comparator(&op, &version).map_err(|e| bad(&e))? {
                    Comparator::Req(r) => positive.push(r),
                    Comparator::Not(r) => negative.push(r),
                }
            }
            if positive.is_empty() && negative.is_empty() {
                return Err(bad("an empty alternative"));
            }
            let joined: Vec<String> = positive
                .iter()
                .flat_map(|r| r.comparators.iter().map(ToString::to_string))
                .collect();
            let req = if joined.is_empty() {
                VersionReq::STAR
            } else {
                VersionReq::parse(&joined.join(", ")).map_err(|e| bad(&e.to_string()))?
            };
            alternatives.push((req, negative));
        }
        Ok(Constraint { alternatives })
    }

    pub fn matches(&self, v: &Version) -> bool {
        self.alternatives
            .iter()
            .any(|(req, nots)| req.matches(v) && nots.iter().all(|n| !n.matches(v)))
    }
}

enum Comparator {
    Req(VersionReq),
    /// `!=`: anything the requirement does not match.
    Not(VersionReq),
}

/// (operator, version) pairs of one alternative; hyphen ranges expanded.
fn tokens(alt: &str) -> Result<Vec<(String, String)>, String> {
    let words: Vec<&str> = alt
        .split([',', ' ', '\t'])
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        // `1.2 - 1.4.5`
        if words.get(i + 1) == Some(&"-") {
            let hi = words
                .get(i + 2)
                .ok_or("a hyphen range without an upper end")?;
            out.push((">=".into(), w.to_owned()));
            out.push(("<=".into(), (*hi).to_owned()));
            i += 3;
            continue;
        }
        let split = w.find(|c: char| !"=<>!~^".contains(c)).unwrap_or(w.len());
        let (op, version) = w.split_at(split);
        if version.is_empty() {
            // `>= 1.2`: the version is the next word.
            let next = words.get(i + 1).ok_or("an operator without a version")?;
            out.push((op.to_owned(), (*next).to_owned()));
            i += 2;
        } else {
            out.push((op.to_owned(), version.to_owned()));
            i += 1;
        }
    }
    Ok(out)
}

/// The version part of a comparator in `semver`'s syntax: no `v`,
/// wildcards as `*`, and whether it is partial (wildcard or missing parts).
fn normalize(version: &str) -> Result<(String, bool), String> {
    let v = version.strip_prefix(['v', 'V']).unwrap_or(version);
    if v.is_empty() {
        return Err("a comparator without a version".into());
    }
    let (core, rest) = match v.find(['-', '+']) {
        Some(i) => v.split_at(i),
        None => (v, ""),
    };
    let mut parts = Vec::new();
    let mut partial = false;
    for p in core.split('.') {
        if matches!(p, "x" | "X" | "*") {
            partial = true;
            break;
        }
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{version:?} is not a version"));
        }
        parts.push(p);
    }
    if parts.len() > 3 {
        return Err(format!("{version:?} has more than three numbers"));
    }
    partial |= parts.len() < 3;
    if parts.is_empty() {
        return Ok(("*".into(), true));
    }
    Ok((format!("{}{rest}", parts.join(".")), partial))
}

fn comparator(op: &str, version: &str) -> Result<Comparator, String> {
    let (v, partial) = normalize(version)?;
    let req = |s: String| VersionReq::parse(&s).map_err(|e| format!("{s:?}: {e}"));
    Ok(match op {
        "" | "=" | "==" => {
            if v == "*" {
                Comparator::Req(VersionReq::STAR)
            } else {
                // `=1.2` in semver matches 1.2.x: what Helm means by a
                // partial version.
                Comparator::Req(req(format!("={v}"))?)
            }
        }
        "!=" => Comparator::Not(req(format!("={v}"))?),
        "~" | "~>" => Comparator::Req(req(format!("~{v}"))?),
        "^" => Comparator::Req(req(format!("^{v}"))?),
        ">" | ">=" | "=>" | "<" | "<=" | "=<" => {
            let op = match op {
                "=>" => ">=",
                "=<" => "<=",
                o => o,
            };
            if v == "*" {
                Comparator::Req(VersionReq::STAR)
            } else if partial && op == "<=" {
                // `<=1.2` includes all of 1.2.x.
                Comparator::Req(req(format!("<{}", bump_last(&v)))?)
            } else if partial && op == ">" {
                // `>1.2` excludes all of 1.2.x.
                Comparator::Req(req(format!(">={}", bump_last(&v)))?)
            } else {
                Comparator::Req(req(format!("{op}{v}"))?)
            }
        }
        other => return Err(format!("unknown operator {other:?}")),
    })
}

/// `1.2` -> `1.3`, `1` -> `2`.
fn bump_last(v: &str) -> String {
    let mut parts: Vec<u64> = v
        .split(['-', '+'])
        .next()
        .unwrap_or(v)
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last += 1;
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether a constraint names one version exactly (strict semver, as
/// Fleet decides whether a HelmOp polls): such a version cannot move.
pub fn is_exact(text: &str) -> bool {
    Version::parse(text.trim()).is_ok()
}

/// A version as Helm reads one: a leading `v`, missing parts as 0.
pub fn parse_version(text: &str) -> Option<Version> {
    let v = text.trim().strip_prefix(['v', 'V']).unwrap_or(text.trim());
    if let Ok(v) = Version::parse(v) {
        return Some(v);
    }
    let (core, rest) = match v.find(['-', '+']) {
        Some(i) => v.split_at(i),
        None => (v, ""),
    };
    let mut parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    while parts.len() < 3 {
        parts.push("0");
    }
    Version::parse(&format!("{}{rest}", parts.join("."))).ok()
}

/// The version a constraint picks among `versions`: an exact string match
/// first (as Helm tries one, pre-releases included), else the highest
/// version the constraint matches.
pub fn pick<'a>(
    constraint: &str,
    versions: impl IntoIterator<Item = &'a str>,
) -> Result<Option<&'a str>, String> {
    let versions: Vec<&str> = versions.into_iter().collect();
    let trimmed = constraint.trim();
    if let Some(exact) = versions
        .iter()
        .find(|v| !trimmed.is_empty() && **v == trimmed)
    {
        return Ok(Some(exact));
    }
    let c = Constraint::parse(constraint)?;
    Ok(versions
        .into_iter()
        .filter_map(|v| parse_version(v).map(|p| (p, v)))
        .filter(|(p, _)| c.matches(p))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERSIONS: [&str; 12] = [
        "1.0.0",
        "1.2.0",
        "1.2.3",
        "1.2.9",
        "1.3.0",
        "1.10.0",
        "2.0.0-rc.1",
        "2.0.0",
        "2.1.0",
        "3.0.0-beta.2",
        "v3.1",
        "104.1.0+up57.0.3",
    ];

    #[test]
    fn helm_constraints_pick_the_highest_match() {
        let rows: [(&str, Option<&str>); 24] = [
            ("", Some("104.1.0+up57.0.3")),
            ("*", Some("104.1.0+up57.0.3")),
            ("1.2.3", Some("1.2.3")),
            ("=1.2.3", Some("1.2.3")),
            ("1.2", Some("1.2.9")),
            ("1.2.x", Some("1.2.9")),
            ("1.x", Some("1.10.0")),
            ("1.*", Some("1.10.0")),
            ("~1.2.3", Some("1.2.9")),
            ("~1.2", Some("1.2.9")),
            ("~1", Some("1.10.0")),
            ("^1.2.3", Some("1.10.0")),
            ("^2", Some("2.1.0")),
            (">= 1.2, < 2", Some("1.10.0")),
            (">=1.2 <2", Some("1.10.0")),
            (">1.2", Some("104.1.0+up57.0.3")),
            ("<=1.2", Some("1.2.9")),
            ("1.2 - 1.3", Some("1.3.0")),
            ("~1.2 || ^2", Some("2.1.0")),
            ("!=2.1.0, ^2", Some("2.0.0")),
            // Pre-releases only when the constraint names one.
            ("^2.0.0-rc.1", Some("2.1.0")),
            (">= 3.0.0-0, < 3.1.0", Some("3.0.0-beta.2")),
            ("2.0.0-rc.1", Some("2.0.0-rc.1")),
            ("5.x", None),
        ];
        for (c, want) in rows {
            assert_eq!(pick(c, VERSIONS).unwrap(), want, "{c:?}");
        }
        assert_eq!(
            pick("104.1.0+up57.0.3", VERSIONS).unwrap(),
            Some("104.1.0+up57.0.3")
        );
        assert_eq!(
            pick("3.1.0", VERSIONS).unwrap(),
            Some("v3.1"),
            "loose versions"
        );
    }

    #[test]
    fn bad_constraints_say_why() {
        for bad in [">=", "1.2.3.4", "~>> 1", "1.a", "1.2 -", "||"] {
            assert!(pick(bad, VERSIONS).is_err(), "{bad}");
        }
    }

    #[test]
    fn star_never_picks_a_prerelease() {
        assert_eq!(pick("*", ["1.0.0", "2.0.0-rc.1"]).unwrap(), Some("1.0.0"));
        assert_eq!(pick("*", ["2.0.0-rc.1"]).unwrap(), None);
    }
}
