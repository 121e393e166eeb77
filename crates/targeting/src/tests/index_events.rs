//! Feed the index one event at a time and assert exactly the pairs it
//! reports, as the GC and fan-out controllers will consume them.

use super::fixtures::*;
use crate::{ChangeKind, Changes, ObjectKey, PairChange, TargetIndex};
use flotilla_api::BundleSpec;

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(NS, name)
}

/// The reported pairs as (bundle, cluster, kind), sorted.
fn pairs(changes: &Changes) -> Vec<(String, String, ChangeKind)> {
    changes
        .clone()
        .sorted()
        .into_iter()
        .map(
            |PairChange {
                 bundle,
                 cluster,
                 kind,
             }| (bundle.name.to_string(), cluster.name.to_string(), kind),
        )
        .collect()
}

fn p(b: &str, c: &str, k: ChangeKind) -> (String, String, ChangeKind) {
    (b.into(), c.into(), k)
}

use ChangeKind::*;

/// Three clusters, a `prod` group, an app bundle on env=prod and a
/// monitoring bundle on the `prod` group.
fn setup() -> TargetIndex {
    let mut index = TargetIndex::new();
    index.apply_cluster(&cluster("a", &[("env", "prod")]));
    index.apply_cluster(&cluster("b", &[("env", "prod")]));
    index.apply_cluster(&cluster("c", &[("env", "dev")]));
    index
        .apply_group(&group("prod", &[], Some(match_labels(&[("env", "prod")]))))
        .unwrap();
    index
        .apply_bundle(&bundle(
            "app",
            targets(vec![
                crit().selector(match_labels(&[("env", "prod")])).target(),
            ]),
        ))
        .unwrap();
    index
        .apply_bundle(&bundle("mon", targets(vec![crit().group("prod").target()])))
        .unwrap();
    index
}

#[test]
fn new_bundle_reports_every_targeted_cluster() {
    let mut index = setup();
    let changes = index
        .apply_bundle(&bundle(
            "all",
            targets(vec![crit().selector(everything()).target()]),
        ))
        .unwrap();
    assert_eq!(
        pairs(&changes),
        [
            p("all", "a", Targeted),
            p("all", "b", Targeted),
            p("all", "c", Targeted)
        ]
    );
}

#[test]
fn cluster_relabel_moves_exactly_its_pairs() {
    let mut index = setup();
    let changes = index.apply_cluster(&cluster("a", &[("env", "dev")]));
    assert_eq!(
        pairs(&changes),
        [p("app", "a", Untargeted), p("mon", "a", Untargeted)]
    );
    assert!(!index.is_targeted(&key("app"), &key("a")));
    assert!(index.is_targeted(&key("app"), &key("b")), "b untouched");

    let changes = index.apply_cluster(&cluster("c", &[("env", "prod")]));
    assert_eq!(
        pairs(&changes),
        [p("app", "c", Targeted), p("mon", "c", Targeted)]
    );
}

#[test]
fn same_labels_again_is_a_no_op() {
    let mut index = setup();
    let mut c = cluster("a", &[("env", "prod")]);
    c.metadata.annotations = Some(labels(&[("note", "status writes look like this")]));
    assert!(index.apply_cluster(&c).is_empty());
}

#[test]
fn bundle_target_edit_untargets_stale_pairs() {
    let mut index = setup();
    let changes = index
        .apply_bundle(&bundle("app", targets(vec![crit().name("b").target()])))
        .unwrap();
    assert_eq!(pairs(&changes), [p("app", "a", Untargeted)]);
    assert_eq!(index.clusters_of(&key("app")), [key("b")]);
}

#[test]
fn bundle_change_outside_targeting_is_a_no_op() {
    let mut index = setup();
    let mut spec = targets(vec![
        crit().selector(match_labels(&[("env", "prod")])).target(),
    ]);
    spec.content_id = "s-new-content".into();
    spec.paused = true;
    assert!(index.apply_bundle(&bundle("app", spec)).unwrap().is_empty());
}

#[test]
fn bundle_delete_untargets_everything() {
    let mut index = setup();
    let changes = index.delete_bundle(&key("mon"));
    assert_eq!(
        pairs(&changes),
        [p("mon", "a", Untargeted), p("mon", "b", Untargeted)]
    );
    assert!(
        index.delete_bundle(&key("mon")).is_empty(),
        "second delete: nothing"
    );
}

#[test]
fn cluster_delete_untargets_its_bundles() {
    let mut index = setup();
    let changes = index.delete_cluster(&key("b"));
    assert_eq!(
        pairs(&changes),
        [p("app", "b", Untargeted), p("mon", "b", Untargeted)]
    );
    assert_eq!(index.cluster_count(), 2);
}

#[test]
fn group_selector_change_moves_group_bundles_only() {
    let mut index = setup();
    let changes = index
        .apply_group(&group("prod", &[], Some(match_labels(&[("env", "dev")]))))
        .unwrap();
    assert_eq!(
        pairs(&changes),
        [
            p("mon", "a", Untargeted),
            p("mon", "b", Untargeted),
            p("mon", "c", Targeted)
        ]
    );
}

#[test]
fn group_delete_and_recreate() {
    let mut index = setup();
    let changes = index.delete_group(&key("prod"));
    assert_eq!(
        pairs(&changes),
        [p("mon", "a", Untargeted), p("mon", "b", Untargeted)]
    );
    let changes = index
        .apply_group(&group("prod", &[], Some(match_labels(&[("env", "prod")]))))
        .unwrap();
    assert_eq!(
        pairs(&changes),
        [p("mon", "a", Targeted), p("mon", "b", Targeted)]
    );
}

#[test]
fn group_label_change_reaches_group_selector_bundles() {
    let mut index = setup();
    index
        .apply_bundle(&bundle(
            "crit",
            targets(vec![
                crit()
                    .group_selector(match_labels(&[("tier", "critical")]))
                    .target(),
            ]),
        ))
        .unwrap();
    let changes = index
        .apply_group(&group(
            "prod",
            &[("tier", "critical")],
            Some(match_labels(&[("env", "prod")])),
        ))
        .unwrap();
    assert_eq!(
        pairs(&changes),
        [p("crit", "a", Targeted), p("crit", "b", Targeted)]
    );
}

#[test]
fn customization_change_is_reported_per_pair() {
    let mut index = setup();
    let mut eu = crit().name("a").customize("a-only");
    eu.options.default_namespace = Some("special".into());
    let spec = |custs| BundleSpec {
        target_customizations: custs,
        ..targets(vec![
            crit().selector(match_labels(&[("env", "prod")])).target(),
        ])
    };
    let changes = index
        .apply_bundle(&bundle("app", spec(vec![eu.clone()])))
        .unwrap();
    assert_eq!(pairs(&changes), [p("app", "a", Customized)]);

    // Same entry, new content: still a customization change for `a` only.
    eu.options.default_namespace = Some("more-special".into());
    let changes = index.apply_bundle(&bundle("app", spec(vec![eu]))).unwrap();
    assert_eq!(pairs(&changes), [p("app", "a", Customized)]);

    // A relabel that changes which customization applies.
    index
        .apply_bundle(&bundle(
            "app",
            spec(vec![
                crit()
                    .selector(match_labels(&[("zone", "1")]))
                    .customize("zone1"),
            ]),
        ))
        .unwrap();
    let changes = index.apply_cluster(&cluster("b", &[("env", "prod"), ("zone", "1")]));
    assert_eq!(pairs(&changes), [p("app", "b", Customized)]);
}

#[test]
fn invalid_bundle_update_keeps_previous_targets() {
    let mut index = setup();
    let before = index.all_placements();
    let err = index
        .apply_bundle(&bundle(
            "app",
            targets(vec![crit().selector(expr("env", "Bogus", &["x"])).target()]),
        ))
        .unwrap_err();
    assert_eq!(err.field, "targets[0].clusterSelector");
    assert!(err.message.contains("unknown operator"), "{err}");
    assert_eq!(index.all_placements(), before, "nothing deployed is lost");
}

#[test]
fn invalid_group_update_keeps_previous_members() {
    let mut index = setup();
    let before = index.all_placements();
    let err = index
        .apply_group(&group(
            "prod",
            &[],
            Some(match_labels(&[("not a key", "x")])),
        ))
        .unwrap_err();
    assert_eq!(err.field, "spec.selector");
    assert_eq!(index.all_placements(), before);
}

#[test]
fn namespaces_are_isolated() {
    let mut index = setup();
    let changes = index.apply_cluster(&cluster_in("elsewhere", "a", &[("env", "prod")]));
    assert!(
        changes.is_empty(),
        "a cluster of another namespace gets nothing: {changes:?}"
    );
    assert_eq!(index.bundles_of(&key("a")), [key("app"), key("mon")]);
}

#[test]
fn group_membership_queries_follow_relabels() {
    let mut index = setup();
    let names = |keys: Vec<ObjectKey>| -> Vec<String> {
        keys.into_iter().map(|k| k.name.to_string()).collect()
    };
    assert_eq!(names(index.group_members(&key("prod"))), ["a", "b"]);
    assert_eq!(names(index.groups_of(&key("a"))), ["prod"]);
    index.apply_cluster(&cluster("a", &[("env", "dev")]));
    assert_eq!(names(index.group_members(&key("prod"))), ["b"]);
    assert!(index.groups_of(&key("a")).is_empty());
    assert!(index.group_members(&key("nope")).is_empty());

    let in_prod_group = crate::CompiledCriteria::compile(&crit().group("prod").0, "p").unwrap();
    let by_name = crate::CompiledCriteria::compile(&crit().name("c").0, "p").unwrap();
    assert!(index.cluster_matches(&key("b"), &in_prod_group));
    assert!(!index.cluster_matches(&key("a"), &in_prod_group));
    assert!(index.cluster_matches(&key("c"), &by_name));
    assert!(!index.cluster_matches(&key("missing"), &by_name));
}
