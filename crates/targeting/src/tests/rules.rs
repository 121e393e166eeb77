//! Every matching rule as a table row, checked through both the
//! from-scratch computation and the incremental index.

use super::fixtures::*;
use crate::{ObjectKey, TargetIndex, effective_targets, placements_from_scratch};
use flotilla_api::{Bundle, BundleSpec, Cluster, ClusterGroup, TargetCustomizationMode};

fn fleet() -> (Vec<Cluster>, Vec<ClusterGroup>) {
    let clusters = vec![
        cluster("dev-eu", &[("env", "dev"), ("region", "eu")]),
        cluster("prod-eu", &[("env", "prod"), ("region", "eu")]),
        cluster("prod-us", &[("env", "prod"), ("region", "us")]),
        cluster("bare", &[]),
        cluster_in("other", "prod-other", &[("env", "prod")]),
    ];
    let groups = vec![
        group("default", &[], Some(everything())),
        group(
            "europe",
            &[("geo", "emea")],
            Some(match_labels(&[("region", "eu")])),
        ),
        group(
            "production",
            &[("tier", "critical")],
            Some(match_labels(&[("env", "prod")])),
        ),
        group("nobody", &[("geo", "emea")], None),
        // Same name as a group of the main namespace, other namespace.
        group_in("other", "europe", &[], Some(everything())),
    ];
    (clusters, groups)
}

/// Runs one bundle through both paths; they must agree, and the targeted
/// cluster names are returned sorted.
fn targeted(spec: BundleSpec) -> Vec<String> {
    let (clusters, groups) = fleet();
    targeted_in(&clusters, &groups, spec)
}

fn targeted_in(clusters: &[Cluster], groups: &[ClusterGroup], spec: BundleSpec) -> Vec<String> {
    let b = bundle("b", spec);
    let (scratch, errors) = placements_from_scratch(clusters, groups, std::slice::from_ref(&b));
    assert!(errors.is_empty(), "{errors:?}");

    let mut index = TargetIndex::new();
    for c in clusters {
        index.apply_cluster(c);
    }
    for g in groups {
        index.apply_group(g).unwrap();
    }
    index.apply_bundle(&b).unwrap();
    assert_eq!(
        index.all_placements(),
        scratch,
        "index and from-scratch disagree"
    );

    // Also in the other order: bundle first, then clusters and groups.
    let mut late = TargetIndex::new();
    late.apply_bundle(&b).unwrap();
    for g in groups {
        late.apply_group(g).unwrap();
    }
    for c in clusters {
        late.apply_cluster(c);
    }
    assert_eq!(
        late.all_placements(),
        scratch,
        "event order changed the result"
    );

    scratch.keys().map(|(_, c)| c.name.to_string()).collect()
}

#[test]
fn matching_rules_table() {
    let all = ["bare", "dev-eu", "prod-eu", "prod-us"];
    let rows: Vec<(&str, BundleSpec, Vec<&str>)> = vec![
        ("no targets: nothing", targets(vec![]), vec![]),
        (
            "an entry without criteria matches nothing",
            targets(vec![crit().target()]),
            vec![],
        ),
        (
            "clusterSelector {} matches every cluster of the namespace",
            targets(vec![crit().selector(everything()).target()]),
            all.to_vec(),
        ),
        (
            "a null selector is ignored: only the name counts",
            targets(vec![crit().name("prod-us").target()]),
            vec!["prod-us"],
        ),
        (
            "clusterName",
            targets(vec![crit().name("dev-eu").target()]),
            vec!["dev-eu"],
        ),
        (
            "clusterName of another namespace's cluster matches nothing",
            targets(vec![crit().name("prod-other").target()]),
            vec![],
        ),
        (
            "every set criterion must match: name and selector disagree",
            targets(vec![
                crit()
                    .name("dev-eu")
                    .selector(match_labels(&[("env", "prod")]))
                    .target(),
            ]),
            vec![],
        ),
        (
            "every set criterion must match: selector and group agree",
            targets(vec![
                crit()
                    .selector(match_labels(&[("env", "prod")]))
                    .group("europe")
                    .target(),
            ]),
            vec!["prod-eu"],
        ),
        (
            "matchLabels",
            targets(vec![
                crit().selector(match_labels(&[("env", "prod")])).target(),
            ]),
            vec!["prod-eu", "prod-us"],
        ),
        (
            "matchExpressions NotIn matches clusters without the key",
            targets(vec![
                crit().selector(expr("env", "NotIn", &["prod"])).target(),
            ]),
            vec!["bare", "dev-eu"],
        ),
        (
            "matchExpressions DoesNotExist",
            targets(vec![
                crit()
                    .selector(expr("region", "DoesNotExist", &[]))
                    .target(),
            ]),
            vec!["bare"],
        ),
        (
            "matchExpressions Exists",
            targets(vec![
                crit().selector(expr("region", "Exists", &[])).target(),
            ]),
            vec!["dev-eu", "prod-eu", "prod-us"],
        ),
        (
            "clusterGroup by name, same namespace only",
            targets(vec![crit().group("europe").target()]),
            vec!["dev-eu", "prod-eu"],
        ),
        (
            "a group with a null selector has no members",
            targets(vec![crit().group("nobody").target()]),
            vec![],
        ),
        (
            "an unknown group matches nothing",
            targets(vec![crit().group("missing").target()]),
            vec![],
        ),
        (
            "clusterGroupSelector matches groups by their labels",
            targets(vec![
                crit()
                    .group_selector(match_labels(&[("tier", "critical")]))
                    .target(),
            ]),
            vec!["prod-eu", "prod-us"],
        ),
        (
            "a cluster in several groups: every group is tried",
            targets(vec![
                crit()
                    .group_selector(match_labels(&[("geo", "emea")]))
                    .target(),
            ]),
            vec!["dev-eu", "prod-eu"],
        ),
        (
            "group name and group selector must hold for the same group",
            targets(vec![
                crit()
                    .group("production")
                    .group_selector(match_labels(&[("geo", "emea")]))
                    .target(),
            ]),
            vec![],
        ),
        (
            "first match wins: a doNotDeploy entry first excludes its clusters",
            targets(vec![
                crit()
                    .selector(match_labels(&[("env", "prod")]))
                    .do_not_deploy(),
                crit().selector(everything()).target(),
            ]),
            vec!["bare", "dev-eu"],
        ),
        (
            "first match wins: a doNotDeploy entry after a match does nothing",
            targets(vec![
                crit().selector(everything()).target(),
                crit()
                    .selector(match_labels(&[("env", "prod")]))
                    .do_not_deploy(),
            ]),
            all.to_vec(),
        ),
        (
            "targetRestrictions are an allow-list",
            BundleSpec {
                target_restrictions: vec![crit().group("europe").restriction()],
                ..targets(vec![crit().selector(everything()).target()])
            },
            vec!["dev-eu", "prod-eu"],
        ),
        (
            "targetRestrictions never add clusters",
            BundleSpec {
                target_restrictions: vec![crit().selector(everything()).restriction()],
                ..targets(vec![crit().name("prod-us").target()])
            },
            vec!["prod-us"],
        ),
        (
            "a doNotDeploy customization removes its clusters",
            BundleSpec {
                target_customizations: vec![{
                    let mut c = crit().name("prod-us").customize("skip");
                    c.do_not_deploy = true;
                    c
                }],
                ..targets(vec![crit().selector(everything()).target()])
            },
            vec!["bare", "dev-eu", "prod-eu"],
        ),
        (
            "customizations alone target nothing",
            BundleSpec {
                target_customizations: vec![crit().selector(everything()).customize("all")],
                ..targets(vec![])
            },
            vec![],
        ),
    ];
    for (what, spec, want) in rows {
        assert_eq!(targeted(spec), want, "{what}");
    }
}

#[test]
fn default_group_when_the_gitrepo_names_no_targets() {
    let spec = targets(effective_targets(&[]).iter().map(Into::into).collect());
    assert_eq!(targeted(spec), ["bare", "dev-eu", "prod-eu", "prod-us"]);
    let explicit = vec![crit().name("bare").restriction()];
    assert_eq!(
        effective_targets(&explicit),
        explicit,
        "given targets are kept"
    );
}

fn customizations_for(spec: BundleSpec, cluster_name: &str) -> Vec<usize> {
    let (clusters, groups) = fleet();
    let mut index = TargetIndex::new();
    clusters.iter().for_each(|c| {
        index.apply_cluster(c);
    });
    groups.iter().for_each(|g| {
        index.apply_group(g).unwrap();
    });
    let b: Bundle = bundle("b", spec);
    index.apply_bundle(&b).unwrap();
    index
        .placement(&ObjectKey::new(NS, "b"), &ObjectKey::new(NS, cluster_name))
        .expect("targeted")
        .customizations
}

#[test]
fn customization_choice_table() {
    let custs = vec![
        crit()
            .selector(match_labels(&[("env", "prod")]))
            .customize("prod"),
        crit().group("europe").customize("europe"),
        crit().selector(everything()).customize("everyone"),
    ];
    let spec = |mode| BundleSpec {
        target_customizations: custs.clone(),
        target_customization_mode: mode,
        ..targets(vec![crit().selector(everything()).target()])
    };
    use TargetCustomizationMode::*;
    let rows = [
        (FirstMatch, "prod-eu", vec![0]),
        (FirstMatch, "dev-eu", vec![1]),
        (FirstMatch, "bare", vec![2]),
        (AllMatches, "prod-eu", vec![0, 1, 2]),
        (AllMatches, "prod-us", vec![0, 2]),
        (AllMatches, "bare", vec![2]),
    ];
    for (mode, cluster, want) in rows {
        assert_eq!(
            customizations_for(spec(mode), cluster),
            want,
            "{mode:?} {cluster}"
        );
    }
}

#[test]
fn invalid_selectors_are_errors_never_match_all() {
    let (clusters, groups) = fleet();
    let bad = bundle(
        "bad",
        targets(vec![
            crit().selector(everything()).target(),
            crit().selector(expr("env", "In", &[])).target(),
        ]),
    );
    let (placements, errors) =
        placements_from_scratch(&clusters, &groups, std::slice::from_ref(&bad));
    assert!(placements.is_empty());
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].1.field, "targets[1].clusterSelector");
    assert!(
        errors[0].1.message.contains("needs at least one value"),
        "{}",
        errors[0].1
    );

    let mut index = TargetIndex::new();
    clusters.iter().for_each(|c| {
        index.apply_cluster(c);
    });
    let err = index.apply_bundle(&bad).unwrap_err();
    assert_eq!(err.field, "targets[1].clusterSelector");
    assert_eq!(index.bundle_count(), 0);
}

#[test]
fn explain_names_the_failing_criterion() {
    use crate::{Criterion, Decision, resolve_clusters};
    let (clusters, groups) = fleet();
    let (resolved, _) = resolve_clusters(&clusters, &groups);
    let dev = resolved.iter().find(|c| &*c.key.name == "dev-eu").unwrap();
    let spec = BundleSpec {
        target_customizations: vec![crit().group("europe").customize("eu")],
        ..targets(vec![
            crit().selector(match_labels(&[("env", "prod")])).target(),
            crit().group("production").target(),
            crit().group("europe").target(),
        ])
    };
    let compiled = crate::CompiledBundle::compile(&spec).unwrap();
    let why = compiled.explain(dev);
    let mismatches: Vec<_> = why.targets.iter().map(|t| t.mismatch).collect();
    assert_eq!(
        mismatches,
        [
            Some(Criterion::ClusterSelector),
            Some(Criterion::ClusterGroup),
            None
        ]
    );
    assert_eq!(
        why.decision,
        Decision::Deploy {
            target: 2,
            customizations: vec![0]
        }
    );
    let bare = resolved.iter().find(|c| &*c.key.name == "bare").unwrap();
    assert_eq!(compiled.explain(bare).decision, Decision::NoTargetMatched);
}

/// Fleet's rules that differ from a plain reading: `clusterName` matches
/// Rancher's display name too; a cluster in no group is judged against an
/// empty group.
#[test]
fn display_names_and_clusters_in_no_group() {
    let clusters = vec![
        cluster(
            "c-m-abc123",
            &[
                ("env", "prod"),
                (crate::criteria::DISPLAY_NAME_LABEL, "prod-eu"),
            ],
        ),
        cluster("loner", &[("env", "dev")]),
        cluster("member", &[("env", "dev"), ("team", "a")]),
    ];
    let groups = vec![group(
        "team-a",
        &[("owner", "a")],
        Some(match_labels(&[("team", "a")])),
    )];
    let rows: Vec<(&str, BundleSpec, Vec<&str>)> = vec![
        (
            "clusterName matches the display-name label",
            targets(vec![crit().name("prod-eu").target()]),
            vec!["c-m-abc123"],
        ),
        (
            "and still the name",
            targets(vec![crit().name("c-m-abc123").target()]),
            vec!["c-m-abc123"],
        ),
        (
            "clusterGroupSelector {} matches clusters in no group",
            targets(vec![crit().group_selector(everything()).target()]),
            vec!["c-m-abc123", "loner", "member"],
        ),
        (
            "a NotIn group selector matches clusters in no group",
            targets(vec![
                crit()
                    .group_selector(expr("owner", "NotIn", &["a"]))
                    .target(),
            ]),
            vec!["c-m-abc123", "loner"],
        ),
        (
            "matchLabels on groups never matches a cluster in no group",
            targets(vec![
                crit()
                    .group_selector(match_labels(&[("owner", "a")]))
                    .target(),
            ]),
            vec!["member"],
        ),
        (
            "a named group never matches a cluster in no group",
            targets(vec![crit().group("team-a").target()]),
            vec!["member"],
        ),
    ];
    for (why, spec, want) in rows {
        assert_eq!(targeted_in(&clusters, &groups, spec), want, "{why}");
    }
}
