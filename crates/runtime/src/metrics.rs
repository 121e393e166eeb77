//! Prometheus metrics (prometheus-client), served on `/metrics`.
//!
//! - `flotilla_reconciles_total{controller,trigger,result}`
//! - `flotilla_reconcile_duration_seconds{controller}`
//! - `flotilla_queue_depth{controller}` and `flotilla_workers{controller}`
//! - `flotilla_api_writes_total{kind,verb}`: every write the controllers
//!   make (leader-election Lease renewals are not counted)
//! - `flotilla_gc_deleted_total`, `flotilla_gc_sweep_stale_found_total`,
//!   `flotilla_gc_sweeps_total`
//! - `flotilla_events_suppressed_total`: Kubernetes Events not published
//!   because the same object and reason had one within the minute
//! - `flotilla_git_operations_total{op}`: `ls-remote`, `fetch`, and the
//!   bundle directories `compiled` or `reused` from the tree-id cache
//! - `flotilla_leader` (1 on the replica that leads) and `flotilla_caches_synced`
//! - `flotilla_agent_writes_total{cluster,kind,verb}`: every write an agent
//!   makes, downstream (applies, prunes, its inventory) and on the
//!   management cluster (BundleDeployment status and finalizers)
//! - `flotilla_agent_contact_writes_total{cluster}`: the agent's periodic
//!   contact writes, counted apart because they are the only periodic ones

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: &'static str,
    trigger: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GitLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: &'static str,
    verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentWriteLabels {
    cluster: String,
    kind: String,
    verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    cluster: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    durations: Family<ControllerLabel, Histogram, fn() -> Histogram>,
    queue_depth: Family<ControllerLabel, Gauge>,
    workers: Family<ControllerLabel, Gauge>,
    writes: Family<WriteLabels, Counter>,
    git: Family<GitLabels, Counter>,
    gc_deleted: Counter,
    events_suppressed: Counter,
    gc_sweep_stale: Counter,
    gc_sweeps: Counter,
    leader: Gauge,
    synced: Gauge,
    agent_writes: Family<AgentWriteLabels, Counter>,
    agent_contact: Family<ClusterLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flotilla");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller, what triggered them and their result",
            reconciles.clone(),
        );
        let durations =
            Family::<ControllerLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            durations.clone(),
        );
        let queue_depth = Family::<ControllerLabel, Gauge>::default();
        registry.register(
            "queue_depth",
            "Keys waiting in a controller's work queue",
            queue_depth.clone(),
        );
        let workers = Family::<ControllerLabel, Gauge>::default();
        registry.register(
            "workers",
            "Size of a controller's worker pool",
            workers.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "Writes to the API server by kind and verb",
            writes.clone(),
        );
        let git = Family::<GitLabels, Counter>::default();
        registry.register(
            "git_operations",
            "Git operations: ls-remote, fetch, and bundle directories compiled or reused",
            git.clone(),
        );
        let gc_deleted = Counter::default();
        registry.register(
            "gc_deleted",
            "Stale BundleDeployments deleted by the GC controller",
            gc_deleted.clone(),
        );
        let events_suppressed = Counter::default();
        registry.register(
            "events_suppressed",
            "Kubernetes Events not published: the same object and reason had one within the minute",
            events_suppressed.clone(),
        );
        let gc_sweep_stale = Counter::default();
        registry.register(
            "gc_sweep_stale_found",
            "Stale BundleDeployments found by the safety sweep; each one is a bug",
            gc_sweep_stale.clone(),
        );
        let gc_sweeps = Counter::default();
        registry.register("gc_sweeps", "Safety sweeps run", gc_sweeps.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica leads", leader.clone());
        let synced = Gauge::default();
        registry.register(
            "caches_synced",
            "1 once every watch has listed",
            synced.clone(),
        );
        let agent_writes = Family::<AgentWriteLabels, Counter>::default();
        registry.register(
            "agent_writes",
            "Writes an agent makes, downstream and on the management cluster, contact writes apart",
            agent_writes.clone(),
        );
        let agent_contact = Family::<ClusterLabel, Counter>::default();
        registry.register(
            "agent_contact_writes",
            "An agent's periodic contact writes to its Cluster's status",
            agent_contact.clone(),
        );
        Metrics {
            registry,
            agent_writes,
            agent_contact,
            reconciles,
            durations,
            queue_depth,
            workers,
            writes,
            git,
            gc_deleted,
            events_suppressed,
            gc_sweep_stale,
            gc_sweeps,
            leader,
            synced,
        }
    }

    pub fn observe_reconcile(
        &self,
        controller: &'static str,
        trigger: &'static str,
        result: &'static str,
        took: Duration,
    ) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller,
                trigger,
                result,
            })
            .inc();
        self.durations
            .get_or_create(&ControllerLabel { controller })
            .observe(took.as_secs_f64());
    }

    pub fn set_queue_depth(&self, controller: &'static str, depth: usize) {
        self.queue_depth
            .get_or_create(&ControllerLabel { controller })
            .set(depth as i64);
    }

    pub fn set_workers(&self, controller: &'static str, workers: usize) {
        self.workers
            .get_or_create(&ControllerLabel { controller })
            .set(workers as i64);
    }

    pub fn write(&self, kind: &'static str, verb: &'static str) {
        self.writes.get_or_create(&WriteLabels { kind, verb }).inc();
    }

    pub fn git(&self, op: &'static str, n: u64) {
        self.git.get_or_create(&GitLabels { op }).inc_by(n);
    }

    pub fn gc_deleted(&self) {
        self.gc_deleted.inc();
    }

    pub fn event_suppressed(&self) {
        self.events_suppressed.inc();
    }

    pub fn gc_sweep(&self, stale_found: u64) {
        self.gc_sweeps.inc();
        self.gc_sweep_stale.inc_by(stale_found);
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(leading as i64);
    }

    pub fn agent_write(&self, cluster: &str, kind: &str, verb: &'static str) {
        self.agent_writes
            .get_or_create(&AgentWriteLabels {
                cluster: cluster.to_owned(),
                kind: kind.to_owned(),
                verb,
            })
            .inc();
    }

    pub fn agent_contact(&self, cluster: &str) {
        self.agent_contact
            .get_or_create(&ClusterLabel {
                cluster: cluster.to_owned(),
            })
            .inc();
    }

    pub fn set_synced(&self, synced: bool) {
        self.synced.set(synced as i64);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Sums every sample of a metric in a text exposition, optionally only
/// those whose labels contain `label` (e.g. `controller="gc"`). For tests
/// and benchmarks, which read the real `/metrics` output.
pub fn sum_samples(exposition: &str, metric: &str, label: Option<&str>) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            if name != metric {
                return None;
            }
            if let Some(label) = label
                && !series.contains(label)
            {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_carries_labels_and_sums() {
        let m = Metrics::new();
        m.observe_reconcile("gc", "cluster", "success", Duration::from_millis(3));
        m.observe_reconcile("gc", "bundle", "success", Duration::from_millis(3));
        m.observe_reconcile("fanout", "bundle", "error", Duration::from_millis(3));
        m.write("BundleDeployment", "delete");
        m.gc_sweep(2);
        let text = m.encode();
        assert!(
            text.contains(
                r#"flotilla_reconciles_total{controller="gc",trigger="cluster",result="success"} 1"#
            ),
            "{text}"
        );
        assert_eq!(sum_samples(&text, "flotilla_reconciles_total", None), 3.0);
        assert_eq!(
            sum_samples(
                &text,
                "flotilla_reconciles_total",
                Some(r#"controller="gc""#)
            ),
            2.0
        );
        assert_eq!(sum_samples(&text, "flotilla_api_writes_total", None), 1.0);
        assert_eq!(
            sum_samples(&text, "flotilla_gc_sweep_stale_found_total", None),
            2.0
        );
    }
}
