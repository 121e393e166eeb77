//! Strategic merge patch for the built-in kinds, which client-side
//! `kubectl apply`, `kubectl edit` and `kubectl patch` send.
//!
//! Maps merge (null deletes a key); lists with a merge key merge item by
//! item; other lists are replaced. Directives: `$patch: replace|delete`
//! (on maps and list items), `$retainKeys`, `$setElementOrder/<list>` and
//! `$deleteFromPrimitiveList/<list>`.

use serde_json::{Map, Value};

/// The merge key of a list field, by its name and its parent's name.
fn merge_key(parent: &str, field: &str) -> Option<&'static str> {
    Some(match (parent, field) {
        (_, "containers" | "initContainers" | "ephemeralContainers") => "name",
        ("containers" | "initContainers" | "ephemeralContainers", "ports") => "containerPort",
        (_, "ports") => "port",
        (_, "env" | "volumes" | "imagePullSecrets" | "secrets") => "name",
        (_, "volumeMounts") => "mountPath",
        (_, "volumeDevices") => "devicePath",
        (_, "conditions") => "type",
        (_, "hostAliases") => "ip",
        (_, "ownerReferences") => "uid",
        (_, "topologySpreadConstraints") => "topologyKey",
        (_, "resourceClaims") => "name",
        _ => return None,
    })
}

/// Lists of scalars that merge (as sets) rather than being replaced.
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

/// Applies a strategic merge patch. Errors name what cannot be applied.
pub fn apply(target: &mut Value, patch: &Value) -> Result<(), String> {
    if !patch.is_object() {
        return Err("a strategic merge patch must be a JSON object".into());
    }
    merge_map(target, patch, "")
}

fn merge_map(target: &mut Value, patch: &Value, name: &str) -> Result<(), String> {
    let patch = patch.as_object().expect("called on maps");
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut clean = patch.clone();
            clean.remove("$patch");
            *target = Value::Object(clean);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => return Err(format!("unknown patch directive $patch: {other}")),
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let retain: Option<Vec<String>> = match patch.get("$retainKeys") {
        None => None,
        Some(Value::Array(keys)) => Some(
            keys.iter()
                .map(|k| {
                    k.as_str()
                        .map(str::to_owned)
                        .ok_or("$retainKeys holds strings")
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err("$retainKeys must be a list".into()),
    };
    for (k, v) in patch {
        if k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let gone = v
                .as_array()
                .ok_or("$deleteFromPrimitiveList takes a list")?;
            if let Some(list) = target.get_mut(field).and_then(Value::as_array_mut) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(format!("unknown patch directive {k}"));
        }
        let map = target.as_object_mut().expect("made a map above");
        match v {
            Value::Null => {
                map.remove(k);
            }
            Value::Object(_) => {
                let slot = map.entry(k.clone()).or_insert(Value::Null);
                merge_map(slot, v, k)?;
                if slot.is_null() {
                    map.remove(k);
                }
            }
            Value::Array(items) => {
                let slot = map.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(slot, items, name, k)?;
            }
            scalar => {
                map.insert(k.clone(), scalar.clone());
            }
        }
    }
    // Reorder keyed lists as the patch asks.
    for (k, order) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let order = order.as_array().ok_or("$setElementOrder takes a list")?;
            if let Some(list) = target.get_mut(field).and_then(Value::as_array_mut) {
                reorder(list, order, merge_key(name, field));
            }
        }
    }
    if let Some(keep) = retain {
        let map = target.as_object_mut().expect("a map");
        map.retain(|k, _| keep.contains(k));
    }
    Ok(())
}

fn merge_list(
    target: &mut Value,
    items: &[Value],
    parent: &str,
    field: &str,
) -> Result<(), String> {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *target = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        );
        return Ok(());
    }
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    let list = target.as_array_mut().expect("made a list above");
    match merge_key(parent, field) {
        Some(key) if items.iter().all(Value::is_object) => {
            for item in items {
                let id = item
                    .get(key)
                    .ok_or_else(|| format!("an item of {field} has no merge key {key}"))?;
                let pos = list.iter().position(|x| x.get(key) == Some(id));
                match (item.get("$patch").and_then(Value::as_str), pos) {
                    (Some("delete"), Some(i)) => {
                        list.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (Some(other), _) => {
                        return Err(format!("unknown patch directive $patch: {other}"));
                    }
                    (None, Some(i)) => merge_map(&mut list[i], item, field)?,
                    (None, None) => {
                        let mut fresh = Value::Null;
                        merge_map(&mut fresh, item, field)?;
                        list.push(fresh);
                    }
                }
            }
        }
        _ if merges_primitives(field) => {
            for item in items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        _ => *list = items.to_vec(),
    }
    Ok(())
}

/// Orders `list` as `order` names its items; items it does not name keep
/// their relative order after the named ones.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let rank = |item: &Value| -> usize {
        order
            .iter()
            .position(|o| match key {
                Some(k) => o.get(k).is_some() && o.get(k) == item.get(k),
                None => o == item,
            })
            .unwrap_or(usize::MAX)
    };
    let mut ranked: Vec<(usize, Value)> = list.drain(..).map(|v| (rank(&v), v)).collect();
    ranked.sort_by_key(|(r, _)| *r);
    list.extend(ranked.into_iter().map(|(_, v)| v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(target: Value, patch: Value) -> Value {
        let mut t = target;
        apply(&mut t, &patch).unwrap();
        t
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let got = patched(
            json!({"data": {"a": "1", "b": "2"}}),
            json!({"data": {"a": null, "c": "3"}}),
        );
        assert_eq!(got, json!({"data": {"b": "2", "c": "3"}}));
    }

    #[test]
    fn containers_and_env_merge_by_name() {
        let dep = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "busybox"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]},
            {"name": "side", "$patch": "delete"}
        ]}}}});
        let got = patched(dep, patch);
        assert_eq!(
            got["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}])
        );
    }

    #[test]
    fn directives() {
        let got = patched(
            json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(got, json!({"spec": {"strategy": {"type": "Recreate"}}}));
        let got = patched(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]}}),
        );
        assert_eq!(got["metadata"]["finalizers"], json!(["b", "c"]));
        let got = patched(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
        );
        assert_eq!(
            got["spec"]["containers"],
            json!([{"name": "b"}, {"name": "a"}])
        );
        let got = patched(
            json!({"spec": {"selector": {"a": "1"}}}),
            json!({"spec": {"selector": {"$patch": "replace", "b": "2"}}}),
        );
        assert_eq!(got["spec"]["selector"], json!({"b": "2"}));
        let mut t = json!({});
        assert!(apply(&mut t, &json!({"$bogus": 1})).is_err());
    }
}
