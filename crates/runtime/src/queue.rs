//! A deduplicating work queue and the worker pool that drains it.
//!
//! The semantics are client-go's workqueue, which every Kubernetes
//! controller relies on:
//! - a key waiting in the queue is there once, however often it is added;
//! - a key is never processed by two workers at once: added while being
//!   processed, it is queued again when the worker is done;
//! - a failed key comes back after an exponential backoff, a successful one
//!   resets it.
//!
//! Each key remembers the first trigger that queued it, for the
//! `reconciles_total{trigger}` metric.

use crate::metrics::Metrics;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// What a reconcile asks of the queue once it returns successfully.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Done,
    /// More work remains for this key (e.g. a rollout's `maxNew` batch):
    /// process it again at once.
    Requeue,
}

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub struct Queue<K> {
    name: &'static str,
    state: Mutex<State<K>>,
    notify: Notify,
    metrics: Arc<Metrics>,
    busy: AtomicUsize,
    max_busy: AtomicUsize,
}

struct State<K> {
    order: VecDeque<K>,
    /// Keys waiting, with the trigger that first queued them.
    waiting: HashMap<K, &'static str>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
}

impl<K> Queue<K>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
{
    pub fn new(name: &'static str, metrics: Arc<Metrics>) -> Self {
        Queue {
            name,
            state: Mutex::new(State {
                order: VecDeque::new(),
                waiting: HashMap::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
            }),
            notify: Notify::new(),
            metrics,
            busy: AtomicUsize::new(0),
            max_busy: AtomicUsize::new(0),
        }
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: K, trigger: &'static str) {
        let mut s = self.state.lock().expect("queue lock");
        if s.waiting.contains_key(&key) {
            return;
        }
        s.waiting.insert(key.clone(), trigger);
        if !s.processing.contains(&key) {
            s.order.push_back(key);
            self.notify.notify_one();
        }
        self.metrics.set_queue_depth(self.name, s.waiting.len());
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration, trigger: &'static str) {
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key, trigger);
        });
    }

    /// Keys waiting to be processed.
    pub fn len(&self) -> usize {
        self.state.lock().expect("queue lock").waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most workers ever busy at once on this queue.
    pub fn max_busy(&self) -> usize {
        self.max_busy.load(Ordering::Relaxed)
    }

    fn try_pop(&self) -> Option<(K, &'static str)> {
        let mut s = self.state.lock().expect("queue lock");
        let key = s.order.pop_front()?;
        let trigger = s.waiting.remove(&key).unwrap_or("unknown");
        s.processing.insert(key.clone());
        self.metrics.set_queue_depth(self.name, s.waiting.len());
        if !s.order.is_empty() {
            // Wake another worker for the rest.
            self.notify.notify_one();
        }
        Some((key, trigger))
    }

    async fn next(&self) -> (K, &'static str) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(item) = self.try_pop() {
                return item;
            }
            notified.await;
        }
    }

    /// Marks `key` processed; a key added meanwhile is queued again. Returns
    /// the backoff before retrying when the reconcile failed.
    fn done(&self, key: &K, failed: bool) -> Option<Duration> {
        let mut s = self.state.lock().expect("queue lock");
        s.processing.remove(key);
        if s.waiting.contains_key(key) {
            s.order.push_back(key.clone());
            self.notify.notify_one();
        }
        if failed {
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            let factor = 1u32 << (*n - 1).min(16);
            Some((BACKOFF_BASE * factor).min(BACKOFF_MAX))
        } else {
            s.failures.remove(key);
            None
        }
    }
}

/// Runs `workers` tasks draining `queue` while `leading` is true. A key
/// taken just as leadership is lost goes back to the queue unprocessed.
pub async fn run_workers<K, F, Fut, E>(
    queue: Arc<Queue<K>>,
    workers: usize,
    leading: watch::Receiver<bool>,
    reconcile: F,
) where
    K: Clone + Eq + Hash + Send + Sync + std::fmt::Debug + 'static,
    F: Fn(K, &'static str) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send,
    E: std::fmt::Display + Send,
{
    queue.metrics.set_workers(queue.name, workers);
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let queue = Arc::clone(&queue);
        let mut leading = leading.clone();
        let reconcile = reconcile.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if leading.wait_for(|l| *l).await.is_err() {
                    return;
                }
                let (key, trigger) = tokio::select! {
                    item = queue.next() => item,
                    lost = leading.wait_for(|l| !*l) => match lost {
                        Ok(_) => continue,
                        // The sender is gone: the controller is stopping.
                        Err(_) => return,
                    },
                };
                if !*leading.borrow() {
                    queue.done(&key, false);
                    queue.add(key, trigger);
                    continue;
                }
                let busy = queue.busy.fetch_add(1, Ordering::Relaxed) + 1;
                queue.max_busy.fetch_max(busy, Ordering::Relaxed);
                let started = Instant::now();
                let result = reconcile(key.clone(), trigger).await;
                queue.busy.fetch_sub(1, Ordering::Relaxed);
                let elapsed = started.elapsed();
                let outcome = match &result {
                    Ok(_) => "success",
                    Err(_) => "error",
                };
                queue
                    .metrics
                    .observe_reconcile(queue.name, trigger, outcome, elapsed);
                match result {
                    Ok(Action::Done) => {
                        queue.done(&key, false);
                    }
                    Ok(Action::Requeue) => {
                        queue.done(&key, false);
                        queue.add(key, "requeue");
                    }
                    Err(e) => {
                        let delay = queue.done(&key, true).expect("failed keys back off");
                        tracing::warn!(
                            controller = queue.name,
                            ?key,
                            error = %e,
                            retry_in_ms = delay.as_millis() as u64,
                            "reconcile failed"
                        );
                        queue.add_after(key, delay, "retry");
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn queue() -> Arc<Queue<u32>> {
        Arc::new(Queue::new("test", Arc::new(Metrics::new())))
    }

    #[test]
    fn a_waiting_key_is_queued_once_with_its_first_trigger() {
        let q = queue();
        q.add(1, "first");
        q.add(1, "second");
        q.add(2, "other");
        assert_eq!(q.len(), 2);
        assert_eq!(q.try_pop(), Some((1, "first")));
        assert_eq!(q.try_pop(), Some((2, "other")));
        assert_eq!(q.try_pop(), None);
    }

    #[test]
    fn a_key_added_while_processing_waits_for_done() {
        let q = queue();
        q.add(1, "a");
        let (k, _) = q.try_pop().unwrap();
        q.add(1, "b");
        assert_eq!(q.try_pop(), None, "never two workers on one key");
        assert_eq!(q.done(&k, false), None);
        assert_eq!(q.try_pop(), Some((1, "b")));
    }

    #[test]
    fn failures_back_off_exponentially_and_reset_on_success() {
        let q = queue();
        let delays: Vec<Duration> = (0..3)
            .map(|_| {
                q.add(7, "t");
                let (k, _) = q.try_pop().unwrap();
                q.done(&k, true).unwrap()
            })
            .collect();
        assert_eq!(
            delays,
            [
                Duration::from_millis(100),
                Duration::from_millis(200),
                Duration::from_millis(400)
            ]
        );
        q.add(7, "t");
        let (k, _) = q.try_pop().unwrap();
        assert_eq!(q.done(&k, false), None);
        q.add(7, "t");
        let (k, _) = q.try_pop().unwrap();
        assert_eq!(q.done(&k, true), Some(Duration::from_millis(100)));
    }

    /// The pool runs exactly `workers` reconciles at once: it reaches the
    /// setting and never exceeds it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrency_follows_the_worker_count() {
        for workers in [1usize, 3, 8] {
            let q = queue();
            let (tx, rx) = watch::channel(true);
            let done = Arc::new(AtomicU32::new(0));
            let d = Arc::clone(&done);
            let pool = tokio::spawn(run_workers(Arc::clone(&q), workers, rx, move |_k, _t| {
                let d = Arc::clone(&d);
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    d.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(Action::Done)
                }
            }));
            for k in 0..40 {
                q.add(k, "test");
            }
            while done.load(Ordering::SeqCst) < 40 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(q.max_busy(), workers, "pool of {workers}");
            drop(tx);
            pool.await.unwrap();
        }
    }

    /// Followers take nothing from the queue; the leader drains it.
    #[tokio::test]
    async fn workers_wait_for_leadership() {
        let q = queue();
        let (tx, rx) = watch::channel(false);
        let done = Arc::new(AtomicU32::new(0));
        let d = Arc::clone(&done);
        let pool = tokio::spawn(run_workers(Arc::clone(&q), 2, rx, move |_k, _t| {
            let d = Arc::clone(&d);
            async move {
                d.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(Action::Done)
            }
        }));
        q.add(1, "test");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(done.load(Ordering::SeqCst), 0);
        assert_eq!(q.len(), 1);
        tx.send(true).unwrap();
        while done.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(q.is_empty());
        drop(tx);
        pool.await.unwrap();
    }
}
