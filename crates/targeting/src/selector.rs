//! Kubernetes label selectors, compiled once and matched many times.
//!
//! Semantics follow `k8s.io/apimachinery/pkg/labels`: `matchLabels` and
//! `matchExpressions` are ANDed; `In` needs the key present with one of the
//! values; `NotIn` matches when the key is absent or has another value;
//! `Exists` and `DoesNotExist` test the key only. An empty selector matches
//! everything. Anything malformed is an error, never "match all".

use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Labels of a cluster or cluster group.
pub type Labels = BTreeMap<String, String>;

/// A validated selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

/// Why a selector was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorError(pub String);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SelectorError {}

impl Selector {
    /// Validates and compiles a selector.
    pub fn compile(selector: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            validate_key(key)?;
            validate_value(key, value)?;
            requirements.push(Requirement::In(
                key.clone(),
                BTreeSet::from([value.clone()]),
            ));
        }
        for expr in selector.match_expressions.iter().flatten() {
            validate_key(&expr.key)?;
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            for v in &values {
                validate_value(&expr.key, v)?;
            }
            let key = expr.key.clone();
            let requirement = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(SelectorError(format!(
                        "matchExpressions key {key:?}: operator {} needs at least one value",
                        expr.operator
                    )));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(SelectorError(format!(
                        "matchExpressions key {key:?}: operator {} takes no values",
                        expr.operator
                    )));
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(SelectorError(format!(
                        "matchExpressions key {key:?}: unknown operator {other:?} (want In, NotIn, Exists or DoesNotExist)"
                    )));
                }
            };
            requirements.push(requirement);
        }
        Ok(Selector { requirements })
    }

    /// Whether these labels satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// `{}`: matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A label key: an optional DNS subdomain prefix and a name of at most 63
/// characters.
fn validate_key(key: &str) -> Result<(), SelectorError> {
    let bad = |why: &str| Err(SelectorError(format!("invalid label key {key:?}: {why}")));
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 {
            return bad("prefix must be 1 to 253 characters");
        }
        let dns_label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !prefix.split('.').all(dns_label_ok) {
            return bad("prefix must be a DNS subdomain");
        }
    }
    if name.is_empty() || name.len() > 63 {
        return bad("name must be 1 to 63 characters");
    }
    if !is_label_token(name) {
        return bad(
            "name must be alphanumerics, '-', '_' or '.', starting and ending alphanumeric",
        );
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of the label alphabet.
fn validate_value(key: &str, value: &str) -> Result<(), SelectorError> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 || !is_label_token(value) {
        return Err(SelectorError(format!(
            "invalid value {value:?} for label key {key:?}: at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        )));
    }
    Ok(())
}

fn is_label_token(s: &str) -> bool {
    let bytes = s.as_bytes();
    let edge = |b: u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && edge(bytes[0])
        && edge(bytes[bytes.len() - 1])
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn sel(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        }
    }

    #[test]
    fn matching_table() {
        let prod_eu = labels(&[("env", "prod"), ("region", "eu")]);
        let dev = labels(&[("env", "dev")]);
        let none = labels(&[]);
        // (selector, labels, matches)
        let table: Vec<(LabelSelector, &Labels, bool)> = vec![
            (sel(&[], vec![]), &none, true),
            (sel(&[], vec![]), &prod_eu, true),
            (sel(&[("env", "prod")], vec![]), &prod_eu, true),
            (sel(&[("env", "prod")], vec![]), &dev, false),
            (sel(&[("env", "prod")], vec![]), &none, false),
            (
                sel(&[("env", "prod"), ("region", "us")], vec![]),
                &prod_eu,
                false,
            ),
            (
                sel(&[], vec![expr("env", "In", &["prod", "dev"])]),
                &dev,
                true,
            ),
            (sel(&[], vec![expr("env", "In", &["staging"])]), &dev, false),
            (sel(&[], vec![expr("env", "In", &["dev"])]), &none, false),
            (sel(&[], vec![expr("env", "NotIn", &["prod"])]), &dev, true),
            (
                sel(&[], vec![expr("env", "NotIn", &["prod"])]),
                &prod_eu,
                false,
            ),
            (sel(&[], vec![expr("env", "NotIn", &["prod"])]), &none, true),
            (
                sel(&[], vec![expr("region", "Exists", &[])]),
                &prod_eu,
                true,
            ),
            (sel(&[], vec![expr("region", "Exists", &[])]), &dev, false),
            (
                sel(&[], vec![expr("region", "DoesNotExist", &[])]),
                &dev,
                true,
            ),
            (
                sel(&[], vec![expr("region", "DoesNotExist", &[])]),
                &prod_eu,
                false,
            ),
            (
                sel(&[("env", "prod")], vec![expr("region", "NotIn", &["us"])]),
                &prod_eu,
                true,
            ),
        ];
        for (i, (s, l, want)) in table.into_iter().enumerate() {
            let compiled = Selector::compile(&s).unwrap();
            assert_eq!(compiled.matches(l), want, "row {i}: {s:?} on {l:?}");
        }
    }

    #[test]
    fn invalid_selectors_are_errors() {
        let table: Vec<(LabelSelector, &str)> = vec![
            (
                sel(&[], vec![expr("env", "Equals", &["x"])]),
                "unknown operator",
            ),
            (
                sel(&[], vec![expr("env", "In", &[])]),
                "needs at least one value",
            ),
            (
                sel(&[], vec![expr("env", "NotIn", &[])]),
                "needs at least one value",
            ),
            (
                sel(&[], vec![expr("env", "Exists", &["x"])]),
                "takes no values",
            ),
            (
                sel(&[], vec![expr("env", "DoesNotExist", &["x"])]),
                "takes no values",
            ),
            (sel(&[("bad key", "x")], vec![]), "invalid label key"),
            (sel(&[("", "x")], vec![]), "invalid label key"),
            (sel(&[("Example.com/x", "x")], vec![]), "prefix"),
            (sel(&[("env", "has space")], vec![]), "invalid value"),
            (sel(&[("env", &"x".repeat(64))], vec![]), "invalid value"),
            (
                sel(&[], vec![expr("env", "In", &["-lead"])]),
                "invalid value",
            ),
        ];
        for (s, want) in table {
            let err = Selector::compile(&s).expect_err(&format!("{s:?} must be refused"));
            assert!(err.0.contains(want), "{s:?}: {err} lacks {want:?}");
        }
    }

    #[test]
    fn valid_edge_cases_compile() {
        for s in [
            sel(&[("example.com/tier", "")], vec![]),
            sel(&[("a", "A_b.c-9")], vec![]),
            sel(&[(&"k".repeat(63), "v")], vec![]),
        ] {
            Selector::compile(&s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        }
    }
}
