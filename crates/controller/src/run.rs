//! Wiring: the watches and the hub, leader election, the worker pools, the
//! safety sweep and the HTTP endpoints, started together and stopped
//! together.

use crate::hub::{Hub, watches};
use crate::queue::run_workers;
use crate::{
    Context, ControllerArgs, FanoutKey, GcKey, Metrics, ObjectKey, StatusKey, fanout, gc, gitpoll,
    gitrepo, helmop, status,
};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use flotilla_api::keys;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct Controller {
    ctx: Arc<Context>,
}

impl Controller {
    /// Checks the settings; nothing runs until [`Controller::run`].
    pub fn new(client: kube::Client, args: ControllerArgs) -> Result<Self, String> {
        args.validate()?;
        Ok(Controller {
            ctx: Arc::new(Context::new(client, args)),
        })
    }

    pub fn context(&self) -> Arc<Context> {
        Arc::clone(&self.ctx)
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.ctx.metrics)
    }

    /// True while this replica leads (always, without leader election).
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.ctx.leading.subscribe()
    }

    /// True once every watch has listed.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.ctx.synced.subscribe()
    }

    /// `/metrics`, `/healthz` and `/readyz` (ready once the caches synced).
    pub fn router(&self) -> axum::Router {
        let metrics = Arc::clone(&self.ctx.metrics);
        let synced = self.ctx.synced.subscribe();
        axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let metrics = Arc::clone(&metrics);
                    async move {
                        (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            metrics.encode(),
                        )
                    }
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let ready = *synced.borrow();
                    async move {
                        if ready {
                            (StatusCode::OK, "ok").into_response()
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
                        }
                    }
                }),
            )
    }

    /// Runs until `shutdown` turns true. On shutdown the lease is released,
    /// so another replica takes over at once rather than after it expires.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let args = ctx.args.clone();
        let listener = tokio::net::TcpListener::bind(args.http_addr)
            .await
            .map_err(|e| anyhow::anyhow!("--http-addr {}: {e}", args.http_addr))?;
        let addr = listener.local_addr()?;
        let _ = ctx.http_addr.set(addr);
        let router = Controller {
            ctx: Arc::clone(&ctx),
        }
        .router();

        let mut tasks = JoinSet::new();
        let mut elector_task = JoinSet::new();
        tasks.spawn(flotilla_runtime::serve::serve(
            listener,
            router,
            flotilla_runtime::serve::ServeLimits::default(),
            "metrics",
        ));
        if args.webhook_secret.is_some() {
            let listener = tokio::net::TcpListener::bind(args.webhook_addr)
                .await
                .map_err(|e| anyhow::anyhow!("--webhook-addr {}: {e}", args.webhook_addr))?;
            let _ = ctx.webhook_addr.set(listener.local_addr()?);
            let router = gitpoll::router(Arc::clone(&ctx));
            tracing::info!(addr = %listener.local_addr()?, "webhook receiver listening");
            // Webhooks come from the internet: small requests, quick
            // clients, so tight limits.
            tasks.spawn(flotilla_runtime::serve::serve(
                listener,
                router,
                flotilla_runtime::serve::ServeLimits {
                    max_connections: 128,
                    header_timeout: Duration::from_secs(5),
                    connection_timeout: Duration::from_secs(30),
                },
                "webhook",
            ));
        }
        let hub = Hub::new(Arc::clone(&ctx));
        let events = futures::stream::select_all(watches(&ctx.client));
        tasks.spawn(hub.run(events));

        // Leadership.
        let (stop_tx, stop_rx) = watch::channel(false);
        let (lead_tx, mut lead_rx) = watch::channel(!args.leader_elect);
        if args.leader_elect {
            let identity = args.identity();
            let elector =
                flotilla_leader::Elector::new(ctx.client.clone(), args.leader_config(&identity))
                    .map_err(anyhow::Error::msg)?;
            tracing::info!(%identity, lease = %args.lease_name, namespace = %args.lease_namespace, "leader election started");
            elector_task.spawn(elector.run(lead_tx, stop_rx));
        }

        // Workers run while leading with synced caches.
        let (active_tx, active_rx) = watch::channel(false);
        {
            let ctx = Arc::clone(&ctx);
            let mut synced = ctx.synced.subscribe();
            tasks.spawn(async move {
                loop {
                    let leading = *lead_rx.borrow_and_update();
                    let is_synced = *synced.borrow_and_update();
                    ctx.leading.send_replace(leading);
                    ctx.metrics.set_leader(leading);
                    let active = leading && is_synced;
                    if active && !*active_tx.borrow() {
                        resync(&ctx);
                    }
                    if active != *active_tx.borrow() {
                        tracing::info!(
                            active,
                            "controllers {}",
                            if active { "started" } else { "paused" }
                        );
                        active_tx.send_replace(active);
                    }
                    tokio::select! {
                        r = lead_rx.changed() => if r.is_err() { break },
                        r = synced.changed() => if r.is_err() { break },
                    }
                }
                // The elector stopped: this replica is shutting down.
                ctx.leading.send_replace(false);
                ctx.metrics.set_leader(false);
                active_tx.send_replace(false);
                // Keep the channel open so workers see "paused", not "closed".
                std::future::pending::<()>().await
            });
        }
        {
            let c = Arc::clone(&ctx);
            tasks.spawn(run_workers(
                Arc::clone(&ctx.gitrepo),
                args.gitrepo_workers,
                active_rx.clone(),
                move |k: ObjectKey, _t| gitrepo::reconcile(Arc::clone(&c), k),
            ));
            tasks.spawn(gitpoll::poll_loop(Arc::clone(&ctx), active_rx.clone()));
            tasks.spawn(Arc::clone(&ctx.events).run_deletions());
            let c = Arc::clone(&ctx);
            tasks.spawn(run_workers(
                Arc::clone(&ctx.helmop),
                args.helmop_workers,
                active_rx.clone(),
                move |k: ObjectKey, _t| helmop::reconcile(Arc::clone(&c), k),
            ));
            tasks.spawn(crate::agents::supervise(
                Arc::clone(&ctx),
                active_rx.clone(),
            ));
            let c = Arc::clone(&ctx);
            tasks.spawn(run_workers(
                Arc::clone(&ctx.fanout),
                args.fanout_workers,
                active_rx.clone(),
                move |k: FanoutKey, _t| fanout::reconcile(Arc::clone(&c), k),
            ));
            let c = Arc::clone(&ctx);
            tasks.spawn(run_workers(
                Arc::clone(&ctx.gc),
                args.gc_workers,
                active_rx.clone(),
                move |k: GcKey, _t| gc::reconcile(Arc::clone(&c), k),
            ));
            let c = Arc::clone(&ctx);
            tasks.spawn(run_workers(
                Arc::clone(&ctx.status),
                args.status_workers,
                active_rx.clone(),
                move |k: StatusKey, _t| status::reconcile(Arc::clone(&c), k),
            ));
        }
        {
            let ctx = Arc::clone(&ctx);
            let mut active = active_rx.clone();
            let every = args.gc_sweep_interval;
            tasks.spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if *active.borrow_and_update() {
                        let found = gc::sweep(&ctx);
                        tracing::info!(stale_found = found, "gc safety sweep done");
                    }
                }
            });
        }

        let _ = shutdown.wait_for(|s| *s).await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        // Give the elector a moment to release the lease.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while elector_task.join_next().await.is_some() {}
        })
        .await;
        tasks.shutdown().await;
        Ok(())
    }
}

/// Queues every object once, when this replica starts leading: whatever
/// happened while it was not (or while no replica was) is caught up.
fn resync(ctx: &Context) {
    tracing::info!(
        clusters = ctx.clusters.len(),
        bundles = ctx.bundles.len(),
        bundle_deployments = ctx.bds.len(),
        "leading: resyncing every object once"
    );
    for c in ctx.clusters.keys() {
        ctx.fanout.add(FanoutKey::Cluster(c.clone()), "resync");
        ctx.status.add(StatusKey::Cluster(c), "resync");
    }
    for ns in ctx.namespaces.list() {
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        if let (Some(n), Some(name)) = (
            labels.get(keys::CLUSTER_NAMESPACE),
            labels.get(keys::CLUSTER_NAME),
        ) {
            let cluster = ObjectKey::new(n, name);
            if ctx.clusters.get(&cluster).is_none() {
                ctx.fanout.add(FanoutKey::Cluster(cluster), "resync");
            }
        }
    }
    for b in ctx.bundles.list() {
        let key = ObjectKey::of(&b.metadata);
        if b.metadata.deletion_timestamp.is_some() || gc::is_orphan(ctx, &b) {
            ctx.gc.add(GcKey::Bundle(key.clone()), "resync");
        } else {
            ctx.fanout.add(FanoutKey::Bundle(key.clone()), "resync");
        }
        ctx.status.add(StatusKey::Bundle(key), "resync");
    }
    for bd in ctx.bds.keys() {
        ctx.gc.add(GcKey::Deployment(bd), "resync");
    }
    for g in ctx.groups.keys() {
        ctx.status.add(StatusKey::Group(g), "resync");
    }
    for r in ctx.gitrepos.keys() {
        ctx.gitrepo.add(r.clone(), "resync");
        ctx.status.add(StatusKey::GitRepo(r), "resync");
    }
    for h in ctx.helmops.keys() {
        ctx.helmop.add(h.clone(), "resync");
        ctx.status.add(StatusKey::HelmOp(h), "resync");
    }
}
