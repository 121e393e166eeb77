use super::*;
use flotilla_api::Partition;
use proptest::prelude::*;

fn cur(id: &str, applied: &str, ready: bool) -> Option<Current> {
    Some(Current {
        deployment_id: id.into(),
        applied_id: applied.into(),
        ready,
    })
}

fn target(i: usize, current: Option<Current>) -> Target {
    Target {
        name: format!("c{i:03}"),
        partition: None,
        paused: false,
        desired_id: "new".into(),
        current,
        state: BundleState::Ready,
    }
}

/// `n` clusters at `old`, applied and ready.
fn settled(n: usize) -> Vec<Target> {
    (0..n).map(|i| target(i, cur("old", "old", true))).collect()
}

fn count(plan: &Plan, step: Step) -> usize {
    plan.steps.iter().filter(|s| **s == step).count()
}

fn int(n: i32) -> Option<IntOrString> {
    Some(IntOrString::Int(n))
}

fn pct_(s: &str) -> Option<IntOrString> {
    Some(IntOrString::String(s.into()))
}

#[test]
fn limit_table() {
    let hundred = pct("100%");
    let table: [(usize, Option<IntOrString>, Result<u32, ()>); 10] = [
        (0, int(5), Ok(1)),
        (10, None, Ok(10)),
        (10, int(3), Ok(3)),
        (10, int(0), Ok(0)),
        (10, pct_("25%"), Ok(2)),
        (10, pct_("1%"), Ok(1)),
        (10, pct_("0%"), Ok(1)),
        (10, pct_("4"), Ok(4)),
        (10, pct_("lots"), Err(())),
        (10, int(-1), Err(())),
    ];
    for (count, value, want) in table {
        let got = limit(count, value.as_ref(), &hundred, "f").map_err(|_| ());
        assert_eq!(got, want, "count {count}, value {value:?}");
    }
}

#[test]
fn defaults_promote_everything_at_once() {
    let targets = settled(10);
    let p = plan(&RolloutStrategy::default(), &targets).unwrap();
    assert_eq!(count(&p, Step::Promote), 10);
    assert_eq!(p.status.partitions.len(), 1);
    assert_eq!(p.status.partitions[0].name, "All");
    assert!(!p.waiting(&targets));
}

#[test]
fn max_unavailable_holds_the_rest_as_staged() {
    let targets = settled(10);
    let rollout = RolloutStrategy {
        max_unavailable: int(3),
        ..Default::default()
    };
    let p = plan(&rollout, &targets).unwrap();
    assert_eq!(count(&p, Step::Promote), 3);
    assert_eq!(count(&p, Step::Stage), 7);
    assert_eq!(p.status.unavailable, 3);
    assert!(p.waiting(&targets));

    // Once the first three are applied and ready, three more move.
    let mut after = targets.clone();
    for t in after.iter_mut().take(3) {
        t.current = cur("new", "new", true);
    }
    let p = plan(&rollout, &after).unwrap();
    assert_eq!(count(&p, Step::Promote), 6);
}

#[test]
fn an_unavailable_cluster_may_always_move() {
    let mut targets = settled(4);
    targets[3].current = cur("old", "old", false);
    let rollout = RolloutStrategy {
        max_unavailable: int(0),
        ..Default::default()
    };
    let p = plan(&rollout, &targets).unwrap();
    assert_eq!(
        p.steps,
        [Step::Stage, Step::Stage, Step::Stage, Step::Promote]
    );
}

#[test]
fn paused_clusters_stay_staged_and_do_not_count_as_waiting() {
    let mut targets = settled(3);
    for t in &mut targets {
        t.paused = true;
    }
    let p = plan(&RolloutStrategy::default(), &targets).unwrap();
    assert_eq!(count(&p, Step::Stage), 3);
    assert!(!p.waiting(&targets), "a pause is not a rollout in progress");
}

#[test]
fn max_new_creates_a_batch_per_pass() {
    let targets: Vec<Target> = (0..120).map(|i| target(i, None)).collect();
    let p = plan(&RolloutStrategy::default(), &targets).unwrap();
    assert_eq!(count(&p, Step::Promote), 50);
    assert_eq!(count(&p, Step::Wait), 70);
    assert!(p.deferred_creations(&targets, DEFAULT_MAX_NEW));
    let rollout = RolloutStrategy {
        max_new: Some(200),
        ..Default::default()
    };
    let p = plan(&rollout, &targets).unwrap();
    assert_eq!(count(&p, Step::Promote), 120);
    assert!(!p.deferred_creations(&targets, 200));
}

#[test]
fn auto_partitions_from_200_clusters_and_stop_after_an_unavailable_one() {
    let targets = settled(400);
    let rollout = RolloutStrategy {
        max_unavailable: pct_("10%"),
        ..Default::default()
    };
    let p = plan(&rollout, &targets).unwrap();
    let names: Vec<&str> = p
        .status
        .partitions
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Partition 0 - 100",
            "Partition 100 - 200",
            "Partition 200 - 300",
            "Partition 300 - 400"
        ]
    );
    // 10% of 100 per partition, and of 400 overall: the first partition
    // moves 10, and with 10 unavailable of 10 allowed it is not counted
    // unavailable, so the next moves too... until the global budget (40).
    assert_eq!(count(&p, Step::Promote), 40);
    assert_eq!(p.status.unavailable, 40);

    // Now the first partition has more unavailable than it allows.
    let mut broken = settled(400);
    for t in broken.iter_mut().take(20) {
        t.current = cur("old", "old", false);
    }
    let p = plan(&rollout, &broken).unwrap();
    assert_eq!(p.status.unavailable_partitions, 1);
    assert!(
        p.steps[100..].iter().all(|s| *s == Step::Stage),
        "later partitions wait for the first"
    );
    let below = settled(199);
    let p = plan(&rollout, &below).unwrap();
    assert_eq!(p.status.partitions.len(), 1, "no auto partitions below 200");
}

#[test]
fn manual_partitions_go_in_order_and_collect_the_unmatched_last() {
    let mut targets = settled(6);
    targets[0].partition = Some(0);
    targets[1].partition = Some(0);
    targets[2].partition = Some(1);
    targets[3].partition = Some(1);
    // 4 and 5 match no partition.
    targets[0].current = cur("old", "old", false);
    targets[1].current = cur("old", "old", false);
    let rollout = RolloutStrategy {
        max_unavailable: int(0),
        partitions: vec![
            Partition {
                name: Some("canary".into()),
                ..Default::default()
            },
            Partition {
                name: Some("rest".into()),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let p = plan(&rollout, &targets).unwrap();
    let names: Vec<&str> = p
        .status
        .partitions
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["canary", "rest", "unpartitioned"]);
    assert_eq!(&p.steps[..2], [Step::Promote, Step::Promote]);
    assert!(
        p.steps[2..].iter().all(|s| *s == Step::Stage),
        "{:?}",
        p.steps
    );
    assert_eq!(p.status.unavailable_partitions, 1);
}

#[test]
fn bad_values_are_errors_naming_the_field() {
    let rollout = RolloutStrategy {
        auto_partition_size: pct_("a quarter"),
        ..Default::default()
    };
    let err = validate(&rollout).unwrap_err();
    assert!(err.contains("autoPartitionSize"), "{err}");
    let err = plan(&rollout, &settled(300)).unwrap_err();
    assert!(err.contains("autoPartitionSize"), "{err}");
}

proptest! {
    /// Whatever the strategy and the fleet's state, a pass never makes more
    /// clusters unavailable than `maxUnavailable` allows (clusters already
    /// unavailable aside), never creates more than `maxNew`, and with the
    /// defaults a fully ready fleet moves entirely.
    #[test]
    fn budgets_hold(
        states in proptest::collection::vec((0u8..4, any::<bool>()), 0..300),
        max_unavailable in 0i32..20,
        max_new in 0u32..80,
    ) {
        let targets: Vec<Target> = states
            .iter()
            .enumerate()
            .map(|(i, (s, paused))| {
                let current = match s {
                    0 => None,
                    1 => cur("old", "old", true),
                    2 => cur("old", "old", false),
                    _ => cur("new", "new", true),
                };
                Target { paused: *paused, ..target(i, current) }
            })
            .collect();
        let rollout = RolloutStrategy {
            max_unavailable: int(max_unavailable),
            max_new: Some(max_new),
            auto_partition_size: int(0),
            ..Default::default()
        };
        let p = plan(&rollout, &targets).unwrap();
        let newly_unavailable = p.steps.iter().zip(&targets).filter(|(s, t)| {
            **s == Step::Promote
                && t.current.as_ref().is_some_and(|c| c.deployment_id != "new" && c.applied_id == c.deployment_id && c.ready)
        }).count();
        let already = targets.iter().filter(|t| t.current.as_ref().is_some_and(|c| c.applied_id != c.deployment_id || !c.ready)).count();
        prop_assert!(newly_unavailable + already <= (max_unavailable as usize).max(already));
        let created = p.steps.iter().zip(&targets).filter(|(s, t)| t.current.is_none() && **s != Step::Wait).count();
        prop_assert!(created <= max_new as usize);
        for (s, t) in p.steps.iter().zip(&targets) {
            if t.paused && t.current.as_ref().is_none_or(|c| c.deployment_id != "new") {
                prop_assert_ne!(*s, Step::Promote);
            }
        }
        let defaults = plan(&RolloutStrategy { max_new: Some(1000), ..Default::default() }, &targets).unwrap();
        for (s, t) in defaults.steps.iter().zip(&targets) {
            prop_assert_eq!(*s == Step::Promote, !t.paused || t.current.as_ref().is_some_and(|c| c.deployment_id == "new"));
        }
    }
}
