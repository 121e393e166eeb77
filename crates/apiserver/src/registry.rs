//! The resource types the server serves: the built-in kinds, and every
//! CustomResourceDefinition as soon as it is created. Discovery documents
//! (`/api`, `/apis`, resource lists) are computed from here.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::RwLock;

/// A printer column, as a CRD declares it (or as kubectl shows a built-in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub priority: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    /// Served with a `/status` subresource: PUT on the main resource then
    /// ignores status, and only spec changes bump the generation.
    pub status: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub columns: Vec<PrinterColumn>,
    /// Set for custom resources: the CRD that defines this type.
    pub crd: Option<String>,
    /// A custom kind's schema (its CRD's, with the standard fields).
    pub custom_schema: Option<std::sync::Arc<Value>>,
}

impl ResourceType {
    /// The schema objects of this type are validated against.
    pub fn schema(&self) -> Option<&Value> {
        match &self.custom_schema {
            Some(s) => Some(s),
            None => crate::schema::builtins()
                .defs
                .get(&crate::schema::definition_name(self)),
        }
    }

    /// `widgets.example.com`, `leases.coordination.k8s.io`, `configmaps`:
    /// how kube-apiserver names a resource in some errors.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn builtin(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        status: bool,
        short: &[&str],
    ) -> Self {
        ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            status,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: if ["", "apps", "batch"].contains(&group)
                && kind != "Namespace"
                && kind != "Event"
            {
                vec!["all".into()]
            } else {
                vec![]
            },
            columns: Vec::new(),
            crd: None,
            custom_schema: None,
        }
    }
}

/// The built-in kinds (an `all` category as kubectl expects).
pub fn builtins() -> Vec<ResourceType> {
    use ResourceType as R;
    vec![
        R::builtin("", "v1", "Namespace", "namespaces", false, true, &["ns"]),
        R::builtin("", "v1", "ConfigMap", "configmaps", true, false, &["cm"]),
        R::builtin("", "v1", "Secret", "secrets", true, false, &[]),
        R::builtin(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            false,
            &["sa"],
        ),
        R::builtin("", "v1", "Service", "services", true, true, &["svc"]),
        R::builtin("", "v1", "Event", "events", true, false, &["ev"]),
        R::builtin(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            true,
            false,
            &["ev"],
        ),
        R::builtin(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            false,
            &[],
        ),
        R::builtin(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            true,
            &["deploy"],
        ),
        R::builtin(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            true,
            true,
            &["sts"],
        ),
        R::builtin("apps", "v1", "DaemonSet", "daemonsets", true, true, &["ds"]),
        R::builtin("batch", "v1", "Job", "jobs", true, true, &[]),
        R::builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            true,
            &["crd", "crds"],
        ),
    ]
}

/// The live set of served types.
pub struct Registry {
    types: RwLock<BTreeMap<(String, String, String), ResourceType>>,
}

impl Default for Registry {
    fn default() -> Self {
        let types = builtins()
            .into_iter()
            .map(|t| ((t.group.clone(), t.version.clone(), t.plural.clone()), t))
            .collect();
        Registry {
            types: RwLock::new(types),
        }
    }
}

impl Registry {
    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<(String, String, String), ResourceType>> {
        self.types.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<(String, String, String), ResourceType>> {
        self.types.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.read()
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
            .cloned()
    }

    /// The type an `apiVersion` and `kind` name (as in an owner reference).
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let types = self.read();
        types
            .values()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
            .or_else(|| types.values().find(|t| t.group == group && t.kind == kind))
            .cloned()
    }

    /// A served type stored under this group and plural (any version).
    pub fn by_resource(&self, group: &str, plural: &str) -> Option<ResourceType> {
        self.read()
            .values()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
    }

    /// One type per stored resource (versions of a kind share storage).
    pub fn resources(&self) -> Vec<ResourceType> {
        let mut seen = std::collections::BTreeSet::new();
        self.read()
            .values()
            .filter(|t| seen.insert((t.group.clone(), t.plural.clone())))
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<ResourceType> {
        self.read().values().cloned().collect()
    }

    /// Serves (or re-serves) every served version of a CRD. Returns an
    /// error naming the problem for a CRD the server cannot serve.
    pub fn register_crd(&self, crd: &Value) -> Result<Vec<ResourceType>, String> {
        let types = types_of_crd(crd)?;
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut map = self.write();
        map.retain(|_, t| t.crd.as_deref() != Some(name));
        for t in &types {
            map.insert(
                (t.group.clone(), t.version.clone(), t.plural.clone()),
                t.clone(),
            );
        }
        Ok(types)
    }

    /// Stops serving a CRD's types.
    pub fn unregister_crd(&self, name: &str) -> Vec<ResourceType> {
        let mut map = self.write();
        let gone: Vec<ResourceType> = map
            .values()
            .filter(|t| t.crd.as_deref() == Some(name))
            .cloned()
            .collect();
        map.retain(|_, t| t.crd.as_deref() != Some(name));
        gone
    }

    /// `/api`.
    pub fn core_versions(&self) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        })
    }

    /// `/apis`: every group but the core one, each with its versions.
    pub fn group_list(&self) -> Value {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.read().values().filter(|t| !t.group.is_empty()) {
            let versions = groups.entry(t.group.clone()).or_default();
            if !versions.contains(&t.version) {
                versions.push(t.version.clone());
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(name, mut versions)| {
                versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
                let entries: Vec<Value> = versions
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                    .collect();
                json!({"name": name, "versions": entries, "preferredVersion": entries[0]})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2`): `/api` (`core`)
    /// or `/apis`, every group with its versions (preferred first) and
    /// their resources, in one document.
    pub fn aggregated(&self, core: bool) -> Value {
        let mut groups: BTreeMap<String, BTreeMap<String, Vec<ResourceType>>> = BTreeMap::new();
        for t in self.read().values().filter(|t| t.group.is_empty() == core) {
            groups
                .entry(t.group.clone())
                .or_default()
                .entry(t.version.clone())
                .or_default()
                .push(t.clone());
        }
        let items: Vec<Value> = groups
            .into_iter()
            .map(|(group, versions)| {
                let mut versions: Vec<(String, Vec<ResourceType>)> = versions.into_iter().collect();
                versions.sort_by_key(|(v, _)| std::cmp::Reverse(version_priority(v)));
                let versions: Vec<Value> = versions
                    .into_iter()
                    .map(|(version, types)| {
                        let resources: Vec<Value> = types.iter().map(discovery_resource).collect();
                        json!({"version": version, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                let mut meta = json!({"creationTimestamp": null});
                if !group.is_empty() {
                    meta["name"] = json!(group);
                }
                json!({"metadata": meta, "versions": versions})
            })
            .collect();
        json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        })
    }

    /// `/api/v1` or `/apis/{group}/{version}`; `None` when nothing is served there.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let types: Vec<ResourceType> = self
            .read()
            .values()
            .filter(|t| t.group == group && t.version == version)
            .cloned()
            .collect();
        if types.is_empty() {
            return None;
        }
        let mut resources = Vec::new();
        for t in &types {
            let mut r = json!({
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": VERBS,
            });
            if !t.short_names.is_empty() {
                r["shortNames"] = json!(t.short_names);
            }
            if !t.categories.is_empty() {
                r["categories"] = json!(t.categories);
            }
            resources.push(r);
            if t.status {
                resources.push(json!({
                    "name": format!("{}/status", t.plural),
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        let group_version = types[0].group_version();
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        )
    }
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One resource of an aggregated discovery document.
fn discovery_resource(t: &ResourceType) -> Value {
    let kind = json!({"group": t.group, "version": t.version, "kind": t.kind});
    let mut r = json!({
        "resource": t.plural,
        "responseKind": kind,
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": VERBS,
    });
    if !t.short_names.is_empty() {
        r["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        r["categories"] = json!(t.categories);
    }
    if t.status {
        r["subresources"] = json!([{
            "subresource": "status",
            "responseKind": kind,
            "verbs": ["get", "patch", "update"],
        }]);
    }
    r
}

/// Kubernetes' version ordering: GA > beta > alpha, higher numbers first.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let num = |s: &str| s.parse().unwrap_or(0);
    match tail {
        "" => (3, major, 0),
        t if t.starts_with("beta") => (2, major, num(&t[4..])),
        t if t.starts_with("alpha") => (1, major, num(&t[5..])),
        _ => (0, major, 0),
    }
}

/// The types a CRD object defines, one per served version.
pub fn types_of_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let s = |p: &str| crd.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let name = s("/metadata/name").ok_or("metadata.name is required")?;
    let group = s("/spec/group").ok_or("spec.group is required")?;
    let plural = s("/spec/names/plural").ok_or("spec.names.plural is required")?;
    let kind = s("/spec/names/kind").ok_or("spec.names.kind is required")?;
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name must be spec.names.plural+\".\"+spec.group: {plural}.{group}"
        ));
    }
    let namespaced = match s("/spec/scope").as_deref() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err(format!(
                "spec.scope must be Namespaced or Cluster, not {other:?}"
            ));
        }
    };
    let list = |p: &str| -> Vec<String> {
        crd.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions needs at least one version")?;
    let mut out = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let version = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or("every version needs a name")?;
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .into(),
                        type_: c
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("string")
                            .into(),
                        json_path: c
                            .get("jsonPath")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .into(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        // No schema (or one preserving unknown fields) accepts anything.
        let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        let crd_schema = v.pointer("/schema/openAPIV3Schema").unwrap_or(&open);
        let mut rt = ResourceType {
            group: group.clone(),
            version: version.into(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: s("/spec/names/singular").unwrap_or_else(|| kind.to_ascii_lowercase()),
            namespaced,
            status: v.pointer("/subresources/status").is_some(),
            short_names: list("/spec/names/shortNames"),
            categories: list("/spec/names/categories"),
            columns,
            crd: Some(name.clone()),
            custom_schema: None,
        };
        rt.custom_schema = Some(std::sync::Arc::new(crate::schema::custom_schema(
            crd_schema, &rt,
        )));
        out.push(rt);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                     "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]},
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v1alpha1", "served": false, "storage": false}
                ]
            }
        })
    }

    #[test]
    fn builtins_are_discoverable() {
        let r = Registry::default();
        let core = r.resource_list("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        for want in [
            "namespaces",
            "namespaces/status",
            "configmaps",
            "secrets",
            "serviceaccounts",
            "services",
            "events",
        ] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        let groups = r.group_list();
        let group_names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            group_names,
            [
                "apiextensions.k8s.io",
                "apps",
                "batch",
                "coordination.k8s.io",
                "events.k8s.io"
            ]
        );
        assert!(r.resource_list("apps", "v2").is_none());
        assert_eq!(
            r.get("apps", "v1", "deployments").unwrap().kind,
            "Deployment"
        );
    }

    #[test]
    fn crds_are_served_at_once_and_removed_with_their_crd() {
        let r = Registry::default();
        let types = r.register_crd(&crd()).unwrap();
        assert_eq!(types.len(), 2, "unserved versions are not served");
        let w = r.get("example.com", "v1", "widgets").unwrap();
        assert!(w.namespaced && w.status);
        assert_eq!(w.columns[0].json_path, ".spec.size");
        let group = &r.group_list()["groups"][0];
        assert_eq!(
            group["preferredVersion"]["version"], "v1",
            "GA before beta: {group}"
        );
        let list = r.resource_list("example.com", "v1").unwrap();
        assert_eq!(list["resources"][0]["shortNames"], json!(["wd"]));
        assert_eq!(r.unregister_crd("widgets.example.com").len(), 2);
        assert!(r.get("example.com", "v1", "widgets").is_none());
    }

    #[test]
    fn invalid_crds_are_refused_with_a_reason() {
        let mut bad = crd();
        bad["metadata"]["name"] = json!("wrong.example.com");
        assert!(
            types_of_crd(&bad)
                .unwrap_err()
                .contains("metadata.name must be")
        );
        let mut bad = crd();
        bad["spec"]["scope"] = json!("Galactic");
        assert!(types_of_crd(&bad).unwrap_err().contains("spec.scope"));
    }

    #[test]
    fn version_ordering() {
        let mut vs = vec!["v1alpha1", "v2beta1", "v1", "v1beta2", "v2", "v1beta1"];
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(
            vs,
            ["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1"]
        );
    }
}
