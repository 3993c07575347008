//! The crawls of one worker: a map from resource name to its running crawl, reconciled with
//! the resources assigned here. Reconciling by state, not by event, means a repeated or
//! modified event can never start a second copy, and a missed one is caught up on the next.
//!
//! With a state store, each resource's crawl is a stored run labelled with the resource's
//! instance (its id and creation time: a re-add under the same id is another run) and opened at
//! the epoch of its assignment (the record's etcd revision): a task that moves here
//! continues where its previous worker stopped, and the previous worker, should it come back,
//! can no longer commit for it. A deleted (or re-added) resource's run is ended.
//!
//! A split task (its record lists partition owners) runs here as this worker's share: the
//! partitions it owns. When that set changes, the share is drained (what is in flight finishes
//! and is committed, the partitions are released) and started again with the new set. A
//! partition that moves here from a live worker is opened only once that worker has released
//! it (or its registration is gone), so no host is ever fetched by two workers at once. Such a
//! share waits between reconciles, not inside one: the worker's other resources are followed
//! meanwhile, and reconciles come every [`RELEASE_POLL`] until it has started.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crawler_coord::{PrefixWatch, ResourceRecord, Snapshot};
use crawler_engine::{
    rfc3339, CommitSender, Crawl, CrawlStats, Epoch, Fetcher, OpenedRun, PartsOpen, Split, StateStore, Task,
    TaskSpec,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// How long a stopping crawl may take to end its in-flight requests.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a partition's previous owner, still registered, may take to release it before
/// it is taken anyway (its commits are refused from then on).
const RELEASE_WAIT: Duration = Duration::from_secs(20);

/// After this many failures in a row to open a run, the stores are probed: a worker that
/// cannot open them at all within `[storage] outage` leaves the cluster until it can (see
/// `keep_writer`).
pub(crate) const PROBE_AFTER: u32 = 3;

/// How often a share waiting for a partition's release tries again.
pub(crate) const RELEASE_POLL: Duration = Duration::from_millis(100);

/// How stopping a crawl treats its requests in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// Finish and commit them (a task moving away, a shutdown).
    Drain,
    /// Abandon them (a deleted task, a lost lease).
    Abandon,
}

/// A task running (or finished) on this worker, as `GET /tasks` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TaskStatus {
    /// Resource (task) name.
    pub name: String,
    /// Responses received.
    pub pages: u64,
    /// Items stored.
    pub items: u64,
    /// Failed requests.
    pub errors: u64,
    /// Requests waiting.
    pub queued: u64,
    /// When the crawl started, RFC 3339.
    pub started_at: String,
    /// Whether the crawl has ended (frontier exhausted).
    pub finished: bool,
    /// Average fetch latency in milliseconds.
    pub fetch_ms: f64,
    /// A split task: the partitions this worker holds, each with its requests waiting here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<PartitionStatus>>,
}

/// One partition of a split task held by this worker.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionStatus {
    /// Partition number.
    pub part: u32,
    /// Requests of its hosts waiting here (as of the last half second).
    pub queued: u64,
}

/// One task with its recent failures and items, as `GET /tasks/{name}` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TaskDetail {
    /// The figures.
    #[serde(flatten)]
    pub status: TaskStatus,
    /// The last failures and items.
    pub recent: crawler_engine::Recent,
}

struct Running {
    resource_id: String,
    crawl: Option<Crawl>,
    /// The stored run, when there is a state store.
    run: Option<i64>,
    /// A split task: the partitions held here, with their epochs.
    parts: Option<Vec<(u32, i64)>>,
    /// A split task: how many workers share it (its rate limits are divided by that).
    share: usize,
}

/// The crawls of one worker. Cheap to clone.
#[derive(Clone)]
pub struct Runner(Arc<Inner>);

/// Resource records by name, with the bytes each was decoded from (`None`: unreadable).
type Decoded = HashMap<String, (Vec<u8>, Option<ResourceRecord>)>;

struct Inner {
    id: String,
    tasks: HashMap<String, TaskSpec>,
    fetcher: Arc<Fetcher>,
    /// The current writer's sender (a failed writer is replaced, see [`Runner::set_writer`]).
    commits: std::sync::Mutex<CommitSender>,
    state: Option<Arc<dyn StateStore>>,
    running: tokio::sync::Mutex<BTreeMap<String, Running>>,
    registered: AtomicBool,
    /// The lease this worker registered under (0 before it has).
    lease: std::sync::atomic::AtomicI64,
    unknown_tasks: AtomicU64,
    /// Writers that failed (each replaced by a new one).
    writer_failures: AtomicU64,
    /// Whether the stores can be written: false from a failed writer's first failed
    /// replacement until a new writer starts.
    stores_up: tokio::sync::watch::Sender<bool>,
    /// Asks the writer's keeper whether the stores can be opened at all (runs keep failing to
    /// open, and a worker with nothing to write would not find out otherwise).
    probe: tokio::sync::Notify,
    parent: CancellationToken,
    /// Labels whose runs stored under the resource id alone were looked for already (see
    /// `Runner::take_up_legacy_run`).
    taken_up: std::sync::Mutex<HashSet<String>>,
    /// The crawls as `/tasks` last saw them (see `Runner::listed`).
    listed: std::sync::Mutex<Vec<Listed>>,
    /// The worker registry, to tell a gone partition owner from a live one.
    registry: std::sync::Mutex<Option<PrefixWatch>>,
    /// Shares waiting for a previous owner to release a partition, by resource name.
    waiting: std::sync::Mutex<HashMap<String, Waiting>>,
    /// Crawls that broke off: how often each was started again, and when it may be next.
    restarts: Backoffs,
    /// Resources whose run could not be opened: failures in a row, and when to try next.
    open_failures: Backoffs,
    /// Resource records decoded so far, by name, with the bytes they were decoded from
    /// (`None`: unreadable). A record is decoded, and an unreadable one reported, once per
    /// change, not at every reconcile.
    records: std::sync::Mutex<Decoded>,
}

impl Runner {
    /// A runner with no crawls. Without a state store, crawls keep their frontier in memory
    /// and a moved task starts over from its seeds.
    pub fn new(
        id: String,
        tasks: Vec<TaskSpec>,
        fetcher: Arc<Fetcher>,
        commits: CommitSender,
        state: Option<Arc<dyn StateStore>>,
    ) -> Runner {
        Runner(Arc::new(Inner {
            id,
            tasks: tasks.into_iter().map(|t| (t.name.clone(), t)).collect(),
            fetcher,
            commits: std::sync::Mutex::new(commits),
            state,
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            registered: AtomicBool::new(false),
            lease: std::sync::atomic::AtomicI64::new(0),
            unknown_tasks: AtomicU64::new(0),
            writer_failures: AtomicU64::new(0),
            stores_up: tokio::sync::watch::Sender::new(true),
            probe: tokio::sync::Notify::new(),
            parent: CancellationToken::new(),
            registry: std::sync::Mutex::new(None),
            listed: std::sync::Mutex::new(Vec::new()),
            taken_up: std::sync::Mutex::new(HashSet::new()),
            waiting: std::sync::Mutex::new(HashMap::new()),
            restarts: Backoffs::new(Duration::from_secs(2), Duration::from_secs(60)),
            open_failures: Backoffs::new(Duration::from_millis(500), Duration::from_secs(10)),
            records: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// The current writer's sender.
    fn commits(&self) -> CommitSender {
        self.0.commits.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends the crawls started from now on to a new writer (the last one failed). Crawls
    /// that broke off on the failed one are started again by the next reconciles.
    pub fn set_writer(&self, commits: CommitSender) {
        *self.0.commits.lock().unwrap_or_else(|p| p.into_inner()) = commits;
    }

    /// Counts a writer that failed.
    pub(crate) fn writer_failed(&self) {
        self.0.writer_failures.fetch_add(1, Relaxed);
    }

    /// Writers that failed so far.
    pub fn writer_failures(&self) -> u64 {
        self.0.writer_failures.load(Relaxed)
    }

    /// Says whether the stores can be written (see [`Runner::stores_up`]).
    pub(crate) fn set_stores_up(&self, up: bool) {
        self.0.stores_up.send_if_modified(|v| std::mem::replace(v, up) != up);
    }

    /// Waits until a probe of the stores is asked for (see [`PROBE_AFTER`]).
    pub(crate) async fn probe_asked(&self) {
        self.0.probe.notified().await
    }

    /// Follows whether the stores can be written: false once a failed writer could not be
    /// replaced (its stores cannot be opened), true again when a new writer starts.
    pub fn stores_up(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.stores_up.subscribe()
    }

    /// Whether the current writer takes commits (not failed, waiting for its replacement).
    pub fn writer_up(&self) -> bool {
        !self.commits().is_closed()
    }

    /// Whether a share waits for a partition's release (the next reconcile should come soon).
    pub fn waiting_for_release(&self) -> bool {
        self.0.waiting.lock().unwrap_or_else(|p| p.into_inner()).values().any(|w| w.busy)
    }

    /// Follows the worker registry (to know whether a partition's previous owner is gone).
    pub fn set_registry(&self, registry: PrefixWatch) {
        *self.0.registry.lock().unwrap_or_else(|p| p.into_inner()) = Some(registry);
    }

    /// Whether a crawl of `name` that broke off may be started again now: not while the writer
    /// is gone (nothing could be stored; the worker is failing), and no sooner than 2 s after
    /// the last restart, doubling up to a minute while it keeps breaking off.
    fn may_restart(&self, name: &str) -> bool {
        if self.commits().is_closed() {
            return false;
        }
        let now = std::time::Instant::now();
        if !self.0.restarts.ready(name, now) {
            return false;
        }
        let restarts = self.0.restarts.note(name, now);
        tracing::warn!(resource = %name, restarts, "the crawl broke off; starting it again");
        true
    }

    /// Whether the partition owner `owner` (see [`Runner::owner`]) is not registered now: its
    /// id is not, or (an owner named with its lease) it is under another lease, a restarted
    /// process's. Unknown without a registry: not gone.
    fn gone(&self, owner: &str) -> bool {
        let registry = self.0.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.as_ref().and_then(|r| r.current()).is_some_and(|s| owner_gone(owner, &s))
    }

    /// The name this worker holds partitions under: its id and lease, `ID#LEASE` (hex), so a
    /// process restarted under the same id is another owner; its id alone before it has
    /// registered.
    fn owner(&self) -> String {
        match self.0.lease.load(Relaxed) {
            0 => self.0.id.clone(),
            lease => format!("{}#{lease:x}", self.0.id),
        }
    }

    /// Notes the lease the worker registered under.
    pub(crate) fn set_lease(&self, lease: i64) {
        self.0.lease.store(lease, Relaxed);
    }

    /// Whether the worker is registered in etcd now.
    pub fn registered(&self) -> bool {
        self.0.registered.load(Relaxed)
    }

    pub(crate) fn set_registered(&self, v: bool) {
        self.0.registered.store(v, Relaxed);
    }

    /// Resources whose task could not be resolved or compiled.
    pub fn unknown_tasks(&self) -> u64 {
        self.0.unknown_tasks.load(Relaxed)
    }

    /// Resource records that cannot be read, as of the last reconcile.
    pub fn unreadable_resources(&self) -> usize {
        self.0.records.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|(_, r)| r.is_none()).count()
    }

    /// The snapshot's records, decoded: each only when it changed since the last call; and the
    /// names of those that cannot be read.
    fn decode(&self, snap: &Snapshot) -> (Vec<(String, ResourceRecord, i64)>, HashSet<String>) {
        let mut records = self.0.records.lock().unwrap_or_else(|p| p.into_inner());
        records.retain(|name, _| snap.entries.contains_key(name));
        let mut out = Vec::with_capacity(snap.entries.len());
        let mut unreadable = HashSet::new();
        for (name, e) in &snap.entries {
            let decoded = match records.get(name) {
                Some((value, r)) if *value == e.value => r.clone(),
                _ => {
                    let r = ResourceRecord::decode(name, &e.value)
                        .inspect_err(
                            |err| tracing::warn!(resource = %name, error = %err, "unreadable resource"),
                        )
                        .ok();
                    records.insert(name.clone(), (e.value.clone(), r.clone()));
                    r
                }
            };
            match decoded {
                // The cache is by value: the creating revision comes from this entry.
                Some(r) => out.push((
                    name.clone(),
                    ResourceRecord { create_revision: e.create_revision, ..r },
                    e.mod_revision,
                )),
                None => {
                    unreadable.insert(name.clone());
                }
            }
        }
        (out, unreadable)
    }

    /// Ends the stored runs whose resource is gone: a task deleted while no worker ran it (all
    /// down, or its worker cut off) left its run `running`, with its frontier, for good. A run
    /// is judged only when its label names a resource instance (`ID@REV`) created at or before
    /// the snapshot, which then lists every live one; unreadable records' tasks are left alone.
    /// How many runs were ended.
    pub async fn end_runs_of_deleted(&self, snap: &Snapshot) -> usize {
        let Some(state) = self.0.state.clone() else { return 0 };
        let (records, unreadable) = self.decode(snap);
        let live: HashSet<String> = records.iter().map(|(_, r, _)| r.instance()).collect();
        let revision = snap.revision;
        let ended = tokio::task::spawn_blocking(
            move || -> Result<Vec<(String, String)>, crawler_engine::SinkError> {
                let mut ended = Vec::new();
                for (id, task, label) in state.running_runs()? {
                    let created = label.rsplit_once('@').and_then(|(_, rev)| rev.parse::<i64>().ok());
                    let gone = created.is_some_and(|rev| rev <= revision)
                        && !live.contains(&label)
                        && !unreadable.contains(&task);
                    if gone {
                        state.end_run(id)?;
                        ended.push((task, label));
                    }
                }
                Ok(ended)
            },
        )
        .await;
        match ended {
            Ok(Ok(ended)) => {
                for (task, label) in &ended {
                    tracing::info!(resource = %task, run = %label, "run of a deleted resource ended");
                }
                ended.len()
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot look for runs of deleted resources");
                0
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for runs of deleted resources");
                0
            }
        }
    }

    /// Makes the running crawls match the resources assigned to this worker.
    pub async fn reconcile(&self, snap: &Snapshot) {
        let mut desired: BTreeMap<String, (ResourceRecord, i64)> = BTreeMap::new();
        let mut ids: HashMap<String, String> = HashMap::new();
        // An unreadable record (`etcdctl put` of a bad value) says nothing about its resource:
        // what runs under its name goes on as it was, and its run is not ended.
        let (records, unreadable) = self.decode(snap);
        for (name, r, revision) in records {
            ids.insert(name.clone(), r.instance());
            let mine = match &r.partitions {
                Some(p) => p.owners.iter().any(|o| *o == self.0.id),
                None => r.assigned_node == self.0.id,
            };
            if mine {
                desired.insert(name, (r, revision));
            }
        }
        let mut running = self.0.running.lock().await;
        // A waiting share is kept while its resource (same id) is still to run here and not
        // running yet; its partitions may have changed (its clock then starts again, see
        // `start_share`), and what the previous share here left is kept for it.
        self.0.waiting.lock().unwrap_or_else(|p| p.into_inner()).retain(|name, w| {
            unreadable.contains(name)
                || (!running.contains_key(name)
                    && desired.get(name).is_some_and(|(d, _)| d.instance() == w.resource_id))
        });
        let mine = |d: &ResourceRecord| d.partitions.as_ref().map(|p| p.owned_by(&self.0.id));
        let share = |d: &ResourceRecord| d.partitions.as_ref().map_or(1, |p| p.workers().len());
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, _)| !unreadable.contains(*name))
            .filter(|(name, r)| {
                desired.get(*name).is_none_or(|(d, _)| {
                    d.instance() != r.resource_id || mine(d) != r.parts || share(d) != r.share
                }) || (r.crawl.as_ref().is_some_and(broke_off) && self.may_restart(name))
            })
            .map(|(name, _)| name.clone())
            .collect();
        let stopped = !stale.is_empty();
        // What the stopped shares leave to their next ones here: when they sent their last
        // requests (counted against the task's rate limits) and the robots.txt files they read.
        let mut left: HashMap<String, Left> = HashMap::new();
        // All at once: one share slow to drain must not keep the others running on their old
        // assignment (or their old part of the rate limits).
        let mut stops = tokio::task::JoinSet::new();
        for name in stale {
            if let Some(r) = running.remove(&name) {
                // Deleted or re-added (not moved to another worker): its run is over (a split
                // run is ended by every worker that held a share; ending is idempotent).
                let ended = ids.get(name.as_str()).is_none_or(|id| *id != r.resource_id);
                let run = r.run;
                stops.spawn(async move {
                    let leaves = stop(&name, r, if ended { Stop::Abandon } else { Stop::Drain }).await;
                    (name, ended, run, leaves)
                });
            }
        }
        // `/tasks` no longer lists what stops (a deleted task, one moved away) while it does.
        self.relist(&running);
        while let Some(done) = stops.join_next().await {
            let (name, ended, run, leaves) = match done {
                Ok(stopped) => stopped,
                Err(e) => {
                    tracing::error!(error = %e, "stopping a crawl failed");
                    continue;
                }
            };
            if !ended {
                left.insert(name.clone(), leaves);
            }
            if let (true, Some(run), Some(state)) = (ended, run, &self.0.state) {
                let state = state.clone();
                match tokio::task::spawn_blocking(move || state.end_run(run)).await {
                    Ok(Ok(())) => tracing::info!(resource = %name, run, "run ended"),
                    Ok(Err(e)) => tracing::warn!(resource = %name, error = %e, "cannot end the run"),
                    Err(e) => tracing::warn!(resource = %name, error = %e, "cannot end the run"),
                }
            }
        }
        if stopped {
            // What the stopped crawls committed is stored before any run is opened again here:
            // an open would otherwise take their last pages for unfetched ones.
            self.flush().await;
        }
        let now = std::time::Instant::now();
        // A run that could not be opened is not tried again before its backoff is over, so a
        // database that is down is not asked, nor the failure logged, at every reconcile. The
        // backoffs of resources no longer here are forgotten.
        self.0.open_failures.retain(|name| desired.contains_key(name));
        self.0.restarts.retain(|name| desired.contains_key(name));
        for (name, (rec, revision)) in desired {
            if running.contains_key(&name) || !self.0.open_failures.ready(&name, now) {
                continue;
            }
            let (parts, shared_by) = (mine(&rec), share(&rec));
            let (crawl, run) = match self.task_for(&rec) {
                Ok(task) => match self.start(task, &rec, revision, left.remove(&name)).await {
                    Ok(Started::Running(crawl, run)) => {
                        self.0.open_failures.forget(&name);
                        (crawl, run)
                    }
                    // Not recorded as running: a later reconcile tries again. The database
                    // answered, so a run of failures to open it has ended.
                    Ok(Started::Waiting) => {
                        self.0.open_failures.forget(&name);
                        continue;
                    }
                    Err(e) => {
                        // Not recorded as running: tried again after a backoff, counted from
                        // the failure (an open may fail slowly, e.g. a connect timing out).
                        let failures = self.0.open_failures.note(&name, std::time::Instant::now());
                        tracing::error!(resource = %name, error = %e, failures, "cannot open the task's run");
                        if failures >= PROBE_AFTER {
                            self.0.probe.notify_one();
                        }
                        continue;
                    }
                },
                Err(problem) => {
                    self.0.unknown_tasks.fetch_add(1, Relaxed);
                    tracing::error!(resource = %name, %problem, "cannot run this resource");
                    (None, None)
                }
            };
            running
                .insert(name, Running { resource_id: rec.instance(), crawl, run, parts, share: shared_by });
        }
        self.relist(&running);
    }

    /// A run stored by a version that labelled cluster runs with the resource id alone is found
    /// under the instance's label (a crawl under way across an upgrade goes on, a finished one
    /// stays finished). Looked for once per label (a waiting share opens every 100 ms).
    /// `standalone` is the standalone crawls' label, never a resource's.
    fn take_up_legacy_run(
        &self,
        state: &dyn StateStore,
        task: &str,
        legacy: &str,
        label: &str,
        created_ms: i64,
    ) -> Result<(), crawler_engine::SinkError> {
        if legacy == crawler_engine::STANDALONE
            || self.0.taken_up.lock().unwrap_or_else(|p| p.into_inner()).contains(label)
        {
            return Ok(());
        }
        // Runs of this add only: started after it was made (a minute's allowance for clocks).
        let created = std::time::UNIX_EPOCH + Duration::from_millis(created_ms.max(0) as u64);
        let not_before =
            rfc3339(created.checked_sub(Duration::from_secs(60)).unwrap_or(std::time::UNIX_EPOCH));
        if state.adopt_label(task, legacy, label, &not_before)? {
            tracing::info!(resource = %task, from = %legacy, to = %label, "a run stored under the resource id alone is taken up");
        }
        self.0.taken_up.lock().unwrap_or_else(|p| p.into_inner()).insert(label.to_owned());
        Ok(())
    }

    /// Notes the crawls as they are now for `/tasks` (see [`Runner::listed`]).
    fn relist(&self, running: &BTreeMap<String, Running>) {
        *self.0.listed.lock().unwrap_or_else(|p| p.into_inner()) = running
            .iter()
            .filter_map(|(name, r)| r.crawl.as_ref().map(|c| (name.clone(), c.clone(), r.parts.clone())))
            .collect();
    }

    /// Starts a resource's crawl: its stored run (resumed if the task moved here) or, without
    /// a state store, a crawl from the seeds; for a split task, this worker's share (none when
    /// its run is over). `left`: what this worker's previous share of it left.
    async fn start(
        &self,
        task: Task,
        rec: &ResourceRecord,
        revision: i64,
        left: Option<Left>,
    ) -> Result<Started, crawler_engine::SinkError> {
        let inner = &self.0;
        let Some(state) = inner.state.clone() else {
            tracing::info!(resource = %rec.name, id = %rec.id, "starting crawl");
            return Ok(Started::Running(
                Some(Crawl::start(task, inner.fetcher.clone(), self.commits(), &inner.parent)),
                None,
            ));
        };
        if rec.partitions.is_some() {
            return self.start_share(task, rec, state, left).await;
        }
        let (name, label, legacy, created) =
            (rec.name.clone(), rec.instance(), rec.id.clone(), rec.creation_time);
        let window = task.queue_window(inner.fetcher.config().queue_window);
        let runner = self.clone();
        let opened = tokio::task::spawn_blocking(move || {
            runner.take_up_legacy_run(&*state, &name, &legacy, &label, created)?;
            state.open_run(&name, &label, Epoch::At(revision), false, window)
        })
        .await
        .map_err(|e| crawler_engine::SinkError { sink: "state", message: e.to_string() })??;
        if opened.over {
            tracing::info!(resource = %rec.name, id = %rec.id, run = opened.id, "the task's run is finished; nothing to do");
        } else {
            tracing::info!(
                resource = %rec.name,
                id = %rec.id,
                run = opened.id,
                epoch = opened.epoch,
                resumed = opened.resumed,
                done = opened.handled,
                queued = opened.waiting,
                "starting crawl"
            );
        }
        let run = opened.id;
        Ok(Started::Running(
            Some(Crawl::resume(task, opened, inner.fetcher.clone(), self.commits(), &inner.parent)),
            Some(run),
        ))
    }

    /// Opens this worker's partitions of a split task's run and starts the share; while a
    /// previous owner that is still registered holds one (for up to [`RELEASE_WAIT`] from the
    /// first try, then it is taken anyway), the share waits: [`Started::Waiting`], and what
    /// the previous share here left is kept for the next try.
    async fn start_share(
        &self,
        task: Task,
        rec: &ResourceRecord,
        state: Arc<dyn StateStore>,
        left: Option<Left>,
    ) -> Result<Started, crawler_engine::SinkError> {
        let inner = &self.0;
        let p = rec.partitions.as_ref().expect("a split task");
        let parts = p.owned_by(&inner.id);
        // A share of this resource already waiting: what the previous share left, and since
        // when it has waited for these partitions (a new set of partitions waits anew).
        let (started, left) = {
            let mut waiting = inner.waiting.lock().unwrap_or_else(|p| p.into_inner());
            // (A wait of another resource under this name was dropped by the reconcile.)
            match waiting.remove(&rec.name) {
                Some(w) => {
                    let since = if w.parts == parts { w.since } else { std::time::Instant::now() };
                    (since, left.unwrap_or(w.left))
                }
                None => (std::time::Instant::now(), left.unwrap_or_default()),
            }
        };
        let window = task.queue_window(inner.fetcher.config().queue_window);
        let force = started.elapsed() > RELEASE_WAIT;
        let opened = {
            let runner = self.clone();
            let (name, label, me, parts) = (rec.name.clone(), rec.instance(), self.owner(), parts.clone());
            let (legacy, created) = (rec.id.clone(), rec.creation_time);
            tokio::task::spawn_blocking(move || {
                runner.take_up_legacy_run(&*state, &name, &legacy, &label, created)?;
                state.open_parts(&name, &label, &me, &parts, &|w| runner.gone(w), force, window)
            })
            .await
            .map_err(|e| crawler_engine::SinkError { sink: "state", message: e.to_string() })
            .and_then(|r| r)
        };
        // Waits for the next try, with its clock and what the previous share left.
        let wait = |parts, left, busy| {
            let w = Waiting { resource_id: rec.instance(), parts, since: started, left, busy };
            inner.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(rec.name.clone(), w);
        };
        match opened {
            Err(e) => {
                wait(parts, left, false);
                Err(e)
            }
            Ok(PartsOpen::Opened(run)) => {
                let split = Split {
                    count: p.count(),
                    home: parts.iter().any(|(part, _)| *part == p.home),
                    share: p.workers().len() as u32,
                    parts,
                    recent: left.request_starts,
                    robots: left.robots,
                };
                tracing::info!(
                    resource = %rec.name,
                    run = run.id,
                    partitions = split.parts.len(),
                    of = split.count,
                    home = split.home,
                    resumed = run.resumed,
                    done = run.handled,
                    queued = run.waiting,
                    forced = force,
                    "starting this worker's share"
                );
                let id = run.id;
                let crawl = Crawl::resume_split(
                    task,
                    run,
                    split,
                    inner.fetcher.clone(),
                    self.commits(),
                    &inner.parent,
                );
                Ok(Started::Running(Some(crawl), Some(id)))
            }
            Ok(PartsOpen::Over) => {
                tracing::info!(resource = %rec.name, "the split run is over; nothing to do here");
                // Listed as finished, with nothing to crawl.
                let over = OpenedRun { over: true, ..OpenedRun::default() };
                let crawl = Crawl::resume(task, over, inner.fetcher.clone(), self.commits(), &inner.parent);
                Ok(Started::Running(Some(crawl), None))
            }
            Ok(PartsOpen::Busy { part, owner }) => {
                tracing::debug!(resource = %rec.name, part, %owner, "waiting for the partition's release");
                wait(parts, left, true);
                Ok(Started::Waiting)
            }
        }
    }

    fn task_for(&self, rec: &ResourceRecord) -> Result<Task, String> {
        let spec = match &rec.task {
            Some(v) => {
                serde_json::from_value::<TaskSpec>(v.clone()).map_err(|e| format!("inline task: {e}"))?
            }
            None => self
                .0
                .tasks
                .get(&rec.name)
                .cloned()
                .ok_or_else(|| format!("no task named {:?} in this worker's config", rec.name))?,
        };
        Task::compile(spec).map_err(|e| e.to_string())
    }

    /// Stops every crawl, gracefully (`drain`: what is in flight is finished and committed) or
    /// at once, and waits until what they committed is stored.
    pub async fn stop_all(&self, drain: bool) {
        let mut running = self.0.running.lock().await;
        // Shares waiting for a release wait anew once assigned again (after a lost lease).
        self.0.waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let how = if drain { Stop::Drain } else { Stop::Abandon };
        // All at once: each may wait for its requests in flight.
        let mut stops = tokio::task::JoinSet::new();
        for (name, r) in std::mem::take(&mut *running) {
            stops.spawn(async move {
                stop(&name, r, how).await;
            });
        }
        self.relist(&running);
        while stops.join_next().await.is_some() {}
        drop(running);
        // What they committed is stored before a run is opened here again (after a lost
        // lease, at once and at the same epoch): the open would otherwise take their last
        // pages for unfetched ones, and their late commits would be taken for the new crawl's.
        self.flush().await;
    }

    /// Waits until everything the crawls handed to the writer is stored.
    pub async fn flush(&self) {
        if let Err(e) = self.commits().flush().await {
            tracing::error!(error = %e, "cannot flush the writer");
        }
    }

    /// One crawl's figures with its recent failures and items.
    pub async fn detail(&self, name: &str) -> Option<TaskDetail> {
        let listed = self.listed();
        let (_, crawl, parts) = listed.iter().find(|(n, _, _)| n == name)?;
        Some(TaskDetail {
            status: status(name, crawl.stats(), crawl, parts.as_ref()),
            recent: crawl.recent(),
        })
    }

    /// The crawls and their figures.
    pub async fn statuses(&self) -> Vec<TaskStatus> {
        let listed = self.listed();
        listed.iter().map(|(name, c, parts)| status(name, c.stats(), c, parts.as_ref())).collect()
    }

    /// The crawls as of now, or, while a reconcile holds them (stopping crawls, opening runs:
    /// seconds, more with the database down), as of the last look (their figures are live
    /// either way), so `/tasks` and `/metrics` answer at once.
    fn listed(&self) -> Vec<Listed> {
        if let Ok(running) = self.0.running.try_lock() {
            self.relist(&running);
        }
        self.0.listed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A crawl as `/tasks` lists it: its resource's name, the crawl, a split task's partitions.
type Listed = (String, Crawl, Option<Vec<(u32, i64)>>);

fn status(name: &str, s: CrawlStats, c: &Crawl, parts: Option<&Vec<(u32, i64)>>) -> TaskStatus {
    TaskStatus {
        name: name.to_owned(),
        pages: s.pages,
        items: s.items,
        errors: s.errors,
        queued: s.queued + s.in_flight,
        started_at: rfc3339(c.started_at()),
        finished: c.is_finished(),
        fetch_ms: if s.fetches == 0 { 0.0 } else { s.fetch_micros as f64 / s.fetches as f64 / 1000.0 },
        partitions: parts.map(|parts| {
            let queued: HashMap<u32, u64> = c.part_queues().into_iter().collect();
            parts
                .iter()
                .map(|(part, _)| PartitionStatus {
                    part: *part,
                    queued: queued.get(part).copied().unwrap_or(0),
                })
                .collect()
        }),
    }
}

/// A crawl that ended without completing and without being fenced: it stopped on an error
/// (the database unreachable for a moment, the writer failing). Started again by the next
/// reconcile, so a split run's partitions are never left without a running owner.
fn broke_off(c: &Crawl) -> bool {
    c.is_finished() && !c.completed() && !c.is_fenced()
}

/// Per-resource backoff: how often something failed (or was done again) in a row, and when
/// it may next be tried: `first` after the first time, doubling, at most `cap`.
struct Backoffs(std::sync::Mutex<HashMap<String, (u32, std::time::Instant)>>, Duration, Duration);

impl Backoffs {
    fn new(first: Duration, cap: Duration) -> Backoffs {
        Backoffs(std::sync::Mutex::new(HashMap::new()), first, cap)
    }

    fn tries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, std::time::Instant)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `name` may be tried at `now`.
    fn ready(&self, name: &str, now: std::time::Instant) -> bool {
        self.tries().get(name).is_none_or(|(_, next)| *next <= now)
    }

    /// Notes one more time of `name` at `now`; how many in a row.
    fn note(&self, name: &str, now: std::time::Instant) -> u32 {
        let mut tries = self.tries();
        let (count, next) = tries.entry(name.to_owned()).or_insert((0, now));
        *count += 1;
        *next = now + self.1.saturating_mul(1 << (*count - 1).min(16)).min(self.2);
        *count
    }

    fn forget(&self, name: &str) {
        self.tries().remove(name);
    }

    fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.tries().retain(|name, _| keep(name));
    }
}

/// Whether the partition owner `owner` (`ID#LEASE` with the lease in hex, or `ID` alone as
/// earlier versions named owners) is not in `registry`: its id is not registered, or is under
/// another lease. An id may hold `#` itself: the lease is after the last one.
fn owner_gone(owner: &str, registry: &Snapshot) -> bool {
    if registry.entries.contains_key(owner) {
        return false; // an owner named by its id alone, registered
    }
    let Some((id, lease)) = owner.rsplit_once('#') else { return true };
    match (registry.entries.get(id), i64::from_str_radix(lease, 16)) {
        (Some(e), Ok(lease)) => lease != e.lease,
        _ => true,
    }
}

/// What starting a resource came to.
enum Started {
    /// Its crawl (none without a task; one that ends at once for a run that is over) and
    /// stored run.
    Running(Option<Crawl>, Option<i64>),
    /// A split task's share waits for a partition's release.
    Waiting,
}

/// A share waiting for a previous owner to release a partition.
struct Waiting {
    resource_id: String,
    parts: Vec<(u32, i64)>,
    /// The first try.
    since: std::time::Instant,
    left: Left,
    /// Busy partitions (tried again soon), not a failed try (tried at the usual pace).
    busy: bool,
}

/// What a stopped crawl leaves to the next share of its task here.
#[derive(Default)]
struct Left {
    /// When it sent its last rate-limited requests.
    request_starts: Vec<std::time::Instant>,
    /// The robots.txt files it read.
    robots: crawler_engine::RobotsRead,
}

async fn stop(name: &str, r: Running, how: Stop) -> Left {
    let Some(crawl) = r.crawl else { return Left::default() };
    match how {
        Stop::Drain => crawl.drain(),
        Stop::Abandon => crawl.cancel(),
    }
    if how == Stop::Drain && tokio::time::timeout(STOP_TIMEOUT, crawl.join()).await.is_err() {
        tracing::warn!(resource = %name, "requests in flight did not finish in time; abandoning them");
        crawl.cancel();
    }
    // Never returns before the crawl has ended: a new copy of it (the same share started again
    // after a re-balance) must not run beside the old one.
    loop {
        match tokio::time::timeout(STOP_TIMEOUT, crawl.join()).await {
            Ok(s) => {
                tracing::info!(resource = %name, pages = s.pages, items = s.items, "crawl stopped");
                return Left { request_starts: crawl.request_starts(), robots: crawl.robots_read() };
            }
            Err(_) => tracing::warn!(resource = %name, "crawl has not stopped yet; waiting"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crawler_coord::Entry;
    use crawler_engine::{EngineConfig, SinkWriter};
    use serde_json::json;

    fn snapshot(records: &[(&str, &str, &str, Option<serde_json::Value>)]) -> Snapshot {
        let mut s = Snapshot { revision: 1, ..Snapshot::default() };
        for (name, id, node, task) in records {
            let rec = ResourceRecord {
                id: (*id).into(),
                name: (*name).into(),
                assigned_node: (*node).into(),
                creation_time: 0,
                task: task.clone(),
                partitions: None,
                create_revision: 0,
            };
            let entry = Entry {
                value: serde_json::to_vec(&rec).unwrap(),
                create_revision: 1,
                mod_revision: 1,
                lease: 0,
            };
            s.entries.insert((*name).into(), entry);
        }
        s
    }

    /// A task whose only seed is a closed loopback port: it starts, fails fast, finishes.
    fn inline() -> Option<serde_json::Value> {
        Some(json!({"name": "x", "seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a"}]}))
    }

    async fn runner() -> (Runner, SinkWriter) {
        runner_with(None).await
    }

    async fn runner_with(state: Option<Arc<dyn StateStore>>) -> (Runner, SinkWriter) {
        let writer = SinkWriter::spawn(Vec::new(), 10, Duration::from_millis(10));
        (runner_on(state, &writer), writer)
    }

    /// A runner whose crawls commit to `writer`.
    fn runner_on(state: Option<Arc<dyn StateStore>>, writer: &SinkWriter) -> Runner {
        let cfg = EngineConfig { obey_robots: false, retries: 0, ..EngineConfig::default() };
        let known: TaskSpec = serde_json::from_value(
            json!({"name": "known", "seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a"}]}),
        )
        .unwrap();
        Runner::new("w1".into(), vec![known], Arc::new(Fetcher::new(cfg).unwrap()), writer.sender(), state)
    }

    /// A sink whose writes take 300 ms, counting the writes begun and those ended.
    #[derive(Clone, Default)]
    struct SlowSink(Arc<(AtomicU64, AtomicU64)>);

    impl crawler_engine::Sink for SlowSink {
        fn write(&mut self, _: &[crawler_engine::Commit]) -> Result<(), crawler_engine::SinkError> {
            self.0 .0.fetch_add(1, Relaxed);
            std::thread::sleep(Duration::from_millis(300));
            self.0 .1.fetch_add(1, Relaxed);
            Ok(())
        }
    }

    #[tokio::test]
    async fn stopping_every_crawl_waits_until_what_they_committed_is_stored() {
        // After a lost lease the worker stops its crawls and may open their runs again at
        // once, at the same epoch: commits of the stopped crawls still on their way would
        // then be taken for the new crawl's (its first pages fetched again, its new rows
        // dropped as already there).
        let slow = SlowSink::default();
        let writer = SinkWriter::spawn(vec![Box::new(slow.clone())], 10, Duration::from_millis(10));
        let r = runner_on(Some(Arc::new(Held::default())), &writer);
        r.reconcile(&snapshot(&[("known", "id2", "w1", None)])).await;
        let started = std::time::Instant::now();
        while slow.0 .0.load(Relaxed) == 0 {
            assert!(started.elapsed() < Duration::from_secs(10), "the crawl committed nothing");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        r.stop_all(false).await;
        let (begun, ended) = (slow.0 .0.load(Relaxed), slow.0 .1.load(Relaxed));
        assert_eq!(begun, ended, "a write was still under way when every crawl had stopped");
    }

    /// A state store whose split run's partitions another live worker holds until `released`
    /// (then the run is over); a plain run opens as new.
    #[derive(Default)]
    struct Held {
        released: AtomicBool,
        tries: AtomicU64,
        /// `open_run` and `open_parts` fail (the database is down); `open_run` counts its calls.
        down: AtomicBool,
        opens: AtomicU64,
        /// How long `open_run` takes, in milliseconds.
        open_ms: AtomicU64,
    }

    impl StateStore for Held {
        fn open_run(
            &self,
            _: &str,
            _: &str,
            _: Epoch,
            _: bool,
            _: usize,
        ) -> Result<crawler_engine::OpenedRun, crawler_engine::SinkError> {
            self.opens.fetch_add(1, Relaxed);
            std::thread::sleep(Duration::from_millis(self.open_ms.load(Relaxed)));
            if self.down.load(Relaxed) {
                return Err(crawler_engine::SinkError { sink: "state", message: "down".into() });
            }
            Ok(crawler_engine::OpenedRun { id: 1, epoch: 1, ..Default::default() })
        }

        fn end_run(&self, _: i64) -> Result<(), crawler_engine::SinkError> {
            Ok(())
        }

        fn newest_run(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<crawler_engine::StoredRun>, crawler_engine::SinkError> {
            Ok(None)
        }

        fn adopt_label(&self, _: &str, _: &str, _: &str, _: &str) -> Result<bool, crawler_engine::SinkError> {
            Ok(false)
        }

        fn running_runs(&self) -> Result<Vec<(i64, String, String)>, crawler_engine::SinkError> {
            Ok(Vec::new())
        }

        fn open_parts(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &[(u32, i64)],
            _: &dyn Fn(&str) -> bool,
            force: bool,
            _: usize,
        ) -> Result<PartsOpen, crawler_engine::SinkError> {
            self.tries.fetch_add(1, Relaxed);
            if self.down.load(Relaxed) {
                return Err(crawler_engine::SinkError { sink: "state", message: "down".into() });
            }
            if self.released.load(Relaxed) || force {
                Ok(PartsOpen::Over)
            } else {
                Ok(PartsOpen::Busy { part: 0, owner: "w2".into() })
            }
        }
    }

    #[tokio::test]
    async fn a_run_that_cannot_be_opened_is_tried_again_after_a_backoff() {
        let held = Arc::new(Held { down: AtomicBool::new(true), ..Held::default() });
        let (r, _w) = runner_with(Some(held.clone())).await;
        let snap = snapshot(&[("known", "id2", "w1", None)]);
        for _ in 0..5 {
            r.reconcile(&snap).await;
        }
        assert_eq!(held.opens.load(Relaxed), 1, "not again at once");
        assert!(names(&r).await.is_empty());
        tokio::time::sleep(Duration::from_millis(600)).await;
        r.reconcile(&snap).await;
        assert_eq!(held.opens.load(Relaxed), 2, "again after half a second");
        // Back up: the next try after the (now doubled) backoff opens the run.
        held.down.store(false, Relaxed);
        r.reconcile(&snap).await;
        assert_eq!(held.opens.load(Relaxed), 2);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        r.reconcile(&snap).await;
        assert_eq!(names(&r).await, ["known"]);
        assert!(r.0.open_failures.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_backoff_after_a_slow_failure_to_open_counts_from_the_failure() {
        // Each open takes longer than the first backoff (half a second), then fails.
        let held =
            Arc::new(Held { down: AtomicBool::new(true), open_ms: AtomicU64::new(700), ..Held::default() });
        let (r, _w) = runner_with(Some(held.clone())).await;
        let snap = snapshot(&[("known", "id2", "w1", None)]);
        r.reconcile(&snap).await;
        r.reconcile(&snap).await;
        assert_eq!(held.opens.load(Relaxed), 1, "not again right after the slow failure");
        tokio::time::sleep(Duration::from_millis(800)).await;
        r.reconcile(&snap).await;
        assert_eq!(held.opens.load(Relaxed), 2, "again once the backoff is over");
    }

    #[tokio::test]
    async fn backoffs_end_with_an_answer_from_the_database_or_with_the_resource() {
        let held = Arc::new(Held { down: AtomicBool::new(true), ..Held::default() });
        let (r, _w) = runner_with(Some(held.clone())).await;
        // A split share's partitions cannot be opened: a failure is counted.
        let snap = with_split(snapshot(&[]), "split");
        r.reconcile(&snap).await;
        assert_eq!(r.0.open_failures.0.lock().unwrap().get("split").map(|f| f.0), Some(1));
        // The database answers that another worker holds them: the failures are over.
        held.down.store(false, Relaxed);
        tokio::time::sleep(Duration::from_millis(600)).await;
        r.reconcile(&snap).await;
        assert!(r.waiting_for_release());
        assert!(r.0.open_failures.0.lock().unwrap().is_empty());
        // Failing again, it starts from the first backoff, not a doubled one.
        held.down.store(true, Relaxed);
        r.reconcile(&snap).await;
        assert_eq!(r.0.open_failures.0.lock().unwrap().get("split").map(|f| f.0), Some(1));
        // The restarts of a crawl that broke off are forgotten with its resource, as are the
        // failures to open one.
        assert!(r.may_restart("split"));
        assert!(r.0.restarts.0.lock().unwrap().contains_key("split"));
        r.reconcile(&snapshot(&[])).await;
        assert!(r.0.restarts.0.lock().unwrap().is_empty());
        assert!(r.0.open_failures.0.lock().unwrap().is_empty());
    }

    /// `snapshot` with a split resource `name` whose two partitions are both w1's.
    fn with_split(snap: Snapshot, name: &str) -> Snapshot {
        with_split_task(snap, name, inline())
    }

    fn with_split_task(mut snap: Snapshot, name: &str, task: Option<serde_json::Value>) -> Snapshot {
        let rec = ResourceRecord {
            id: format!("{name}-id"),
            name: name.into(),
            assigned_node: String::new(),
            creation_time: 0,
            task,
            partitions: Some(crawler_coord::Partitions {
                home: 0,
                owners: vec!["w1".into(), "w1".into()],
                epochs: vec![3, 3],
            }),
            create_revision: 0,
        };
        let value = serde_json::to_vec(&rec).unwrap();
        snap.entries.insert(name.into(), Entry { value, create_revision: 3, mod_revision: 3, lease: 0 });
        snap
    }

    #[tokio::test]
    async fn a_share_waiting_for_a_release_holds_up_no_other_resource() {
        let held = Arc::new(Held::default());
        let (r, _w) = runner_with(Some(held.clone())).await;
        let quick = Duration::from_secs(2);
        // The share's partitions are held elsewhere: the reconcile returns at once, without it.
        let snap = with_split(snapshot(&[]), "split");
        tokio::time::timeout(quick, r.reconcile(&snap)).await.expect("the reconcile does not wait");
        assert!(names(&r).await.is_empty());
        assert!(r.waiting_for_release());
        // Meanwhile another resource assigned here starts.
        let snap = with_split(snapshot(&[("known", "id2", "w1", None)]), "split");
        tokio::time::timeout(quick, r.reconcile(&snap)).await.expect("the reconcile does not wait");
        assert_eq!(names(&r).await, ["known"]);
        assert_eq!(held.tries.load(Relaxed), 2, "the share tried again");
        // Released: the next reconcile starts the share (here: finds its run over).
        held.released.store(true, Relaxed);
        r.reconcile(&snap).await;
        assert_eq!(names(&r).await, ["known", "split"]);
        assert!(!r.waiting_for_release());
        // A waiting share whose resource goes away is forgotten.
        held.released.store(false, Relaxed);
        r.reconcile(&with_split(snapshot(&[]), "other")).await;
        assert!(r.waiting_for_release());
        r.reconcile(&snapshot(&[])).await;
        assert!(!r.waiting_for_release());
        // So is one whose record changes to a task this worker cannot run (it is recorded as
        // running nothing; nothing waits any more).
        r.reconcile(&with_split(snapshot(&[]), "other")).await;
        assert!(r.waiting_for_release());
        r.reconcile(&with_split_task(snapshot(&[]), "other", Some(json!({"name": "bad"})))).await;
        assert_eq!(names(&r).await, ["other"]);
        r.reconcile(&with_split_task(snapshot(&[]), "other", Some(json!({"name": "bad"})))).await;
        assert!(!r.waiting_for_release());
    }

    async fn names(r: &Runner) -> Vec<String> {
        r.0.running.lock().await.keys().cloned().collect()
    }

    #[tokio::test]
    async fn runs_only_what_is_assigned_here_once_and_follows_changes() {
        let (r, _w) = runner().await;
        // Resources that existed before the worker started, one of them for another worker.
        let snap = snapshot(&[
            ("x", "id1", "w1", inline()),
            ("known", "id2", "w1", None),
            ("other", "id3", "w2", inline()),
        ]);
        r.reconcile(&snap).await;
        assert_eq!(names(&r).await, ["known", "x"]);
        // The same state again (a repeated or modified event) starts no second copy.
        let first_id = r.0.running.lock().await["x"].resource_id.clone();
        r.reconcile(&snap).await;
        assert_eq!(names(&r).await, ["known", "x"]);
        assert_eq!(r.0.running.lock().await["x"].resource_id, first_id);
        // Moved elsewhere, deleted, re-added with a new id.
        r.reconcile(&snapshot(&[("x", "id9", "w1", inline()), ("known", "id2", "w2", None)])).await;
        assert_eq!(names(&r).await, ["x"]);
        assert_eq!(r.0.running.lock().await["x"].resource_id, "id9@1");
        r.reconcile(&snapshot(&[])).await;
        assert!(names(&r).await.is_empty());
    }

    #[tokio::test]
    async fn a_partition_owner_restarted_under_the_same_id_is_gone() {
        let mut registry = Snapshot::default();
        let entry = |lease| Entry { value: b"{}".to_vec(), create_revision: 1, mod_revision: 1, lease };
        registry.entries.insert("w1".into(), entry(0x7f3a));
        assert!(!owner_gone("w1#7f3a", &registry), "the live process");
        assert!(owner_gone("w1#7f39", &registry), "an earlier process of w1");
        assert!(!owner_gone("w1", &registry), "an owner named by id alone: live while w1 is");
        assert!(owner_gone("w2#7f3a", &registry) && owner_gone("w2", &registry), "not registered");
        // An id holding `#` itself.
        registry.entries.insert("a#b".into(), entry(0x10));
        assert!(!owner_gone("a#b#10", &registry) && !owner_gone("a#b", &registry));
        assert!(owner_gone("a#b#11", &registry));
        let (r, _w) = runner().await;
        assert_eq!(r.owner(), "w1", "before it registered");
        r.set_lease(0x7f3a);
        assert_eq!(r.owner(), "w1#7f3a");
    }

    #[tokio::test]
    async fn decodes_a_record_once_per_change_and_counts_unreadable_ones() {
        let (r, _w) = runner().await;
        let mut snap = snapshot(&[("known", "id2", "w1", None)]);
        let bad = Entry { value: b"{not json".to_vec(), create_revision: 2, mod_revision: 2, lease: 0 };
        snap.entries.insert("bad".into(), bad);
        r.reconcile(&snap).await;
        assert_eq!(names(&r).await, ["known"]);
        assert_eq!(r.unreadable_resources(), 1);
        r.reconcile(&snap).await;
        assert_eq!(r.unreadable_resources(), 1, "still one, not one more per reconcile");
        // The bad record mended (a new value under the same name): read and run.
        let mended = snapshot(&[("known", "id2", "w1", None), ("bad", "id5", "w1", inline())]);
        r.reconcile(&mended).await;
        assert_eq!(r.unreadable_resources(), 0);
        assert_eq!(names(&r).await, ["bad", "known"]);
        // Unreadable again while it runs: it goes on (the same crawl), and goes on once mended.
        let started = r.0.running.lock().await["bad"].crawl.as_ref().unwrap().started_at();
        let mut broken = mended.clone();
        broken.entries.get_mut("bad").unwrap().value = b"{broken".to_vec();
        r.reconcile(&broken).await;
        assert_eq!(names(&r).await, ["bad", "known"]);
        r.reconcile(&mended).await;
        assert_eq!(r.0.running.lock().await["bad"].crawl.as_ref().unwrap().started_at(), started);
        // A changed record is read again even at the same revision: moved away, it stops here.
        r.reconcile(&snapshot(&[("known", "id2", "w1", None), ("bad", "id5", "w2", inline())])).await;
        assert_eq!(names(&r).await, ["known"]);
        // A deleted record is forgotten.
        r.reconcile(&snapshot(&[])).await;
        assert!(r.0.records.lock().unwrap().is_empty());
    }

    /// A store that refuses every batch: its writer stops at the first.
    struct Refusing;

    impl crawler_engine::Sink for Refusing {
        fn write(&mut self, _: &[crawler_engine::Commit]) -> Result<(), crawler_engine::SinkError> {
            Err(crawler_engine::SinkError { sink: "test", message: "refused".into() })
        }
    }

    #[tokio::test]
    async fn a_crawl_that_broke_off_is_restarted_with_a_backoff_and_never_without_a_writer() {
        let (r, _writer) = runner().await;
        assert!(r.may_restart("x"), "the first restart at once");
        assert!(!r.may_restart("x"), "the next one waits (2 s, doubling)");
        assert!(r.may_restart("y"), "per resource");

        // The writer gone (its store failed): nothing could be stored, nothing is restarted.
        let cfg = EngineConfig { obey_robots: false, ..EngineConfig::default() };
        let writer = SinkWriter::spawn(vec![Box::new(Refusing)], 1, Duration::from_millis(1));
        let r = Runner::new("w1".into(), vec![], Arc::new(Fetcher::new(cfg).unwrap()), writer.sender(), None);
        let _ = r.commits().send(crawler_engine::Commit::default()).await;
        for _ in 0..250 {
            if r.commits().is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(r.commits().is_closed(), "the writer stopped");
        assert!(!r.may_restart("z"));
    }

    #[tokio::test]
    async fn an_unknown_or_invalid_task_is_counted_not_fatal() {
        let (r, _w) = runner().await;
        let bad = Some(
            json!({"name": "bad", "seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a", "follow": [{"select": "a", "rule": "nope"}]}]}),
        );
        r.reconcile(&snapshot(&[
            ("mystery", "id1", "w1", None),
            ("bad", "id2", "w1", bad),
            ("x", "id3", "w1", inline()),
        ]))
        .await;
        assert_eq!(r.unknown_tasks(), 2);
        assert_eq!(r.statuses().await.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["x"]);
        // Not retried on every event.
        r.reconcile(&snapshot(&[
            ("mystery", "id1", "w1", None),
            ("bad", "id2", "w1", None),
            ("x", "id3", "w1", inline()),
        ]))
        .await;
        assert_eq!(r.unknown_tasks(), 2);
    }
}
