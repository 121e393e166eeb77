//! The JSONPath subset that CRD `additionalPrinterColumns` use:
//! `.a.b`, escaped dots (`.metadata.labels.example\.com/x`), `['key']`,
//! `[0]`, `[-1]`, `[*]` and filters `[?(@.type=="Ready")]` (`==`, `!=`).

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    Filter {
        path: Vec<String>,
        equal: bool,
        value: Value,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

impl JsonPath {
    pub fn parse(path: &str) -> Result<Self, String> {
        let p = path.trim();
        let p = p
            .strip_prefix('{')
            .and_then(|p| p.strip_suffix('}'))
            .unwrap_or(p);
        let p = p.strip_prefix('$').unwrap_or(p);
        let chars: Vec<char> = p.chars().collect();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    let mut name = String::new();
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        if chars[i] == '\\' && i + 1 < chars.len() {
                            i += 1;
                        }
                        name.push(chars[i]);
                        i += 1;
                    }
                    if name.is_empty() {
                        return Err(format!("empty field name in {path:?}"));
                    }
                    steps.push(Step::Field(name));
                }
                '[' => {
                    let close =
                        find_close(&chars, i).ok_or_else(|| format!("unclosed '[' in {path:?}"))?;
                    let inner: String = chars[i + 1..close].iter().collect();
                    steps.push(parse_bracket(inner.trim(), path)?);
                    i = close + 1;
                }
                c => return Err(format!("unexpected {c:?} in JSONPath {path:?}")),
            }
        }
        Ok(JsonPath { steps })
    }

    /// Every value the path reaches.
    pub fn find<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![root];
        for step in &self.steps {
            let mut next = Vec::new();
            for v in current {
                match step {
                    Step::Field(name) => {
                        if let Some(x) = v.get(name) {
                            next.push(x);
                        }
                    }
                    Step::Index(i) => {
                        if let Some(items) = v.as_array() {
                            let idx = if *i < 0 { items.len() as i64 + i } else { *i };
                            if let Some(x) = usize::try_from(idx).ok().and_then(|i| items.get(i)) {
                                next.push(x);
                            }
                        }
                    }
                    Step::All => match v {
                        Value::Array(items) => next.extend(items),
                        Value::Object(map) => next.extend(map.values()),
                        _ => {}
                    },
                    Step::Filter { path, equal, value } => {
                        if let Some(items) = v.as_array() {
                            next.extend(items.iter().filter(|item| {
                                let got = path.iter().try_fold(*item, |x, k| x.get(k));
                                (got == Some(value)) == *equal
                            }));
                        }
                    }
                }
            }
            current = next;
        }
        current
    }

    /// A printer column's cell: the single value found, several joined
    /// with commas, or null when nothing matched.
    pub fn cell(&self, root: &Value) -> Value {
        let found = self.find(root);
        match found.as_slice() {
            [] => Value::Null,
            [one] => (*one).clone(),
            many => Value::String(
                many.iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        }
    }
}

fn find_close(chars: &[char], open: usize) -> Option<usize> {
    let mut quote = None;
    let mut depth = 0;
    for (i, &c) in chars.iter().enumerate().skip(open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<&str> {
    s.strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
}

fn parse_bracket(inner: &str, path: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::All);
    }
    if let Some(key) = unquote(inner) {
        return Ok(Step::Field(key.to_owned()));
    }
    if let Ok(i) = inner.parse::<i64>() {
        return Ok(Step::Index(i));
    }
    let filter = inner
        .strip_prefix("?(")
        .and_then(|f| f.strip_suffix(')'))
        .ok_or_else(|| format!("unsupported JSONPath selector [{inner}] in {path:?}"))?;
    let (lhs, rhs, equal) = if let Some((l, r)) = filter.split_once("!=") {
        (l, r, false)
    } else if let Some((l, r)) = filter.split_once("==") {
        (l, r, true)
    } else {
        return Err(format!(
            "unsupported JSONPath filter ({filter}) in {path:?}"
        ));
    };
    let field = lhs
        .trim()
        .strip_prefix("@.")
        .ok_or_else(|| format!("a filter must start with @. in {path:?}"))?;
    let rhs = rhs.trim();
    let value = match unquote(rhs) {
        Some(s) => Value::String(s.to_owned()),
        None => serde_json::from_str(rhs).map_err(|_| format!("bad filter value {rhs}"))?,
    };
    Ok(Step::Filter {
        path: field.split('.').map(str::to_owned).collect(),
        equal,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_printer_column_paths() {
        let obj = json!({
            "metadata": {"name": "a", "labels": {"flotilla.dev/cluster": "c1"}},
            "spec": {"ports": [{"port": 80}, {"port": 443}]},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "message": "ok"},
                {"type": "Stalled", "status": "False"}
            ]}
        });
        let cases = [
            (".metadata.name", json!("a")),
            (r".metadata.labels.flotilla\.dev/cluster", json!("c1")),
            (".metadata.labels['flotilla.dev/cluster']", json!("c1")),
            (".spec.ports[0].port", json!(80)),
            (".spec.ports[-1].port", json!(443)),
            (".spec.ports[*].port", json!("80,443")),
            (
                r#".status.conditions[?(@.type=="Ready")].status"#,
                json!("True"),
            ),
            (
                ".status.conditions[?(@.type!='Ready')].type",
                json!("Stalled"),
            ),
            (".status.missing", Value::Null),
            ("{.metadata.name}", json!("a")),
        ];
        for (path, want) in cases {
            assert_eq!(JsonPath::parse(path).unwrap().cell(&obj), want, "{path}");
        }
    }

    #[test]
    fn rejects_what_it_cannot_evaluate() {
        for bad in ["spec", ".a[", ".a[?(@.x > 1)]", ".a..b"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }
}
