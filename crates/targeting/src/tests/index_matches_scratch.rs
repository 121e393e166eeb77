//! Property: after any sequence of events, the incremental index equals a
//! from-scratch computation, and each event reports exactly the difference.

use super::fixtures::*;
use crate::{
    ChangeKind, CompiledBundle, ObjectKey, PairChange, Placements, TargetIndex,
    placements_from_scratch,
};
use flotilla_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement,
};
use flotilla_api::{
    Bundle, BundleSpec, BundleTarget, Cluster, ClusterGroup, GitTarget, TargetCriteria,
    TargetCustomization, TargetCustomizationMode,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

const NAMESPACES: [&str; 2] = ["ws-a", "ws-b"];
const KEYS: [&str; 3] = ["env", "region", "tier"];
const VALUES: [&str; 3] = ["x", "y", "z"];

fn ns() -> impl Strategy<Value = String> {
    prop::sample::select(&NAMESPACES[..]).prop_map(String::from)
}

fn label_set() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(&KEYS[..]).prop_map(String::from),
        prop::sample::select(&VALUES[..]).prop_map(String::from),
        0..3,
    )
}

/// Mostly valid selectors, sometimes an invalid one.
fn selector() -> impl Strategy<Value = LabelSelector> {
    let requirement = (
        prop::sample::select(&KEYS[..]),
        prop::sample::select(&["In", "NotIn", "Exists", "DoesNotExist", "In", "Bogus"][..]),
        prop::collection::vec(prop::sample::select(&VALUES[..]), 0..3),
    )
        .prop_map(|(k, op, vs)| {
            let values = match op {
                "Exists" | "DoesNotExist" => None,
                "In" | "NotIn" if vs.is_empty() => Some(vec!["x".to_string()]),
                _ => Some(vs.iter().map(|v| v.to_string()).collect()),
            };
            LabelSelectorRequirement {
                key: k.into(),
                operator: op.into(),
                values,
            }
        });
    (
        prop::option::of(label_set()),
        prop::option::of(prop::collection::vec(requirement, 0..2)),
    )
        .prop_map(|(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        })
}

fn criteria() -> impl Strategy<Value = TargetCriteria> {
    (
        prop::option::of(
            prop::sample::select(&["c0", "c1", "c2", "Prod", ""][..]).prop_map(String::from),
        ),
        prop::option::of(selector()),
        prop::option::of(prop::sample::select(&["g0", "g1", "default"][..]).prop_map(String::from)),
        prop::option::of(selector()),
    )
        .prop_map(
            |(cluster_name, cluster_selector, cluster_group, cluster_group_selector)| {
                TargetCriteria {
                    cluster_name,
                    cluster_selector,
                    cluster_group,
                    cluster_group_selector,
                }
            },
        )
}

fn bundle_spec() -> impl Strategy<Value = BundleSpec> {
    let target = (criteria(), prop::bool::weighted(0.15)).prop_map(|(criteria, do_not_deploy)| {
        BundleTarget {
            name: None,
            criteria,
            do_not_deploy,
        }
    });
    let restriction = criteria().prop_map(|criteria| GitTarget {
        name: None,
        criteria,
    });
    let customization = (
        criteria(),
        prop::bool::weighted(0.1),
        prop::sample::select(&["n1", "n2"][..]),
    )
        .prop_map(|(criteria, do_not_deploy, ns)| {
            let mut c = TargetCustomization {
                criteria,
                do_not_deploy,
                ..Default::default()
            };
            c.options.default_namespace = Some(ns.into());
            c
        });
    (
        prop::collection::vec(target, 0..3),
        prop::collection::vec(restriction, 0..2),
        prop::collection::vec(customization, 0..3),
        prop::bool::ANY,
    )
        .prop_map(
            |(targets, target_restrictions, target_customizations, all)| BundleSpec {
                targets,
                target_restrictions,
                target_customizations,
                target_customization_mode: if all {
                    TargetCustomizationMode::AllMatches
                } else {
                    TargetCustomizationMode::FirstMatch
                },
                ..Default::default()
            },
        )
}

#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // test-only, short-lived values
enum Event {
    ApplyCluster(Cluster),
    DeleteCluster(ObjectKey),
    ApplyGroup(ClusterGroup),
    DeleteGroup(ObjectKey),
    ApplyBundle(Bundle),
    DeleteBundle(ObjectKey),
}

fn key_of(names: &'static [&'static str]) -> impl Strategy<Value = ObjectKey> {
    (ns(), prop::sample::select(names)).prop_map(|(n, name)| ObjectKey::new(&n, name))
}

fn event() -> impl Strategy<Value = Event> {
    const CLUSTERS: &[&str] = &["c0", "c1", "c2", "c3"];
    const GROUPS: &[&str] = &["g0", "g1", "default"];
    const BUNDLES: &[&str] = &["b0", "b1", "b2"];
    prop_oneof![
        4 => (key_of(CLUSTERS), label_set(), prop::option::of(prop::sample::select(&["c0", "c1", "Prod"][..]))).prop_map(|(k, mut l, display)| {
            // Sometimes Rancher's display name, which clusterName matches.
            if let Some(d) = display {
                l.insert(crate::criteria::DISPLAY_NAME_LABEL.into(), d.into());
            }
            let pairs: Vec<(&str, &str)> = l.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            Event::ApplyCluster(cluster_in(&k.namespace, &k.name, &pairs))
        }),
        1 => key_of(CLUSTERS).prop_map(Event::DeleteCluster),
        2 => (key_of(GROUPS), label_set(), prop::option::of(selector())).prop_map(|(k, l, s)| {
            let pairs: Vec<(&str, &str)> = l.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            Event::ApplyGroup(group_in(&k.namespace, &k.name, &pairs, s))
        }),
        1 => key_of(GROUPS).prop_map(Event::DeleteGroup),
        3 => (key_of(BUNDLES), bundle_spec()).prop_map(|(k, spec)| {
            let mut b = bundle(&k.name, spec);
            b.metadata.namespace = Some(k.namespace.to_string());
            Event::ApplyBundle(b)
        }),
        1 => key_of(BUNDLES).prop_map(Event::DeleteBundle),
    ]
}

/// The objects the index has accepted.
#[derive(Default, Clone)]
struct Model {
    clusters: BTreeMap<ObjectKey, Cluster>,
    groups: BTreeMap<ObjectKey, ClusterGroup>,
    bundles: BTreeMap<ObjectKey, Bundle>,
}

impl Model {
    fn scratch(&self) -> Placements {
        let clusters: Vec<_> = self.clusters.values().cloned().collect();
        let groups: Vec<_> = self.groups.values().cloned().collect();
        let bundles: Vec<_> = self.bundles.values().cloned().collect();
        let (placements, errors) = placements_from_scratch(&clusters, &groups, &bundles);
        assert!(
            errors.is_empty(),
            "the model holds only accepted objects: {errors:?}"
        );
        placements
    }
}

fn expected_changes(before: &Placements, after: &Placements) -> Vec<PairChange> {
    let mut out = Vec::new();
    for (k, v) in after {
        let kind = match before.get(k) {
            None => Some(ChangeKind::Targeted),
            Some(old) if old.customization != v.customization => Some(ChangeKind::Customized),
            Some(_) => None,
        };
        if let Some(kind) = kind {
            out.push(PairChange {
                bundle: k.0.clone(),
                cluster: k.1.clone(),
                kind,
            });
        }
    }
    for k in before.keys().filter(|k| !after.contains_key(*k)) {
        out.push(PairChange {
            bundle: k.0.clone(),
            cluster: k.1.clone(),
            kind: ChangeKind::Untargeted,
        });
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn incremental_index_equals_from_scratch(events in prop::collection::vec(event(), 1..40)) {
        let mut index = TargetIndex::new();
        let mut model = Model::default();
        for event in events {
            let before = model.scratch();
            let changes = match event {
                Event::ApplyCluster(c) => {
                    model.clusters.insert(ObjectKey::of(&c.metadata), c.clone());
                    index.apply_cluster(&c)
                }
                Event::DeleteCluster(k) => {
                    model.clusters.remove(&k);
                    index.delete_cluster(&k)
                }
                Event::ApplyGroup(g) => {
                    let valid = g.spec.selector.as_ref().map(crate::Selector::compile).transpose().is_ok();
                    match index.apply_group(&g) {
                        Ok(ch) => {
                            prop_assert!(valid, "an invalid group was accepted");
                            model.groups.insert(ObjectKey::of(&g.metadata), g);
                            ch
                        }
                        Err(_) => {
                            prop_assert!(!valid, "a valid group was refused");
                            Default::default()
                        }
                    }
                }
                Event::DeleteGroup(k) => {
                    model.groups.remove(&k);
                    index.delete_group(&k)
                }
                Event::ApplyBundle(b) => {
                    let valid = CompiledBundle::compile(&b.spec).is_ok();
                    match index.apply_bundle(&b) {
                        Ok(ch) => {
                            prop_assert!(valid, "an invalid bundle was accepted");
                            model.bundles.insert(ObjectKey::of(&b.metadata), b);
                            ch
                        }
                        Err(_) => {
                            prop_assert!(!valid, "a valid bundle was refused");
                            Default::default()
                        }
                    }
                }
                Event::DeleteBundle(k) => {
                    model.bundles.remove(&k);
                    index.delete_bundle(&k)
                }
            };
            let after = model.scratch();
            prop_assert_eq!(&index.all_placements(), &after);
            prop_assert_eq!(changes.sorted(), expected_changes(&before, &after));
        }
    }
}
