//! Kubernetes Events (events.k8s.io/v1, through kube-runtime's
//! [`Recorder`]) for the moments an operator looks for: a commit compiled,
//! a sync or compile that failed, targets that do not parse, stale
//! BundleDeployments deleted by GC. `kubectl describe` and `kubectl events`
//! show them.
//!
//! Events are published on transitions only (a condition that changed, a
//! deletion that happened), never at steady state, and each is rate
//! limited per object and reason: a flapping problem gets at most one
//! Event per [`MIN_INTERVAL`], and the rest are counted in
//! `flotilla_events_suppressed_total`. GC deletions are summed per Bundle
//! and published as one Event with the count once the burst is over, so a
//! targets edit that deletes 1,000 deployments writes one Event, not 1,000.
//! A refused Event is logged and never fails a reconcile.

use crate::metrics::Metrics;
use flotilla_targeting::ObjectKey;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most one Event per object and reason this often.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// How long GC deletions are summed before their Events (one per Bundle):
/// also the most often a Bundle gets one.
const DELETION_BURST: Duration = Duration::from_secs(2);

pub struct Events {
    recorder: Recorder,
    metrics: Arc<Metrics>,
    last: Mutex<HashMap<(String, &'static str), Instant>>,
    /// Bundle -> (its reference, deletions not yet published).
    deleted: Mutex<HashMap<ObjectKey, (ObjectReference, u64)>>,
    flush: tokio::sync::Notify,
}

impl Events {
    pub fn new(client: kube::Client, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: "flotilla-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Events {
            recorder: Recorder::new(client, reporter),
            metrics,
            last: Mutex::new(HashMap::new()),
            deleted: Mutex::new(HashMap::new()),
            flush: tokio::sync::Notify::new(),
        }
    }

    /// A Normal Event about `regarding`.
    pub async fn normal(&self, regarding: &ObjectReference, reason: &'static str, note: &str) {
        self.publish(regarding, EventType::Normal, reason, note, true)
            .await;
    }

    /// A Warning Event about `regarding`.
    pub async fn warning(&self, regarding: &ObjectReference, reason: &'static str, note: &str) {
        self.publish(regarding, EventType::Warning, reason, note, true)
            .await;
    }

    async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &'static str,
        note: &str,
        limited: bool,
    ) {
        let who = format!(
            "{}/{}/{}",
            regarding.kind.as_deref().unwrap_or_default(),
            regarding.namespace.as_deref().unwrap_or_default(),
            regarding.name.as_deref().unwrap_or_default()
        );
        {
            let mut last = self.last.lock().expect("events lock");
            let now = Instant::now();
            last.retain(|_, t| now.duration_since(*t) < MIN_INTERVAL);
            if limited && last.contains_key(&(who.clone(), reason)) {
                self.metrics.event_suppressed();
                return;
            }
            last.insert((who.clone(), reason), now);
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(flotilla_api::summary::truncate(note, 1024)),
            action: reason.into(),
            secondary: None,
        };
        self.metrics.write("Event", "create");
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(object = %who, reason, %error, "could not publish an event");
        }
    }

    /// Counts a stale BundleDeployment of `bundle` deleted by GC; one
    /// Event per burst says how many went.
    pub fn deleted(&self, bundle: &ObjectKey, reference: ObjectReference) {
        self.deleted
            .lock()
            .expect("events lock")
            .entry(bundle.clone())
            .or_insert((reference, 0))
            .1 += 1;
        self.flush.notify_one();
    }

    /// Publishes summed deletions once each burst is over; runs for the
    /// controller's lifetime, idle (no timer) while nothing was deleted.
    pub async fn run_deletions(self: Arc<Self>) {
        loop {
            self.flush.notified().await;
            tokio::time::sleep(DELETION_BURST).await;
            let batch: Vec<(ObjectReference, u64)> = self
                .deleted
                .lock()
                .expect("events lock")
                .drain()
                .map(|(_, v)| v)
                .collect();
            for (reference, n) in batch {
                let note = format!(
                    "deleted {n} stale BundleDeployment(s) of clusters it no longer targets"
                );
                // Already one per burst: not limited further, so no
                // deletion goes uncounted.
                self.publish(
                    &reference,
                    EventType::Normal,
                    "StaleDeploymentsDeleted",
                    &note,
                    false,
                )
                .await;
            }
        }
    }
}
