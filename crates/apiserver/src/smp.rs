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
    // $retainKeys: keys of the live map not named go before merging.
    if let Some(keys) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keys
            .as_array()
            .ok_or("$retainKeys must be a list")?
            .iter()
            .map(|k| k.as_str().ok_or("$retainKeys holds strings"))
            .collect::<Result<_, _>>()?;
        for k in patch.keys().filter(|k| !k.starts_with('$')) {
            if !keep.contains(&k.as_str()) {
                return Err(format!("{k} is not in $retainKeys"));
            }
        }
        let map = target.as_object_mut().expect("made a map above");
        map.retain(|k, _| keep.contains(&k.as_str()));
    }
    // $setElementOrder/<list>: merge that list first, then order it as
    // the directive says; precedence is directive > patch > live order.
    let mut ordered: Vec<&str> = Vec::new();
    for (k, order) in patch {
        let Some(field) = k.strip_prefix("$setElementOrder/") else {
            continue;
        };
        let order = order.as_array().ok_or("$setElementOrder takes a list")?;
        let map = target.as_object_mut().expect("a map");
        let live: Vec<Value> = map
            .get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let key = merge_key(name, field);
        let merged = match patch.get(field) {
            Some(Value::Array(items)) => {
                let slot = map
                    .entry(field.to_owned())
                    .or_insert(Value::Array(Vec::new()));
                merge_list(slot, items, name, field)?;
                slot.as_array().cloned().unwrap_or_default()
            }
            _ if map.contains_key(field) => live.clone(),
            _ => continue,
        };
        map.insert(
            field.to_owned(),
            Value::Array(normalize_order(merged, order, &live, key)),
        );
        ordered.push(field);
    }
    for (k, v) in patch {
        if k == "$retainKeys" || k.starts_with("$setElementOrder/") || ordered.contains(&k.as_str())
        {
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
    let live = match target.take() {
        Value::Array(list) => list,
        _ => Vec::new(),
    };
    *target = Value::Array(match merge_key(parent, field) {
        Some(key) if items.iter().all(Value::is_object) => {
            let mut live = live;
            let mut plain = Vec::new();
            for item in items {
                let id = item
                    .get(key)
                    .ok_or_else(|| format!("an item of {field} has no merge key {key}"))?;
                match item.get("$patch").and_then(Value::as_str) {
                    Some("delete") => live.retain(|x| x.get(key) != Some(id)),
                    Some(other) => {
                        return Err(format!("unknown patch directive $patch: {other}"));
                    }
                    None => plain.push(item.clone()),
                }
            }
            let server_order = live.clone();
            let mut merged = live;
            for item in &plain {
                match merged.iter().position(|x| x.get(key) == item.get(key)) {
                    Some(i) => merge_map(&mut merged[i], item, field)?,
                    None => {
                        let mut fresh = Value::Null;
                        merge_map(&mut fresh, item, field)?;
                        merged.push(fresh);
                    }
                }
            }
            normalize_order(merged, &plain, &server_order, Some(key))
        }
        _ if merges_primitives(field) => {
            let mut merged = live.clone();
            for item in items {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            normalize_order(merged, items, &live, None)
        }
        _ => items.to_vec(),
    });
    Ok(())
}

/// Orders a merged list as the API server does: items named by the patch
/// (or by `$setElementOrder`) keep the patch's order, items only on the
/// server keep theirs, and the two are interleaved by their live
/// positions. An item new to the server sorts before the live item it
/// meets, so a patch that adds one container puts it first.
fn normalize_order(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let index = |list: &[Value], v: &Value| -> Option<usize> {
        let want = id(v);
        list.iter().position(|o| id(o) == want)
    };
    let (mut from_patch, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| index(patch_order, v).is_some());
    from_patch.sort_by_key(|v| index(patch_order, v));
    server_only.sort_by_key(|v| index(server_order, v));
    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let (mut left, mut right) = (
        server_only.into_iter().peekable(),
        from_patch.into_iter().peekable(),
    );
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (index(server_order, l), index(server_order, r)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
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
        let got = patched(dep.clone(), patch);
        // As on a real server: an item new to the live list, patched in
        // without an order directive, goes before the live items.
        assert_eq!(
            got["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]}])
        );
        let got = patched(
            dep.clone(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "new", "image": "redis"}]}}}}),
        );
        let names: Vec<&str> = got["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["new", "web", "side"], "a new container goes first");
        // kubectl apply, edit and set env send $setElementOrder: a new env
        // entry listed last goes last.
        let got = patched(
            dep,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
                "containers": [{"name": "web", "$setElementOrder/env": [{"name": "A"}, {"name": "C"}], "env": [{"name": "C", "value": "3"}]}]
            }}}}),
        );
        let c = &got["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["name"], "web");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(c[1]["name"], "side");
    }

    #[test]
    fn order_interleaves_patch_and_live_items() {
        // Live a b c d; the patch names d then b (both live) and e (new).
        let got = patched(
            json!({"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]}),
            json!({"$setElementOrder/containers": [{"name": "d"}, {"name": "e"}, {"name": "b"}], "containers": [{"name": "e"}]}),
        );
        let names: Vec<&str> = got["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        // The patch's d, e, b keep their order; server-only a and c go
        // before d, which they precede on the server.
        assert_eq!(names, ["a", "c", "d", "e", "b"]);
        let got = patched(
            json!({"metadata": {"finalizers": ["x", "y"]}}),
            json!({"metadata": {"finalizers": ["z", "x"]}}),
        );
        assert_eq!(got["metadata"]["finalizers"], json!(["z", "x", "y"]));
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
        assert_eq!(got["metadata"]["finalizers"], json!(["c", "b"]));
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
