//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902), for overlays.

use serde_json::Value;

/// Applies a merge patch: objects merge key by key, `null` deletes, anything
/// else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = strip_nulls(p),
    }
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Applies a JSON patch (add, remove, replace, move, copy, test).
pub fn json_patch(target: &mut Value, ops: &[Value]) -> Result<(), String> {
    for (i, op) in ops.iter().enumerate() {
        let field = |name: &str| -> Result<&str, String> {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {i}: missing {name:?}"))
        };
        let path = field("path")?;
        match field("op")? {
            "add" => add(
                target,
                path,
                op.get("value").cloned().unwrap_or(Value::Null),
            )?,
            "remove" => {
                remove(target, path)?;
            }
            "replace" => {
                remove(target, path)?;
                add(
                    target,
                    path,
                    op.get("value").cloned().unwrap_or(Value::Null),
                )?;
            }
            "move" => {
                let v = remove(target, field("from")?)?;
                add(target, path, v)?;
            }
            "copy" => {
                let v = target
                    .pointer(field("from")?)
                    .cloned()
                    .ok_or_else(|| format!("operation {i}: no value at from"))?;
                add(target, path, v)?;
            }
            "test" => {
                if target.pointer(path) != op.get("value") {
                    return Err(format!("operation {i}: test failed at {path}"));
                }
            }
            other => return Err(format!("operation {i}: unknown op {other:?}")),
        }
    }
    Ok(())
}

fn split(path: &str) -> Result<(String, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("bad path {path:?}"))?;
    Ok((
        parent.to_owned(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, key) = split(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(key, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let idx = if key == "-" {
                a.len()
            } else {
                key.parse().map_err(|_| format!("bad index in {path}"))?
            };
            if idx > a.len() {
                return Err(format!("index out of range in {path}"));
            }
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(format!("no container at {parent:?}")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, key) = split(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&key).ok_or_else(|| format!("no value at {path}")),
        Some(Value::Array(a)) => {
            let idx: usize = key.parse().map_err(|_| format!("bad index in {path}"))?;
            (idx < a.len())
                .then(|| a.remove(idx))
                .ok_or_else(|| format!("index out of range in {path}"))
        }
        _ => Err(format!("no value at {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        let rows = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (mut target, patch, want) in rows {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "{patch}");
        }
    }

    #[test]
    fn json_patch_ops() {
        let mut doc = json!({"spec": {"replicas": 1, "list": [1, 2]}});
        json_patch(
            &mut doc,
            &[
                json!({"op": "replace", "path": "/spec/replicas", "value": 3}),
                json!({"op": "add", "path": "/spec/list/-", "value": 9}),
                json!({"op": "remove", "path": "/spec/list/0"}),
                json!({"op": "add", "path": "/metadata", "value": {"a~b/c": 1}}),
                json!({"op": "test", "path": "/metadata/a~0b~1c", "value": 1}),
                json!({"op": "copy", "from": "/spec/replicas", "path": "/copied"}),
            ],
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"spec": {"replicas": 3, "list": [2, 9]}, "metadata": {"a~b/c": 1}, "copied": 3})
        );
        assert!(json_patch(&mut doc, &[json!({"op": "remove", "path": "/nope"})]).is_err());
        assert!(json_patch(&mut doc, &[json!({"op": "frobnicate", "path": "/a"})]).is_err());
    }
}
