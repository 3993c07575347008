//! The cluster worker: registers `/crawler/workers/<id>` under a lease, follows `/resources/`
//! (list, then watch from that revision), and keeps exactly the crawls of the resources
//! assigned to it running: one [`Crawl`] per resource, each with its own frontier and
//! cancellation. Items of every crawl go through one batching writer.
#![warn(missing_docs)]

mod http;
mod runner;

use std::sync::Arc;
use std::time::Duration;

use crawler_coord::{keys, Backoff, CoordError, Etcd, PrefixWatch, Session, WorkerRecord};
use crawler_engine::{CommitSender, EngineConfig, Fetcher, Sink, SinkWriter, StateStore, TaskSpec};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use runner::{Runner, TaskStatus};

/// Settings of one worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Worker id.
    pub id: String,
    /// Address stored in the registry (its HTTP address, or `--advertise`).
    pub advertise: String,
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// Lease TTL of the registration.
    pub lease_ttl: Duration,
    /// Fetch settings for every crawl of this worker.
    pub engine: EngineConfig,
    /// Tasks a resource may name without an inline spec.
    pub tasks: Vec<TaskSpec>,
    /// Rows per insert transaction.
    pub batch: usize,
    /// How long the stores may be out of reach before the worker leaves the cluster
    /// (`[storage] outage`).
    pub outage: Duration,
}

/// A worker that could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// etcd could not be used.
    #[error(transparent)]
    Coord(#[from] CoordError),
    /// The HTTP client could not be built.
    #[error("{0}")]
    Client(String),
    /// Items could not be stored.
    #[error(transparent)]
    Sink(#[from] crawler_engine::SinkError),
    /// The HTTP server failed.
    #[error("server: {0}")]
    Server(String),
}

/// Runs a worker until `shutdown` fires. Shutdown order: stop accepting, stop the crawls,
/// flush the items, revoke the lease (so the masters reassign at once).
///
/// `sinks` are the stores the items go to; `reopen` opens them anew for a new writer when the
/// writer fails (see [`keep_writer`]).
pub async fn run(
    cfg: WorkerConfig,
    http: TcpListener,
    sinks: Vec<Box<dyn Sink>>,
    reopen: Reopen,
    state: Arc<dyn StateStore>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let etcd = Etcd::connect(&cfg.etcd, Duration::from_secs(5)).await?;
    let fetcher = Arc::new(Fetcher::new(cfg.engine.clone()).map_err(|e| WorkerError::Client(e.to_string()))?);
    let writer = SinkWriter::spawn(sinks, cfg.batch, LINGER);
    let runner = Runner::new(cfg.id.clone(), cfg.tasks.clone(), fetcher, writer.sender(), Some(state));
    let keeper =
        tokio::spawn(keep_writer(writer, reopen, cfg.batch, cfg.outage, runner.clone(), shutdown.clone()));
    let watchers = CancellationToken::new();
    let resources = PrefixWatch::spawn(etcd.clone(), keys::RESOURCES, watchers.clone());
    let registry = PrefixWatch::spawn(etcd.clone(), keys::WORKERS, watchers.clone());
    runner.set_registry(registry.clone());

    // The HTTP server stops last: while the crawls drain and their items are stored, the
    // worker is still registered, and the masters still ask it for `/tasks`.
    let server_stop = CancellationToken::new();
    let server = axum::serve(http, http::router(runner.clone()))
        .with_graceful_shutdown(server_stop.clone().cancelled_owned());
    let server = tokio::spawn(async move { server.await.map_err(|e| WorkerError::Server(e.to_string())) });

    follow(&cfg, &etcd, &runner, resources, registry, &shutdown).await;
    server_stop.cancel();

    runner.stop_all(true).await;
    watchers.cancel();
    drop(runner);
    let writer = keeper.await.map_err(|e| WorkerError::Server(e.to_string()))?;
    let written = writer.close().await?;
    tracing::info!(items = written, "worker stopped");
    server.await.map_err(|e| WorkerError::Server(e.to_string()))??;
    Ok(())
}

/// A partial batch is written after this long without a full one.
const LINGER: Duration = Duration::from_millis(250);

/// How often stores that could not be opened are tried again (an open that is refused costs
/// little; the worker is out of the cluster meanwhile).
const REOPEN_EVERY: Duration = Duration::from_secs(5);

/// How often a registered worker looks for stored runs whose resource is gone (and first
/// once it registers).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Opens a worker's stores anew (for a new writer).
pub type Reopen = Arc<dyn Fn() -> Result<Vec<Box<dyn Sink>>, crawler_engine::SinkError> + Send + Sync>;

/// Keeps a writer running. When it fails (a store refused a batch, or could not be reached for
/// longer than it waits), what the crawls had handed it is not stored (its pages are not marked
/// done, so they are fetched again) and the crawls stop on it; a new writer over freshly opened
/// stores takes its place after about 2 s, then 4, 8, up to a minute for writers that keep
/// failing (each pause jittered down by up to half; the steps start over after a writer that
/// lasted a minute), and the reconciles start the crawls that broke off again. While the
/// stores cannot be opened at all, the worker leaves the cluster (see `follow`) and they are
/// tried every [`REOPEN_EVERY`]. Runs that keep failing to open have the stores probed (see
/// [`probe`]). Without it the worker would hold its tasks and crawl none of them until
/// restarted. Returns the writer in use once `shutdown` fires.
async fn keep_writer(
    mut writer: SinkWriter,
    reopen: Reopen,
    batch: usize,
    outage: Duration,
    runner: Runner,
    shutdown: CancellationToken,
) -> SinkWriter {
    let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
    let mut started = std::time::Instant::now();
    // When a probe last found the stores fine: runs that fail for other reasons do not have
    // them opened again and again.
    let mut fine_at: Option<std::time::Instant> = None;
    loop {
        let sender = writer.sender();
        let failed = tokio::select! {
            _ = shutdown.cancelled() => return writer,
            _ = sender.closed() => true,
            _ = runner.probe_asked() => {
                if fine_at.is_some_and(|t| t.elapsed() < PROBE_QUIET) {
                    continue;
                }
                match probe(&reopen, outage, &sender, &runner, &shutdown).await {
                    Probed::Shutdown => return writer,
                    Probed::Fine => {
                        fine_at = Some(std::time::Instant::now());
                        false
                    }
                    Probed::WriterFailed => true,
                }
            }
        };
        drop(sender);
        if !failed {
            continue;
        }
        runner.writer_failed();
        if started.elapsed() > Duration::from_secs(60) {
            backoff.reset();
        }
        match writer.close().await {
            Err(e) => tracing::error!(error = %e, "the writer failed; a new one starts after a pause"),
            Ok(_) => tracing::error!("the writer stopped; a new one starts after a pause"),
        }
        let mut pause = backoff.next_delay().unwrap_or(REOPEN_EVERY);
        writer = loop {
            tokio::select! {
                // Nothing to close: an idle writer over no store.
                _ = shutdown.cancelled() => return SinkWriter::spawn(Vec::new(), batch, LINGER),
                _ = tokio::time::sleep(pause) => {}
            }
            let opened = tokio::select! {
                // (An open under way is left to finish on its own.)
                _ = shutdown.cancelled() => return SinkWriter::spawn(Vec::new(), batch, LINGER),
                opened = open_stores(&reopen) => opened,
            };
            if let Some(sinks) = opened {
                break SinkWriter::spawn(sinks, batch, LINGER);
            }
            // The stores cannot be reached from here: the worker gives its tasks up (see
            // `follow`) until they can, and comes back soon after they can.
            runner.set_stores_up(false);
            pause = REOPEN_EVERY;
        };
        started = std::time::Instant::now();
        runner.set_writer(writer.sender());
        runner.set_stores_up(true);
        tracing::warn!("a new writer started; crawls that stopped on the last one start again");
    }
}

/// A probe of the stores found them fine after a run failed to open: no other probe for this long.
const PROBE_QUIET: Duration = Duration::from_secs(30);

/// What a probe of the stores came to.
enum Probed {
    Fine,
    /// The writer failed meanwhile: it is to be replaced.
    WriterFailed,
    Shutdown,
}

/// Probes the stores for runs that keep failing to open: tries to open them every second for
/// up to `outage` (as long as a write waits for its database); if they never open, the worker
/// leaves the cluster (`stores_up` false, see `follow`) and they are tried every
/// [`REOPEN_EVERY`] until they open. The writer is kept, and watched: if it fails meanwhile, it
/// is replaced as usual (which brings the worker back).
async fn probe(
    reopen: &Reopen,
    outage: Duration,
    writer: &CommitSender,
    runner: &Runner,
    shutdown: &CancellationToken,
) -> Probed {
    let opened = tokio::select! {
        _ = shutdown.cancelled() => return Probed::Shutdown,
        _ = writer.closed() => return Probed::WriterFailed,
        opened = opens_within(reopen, outage) => opened,
    };
    if opened {
        return Probed::Fine;
    }
    runner.set_stores_up(false);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Probed::Shutdown,
            _ = writer.closed() => return Probed::WriterFailed,
            _ = tokio::time::sleep(REOPEN_EVERY) => {}
        }
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return Probed::Shutdown,
            opened = opens(reopen) => opened,
        };
        if opened {
            runner.set_stores_up(true);
            tracing::warn!("the stores can be opened again");
            return Probed::Fine;
        }
    }
}

/// The stores, opened anew off the runtime; `None` (the failure logged) when they cannot be.
async fn open_stores(reopen: &Reopen) -> Option<Vec<Box<dyn Sink>>> {
    let reopen = reopen.clone();
    let failure = match tokio::task::spawn_blocking(move || reopen()).await {
        Ok(Ok(sinks)) => return Some(sinks),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!(error = %failure, "cannot open the stores");
    None
}

/// Whether the stores can be opened (they are closed again at once).
async fn opens(reopen: &Reopen) -> bool {
    open_stores(reopen).await.is_some()
}

/// Whether the stores can be opened within `within`, tried every second.
async fn opens_within(reopen: &Reopen, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if opens(reopen).await {
            return true;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
}

/// Registers, follows the resources while the session lives, and starts over when it is lost.
async fn follow(
    cfg: &WorkerConfig,
    etcd: &Etcd,
    runner: &Runner,
    mut resources: PrefixWatch,
    registry: PrefixWatch,
    shutdown: &CancellationToken,
) {
    let record = WorkerRecord { id: cfg.id.clone(), address: cfg.advertise.clone() };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut stores_up = runner.stores_up();
    while !shutdown.is_cancelled() {
        // A worker that cannot reach its stores does not register: it could store nothing of
        // the tasks it would be given.
        if !*stores_up.borrow_and_update() {
            tracing::warn!(id = %cfg.id, "not registering until the stores can be written again");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Ok(_) = stores_up.wait_for(|up| *up) => continue,
            }
        }
        let session = match Session::start(etcd, cfg.lease_ttl).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach etcd; running crawls go on; retrying");
                tokio::select! { _ = shutdown.cancelled() => return, _ = backoff.wait() => continue }
            }
        };
        let put_at = match crawler_coord::put_leased_at(etcd, &keys::worker(&cfg.id), &record, &session).await
        {
            Ok(rev) => rev,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register; retrying");
                session.close().await;
                tokio::select! { _ = shutdown.cancelled() => return, _ = backoff.wait() => continue }
            }
        };
        backoff.reset();
        runner.set_lease(session.lease());
        runner.set_registered(true);
        tracing::info!(id = %cfg.id, lease = session.lease(), "registered");
        let done = session.done();
        // Our record deleted behind our back (`etcdctl del`) while the lease lives: put it back.
        let present = |p: bool| runner.set_registered(p);
        let mut cut_off = false;
        {
            let keep = crawler_coord::keep_leased(
                etcd,
                registry.clone(),
                keys::WORKERS,
                &cfg.id,
                &record,
                &session,
                put_at,
                &present,
                shutdown,
            );
            tokio::pin!(keep);
            let mut kept = false;
            // The resources as of now: after a lost lease the watch may still show them as
            // they were before (its reload can lag), and a task the masters moved away
            // meanwhile must not start here again. Used until the watch has caught up with it.
            let mut fresh =
                crawler_coord::read_prefix(etcd, keys::RESOURCES).await.ok().map(std::sync::Arc::new);
            // The look for runs of deleted resources, in the background (ending a run deletes
            // its frontier, which may be large), one at a time.
            let mut sweep: Option<(std::time::Instant, tokio::task::JoinHandle<usize>)> = None;
            loop {
                let snap = match (resources.current(), fresh.clone()) {
                    (Some(w), Some(f)) if w.revision < f.revision => Some(f),
                    (None, Some(f)) => Some(f),
                    (w, _) => {
                        fresh = None;
                        w
                    }
                };
                if let Some(snap) = snap {
                    runner.reconcile(&snap).await;
                    let due =
                        sweep.as_ref().is_none_or(|(at, h)| h.is_finished() && at.elapsed() >= SWEEP_EVERY);
                    if due {
                        let runner = runner.clone();
                        let look = tokio::spawn(async move { runner.end_runs_of_deleted(&snap).await });
                        sweep = Some((std::time::Instant::now(), look));
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = done.cancelled() => break,
                    changed = resources.changed() => if changed.is_none() { break },
                    // Also now and then: a crawl that broke off on an error is started again,
                    // and, soon, a share that waits for a partition's release.
                    _ = tokio::time::sleep(if runner.waiting_for_release() {
                        runner::RELEASE_POLL
                    } else {
                        Duration::from_secs(2)
                    }) => {}
                    _ = &mut keep, if !kept => kept = true,
                    Ok(_) = stores_up.wait_for(|up| !*up) => {
                        cut_off = true;
                        break;
                    }
                }
            }
            // A look still under way is not waited for (it holds the runner, and with it the
            // writer a shutdown closes); the next registration looks again.
            if let Some((_, look)) = sweep.take() {
                look.abort();
            }
        }
        if cut_off && !shutdown.is_cancelled() {
            // The stores cannot be reached from here (the writer waited out its outage and a
            // new one cannot open them): give the tasks up, revoking the lease so the masters
            // move them at once to workers that may reach the stores; register again when
            // they can be written.
            tracing::warn!(id = %cfg.id, "the stores cannot be reached: stopping every task and leaving");
            runner.set_registered(false);
            runner.stop_all(false).await;
            session.close().await;
            continue;
        }
        if shutdown.is_cancelled() {
            // Finish what is in flight and store it, then revoke the lease: once the lease is
            // gone, the next owners take over and would fetch anything not stored yet again.
            runner.stop_all(true).await;
            session.close().await;
            // Registered (`/healthz` 200) until the lease is revoked: a probe that took the
            // drain for a dead worker would kill it with its pages in flight.
            runner.set_registered(false);
            return;
        }
        // The lease is gone: the masters move our resources; stop them here so no task runs
        // on two workers, then register again and take whatever is assigned then.
        tracing::warn!(id = %cfg.id, "lease lost: stopping every task and registering again");
        runner.set_registered(false);
        runner.stop_all(false).await;
    }
}
