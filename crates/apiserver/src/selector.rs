//! `labelSelector` and `fieldSelector` query parameters, as the
//! kube-apiserver parses them.
//!
//! Labels: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`,
//! comma-separated and ANDed. Fields: `metadata.name` and
//! `metadata.namespace` with `=`, `==` or `!=`.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<LabelReq>,
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s)? {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let req = if let Some(key) = term.strip_prefix('!') {
                LabelReq::NotExists(key_of(key.trim())?)
            } else if let Some((k, rest)) = split_word(term, " notin ") {
                LabelReq::NotIn(key_of(k)?, set_of(rest)?)
            } else if let Some((k, rest)) = split_word(term, " in ") {
                LabelReq::In(key_of(k)?, set_of(rest)?)
            } else if let Some((k, v)) = term.split_once("!=") {
                LabelReq::NotEq(key_of(k)?, value_of(v)?)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                LabelReq::Eq(key_of(k)?, value_of(v)?)
            } else {
                LabelReq::Exists(key_of(term)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(format!("unbalanced parentheses in {s:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in {s:?}"));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn split_word<'a>(term: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    term.find(word)
        .map(|i| (&term[..i], &term[i + word.len()..]))
}

fn key_of(k: &str) -> Result<String, String> {
    let k = k.trim();
    let ok = !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(k.to_owned())
    } else {
        Err(format!("invalid label key {k:?}"))
    }
}

fn value_of(v: &str) -> Result<String, String> {
    let v = v.trim();
    let ok = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!("invalid label value {v:?}"))
    }
}

fn set_of(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesized set, found {rest:?}"))?;
    let values: Vec<String> = inner.split(',').map(value_of).collect::<Result<_, _>>()?;
    if values.iter().all(String::is_empty) {
        return Err("a set needs at least one value".into());
    }
    Ok(values)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum FieldReq {
    Eq(&'static str, String),
    NotEq(&'static str, String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<FieldReq>,
}

impl FieldSelector {
    /// Parses a field selector; `extra` names further supported fields
    /// (JSON pointers by field path), such as `involvedObject.name` for
    /// events.
    pub fn parse(s: &str, extra: &[&'static str]) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, v, false)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            let field = ["metadata.name", "metadata.namespace"]
                .iter()
                .chain(extra)
                .find(|f| **f == field.trim())
                .ok_or_else(|| format!("field label not supported: {}", field.trim()))?;
            let value = value.trim().to_owned();
            reqs.push(if negated {
                FieldReq::NotEq(field, value)
            } else {
                FieldReq::Eq(field, value)
            });
        }
        Ok(FieldSelector { reqs })
    }

    pub fn matches(&self, object: &Value) -> bool {
        let get = |field: &str| {
            let pointer = format!("/{}", field.replace('.', "/"));
            object
                .pointer(&pointer)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        self.reqs.iter().all(|r| match r {
            FieldReq::Eq(f, v) => get(f) == *v,
            FieldReq::NotEq(f, v) => get(f) != *v,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "shop", "labels": labels}})
    }

    #[test]
    fn label_selector_table() {
        let o = obj(json!({"env": "prod", "tier": "web"}));
        let rows = [
            ("", true),
            ("env=prod", true),
            ("env==prod", true),
            ("env!=prod", false),
            ("env!=dev", true),
            ("env in (dev,prod)", true),
            ("env in (dev)", false),
            ("env notin (dev)", true),
            ("region notin (eu)", true),
            ("tier", true),
            ("region", false),
            ("!region", true),
            ("!tier", false),
            ("env=prod,tier in (web, api)", true),
            ("env=prod,region", false),
        ];
        for (s, want) in rows {
            let sel = LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.matches(&o), want, "{s}");
        }
    }

    #[test]
    fn bad_label_selectors_are_errors() {
        for s in ["env in (a", "env in a", "env=(x)", "bad key=x", "env in ()"] {
            assert!(LabelSelector::parse(s).is_err(), "{s} must be refused");
        }
    }

    #[test]
    fn field_selector_table() {
        let o = obj(json!({}));
        let rows = [
            ("metadata.name=web", true),
            ("metadata.name==web", true),
            ("metadata.name!=web", false),
            ("metadata.namespace=shop,metadata.name=web", true),
            ("metadata.namespace=other", false),
        ];
        for (s, want) in rows {
            assert_eq!(
                FieldSelector::parse(s, &[]).unwrap().matches(&o),
                want,
                "{s}"
            );
        }
        assert!(FieldSelector::parse("spec.replicas=3", &[]).is_err());
        let event = json!({"involvedObject": {"name": "web"}});
        let sel =
            FieldSelector::parse("involvedObject.name=web", &["involvedObject.name"]).unwrap();
        assert!(sel.matches(&event));
    }
}
