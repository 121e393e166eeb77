//! What an agent applied for one BundleDeployment, ApplySet style, and
//! the pure decisions built on it: the apply order and what to prune.
//!
//! The inventory lives downstream in a parent ConfigMap (one per
//! BundleDeployment) that carries the ApplySet id label, tooling and
//! contained group-kinds annotations, and the exact list of members.
//! Every member carries the `applyset.kubernetes.io/part-of` label, so an
//! object someone else created is never mistaken for one of ours.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The identity of an object: group, kind, namespace and name. The version
/// is not part of it, so moving a manifest from `v1beta1` to `v1` updates
/// the object rather than pruning it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjKey {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.kind)?;
        } else {
            write!(f, "{}.{}", self.kind, self.group)?;
        }
        if self.namespace.is_empty() {
            write!(f, " {}", self.name)
        } else {
            write!(f, " {}/{}", self.namespace, self.name)
        }
    }
}

/// A member of the inventory: its identity and the version it was applied
/// with (the one to delete it through).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    #[serde(flatten)]
    pub key: ObjKey,
    pub version: String,
}

impl Member {
    pub fn api_version(&self) -> String {
        if self.key.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.key.group, self.version)
        }
    }

    /// The member an object stands for, from its apiVersion, kind and
    /// metadata. None when one of them is missing.
    pub fn of(obj: &Value) -> Option<Member> {
        let api_version = obj.get("apiVersion")?.as_str()?;
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let meta = obj.get("metadata")?;
        Some(Member {
            key: ObjKey {
                group: group.to_owned(),
                kind: obj.get("kind")?.as_str()?.to_owned(),
                namespace: meta
                    .get("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                name: meta.get("name")?.as_str()?.to_owned(),
            },
            version: version.to_owned(),
        })
    }
}

/// The members recorded in a parent, keyed by identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub members: BTreeMap<ObjKey, Member>,
}

impl Inventory {
    pub fn new(members: impl IntoIterator<Item = Member>) -> Self {
        Inventory {
            members: members.into_iter().map(|m| (m.key.clone(), m)).collect(),
        }
    }

    /// Both sets: what a parent records while an apply is under way, so a
    /// crash between apply and prune never loses track of an object.
    pub fn union(&self, other: &Inventory) -> Inventory {
        let mut members = self.members.clone();
        for (k, m) in &other.members {
            members.insert(k.clone(), m.clone());
        }
        Inventory { members }
    }

    /// `data.members` of the parent ConfigMap: one JSON array, sorted.
    pub fn encode(&self) -> String {
        let list: Vec<&Member> = self.members.values().collect();
        serde_json::to_string(&list).expect("members serialize")
    }

    pub fn decode(text: &str) -> Result<Inventory, String> {
        let list: Vec<Member> =
            serde_json::from_str(text).map_err(|e| format!("unreadable inventory: {e}"))?;
        Ok(Inventory::new(list))
    }

    /// The `applyset.kubernetes.io/contains-group-kinds` annotation:
    /// `Kind.group` entries, sorted and comma-separated.
    pub fn group_kinds(&self) -> String {
        let gks: BTreeSet<String> = self
            .members
            .keys()
            .map(|k| {
                if k.group.is_empty() {
                    k.kind.clone()
                } else {
                    format!("{}.{}", k.kind, k.group)
                }
            })
            .collect();
        gks.into_iter().collect::<Vec<_>>().join(",")
    }
}

/// The ApplySet id of a parent ConfigMap, per the ApplySet KEP:
/// `applyset-<base64url(sha256(<name>.<namespace>.ConfigMap.))>-v1`.
/// 55 characters, a valid label value.
pub fn applyset_id(parent_name: &str, parent_namespace: &str) -> String {
    let digest = Sha256::digest(format!("{parent_name}.{parent_namespace}.ConfigMap.").as_bytes());
    format!(
        "applyset-{}-v1",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

/// What a new deployment no longer contains: the members of `previous`
/// that `desired` lacks, in reverse apply order (custom resources before
/// their CRDs, namespaced objects before their namespaces). Nothing when
/// `keep_resources` is set.
pub fn prune(previous: &Inventory, desired: &Inventory, keep_resources: bool) -> Vec<Member> {
    if keep_resources {
        return Vec::new();
    }
    let mut gone: Vec<Member> = previous
        .members
        .iter()
        .filter(|(k, _)| !desired.members.contains_key(*k))
        .map(|(_, m)| m.clone())
        .collect();
    gone.sort_by_key(|m| (std::cmp::Reverse(phase(&m.key)), m.key.clone()));
    gone
}

/// When an object is applied: 0 for Namespaces and CRDs (which everything
/// else may need), 1 for the rest.
pub fn phase(key: &ObjKey) -> u8 {
    match (key.group.as_str(), key.kind.as_str()) {
        ("", "Namespace") | ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(group: &str, kind: &str, ns: &str, name: &str) -> Member {
        Member {
            key: ObjKey {
                group: group.into(),
                kind: kind.into(),
                namespace: ns.into(),
                name: name.into(),
            },
            version: "v1".into(),
        }
    }

    #[test]
    fn member_of_reads_api_version_and_metadata() {
        let obj = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"}
        });
        let member = Member::of(&obj).unwrap();
        assert_eq!(
            member,
            Member {
                version: "v1".into(),
                ..m("apps", "Deployment", "shop", "web")
            }
        );
        assert_eq!(member.api_version(), "apps/v1");
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
        assert_eq!(Member::of(&ns).unwrap().key.to_string(), "Namespace shop");
        assert_eq!(Member::of(&serde_json::json!({"kind": "X"})), None);
    }

    #[test]
    fn prune_table() {
        let cm = m("", "ConfigMap", "a", "cfg");
        let crd = m(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "",
            "widgets.example.com",
        );
        let cr = m("example.com", "Widget", "a", "w");
        let ns = m("", "Namespace", "", "a");
        let all = Inventory::new([cm.clone(), crd.clone(), cr.clone(), ns.clone()]);
        let rows: [(&str, Inventory, Inventory, bool, Vec<Member>); 5] = [
            (
                "unchanged set prunes nothing",
                all.clone(),
                all.clone(),
                false,
                vec![],
            ),
            (
                "a removed object is pruned",
                all.clone(),
                Inventory::new([crd.clone(), cr.clone(), ns.clone()]),
                false,
                vec![cm.clone()],
            ),
            (
                "keepResources prunes nothing",
                all.clone(),
                Inventory::default(),
                true,
                vec![],
            ),
            (
                "everything goes: custom resources and namespaced objects before CRDs and namespaces",
                all.clone(),
                Inventory::default(),
                false,
                vec![cm.clone(), cr.clone(), ns.clone(), crd.clone()],
            ),
            (
                "a version change is the same object",
                Inventory::new([cm.clone()]),
                Inventory::new([Member {
                    version: "v2".into(),
                    ..cm.clone()
                }]),
                false,
                vec![],
            ),
        ];
        for (what, previous, desired, keep, want) in rows {
            assert_eq!(prune(&previous, &desired, keep), want, "{what}");
        }
    }

    #[test]
    fn inventory_round_trips_and_names_its_group_kinds() {
        let inv = Inventory::new([
            m("apps", "Deployment", "a", "web"),
            m("", "ConfigMap", "a", "cfg"),
            m("apps", "Deployment", "b", "api"),
        ]);
        assert_eq!(Inventory::decode(&inv.encode()).unwrap(), inv);
        assert_eq!(inv.group_kinds(), "ConfigMap,Deployment.apps");
        assert!(Inventory::decode("{").unwrap_err().contains("unreadable"));
    }

    #[test]
    fn applyset_id_is_a_valid_label_value() {
        let id = applyset_id("flotilla-web", "flotilla-system");
        assert!(id.starts_with("applyset-") && id.ends_with("-v1"), "{id}");
        assert_eq!(id.len(), 55);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
        assert_ne!(id, applyset_id("flotilla-web", "other"));
    }

    fn member() -> impl Strategy<Value = Member> {
        (0..3usize, 0..3usize, 0..4usize).prop_map(|(g, ns, n)| {
            let (group, kind) = [("", "ConfigMap"), ("apps", "Deployment"), ("", "Namespace")][g];
            let ns = if kind == "Namespace" {
                ""
            } else {
                ["a", "b", "c"][ns]
            };
            m(group, kind, ns, &format!("o{n}"))
        })
    }

    proptest! {
        /// Pruning never touches a desired object, and it removes exactly
        /// what the previous set had beyond the desired one.
        #[test]
        fn prune_removes_exactly_the_difference(
            prev in proptest::collection::vec(member(), 0..12),
            want in proptest::collection::vec(member(), 0..12),
        ) {
            let (prev, want) = (Inventory::new(prev), Inventory::new(want));
            let gone = prune(&prev, &want, false);
            for g in &gone {
                prop_assert!(!want.members.contains_key(&g.key));
                prop_assert!(prev.members.contains_key(&g.key));
            }
            let expected = prev.members.keys().filter(|k| !want.members.contains_key(*k)).count();
            prop_assert_eq!(gone.len(), expected);
            prop_assert!(prune(&prev, &want, true).is_empty());
        }
    }
}
