//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A field set is a set of paths in the FieldsV1 alphabet: `f:<field>` for
//! a map key, `k:{"name":"x"}` for an item of a keyed list, and `.` for
//! the item itself. Lists whose items all carry a distinct `name` (or, for
//! `conditions`, `type`) are keyed; other lists are atomic, owned whole.
//!
//! Apply semantics, as the agent and kube-rs controllers rely on them:
//! - applying a value another manager owns with a different value is a
//!   conflict, unless forced (then ownership moves);
//! - the same value is shared ownership, never a conflict;
//! - a field a manager stops applying is removed, unless another manager
//!   also owns it;
//! - any other write (update, patch) takes ownership of what it changed.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

pub type Path = Vec<String>;

/// Which part of an object a write may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The whole object but server-owned metadata.
    All,
    /// The main resource of a kind with a status subresource: not status.
    NoStatus,
    /// The `/status` subresource: status only.
    StatusOnly,
}

impl Scope {
    pub fn subresource(self) -> Option<&'static str> {
        (self == Scope::StatusOnly).then_some("status")
    }
}

/// Metadata the server owns; never tracked as anybody's field.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// The paths of every field an object sets, within `scope`.
pub fn field_set(object: &Value, scope: Scope) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    for (k, v) in map {
        let keep = match scope {
            Scope::StatusOnly => k == "status",
            Scope::NoStatus => k != "status",
            Scope::All => true,
        };
        if !keep || k == "apiVersion" || k == "kind" {
            continue;
        }
        let path = vec![format!("f:{k}")];
        if k == "metadata" {
            if let Some(meta) = v.as_object() {
                for (mk, mv) in meta {
                    if !SERVER_METADATA.contains(&mk.as_str()) {
                        collect(mv, vec![path[0].clone(), format!("f:{mk}")], mk, &mut out);
                    }
                }
            }
            continue;
        }
        collect(v, path, k, &mut out);
    }
    out
}

fn collect(value: &Value, path: Path, name: &str, out: &mut BTreeSet<Path>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                collect(v, p, k, out);
            }
        }
        Value::Array(items) if !items.is_empty() => match list_keys(name, items) {
            Some(keys) => {
                for (item, key) in items.iter().zip(keys) {
                    let mut p = path.clone();
                    p.push(key);
                    let mut marker = p.clone();
                    marker.push(".".into());
                    out.insert(marker);
                    collect(item, p, "", out);
                }
            }
            None => {
                out.insert(path);
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

/// The key field of a keyed list named `name`, if its items qualify.
fn key_field(name: &str, items: &[Value]) -> Option<&'static str> {
    let candidates: &[&'static str] = if name == "conditions" {
        &["type", "name"]
    } else {
        &["name"]
    };
    candidates.iter().copied().find(|field| {
        let mut seen = BTreeSet::new();
        items.iter().all(|item| {
            item.get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| seen.insert(v.to_owned()))
        })
    })
}

/// `k:{"name":"x"}` for each item, or `None` for an atomic list.
fn list_keys(name: &str, items: &[Value]) -> Option<Vec<String>> {
    let field = key_field(name, items)?;
    Some(
        items
            .iter()
            .map(|item| item_key(field, &item[field]))
            .collect(),
    )
}

fn item_key(field: &str, value: &Value) -> String {
    format!("k:{}", json!({ field: value }))
}

/// The value at a path, if the object has it.
pub fn get_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = object;
    for step in path {
        cur = if let Some(field) = step.strip_prefix("f:") {
            cur.get(field)?
        } else if let Some(key) = step.strip_prefix("k:") {
            find_item(cur.as_array()?, key)?.1
        } else if step == "." {
            cur
        } else {
            return None;
        };
    }
    Some(cur)
}

fn find_item<'a>(items: &'a [Value], key: &str) -> Option<(usize, &'a Value)> {
    let key: Map<String, Value> = serde_json::from_str(key).ok()?;
    items
        .iter()
        .enumerate()
        .find(|(_, item)| key.iter().all(|(k, v)| item.get(k) == Some(v)))
}

/// Removes the field at `path` (or, for a path ending in `.`, the list
/// item), then maps left empty by the removal, below the top level.
fn remove_at(object: &mut Value, path: &[String]) {
    let path: &[String] = match path.split_last() {
        Some((last, rest)) if last == "." => rest,
        _ => path,
    };
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let Some(parent) = get_at_mut(object, parent_path) else {
        return;
    };
    let removed = if let Some(field) = last.strip_prefix("f:") {
        parent
            .as_object_mut()
            .is_some_and(|m| m.remove(field).is_some())
    } else if let Some(key) = last.strip_prefix("k:") {
        match parent
            .as_array()
            .and_then(|items| find_item(items, key))
            .map(|(i, _)| i)
        {
            Some(i) => {
                parent.as_array_mut().map(|items| items.remove(i));
                true
            }
            None => false,
        }
    } else {
        false
    };
    if removed
        && parent_path.len() > 1
        && parent.as_object().is_some_and(Map::is_empty)
        && parent_path.last().is_some_and(|s| s.starts_with("f:"))
    {
        remove_at(object, parent_path);
    }
}

fn get_at_mut<'a>(object: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = object;
    for step in path {
        cur = if let Some(field) = step.strip_prefix("f:") {
            cur.get_mut(field)?
        } else if let Some(key) = step.strip_prefix("k:") {
            let i = find_item(cur.as_array()?, key)?.0;
            cur.get_mut(i)?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Merges an applied configuration into the live object: maps merge,
/// keyed lists merge item by item, everything else is replaced.
pub fn merge_applied(live: &mut Value, applied: &Value, name: &str) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, v) in a {
                if v.is_null() {
                    l.remove(k);
                    continue;
                }
                match l.get_mut(k) {
                    Some(existing) => merge_applied(existing, v, k),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => {
            let field = key_field(name, a).filter(|f| key_field(name, l) == Some(*f));
            match field {
                Some(field) => {
                    for item in a {
                        let key = item_key(field, &item[field]);
                        match find_item(l, &key[2..]).map(|(i, _)| i) {
                            Some(i) => merge_applied(&mut l[i], item, ""),
                            None => l.push(item.clone()),
                        }
                    }
                }
                None => *l = a.clone(),
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Manager {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: BTreeSet<Path>,
}

impl Manager {
    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

/// The entries of `metadata.managedFields`.
pub fn read_managers(object: &Value) -> Vec<Manager> {
    let Some(entries) = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
            let mut fields = BTreeSet::new();
            if let Some(tree) = e.get("fieldsV1") {
                tree_paths(tree, &mut Vec::new(), &mut fields);
            }
            Some(Manager {
                manager: s("manager")?,
                operation: s("operation").unwrap_or_else(|| "Update".into()),
                api_version: s("apiVersion").unwrap_or_default(),
                time: s("time").unwrap_or_default(),
                subresource: s("subresource"),
                fields,
            })
        })
        .collect()
}

fn tree_paths(tree: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match tree.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(k.clone());
                if k == "." {
                    out.insert(prefix.clone());
                } else {
                    tree_paths(v, prefix, out);
                }
                prefix.pop();
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

fn paths_tree(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for step in path {
            node = node
                .entry(step.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("field trees hold only maps");
        }
    }
    Value::Object(root)
}

/// Writes the entries back, dropping managers that own nothing.
pub fn write_managers(object: &mut Value, managers: &[Manager]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": paths_tree(&m.fields),
            });
            if let Some(sub) = &m.subresource {
                e["subresource"] = json!(sub);
            }
            e
        })
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Who wrote, how, and when.
#[derive(Clone, Debug)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub time: &'a str,
    pub scope: Scope,
    /// A custom resource: stored as plain JSON, so every map an update
    /// adds is a node its writer owns (see [`new_map_nodes`]).
    pub custom: bool,
}

/// The maps of a built-in kind that are Go maps (nil until set), and so,
/// as on kube-apiserver, owned as a node (`.`) by the update that adds
/// them. A built-in's struct fields (`spec`, `template`, ...) never are.
const MAP_FIELDS: &[&str] = &[
    "labels",
    "annotations",
    "data",
    "binaryData",
    "stringData",
    "matchLabels",
    "nodeSelector",
    "limits",
    "requests",
];

/// The `.` markers of the non-empty maps `new` has and `old` had not: a
/// non-apply write owns the node of every map it adds (the structured
/// merge diff counts an added map as a field of its own), so its entry
/// outlives the map's leaves and the map survives another manager's
/// removals. Top-level `metadata` is never a node anybody owns.
fn new_map_nodes(old: Option<&Value>, new: &Value, w: &Writer<'_>) -> BTreeSet<Path> {
    fn walk(
        value: &Value,
        path: &mut Path,
        old: Option<&Value>,
        custom: bool,
        out: &mut BTreeSet<Path>,
    ) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                let named = path.last().and_then(|s| s.strip_prefix("f:"));
                let eligible = path.len() > 1 || path.first().is_some_and(|s| s != "f:metadata");
                if eligible
                    && (custom || named.is_some_and(|n| MAP_FIELDS.contains(&n)))
                    && old.and_then(|o| get_at(o, path)).is_none()
                {
                    let mut marker = path.clone();
                    marker.push(".".into());
                    out.insert(marker);
                }
                for (k, v) in map {
                    if path.len() == 1
                        && path[0] == "f:metadata"
                        && SERVER_METADATA.contains(&k.as_str())
                    {
                        continue;
                    }
                    path.push(format!("f:{k}"));
                    walk(v, path, old, custom, out);
                    path.pop();
                }
            }
            Value::Array(items) if !items.is_empty() => {
                let name = path
                    .last()
                    .and_then(|s| s.strip_prefix("f:"))
                    .unwrap_or_default()
                    .to_owned();
                if let Some(keys) = list_keys(&name, items) {
                    for (item, key) in items.iter().zip(keys) {
                        path.push(key);
                        // The item's own marker is the list's business.
                        if let Value::Object(m) = item {
                            for (k, v) in m {
                                path.push(format!("f:{k}"));
                                walk(v, path, old, custom, out);
                                path.pop();
                            }
                        }
                        path.pop();
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    let Some(map) = new.as_object() else {
        return out;
    };
    for (k, v) in map {
        let keep = match w.scope {
            Scope::StatusOnly => k == "status",
            Scope::NoStatus => k != "status",
            Scope::All => true,
        };
        if keep && k != "apiVersion" && k != "kind" {
            walk(v, &mut vec![format!("f:{k}")], old, w.custom, &mut out);
        }
    }
    out
}

fn is_marker(p: &Path) -> bool {
    p.last().map(String::as_str) == Some(".")
}

/// Records a non-apply write (create, update, patch): the writer takes
/// ownership of every field it changed, and fields that no longer exist
/// leave every manager's set.
pub fn track_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    let mut managers = read_managers(old.unwrap_or(&Value::Null));
    let now_all = field_set(new, Scope::All);
    for m in &mut managers {
        // A node (`.`) stays owned while its map or item exists.
        m.fields
            .retain(|p| now_all.contains(p) || (is_marker(p) && get_at(new, p).is_some()));
    }
    let mut changed: BTreeSet<Path> = field_set(new, w.scope)
        .into_iter()
        .filter(|p| {
            let before = old.and_then(|o| get_at(o, p));
            // A list item's marker changes only when the item is new.
            if is_marker(p) {
                before.is_none()
            } else {
                before != get_at(new, p)
            }
        })
        .collect();
    changed.extend(new_map_nodes(old, new, w));
    if !changed.is_empty() {
        for m in &mut managers {
            m.fields.retain(|p| !changed.contains(p));
        }
        let sub = w.scope.subresource();
        match managers.iter_mut().find(|m| m.is(w.manager, "Update", sub)) {
            Some(m) => {
                m.fields.extend(changed);
                m.time = w.time.to_owned();
                m.api_version = w.api_version.to_owned();
            }
            None => managers.push(Manager {
                manager: w.manager.to_owned(),
                operation: "Update".into(),
                api_version: w.api_version.to_owned(),
                time: w.time.to_owned(),
                subresource: sub.map(str::to_owned),
                fields: changed,
            }),
        }
    }
    write_managers(new, &managers);
}

/// A field another manager owns with a different value.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub path: Path,
}

impl Conflict {
    /// The owner as kube-apiserver names it in a conflict: `"name"`, then
    /// `with subresource "status"` for a subresource's entry, then, for an
    /// Update (not an Apply) owner, `using v1 at <time>`.
    pub fn owner(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation != "Apply" {
            out.push_str(&format!(" using {}", self.api_version));
            if !self.time.is_empty() {
                out.push_str(&format!(" at {}", self.time));
            }
        }
        out
    }

    /// `.spec.replicas`, `.spec.containers[name="web"].image`.
    pub fn field(&self) -> String {
        let mut out = String::new();
        for step in &self.path {
            if let Some(f) = step.strip_prefix("f:") {
                out.push('.');
                out.push_str(f);
            } else if let Some(k) = step.strip_prefix("k:") {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
        }
        out
    }
}

/// Server-side apply of `applied` onto `live` (None: the object is new).
/// Returns the new object, or the conflicts that stop it.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let empty = json!({});
    let live_obj = live.unwrap_or(&empty);
    let mut managers = read_managers(live_obj);
    let sub = w.scope.subresource();
    let new_fields = field_set(applied, w.scope);
    let old_fields = managers
        .iter()
        .find(|m| m.is(w.manager, "Apply", sub))
        .map(|m| m.fields.clone())
        .unwrap_or_default();

    // Conflicts: another manager owns a field this apply sets to a
    // different value.
    let mut conflicts = Vec::new();
    for m in managers.iter().filter(|m| !m.is(w.manager, "Apply", sub)) {
        for p in m.fields.intersection(&new_fields) {
            if p.last().map(String::as_str) == Some(".") {
                continue;
            }
            if get_at(live_obj, p) != get_at(applied, p) {
                conflicts.push(Conflict {
                    manager: m.manager.clone(),
                    operation: m.operation.clone(),
                    api_version: m.api_version.clone(),
                    time: m.time.clone(),
                    subresource: m.subresource.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }

    let mut object = live_obj.clone();
    // Fields this manager stopped applying, and nobody else owns, go.
    let others: BTreeSet<&Path> = managers
        .iter()
        .filter(|m| !m.is(w.manager, "Apply", sub))
        .flat_map(|m| m.fields.iter())
        .filter(|p| !conflicts.iter().any(|c| &&c.path == p))
        .collect();
    for p in old_fields.difference(&new_fields) {
        let owned_inside = others.iter().any(|o| o.starts_with(strip_marker(p)));
        if !owned_inside {
            remove_at(&mut object, p);
        }
    }
    let mut body = applied.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    if let Some(map) = body.as_object_mut() {
        match w.scope {
            Scope::NoStatus => {
                map.remove("status");
            }
            Scope::StatusOnly => map.retain(|k, _| k == "status"),
            Scope::All => {}
        }
    }
    merge_applied(&mut object, &body, "");

    for m in &mut managers {
        let theirs = |c: &&Conflict| {
            c.manager == m.manager && c.operation == m.operation && c.subresource == m.subresource
        };
        let lost: Vec<&Path> = conflicts.iter().filter(theirs).map(|c| &c.path).collect();
        m.fields.retain(|p| !lost.contains(&p));
    }
    managers.retain(|m| !m.is(w.manager, "Apply", sub));
    managers.push(Manager {
        manager: w.manager.to_owned(),
        operation: "Apply".into(),
        api_version: w.api_version.to_owned(),
        time: w.time.to_owned(),
        subresource: sub.map(str::to_owned),
        fields: new_fields,
    });
    write_managers(&mut object, &managers);
    Ok(object)
}

fn strip_marker(p: &Path) -> &[String] {
    match p.split_last() {
        Some((last, rest)) if last == "." => rest,
        _ => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            time: "2026-01-01T00:00:00Z",
            scope: Scope::All,
            custom: false,
        }
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
    }

    fn owners(obj: &Value) -> Vec<(String, String)> {
        read_managers(obj)
            .into_iter()
            .map(|m| (m.manager, m.operation))
            .collect()
    }

    #[test]
    fn field_sets_key_lists_by_name() {
        let obj = json!({
            "metadata": {"name": "d", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx"}], "args": ["a", "b"]}
        });
        let got: Vec<String> = field_set(&obj, Scope::All)
            .into_iter()
            .map(|p| p.join("/"))
            .collect();
        assert_eq!(
            got,
            [
                "f:metadata/f:labels/f:app",
                "f:spec/f:args",
                r#"f:spec/f:containers/k:{"name":"web"}/."#,
                r#"f:spec/f:containers/k:{"name":"web"}/f:image"#,
                r#"f:spec/f:containers/k:{"name":"web"}/f:name"#,
            ]
        );
    }

    #[test]
    fn managed_fields_round_trip_through_fields_v1() {
        let mut obj = cm(json!({"a": "1"}));
        track_update(None, &mut obj, &writer("kubectl"));
        let tree = &obj["metadata"]["managedFields"][0]["fieldsV1"];
        // `data` is a map the create added: its node is owned too.
        assert_eq!(tree, &json!({"f:data": {".": {}, "f:a": {}}}));
        assert_eq!(read_managers(&obj)[0].fields.len(), 2);
    }

    #[test]
    fn updates_own_the_maps_they_add_and_keep_them_while_they_exist() {
        let custom = Writer {
            custom: true,
            ..writer("kubectl-create")
        };
        let mut cr = json!({
            "metadata": {"name": "w", "labels": {"app": "web"}},
            "spec": {"size": 1, "ref": {"name": "x"}, "ports": [{"name": "http", "port": 80}]}
        });
        track_update(None, &mut cr, &custom);
        assert_eq!(
            cr["metadata"]["managedFields"][0]["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    ".": {},
                    "f:ports": {"k:{\"name\":\"http\"}": {".": {}, "f:name": {}, "f:port": {}}},
                    "f:ref": {".": {}, "f:name": {}},
                    "f:size": {}
                }
            })
        );
        // A built-in's struct fields are not nodes; its Go maps are.
        let mut d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "replicas": 1}});
        track_update(None, &mut d, &writer("kubectl-create"));
        assert_eq!(
            d["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}, "f:selector": {"f:matchLabels": {".": {}, "f:a": {}}}}})
        );
        // Another writer takes every leaf: the first still owns the nodes,
        // so its entry survives, as on a real server.
        let edit = Writer {
            custom: true,
            ..writer("edit")
        };
        let old = cr.clone();
        cr["spec"]["size"] = json!(2);
        cr["spec"]["ref"]["name"] = json!("y");
        cr["spec"]["ports"][0]["port"] = json!(81);
        cr["metadata"]["labels"]["app"] = json!("api");
        track_update(Some(&old), &mut cr, &edit);
        let first = read_managers(&cr)
            .into_iter()
            .find(|m| m.manager == "kubectl-create")
            .expect("the entry survives");
        assert!(
            first
                .fields
                .iter()
                .all(|p| is_marker(p) || p.last().unwrap() == "f:name"),
            "{first:?}"
        );
        // Once the map is gone, so is its node.
        let old = cr.clone();
        cr["spec"].as_object_mut().unwrap().remove("ref");
        track_update(Some(&old), &mut cr, &edit);
        let first = read_managers(&cr)
            .into_iter()
            .find(|m| m.manager == "kubectl-create")
            .unwrap();
        assert!(
            !first
                .fields
                .iter()
                .any(|p| p.contains(&"f:ref".to_string()))
        );
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let w = writer("agent");
        let v1 = apply(None, &cm(json!({"a": "1", "b": "2"})), &w, false).unwrap();
        let v2 = apply(Some(&v1), &cm(json!({"a": "1"})), &w, false).unwrap();
        assert_eq!(v2["data"], json!({"a": "1"}));
        assert_eq!(owners(&v2), [("agent".into(), "Apply".into())]);
    }

    #[test]
    fn apply_conflicts_with_another_owner_unless_forced() {
        let mut live = apply(None, &cm(json!({"a": "1"})), &writer("one"), false).unwrap();
        // Another writer updates the field by hand.
        let old = live.clone();
        live["data"]["a"] = json!("edited");
        track_update(Some(&old), &mut live, &writer("kubectl-edit"));
        let err = apply(Some(&live), &cm(json!({"a": "2"})), &writer("two"), false).unwrap_err();
        assert_eq!(err[0].manager, "kubectl-edit");
        assert_eq!(err[0].field(), ".data.a");
        // The same value is shared ownership, not a conflict.
        let shared = apply(
            Some(&live),
            &cm(json!({"a": "edited"})),
            &writer("two"),
            false,
        )
        .unwrap();
        // "one" lost the field when kubectl-edit changed it.
        let names: Vec<String> = read_managers(&shared)
            .into_iter()
            .map(|m| m.manager)
            .collect();
        assert_eq!(names, ["kubectl-edit", "two"]);
        let forced = apply(Some(&live), &cm(json!({"a": "2"})), &writer("two"), true).unwrap();
        assert_eq!(forced["data"]["a"], "2");
        let m = read_managers(&forced);
        assert!(!m.iter().any(|m| m.manager == "kubectl-edit"), "{m:?}");
    }

    #[test]
    fn conflicts_name_update_owners_with_version_and_time_and_apply_owners_bare() {
        let c = |operation: &str, subresource: Option<&str>| Conflict {
            manager: "kubectl-edit".into(),
            operation: operation.into(),
            api_version: "v1".into(),
            time: "2026-01-01T00:00:00Z".into(),
            subresource: subresource.map(str::to_owned),
            path: vec!["f:data".into(), "f:a".into()],
        };
        assert_eq!(
            c("Update", None).owner(),
            r#""kubectl-edit" using v1 at 2026-01-01T00:00:00Z"#
        );
        assert_eq!(c("Apply", None).owner(), r#""kubectl-edit""#);
        assert_eq!(
            c("Apply", Some("status")).owner(),
            r#""kubectl-edit" with subresource "status""#
        );
        assert_eq!(c("Apply", None).field(), ".data.a");
    }

    #[test]
    fn a_field_shared_with_another_manager_survives_removal() {
        let a = apply(None, &cm(json!({"x": "1"})), &writer("a"), false).unwrap();
        let b = apply(Some(&a), &cm(json!({"x": "1"})), &writer("b"), false).unwrap();
        let a2 = apply(Some(&b), &cm(json!({})), &writer("a"), false).unwrap();
        assert_eq!(a2["data"]["x"], "1", "b still applies it");
    }

    #[test]
    fn keyed_lists_merge_per_item_and_drop_unapplied_items() {
        let d = |containers: Value| json!({"metadata": {"name": "d"}, "spec": {"containers": containers}});
        let w = writer("agent");
        let v1 = apply(
            None,
            &d(json!([{"name": "a", "image": "1"}, {"name": "b", "image": "1"}])),
            &w,
            false,
        )
        .unwrap();
        // Someone else sets a field inside item a.
        let mut v1b = v1.clone();
        v1b["spec"]["containers"][0]["tty"] = json!(true);
        track_update(Some(&v1), &mut v1b, &writer("other"));
        let v2 = apply(
            Some(&v1b),
            &d(json!([{"name": "a", "image": "2"}])),
            &w,
            false,
        )
        .unwrap();
        assert_eq!(
            v2["spec"]["containers"],
            json!([{"name": "a", "image": "2", "tty": true}])
        );
    }

    #[test]
    fn status_scope_ignores_the_rest() {
        let obj = json!({"spec": {"a": 1}, "status": {"b": 2}, "metadata": {"labels": {"x": "y"}}});
        let s: Vec<Path> = field_set(&obj, Scope::StatusOnly).into_iter().collect();
        assert_eq!(s, [vec!["f:status".to_string(), "f:b".to_string()]]);
        assert!(
            !field_set(&obj, Scope::NoStatus)
                .iter()
                .any(|p| p[0] == "f:status")
        );
    }
}
