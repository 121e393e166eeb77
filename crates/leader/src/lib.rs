//! Lease-based leader election, as client-go does it: one
//! `coordination.k8s.io/v1` Lease names the holder; the holder renews it;
//! a candidate takes it over only when the record has not changed for a
//! whole lease duration of the candidate's own clock (so clock skew
//! between replicas does not matter); every write is guarded by the
//! Lease's resourceVersion, so two candidates never both win.

#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Timing and identity of a candidate.
#[derive(Clone, Debug)]
pub struct Config {
    pub namespace: String,
    /// The Lease's name: one per elected component.
    pub name: String,
    /// This replica's identity (pod name, or host and pid).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub lease_duration: Duration,
    /// The holder gives up leadership when it could not renew for this
    /// long (shorter than `lease_duration`).
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

impl Config {
    /// Checks that the timings make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.identity.is_empty() || self.namespace.is_empty() {
            return Err("leader election needs a namespace, a lease name and an identity".into());
        }
        if self.retry_period.is_zero() {
            return Err("the retry period must be positive".into());
        }
        if self.renew_deadline <= self.retry_period {
            return Err(format!(
                "the renew deadline ({:?}) must exceed the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "the lease duration ({:?}) must exceed the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// What a candidate last saw of the Lease, and when (by its own clock).
struct Observed {
    holder: Option<String>,
    renew: Option<Timestamp>,
    at: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    config: Config,
    observed: Mutex<Option<Observed>>,
}

/// Whole seconds, rounded up: a lease never lasts shorter than asked.
fn lease_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs_f64().ceil().max(1.0) as u64).unwrap_or(i32::MAX)
}

impl Elector {
    pub fn new(client: kube::Client, config: Config) -> Result<Self, String> {
        config.validate()?;
        Ok(Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Mutex::new(None),
        })
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    fn spec(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let me = &self.config.identity;
        let held = previous.and_then(|p| p.holder_identity.as_ref()) == Some(me);
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(me.clone()),
            lease_duration_seconds: Some(lease_seconds(self.config.lease_duration)),
            acquire_time: if held {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if held || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to acquire or renew. `Ok(true)`: this candidate leads.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let renew = spec.renew_time.as_ref().map(|t| t.0);
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        if !mine && holder.is_some() {
            let now = Instant::now();
            let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
            let changed = observed
                .as_ref()
                .is_none_or(|o| o.holder != holder || o.renew != renew);
            if changed {
                *observed = Some(Observed {
                    holder,
                    renew,
                    at: now,
                });
                return Ok(false);
            }
            let duration = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(1) as u64))
                .unwrap_or(self.config.lease_duration);
            let since = observed.as_ref().map(|o| now - o.at).unwrap_or_default();
            if since < duration {
                return Ok(false);
            }
            tracing::info!(lease = %self.config.name, previous = ?spec.holder_identity, "lease expired; taking over");
        }
        lease.spec = Some(self.spec(Some(&spec)));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Somebody else wrote first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (on shutdown), so a successor need not wait.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs the election until `stop` flips to true, publishing whether
    /// this candidate leads. Leadership is dropped when renewal has failed
    /// for the renew deadline. The lease is released on stop.
    pub async fn run(self, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let mut last_renewed: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let ok = match self.try_acquire_or_renew().await {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "leader election attempt failed");
                    false
                }
            };
            if ok {
                last_renewed = Some(now);
            }
            let lead = last_renewed.is_some_and(|t| now - t < self.config.renew_deadline)
                && (ok || *leading.borrow());
            if lead != *leading.borrow() {
                tracing::info!(lease = %self.config.name, identity = %self.config.identity, leading = lead, "leadership changed");
                let _ = leading.send(lead);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                let _ = leading.send(false);
                if let Err(e) = self.release().await {
                    tracing::warn!(lease = %self.config.name, error = %e, "releasing the lease failed");
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            namespace: "flotilla-system".into(),
            name: "flotilla-controller".into(),
            identity: "pod-a".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    #[test]
    fn timings_are_validated() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.renew_deadline = Duration::from_secs(20);
        assert!(c.validate().unwrap_err().contains("lease duration"));
        let mut c = config();
        c.retry_period = Duration::from_secs(10);
        assert!(c.validate().unwrap_err().contains("renew deadline"));
        let mut c = config();
        c.identity.clear();
        assert!(c.validate().is_err());
    }
}
