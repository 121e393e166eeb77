//! The sprig functions Fleet's templated values may use (Fleet passes
//! sprig's `TxtFuncMap` minus `env`, `expandenv`, `include` and `tpl`):
//! the string, default, list, dict, math, encoding, hash and regex
//! functions Helm charts and Fleet repositories use. A sprig function not
//! here is refused by name when the template is parsed, rather than
//! quietly doing something else.

use base64::Engine as _;
use flotilla_api::serde_json;
use gotmpl::{FuncMap, TemplateError, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

type R = Result<Value, TemplateError>;
type Func = Arc<dyn Fn(&[Value]) -> R + Send + Sync>;

fn err(name: &str, msg: impl std::fmt::Display) -> TemplateError {
    TemplateError::Exec(format!("error calling {name}: {msg}"))
}

/// Go's `%v` of a value, as sprig's `toString` gives it.
pub fn to_string(v: &Value) -> String {
    match v {
        Value::Nil => String::new(),
        Value::String(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn s(v: &Value) -> String {
    to_string(v)
}

fn arg<'a>(name: &str, args: &'a [Value], i: usize) -> Result<&'a Value, TemplateError> {
    args.get(i).ok_or_else(|| {
        err(
            name,
            format!("wrong number of args: want at least {}", i + 1),
        )
    })
}

fn want(name: &str, args: &[Value], n: usize) -> Result<(), TemplateError> {
    if args.len() == n {
        Ok(())
    } else {
        Err(err(
            name,
            format!("wrong number of args: want {n}, got {}", args.len()),
        ))
    }
}

fn int(name: &str, v: &Value) -> Result<i64, TemplateError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Float(f) => Ok(*f as i64),
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::Nil => Ok(0),
        Value::String(t) => Ok(t
            .trim()
            .parse::<i64>()
            .or_else(|_| t.trim().parse::<f64>().map(|f| f as i64))
            .unwrap_or(0)),
        other => Err(err(
            name,
            format!("cannot convert {} to an int", other.type_name()),
        )),
    }
}

fn float(name: &str, v: &Value) -> Result<f64, TemplateError> {
    match v {
        Value::Int(i) => Ok(*i as f64),
        Value::Float(f) => Ok(*f),
        Value::Nil => Ok(0.0),
        Value::String(t) => Ok(t.trim().parse::<f64>().unwrap_or(0.0)),
        other => Err(err(
            name,
            format!("cannot convert {} to a float", other.type_name()),
        )),
    }
}

/// sprig's `empty`: the zero value of its type.
pub fn is_empty(v: &Value) -> bool {
    match v {
        Value::Nil => true,
        Value::Bool(b) => !b,
        Value::Int(i) => *i == 0,
        Value::Float(f) => *f == 0.0,
        Value::String(s) => s.is_empty(),
        Value::List(l) => l.is_empty(),
        Value::Map(m) => m.is_empty(),
        _ => false,
    }
}

fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::List(l) => l.to_vec(),
        Value::Nil => Vec::new(),
        other => vec![other.clone()],
    }
}

fn string_fn(
    f: impl Fn(&str) -> String + Send + Sync + 'static,
) -> impl Fn(&[Value]) -> R + Send + Sync + 'static {
    move |args: &[Value]| {
        Ok(Value::String(
            f(&args.iter().map(s).collect::<Vec<_>>().join(" ")).into(),
        ))
    }
}

/// Values to JSON (for toJson), maps sorted as Go's encoding/json sorts
/// them.
pub fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::List(l) => serde_json::Value::Array(l.iter().map(to_json).collect()),
        Value::Map(m) => {
            serde_json::Value::Object(m.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect())
        }
        _ => serde_json::Value::Null,
    }
}

/// JSON to template values.
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::String(s.as_str().into()),
        serde_json::Value::Array(a) => {
            Value::List(a.iter().map(from_json).collect::<Vec<_>>().into())
        }
        serde_json::Value::Object(o) => Value::Map(Arc::new(
            o.iter()
                .map(|(k, v)| (Arc::<str>::from(k.as_str()), from_json(v)))
                .collect(),
        )),
    }
}

fn map(v: &Value) -> BTreeMap<Arc<str>, Value> {
    match v {
        Value::Map(m) => (**m).clone(),
        _ => BTreeMap::new(),
    }
}

fn case_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let boundary = c.is_uppercase()
            && !cur.is_empty()
            && (chars[i - 1].is_lowercase() || chars.get(i + 1).is_some_and(|n| n.is_lowercase()));
        if boundary {
            words.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + &c.as_str().to_lowercase(),
        None => String::new(),
    }
}

fn regex(name: &str, pattern: &Value) -> Result<regex::Regex, TemplateError> {
    regex::Regex::new(&s(pattern)).map_err(|e| err(name, e))
}

/// Functions Fleet removes from sprig's set.
pub const REFUSED: &[&str] = &["env", "expandenv", "include", "tpl"];

/// The functions, by name.
pub fn functions() -> FuncMap {
    let mut f = FuncMap::new();
    let mut add = |name: &str, func: Func| {
        f.insert(name.to_owned(), func);
    };
    // Strings.
    add("upper", Arc::new(string_fn(|t| t.to_uppercase())));
    add("lower", Arc::new(string_fn(|t| t.to_lowercase())));
    add(
        "title",
        Arc::new(string_fn(|t| {
            t.split(' ')
                .map(|w| {
                    let mut c = w.chars();
                    match c.next() {
                        Some(first) => first.to_uppercase().collect::<String>() + c.as_str(),
                        None => String::new(),
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })),
    );
    add("trim", Arc::new(string_fn(|t| t.trim().to_owned())));
    add(
        "nospace",
        Arc::new(string_fn(|t| {
            t.chars().filter(|c| !c.is_whitespace()).collect()
        })),
    );
    add(
        "kebabcase",
        Arc::new(string_fn(|t| {
            case_words(t)
                .iter()
                .map(|w| w.to_lowercase())
                .collect::<Vec<_>>()
                .join("-")
        })),
    );
    add(
        "snakecase",
        Arc::new(string_fn(|t| {
            case_words(t)
                .iter()
                .map(|w| w.to_lowercase())
                .collect::<Vec<_>>()
                .join("_")
        })),
    );
    add(
        "camelcase",
        Arc::new(string_fn(|t| {
            case_words(t)
                .iter()
                .map(|w| capitalize(w))
                .collect::<String>()
        })),
    );
    add(
        "trimAll",
        Arc::new(|a: &[Value]| {
            want("trimAll", a, 2)?;
            let cut = s(&a[0]);
            Ok(Value::String(
                s(&a[1]).trim_matches(|c| cut.contains(c)).into(),
            ))
        }),
    );
    add(
        "trimPrefix",
        Arc::new(|a: &[Value]| {
            want("trimPrefix", a, 2)?;
            let (p, t) = (s(&a[0]), s(&a[1]));
            Ok(Value::String(
                t.strip_prefix(p.as_str()).unwrap_or(&t).into(),
            ))
        }),
    );
    add(
        "trimSuffix",
        Arc::new(|a: &[Value]| {
            want("trimSuffix", a, 2)?;
            let (p, t) = (s(&a[0]), s(&a[1]));
            Ok(Value::String(
                t.strip_suffix(p.as_str()).unwrap_or(&t).into(),
            ))
        }),
    );
    add(
        "replace",
        Arc::new(|a: &[Value]| {
            want("replace", a, 3)?;
            Ok(Value::String(s(&a[2]).replace(&s(&a[0]), &s(&a[1])).into()))
        }),
    );
    add(
        "contains",
        Arc::new(|a: &[Value]| {
            want("contains", a, 2)?;
            Ok(Value::Bool(s(&a[1]).contains(&s(&a[0]))))
        }),
    );
    add(
        "hasPrefix",
        Arc::new(|a: &[Value]| {
            want("hasPrefix", a, 2)?;
            Ok(Value::Bool(s(&a[1]).starts_with(&s(&a[0]))))
        }),
    );
    add(
        "hasSuffix",
        Arc::new(|a: &[Value]| {
            want("hasSuffix", a, 2)?;
            Ok(Value::Bool(s(&a[1]).ends_with(&s(&a[0]))))
        }),
    );
    add(
        "repeat",
        Arc::new(|a: &[Value]| {
            want("repeat", a, 2)?;
            let n = int("repeat", &a[0])?.clamp(0, 10_000) as usize;
            Ok(Value::String(s(&a[1]).repeat(n).into()))
        }),
    );
    add(
        "substr",
        Arc::new(|a: &[Value]| {
            want("substr", a, 3)?;
            let chars: Vec<char> = s(&a[2]).chars().collect();
            let (start, end) = (int("substr", &a[0])?, int("substr", &a[1])?);
            let start = if start < 0 {
                0
            } else {
                (start as usize).min(chars.len())
            };
            let end = if end < 0 || end as usize > chars.len() {
                chars.len()
            } else {
                end as usize
            };
            Ok(Value::String(
                chars[start.min(end)..end].iter().collect::<String>().into(),
            ))
        }),
    );
    add(
        "trunc",
        Arc::new(|a: &[Value]| {
            want("trunc", a, 2)?;
            let n = int("trunc", &a[0])?;
            let chars: Vec<char> = s(&a[1]).chars().collect();
            let out: String = if n >= 0 {
                chars.iter().take(n as usize).collect()
            } else {
                let skip = chars.len().saturating_sub(n.unsigned_abs() as usize);
                chars[skip..].iter().collect()
            };
            Ok(Value::String(out.into()))
        }),
    );
    add(
        "quote",
        Arc::new(|a: &[Value]| {
            Ok(Value::String(
                a.iter()
                    .filter(|v| !matches!(v, Value::Nil))
                    .map(|v| serde_json::to_string(&s(v)).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" ")
                    .into(),
            ))
        }),
    );
    add(
        "squote",
        Arc::new(|a: &[Value]| {
            Ok(Value::String(
                a.iter()
                    .filter(|v| !matches!(v, Value::Nil))
                    .map(|v| format!("'{}'", s(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
                    .into(),
            ))
        }),
    );
    add(
        "cat",
        Arc::new(|a: &[Value]| {
            Ok(Value::String(
                a.iter()
                    .filter(|v| !matches!(v, Value::Nil))
                    .map(s)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .into(),
            ))
        }),
    );
    add(
        "indent",
        Arc::new(|a: &[Value]| {
            want("indent", a, 2)?;
            let pad = " ".repeat(int("indent", &a[0])?.clamp(0, 1000) as usize);
            Ok(Value::String(
                s(&a[1])
                    .split('\n')
                    .map(|l| format!("{pad}{l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
                    .into(),
            ))
        }),
    );
    add(
        "nindent",
        Arc::new(|a: &[Value]| {
            want("nindent", a, 2)?;
            let pad = " ".repeat(int("nindent", &a[0])?.clamp(0, 1000) as usize);
            Ok(Value::String(
                format!(
                    "\n{}",
                    s(&a[1])
                        .split('\n')
                        .map(|l| format!("{pad}{l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
                .into(),
            ))
        }),
    );
    add(
        "split",
        Arc::new(|a: &[Value]| {
            want("split", a, 2)?;
            let m: BTreeMap<Arc<str>, Value> = s(&a[1])
                .split(s(&a[0]).as_str())
                .enumerate()
                .map(|(i, p)| {
                    (
                        Arc::<str>::from(format!("_{i}").as_str()),
                        Value::String(p.into()),
                    )
                })
                .collect();
            Ok(Value::Map(Arc::new(m)))
        }),
    );
    add(
        "splitList",
        Arc::new(|a: &[Value]| {
            want("splitList", a, 2)?;
            Ok(Value::List(
                s(&a[1])
                    .split(s(&a[0]).as_str())
                    .map(|p| Value::String(p.into()))
                    .collect::<Vec<_>>()
                    .into(),
            ))
        }),
    );
    add(
        "join",
        Arc::new(|a: &[Value]| {
            want("join", a, 2)?;
            Ok(Value::String(
                list(&a[1])
                    .iter()
                    .map(s)
                    .collect::<Vec<_>>()
                    .join(&s(&a[0]))
                    .into(),
            ))
        }),
    );
    add(
        "toString",
        Arc::new(|a: &[Value]| {
            want("toString", a, 1)?;
            Ok(Value::String(s(&a[0]).into()))
        }),
    );
    add(
        "toStrings",
        Arc::new(|a: &[Value]| {
            want("toStrings", a, 1)?;
            Ok(Value::List(
                list(&a[0])
                    .iter()
                    .map(|v| Value::String(s(v).into()))
                    .collect::<Vec<_>>()
                    .into(),
            ))
        }),
    );
    // Defaults and flow.
    add(
        "default",
        Arc::new(|a: &[Value]| {
            let d = arg("default", a, 0)?;
            Ok(match a.get(1) {
                Some(v) if !is_empty(v) => v.clone(),
                _ => d.clone(),
            })
        }),
    );
    add(
        "empty",
        Arc::new(|a: &[Value]| {
            want("empty", a, 1)?;
            Ok(Value::Bool(is_empty(&a[0])))
        }),
    );
    add(
        "coalesce",
        Arc::new(|a: &[Value]| {
            Ok(a.iter()
                .find(|v| !is_empty(v))
                .cloned()
                .unwrap_or(Value::Nil))
        }),
    );
    add(
        "ternary",
        Arc::new(|a: &[Value]| {
            want("ternary", a, 3)?;
            Ok(if a[2].is_truthy() {
                a[0].clone()
            } else {
                a[1].clone()
            })
        }),
    );
    add(
        "required",
        Arc::new(|a: &[Value]| {
            want("required", a, 2)?;
            if is_empty(&a[1]) {
                Err(err("required", s(&a[0])))
            } else {
                Ok(a[1].clone())
            }
        }),
    );
    add(
        "fail",
        Arc::new(|a: &[Value]| Err(err("fail", a.first().map(s).unwrap_or_default()))),
    );
    // Conversions and math.
    add(
        "atoi",
        Arc::new(|a: &[Value]| {
            want("atoi", a, 1)?;
            Ok(Value::Int(s(&a[0]).trim().parse().unwrap_or(0)))
        }),
    );
    add(
        "int",
        Arc::new(|a: &[Value]| {
            want("int", a, 1)?;
            Ok(Value::Int(int("int", &a[0])?))
        }),
    );
    add(
        "int64",
        Arc::new(|a: &[Value]| {
            want("int64", a, 1)?;
            Ok(Value::Int(int("int64", &a[0])?))
        }),
    );
    add(
        "float64",
        Arc::new(|a: &[Value]| {
            want("float64", a, 1)?;
            Ok(Value::Float(float("float64", &a[0])?))
        }),
    );
    add(
        "toJson",
        Arc::new(|a: &[Value]| {
            want("toJson", a, 1)?;
            Ok(Value::String(to_json(&a[0]).to_string().into()))
        }),
    );
    add(
        "toPrettyJson",
        Arc::new(|a: &[Value]| {
            want("toPrettyJson", a, 1)?;
            Ok(Value::String(
                serde_json::to_string_pretty(&to_json(&a[0]))
                    .unwrap_or_default()
                    .into(),
            ))
        }),
    );
    add(
        "fromJson",
        Arc::new(|a: &[Value]| {
            want("fromJson", a, 1)?;
            Ok(serde_json::from_str::<serde_json::Value>(&s(&a[0]))
                .map(|v| from_json(&v))
                .unwrap_or(Value::Nil))
        }),
    );
    let arith = |name: &'static str, op: fn(i64, i64) -> Option<i64>| {
        Arc::new(move |a: &[Value]| {
            let mut it = a.iter();
            let first = int(name, it.next().ok_or_else(|| err(name, "no arguments"))?)?;
            it.try_fold(first, |acc, v| {
                op(acc, int(name, v)?).ok_or_else(|| err(name, "overflow or division by zero"))
            })
            .map(Value::Int)
        }) as Func
    };
    add("add", arith("add", i64::checked_add));
    add("sub", arith("sub", i64::checked_sub));
    add("mul", arith("mul", i64::checked_mul));
    add("div", arith("div", i64::checked_div));
    add("mod", arith("mod", i64::checked_rem));
    add("max", arith("max", |a, b| Some(a.max(b))));
    add("min", arith("min", |a, b| Some(a.min(b))));
    add(
        "add1",
        Arc::new(|a: &[Value]| {
            want("add1", a, 1)?;
            int("add1", &a[0])?
                .checked_add(1)
                .map(Value::Int)
                .ok_or_else(|| err("add1", "overflow"))
        }),
    );
    // Lists.
    add(
        "list",
        Arc::new(|a: &[Value]| Ok(Value::List(a.to_vec().into()))),
    );
    add(
        "first",
        Arc::new(|a: &[Value]| {
            want("first", a, 1)?;
            Ok(list(&a[0]).first().cloned().unwrap_or(Value::Nil))
        }),
    );
    add(
        "last",
        Arc::new(|a: &[Value]| {
            want("last", a, 1)?;
            Ok(list(&a[0]).last().cloned().unwrap_or(Value::Nil))
        }),
    );
    add(
        "rest",
        Arc::new(|a: &[Value]| {
            want("rest", a, 1)?;
            Ok(Value::List(
                list(&a[0]).into_iter().skip(1).collect::<Vec<_>>().into(),
            ))
        }),
    );
    add(
        "append",
        Arc::new(|a: &[Value]| {
            want("append", a, 2)?;
            let mut l = list(&a[0]);
            l.push(a[1].clone());
            Ok(Value::List(l.into()))
        }),
    );
    add(
        "has",
        Arc::new(|a: &[Value]| {
            want("has", a, 2)?;
            Ok(Value::Bool(
                list(&a[1]).iter().any(|v| to_json(v) == to_json(&a[0])),
            ))
        }),
    );
    add(
        "uniq",
        Arc::new(|a: &[Value]| {
            want("uniq", a, 1)?;
            let mut out: Vec<Value> = Vec::new();
            for v in list(&a[0]) {
                if !out.iter().any(|o| to_json(o) == to_json(&v)) {
                    out.push(v);
                }
            }
            Ok(Value::List(out.into()))
        }),
    );
    add(
        "sortAlpha",
        Arc::new(|a: &[Value]| {
            want("sortAlpha", a, 1)?;
            let mut l: Vec<String> = list(&a[0]).iter().map(s).collect();
            l.sort();
            Ok(Value::List(
                l.into_iter()
                    .map(|x| Value::String(x.into()))
                    .collect::<Vec<_>>()
                    .into(),
            ))
        }),
    );
    // Dicts.
    add(
        "dict",
        Arc::new(|a: &[Value]| {
            let mut m = BTreeMap::new();
            for pair in a.chunks(2) {
                m.insert(
                    Arc::<str>::from(s(&pair[0]).as_str()),
                    pair.get(1).cloned().unwrap_or(Value::String("".into())),
                );
            }
            Ok(Value::Map(Arc::new(m)))
        }),
    );
    add(
        "get",
        Arc::new(|a: &[Value]| {
            want("get", a, 2)?;
            Ok(map(&a[0])
                .get(s(&a[1]).as_str())
                .cloned()
                .unwrap_or(Value::String("".into())))
        }),
    );
    add(
        "hasKey",
        Arc::new(|a: &[Value]| {
            want("hasKey", a, 2)?;
            Ok(Value::Bool(map(&a[0]).contains_key(s(&a[1]).as_str())))
        }),
    );
    add(
        "keys",
        Arc::new(|a: &[Value]| {
            Ok(Value::List(
                a.iter()
                    .flat_map(|m| map(m).into_keys())
                    .map(Value::String)
                    .collect::<Vec<_>>()
                    .into(),
            ))
        }),
    );
    add(
        "values",
        Arc::new(|a: &[Value]| {
            want("values", a, 1)?;
            Ok(Value::List(
                map(&a[0]).into_values().collect::<Vec<_>>().into(),
            ))
        }),
    );
    add(
        "pluck",
        Arc::new(|a: &[Value]| {
            let k = s(arg("pluck", a, 0)?);
            Ok(Value::List(
                a[1..]
                    .iter()
                    .filter_map(|m| map(m).get(k.as_str()).cloned())
                    .collect::<Vec<_>>()
                    .into(),
            ))
        }),
    );
    add(
        "merge",
        Arc::new(|a: &[Value]| {
            let mut out = map(arg("merge", a, 0)?);
            for m in &a[1..] {
                for (k, v) in map(m) {
                    out.entry(k).or_insert(v);
                }
            }
            Ok(Value::Map(Arc::new(out)))
        }),
    );
    add(
        "omit",
        Arc::new(|a: &[Value]| {
            let mut m = map(arg("omit", a, 0)?);
            for k in &a[1..] {
                m.remove(s(k).as_str());
            }
            Ok(Value::Map(Arc::new(m)))
        }),
    );
    add(
        "pick",
        Arc::new(|a: &[Value]| {
            let m = map(arg("pick", a, 0)?);
            let keep: Vec<String> = a[1..].iter().map(s).collect();
            Ok(Value::Map(Arc::new(
                m.into_iter()
                    .filter(|(k, _)| keep.iter().any(|x| x.as_str() == &**k))
                    .collect(),
            )))
        }),
    );
    // Encodings and hashes.
    add(
        "b64enc",
        Arc::new(|a: &[Value]| {
            want("b64enc", a, 1)?;
            Ok(Value::String(
                base64::engine::general_purpose::STANDARD
                    .encode(s(&a[0]))
                    .into(),
            ))
        }),
    );
    add(
        "b64dec",
        Arc::new(|a: &[Value]| {
            want("b64dec", a, 1)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s(&a[0]).trim())
                .map_err(|e| err("b64dec", e))?;
            Ok(Value::String(
                String::from_utf8_lossy(&bytes).into_owned().into(),
            ))
        }),
    );
    add(
        "sha256sum",
        Arc::new(|a: &[Value]| {
            want("sha256sum", a, 1)?;
            use sha2::Digest;
            Ok(Value::String(
                hex::encode(sha2::Sha256::digest(s(&a[0]).as_bytes())).into(),
            ))
        }),
    );
    // Regular expressions.
    add(
        "regexMatch",
        Arc::new(|a: &[Value]| {
            want("regexMatch", a, 2)?;
            Ok(Value::Bool(regex("regexMatch", &a[0])?.is_match(&s(&a[1]))))
        }),
    );
    add(
        "regexFind",
        Arc::new(|a: &[Value]| {
            want("regexFind", a, 2)?;
            Ok(Value::String(
                regex("regexFind", &a[0])?
                    .find(&s(&a[1]))
                    .map(|m| m.as_str().to_owned())
                    .unwrap_or_default()
                    .into(),
            ))
        }),
    );
    add(
        "regexReplaceAll",
        Arc::new(|a: &[Value]| {
            want("regexReplaceAll", a, 3)?;
            Ok(Value::String(
                regex("regexReplaceAll", &a[0])?
                    .replace_all(&s(&a[1]), s(&a[2]).as_str())
                    .into_owned()
                    .into(),
            ))
        }),
    );
    add(
        "regexReplaceAllLiteral",
        Arc::new(|a: &[Value]| {
            want("regexReplaceAllLiteral", a, 3)?;
            Ok(Value::String(
                regex("regexReplaceAllLiteral", &a[0])?
                    .replace_all(&s(&a[1]), regex::NoExpand(&s(&a[2])))
                    .into_owned()
                    .into(),
            ))
        }),
    );
    add(
        "regexSplit",
        Arc::new(|a: &[Value]| {
            want("regexSplit", a, 3)?;
            let re = regex("regexSplit", &a[0])?;
            let n = int("regexSplit", &a[2])?;
            let text = s(&a[1]);
            let parts: Vec<Value> = if n < 0 {
                re.split(&text).map(|p| Value::String(p.into())).collect()
            } else {
                re.splitn(&text, n as usize)
                    .map(|p| Value::String(p.into()))
                    .collect()
            };
            Ok(Value::List(parts.into()))
        }),
    );
    // Fleet refuses these; name them rather than say "not defined".
    for name in REFUSED {
        let n = (*name).to_owned();
        add(
            name,
            Arc::new(move |_: &[Value]| Err(err(&n, "not allowed in Fleet templated values"))),
        );
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use gotmpl::Template;

    fn render(t: &str) -> Result<String, String> {
        Template::new("t")
            .delims("${", "}")
            .funcs(functions())
            .parse(t)
            .map_err(|e| e.to_string())?
            .execute_to_string(&Value::Map(Arc::new(BTreeMap::new())))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sprig_functions_table() {
        let rows = [
            (r#"${ "Hello World" | lower | quote }"#, r#""hello world""#),
            (r#"${ "hello world" | title }"#, "Hello World"),
            (r#"${ " x " | trim | squote }"#, "'x'"),
            (r#"${ "abc" | b64enc }"#, "YWJj"),
            (r#"${ "YWJj" | b64dec }"#, "abc"),
            (r#"${ "abc" | sha256sum | trunc 8 }"#, "ba7816bf"),
            (r#"${ "a-b-c" | replace "-" "." }"#, "a.b.c"),
            (r#"${ regexReplaceAll "[0-9]+" "v12x3" "N" }"#, "vNxN"),
            (r#"${ splitList "," "a,b,c" | join "+" }"#, "a+b+c"),
            (r#"${ list 3 1 2 | first }"#, "3"),
            (
                r#"${ $d := dict "k" "v" }${ get $d "k" }${ hasKey $d "x" }"#,
                "vfalse",
            ),
            (r#"${ ternary "yes" "no" true }"#, "yes"),
            (r#"${ add 1 2 3 | mul 2 }"#, "12"),
            (r#"${ max 3 9 4 }"#, "9"),
            (r#"${ "" | default "dflt" }"#, "dflt"),
            (r#"${ coalesce "" "second" }"#, "second"),
            (r#"${ "HelloWorld" | kebabcase }"#, "hello-world"),
            (r#"${ "abc" | substr 1 2 }"#, "b"),
            (r#"${ dict "a" 1 | toJson }"#, r#"{"a":1}"#),
            (r#"${ "x" | indent 2 }"#, "  x"),
            (r#"${ "a" | repeat 3 }"#, "aaa"),
            (r#"${ hasPrefix "pro" "prod" }"#, "true"),
        ];
        for (template, want) in rows {
            assert_eq!(render(template).as_deref(), Ok(want), "{template}");
        }
        let err = render(r#"${ env "HOME" }"#).unwrap_err();
        assert!(err.contains("not allowed"), "{err}");
        let err = render(r#"${ required "a tier is needed" "" }"#).unwrap_err();
        assert!(err.contains("a tier is needed"), "{err}");
    }
}
