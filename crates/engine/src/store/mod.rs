//! Where a crawl's results and state go: [`Commit`]s (a handled page's status, its item and the
//! URLs it queued) written by the batching [`SinkWriter`] into [`Sink`]s, and the runs a
//! [`StateStore`] opens, resumes and fences.
//!
//! The SQLite and MySQL stores keep the crawl state (tables `crawler_runs` and
//! `crawler_frontier`) beside the items and write both in one transaction per batch, so after
//! any crash an item is stored exactly when its page is marked done. The JSON-lines sink writes
//! items only. This module is not the scheduler: which URL goes next is the frontier's business.

mod jsonl;
mod mysql;
mod sqlite;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::item::Item;

pub use jsonl::JsonlSink;
pub use mysql::{mysql_url_problem, MysqlSink, MysqlState, DEFAULT_OUTAGE};
pub use sqlite::{SqliteSink, SqliteState};
pub use writer::{CommitSender, PollReply, RefillReply, SinkWriter, TakeReply};

/// What a take of a split run's page budget got ([`Sink::take_pages`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// Pages granted (0: the budget is spent, or the run is over).
    pub granted: u64,
    /// Pages of the budget left after this take.
    pub left: u64,
    /// The run is over (finished or ended).
    pub over: bool,
}

/// A storage failure. Fatal for the run: items are never dropped silently.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {message}")]
pub struct SinkError {
    /// Which store failed (`sqlite`, `mysql`, `jsonl`, `writer`).
    pub sink: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Request numbers (`crawler_frontier.seq`) carry their partition above this many bits, so
/// the owners of different partitions of a run never pick the same number.
pub const PART_SHIFT: u32 = 40;

/// The partition a request number belongs to.
pub fn part_of_seq(seq: u64) -> u32 {
    (seq >> PART_SHIFT) as u32
}

/// What became of a request, as stored in `crawler_frontier.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageStatus {
    /// Waiting to be fetched (also what an in-flight request is after a crash).
    Queued = 0,
    /// Fetched and handled; its item, if any, is stored.
    Done = 1,
    /// Failed for good after its retries.
    Failed = 2,
    /// Not followed: it redirects out of scope (the request was sent).
    Skipped = 3,
    /// Replaced by a later row of the same URL closer to a seed.
    Superseded = 4,
    /// Waiting in the memory of the run's owner: queued, but not to be read back by a refill.
    /// A resumed run turns these back into queued.
    Held = 5,
    /// Sent by the run's owner and not handled yet, as of its last commit. A resumed run turns
    /// these back into queued: what was in flight when a crawl died is fetched again.
    InFlight = 6,
    /// Not sent: robots.txt disallows it (it spends no page of `max_pages`, also when a
    /// resumed run counts what it handled; runs stored before this status mark such requests
    /// skipped).
    Blocked = 7,
}

/// A URL a page queued: a row of `crawler_frontier` with status queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedUrl {
    /// Its number in the run (rows are appended in this order; its status is updated by it).
    pub seq: u64,
    /// The normalized URL's 64-bit dedup key.
    pub key: u64,
    /// The normalized URL.
    pub url: Arc<str>,
    /// Its host as the frontier keys it (`host[:port]`, port only when not the default); refills
    /// ask for a host by this name.
    pub host: Arc<str>,
    /// Its host's partition (0 in a run that is not split).
    pub part: u32,
    /// Link distance from a seed.
    pub depth: u32,
    /// Index of the rule that handles it.
    pub rule: u32,
    /// That rule's priority.
    pub priority: i32,
    /// The earlier row of the same URL this one replaces (found again closer to a seed).
    pub replaces: Option<u64>,
    /// Held in the owner's memory (stored as `held`); otherwise spilled (stored as `queued`),
    /// to be read back by a refill.
    pub held: bool,
    /// Of a partition another worker owns: goes to the shared inbox (`crawler_inbox`, once per
    /// URL), not to the frontier rows.
    pub sent: bool,
}

/// A task run held open by one crawl. A store accepts its commits only while `epoch` is the
/// run's current epoch; once another owner has opened the run with a newer epoch, the commits
/// are refused and the crawl is stopped through `stop`.
#[derive(Debug)]
pub struct RunHandle {
    /// Row id in `crawler_runs`.
    pub id: i64,
    /// The epoch this owner opened the run with.
    pub epoch: i64,
    /// In a split run: the partitions this owner holds and the epoch of each (the run's own
    /// epoch is then not used).
    pub parts: Vec<(u32, i64)>,
    /// In a split run: the owner name the partitions were opened for, when the store keeps
    /// one (a process that took them over at the same epoch, a worker restarted under its id,
    /// is another owner).
    pub owner: Option<String>,
    stop: CancellationToken,
    fenced: AtomicBool,
}

impl RunHandle {
    /// A handle whose loss of the run cancels `stop`.
    pub fn new(id: i64, epoch: i64, stop: CancellationToken) -> RunHandle {
        RunHandle { id, epoch, parts: Vec::new(), owner: None, stop, fenced: AtomicBool::new(false) }
    }

    /// A handle of a split run holding `parts` (partition, epoch).
    pub fn split(id: i64, parts: Vec<(u32, i64)>, stop: CancellationToken) -> RunHandle {
        RunHandle { id, epoch: 0, parts, owner: None, stop, fenced: AtomicBool::new(false) }
    }

    /// The same handle, for partitions opened for `owner` (see [`RunHandle::owner`]).
    pub fn owned_by(self, owner: Option<String>) -> RunHandle {
        RunHandle { owner, ..self }
    }

    /// Whether the run is split across workers.
    pub fn is_split(&self) -> bool {
        !self.parts.is_empty()
    }

    /// Called by a store that found a newer owner: commits of this run are refused from now on.
    pub fn fence(&self) {
        if !self.fenced.swap(true, Relaxed) {
            tracing::warn!(run = self.id, epoch = self.epoch, "run taken over by a newer owner; stopping");
        }
        self.stop.cancel();
    }

    /// Whether a store refused this run's commits.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Relaxed)
    }
}

/// What one step of a crawl stores, atomically: a handled page's status, the item it yielded
/// and the new URLs it queued; or the end of the run.
#[derive(Debug, Default)]
pub struct Commit {
    /// The run this belongs to; `None` for a crawl without stored state (items only).
    pub run: Option<Arc<RunHandle>>,
    /// The handled request's number in the run and its status (`None` for the seeds' commit).
    pub page: Option<(u64, PageStatus)>,
    /// The item the page yielded.
    pub item: Option<Item>,
    /// URLs queued because of this page (or the seeds).
    pub queued: Vec<QueuedUrl>,
    /// The run ended: its frontier is exhausted or its page budget spent.
    pub finished: bool,
    /// Inbox rows taken in (partition, URL key, depth read): deleted with this commit, so a URL
    /// sent here is in the frontier rows or still in the inbox, never lost; a row sent again
    /// closer since it was read (a smaller depth) stays, to be taken in again.
    pub taken: Vec<(u32, u64, u32)>,
    /// A split run's owner lets its partitions go: its held rows become queued and its
    /// partitions are marked released, so the next owner takes them at once.
    pub release: bool,
    /// Requests sent since the previous commit: their rows are marked in flight (unless the
    /// same batch handles them).
    pub sent: Vec<u64>,
    /// With `release`: pages of the split run's shared `max_pages` budget this owner took and
    /// did not use, given back for the other owners.
    pub unused_pages: u64,
}

/// What a poll of a split run's inbox finds.
#[derive(Debug, Default)]
pub struct Polled {
    /// URLs sent to this owner's partitions (up to the limit asked for).
    pub rows: Vec<QueuedUrl>,
    /// Whether any request of the run waits anywhere: queued or held rows, or inbox rows (true
    /// when not asked).
    pub waiting_elsewhere: bool,
    /// Whether the run is over (finished or ended).
    pub over: bool,
}

/// A destination for commits. Stores with state write every part of a batch or none of it;
/// commits of a fenced run are skipped (and the run's handle is fenced).
pub trait Sink: Send + 'static {
    /// Writes a batch. A `(task, url)` already stored in a table is updated, not duplicated.
    fn write(&mut self, batch: &[Commit]) -> Result<(), SinkError>;

    /// Reads back spilled requests of a run: up to `limit` queued rows of `host`, best
    /// `(depth, seq)` first, which become held. Nothing for a fenced run (its handle is
    /// fenced). `None` from a store without crawl state.
    fn refill(
        &mut self,
        _run: &RunHandle,
        _host: &str,
        _limit: usize,
    ) -> Option<Result<Vec<QueuedUrl>, SinkError>> {
        None
    }

    /// Reads the inbox of a split run's partitions held by `run` (see [`Polled`]); with
    /// `census` (the run's partition count), also whether any request waits anywhere (else
    /// that is reported as true). `None` from a store that cannot share a run.
    fn poll(
        &mut self,
        _run: &RunHandle,
        _limit: usize,
        _census: Option<u32>,
    ) -> Option<Result<Polled, SinkError>> {
        None
    }

    /// Takes pages of a split run's `max_pages` budget, which its `share` owners draw from
    /// together: up to `want`, and no more than a `2 x share`-th of what is left (at least one
    /// while any is), so the owners run out at about the same time. None are granted once the
    /// budget is spent or the run is over. `None` from a store that cannot share a run.
    fn take_pages(
        &mut self,
        _run: &RunHandle,
        _want: u64,
        _max: u64,
        _share: u32,
    ) -> Option<Result<Taken, SinkError>> {
        None
    }
}

/// The pages granted from a shared budget of `max` of which `taken` are taken, for an owner
/// among `share` that wants `want` (see [`Sink::take_pages`]).
pub(crate) fn pages_to_grant(want: u64, max: u64, taken: u64, share: u32) -> u64 {
    let left = max.saturating_sub(taken);
    want.min(left.div_ceil(2 * u64::from(share.max(1))).max(1)).min(left)
}

/// A run as opened by a [`StateStore`]: where to start from.
#[derive(Debug, Default)]
pub struct OpenedRun {
    /// Row id in `crawler_runs`.
    pub id: i64,
    /// This owner's epoch.
    pub epoch: i64,
    /// Whether an unfinished run was found and continues.
    pub resumed: bool,
    /// Opened at an [`Epoch::At`] (a cluster's assignment, labelled with the resource id): the
    /// label's run finished before the task came here (it moved off a worker that had finished
    /// it). Nothing is left to crawl, and no new run is started.
    pub over: bool,
    /// A split run's partitions: the owner name they were opened for.
    pub owner: Option<String>,
    /// Resumed in a cluster (opened at an [`Epoch::At`]): the run's previous owner (another
    /// worker, or this one before a restart) may have sent requests just before it stopped.
    pub taken_over: bool,
    /// Keys of the URLs handled (not to be queued again).
    pub seen: Vec<u64>,
    /// Keys and depths of the URLs waiting beyond the window (spilled: queued again only when
    /// found closer to a seed).
    pub spilled_keys: Vec<(u64, u32)>,
    /// The first `window` waiting requests of each host, each URL once.
    pub queued: Vec<QueuedUrl>,
    /// Per host with more waiting than the window: one of its URLs and how many more of its
    /// requests wait in the database.
    pub spilled: Vec<(Arc<str>, u64)>,
    /// Requests handled so far and sent (done, failed or skipped; not those robots.txt
    /// blocked).
    pub handled: u64,
    /// Requests waiting, in all.
    pub waiting: u64,
    /// The largest request number used so far in each partition met (new requests of a
    /// partition continue after its own).
    pub last_seqs: Vec<u64>,
}

/// Why a split run's partitions could not be opened now.
#[derive(Debug)]
pub enum PartsOpen {
    /// Opened: the rows of the partitions.
    Opened(OpenedRun),
    /// A partition is still held by its previous owner, alive and not released yet.
    Busy {
        /// The partition.
        part: u32,
        /// Its owner.
        owner: String,
    },
    /// The run is over (finished, or ended by a delete).
    Over,
}

/// Builds an [`OpenedRun`] from a run's rows, read in two passes: every row's key and status,
/// then the waiting rows in `(host, depth, seq)` order.
pub(crate) struct RunLoader {
    run: OpenedRun,
    window: usize,
    handled: std::collections::HashSet<u64>,
    /// Keys of the handled requests robots.txt kept from being sent.
    blocked: std::collections::HashSet<u64>,
    loaded: std::collections::HashSet<u64>,
    last_seqs: std::collections::HashMap<u32, u64>,
    stale: Vec<u64>,
    host: Option<Arc<str>>,
    in_host: usize,
    last: Option<Arc<str>>,
    beyond: u64,
}

impl RunLoader {
    pub(crate) fn new(id: i64, epoch: i64, window: usize) -> RunLoader {
        RunLoader {
            run: OpenedRun { id, epoch, ..OpenedRun::default() },
            window: window.max(1),
            handled: Default::default(),
            blocked: Default::default(),
            loaded: Default::default(),
            last_seqs: Default::default(),
            stale: Vec::new(),
            host: None,
            in_host: 0,
            last: None,
            beyond: 0,
        }
    }

    /// First pass: any row (held rows already turned back into queued).
    pub(crate) fn status(&mut self, key: u64, seq: u64, status: u8) {
        let last = self.last_seqs.entry(part_of_seq(seq)).or_insert(0);
        *last = (*last).max(seq);
        if status != PageStatus::Queued as u8 && status != PageStatus::Superseded as u8 {
            self.handled.insert(key);
        }
        if status == PageStatus::Blocked as u8 {
            self.blocked.insert(key);
        }
    }

    /// Second pass: a waiting row, in `(host, depth, seq)` order. Returns whether it is held
    /// (in the window), to be stored so.
    pub(crate) fn waiting(&mut self, q: QueuedUrl) -> bool {
        if self.handled.contains(&q.key) || !self.loaded.insert(q.key) {
            // Already handled, or waiting under another row: this row is never to be fetched;
            // marked superseded so that nothing waits for it.
            self.stale.push(q.seq);
            return false;
        }
        self.run.waiting += 1;
        if self.host.as_ref() != Some(&q.host) {
            self.end_host();
            self.host = Some(q.host.clone());
        }
        // The cap a live frontier keeps: full windows until the held requests reach the
        // budget of all hosts, then a few per host.
        let cap = match self.run.queued.len() >= self.window.saturating_mul(crate::frontier::BUDGET_WINDOWS) {
            true => crate::frontier::MIN_HELD.min(self.window),
            false => self.window,
        };
        if self.in_host < cap {
            self.in_host += 1;
            self.last = Some(q.url.clone());
            self.run.queued.push(QueuedUrl { held: true, ..q });
            true
        } else {
            self.beyond += 1;
            self.run.spilled_keys.push((q.key, q.depth));
            false
        }
    }

    /// Rows met in the second pass that are not to be fetched (duplicates of a URL waiting
    /// under another row, or of one handled): to be marked superseded.
    pub(crate) fn take_stale(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.stale)
    }

    fn end_host(&mut self) {
        if let Some(url) = self.last.take() {
            if self.beyond > 0 {
                self.run.spilled.push((url, self.beyond));
            }
        }
        self.in_host = 0;
        self.beyond = 0;
    }

    /// The run as loaded: resumed when it stored anything (a run whose first commit, the
    /// seeds', never landed is started from its seeds).
    pub(crate) fn finish(mut self) -> OpenedRun {
        self.end_host();
        // Every row noted a last number of its partition: none means no row.
        self.run.resumed = !self.last_seqs.is_empty();
        // Handled and sent: what counts against `max_pages`.
        self.run.handled = (self.handled.len() - self.blocked.len()) as u64;
        self.run.seen.extend(self.handled);
        self.run.last_seqs = self.last_seqs.into_values().collect();
        self.run.queued.sort_unstable_by_key(|q| q.seq);
        self.run
    }
}

/// A row of `crawler_runs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRun {
    /// Row id.
    pub id: i64,
    /// `running`, `finished` or `ended`.
    pub state: String,
    /// RFC 3339 UTC, to the second.
    pub started_at: String,
    /// RFC 3339 UTC, to the second; `None` while it runs.
    pub finished_at: Option<String>,
}

impl StoredRun {
    /// Still to be resumed.
    pub fn is_running(&self) -> bool {
        self.state == RUNNING
    }

    /// Finished by its crawl (not ended by a delete).
    pub fn is_finished(&self) -> bool {
        self.state == FINISHED
    }
}

/// How to open a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epoch {
    /// Standalone: take the run over from whoever had it (the previous epoch + 1).
    Next,
    /// Cluster: open with this epoch (e.g. the assignment's etcd revision); refused unless it is
    /// newer than the run's current one, so a stale owner can never take a run back.
    At(i64),
}

impl Epoch {
    /// The epoch of a new run.
    pub(crate) fn first(self) -> i64 {
        match self {
            Epoch::Next => 1,
            Epoch::At(e) => e,
        }
    }

    /// The epoch taking over a run held at `current`; `None` for a stale owner.
    pub(crate) fn after(self, current: i64) -> Option<i64> {
        match self {
            Epoch::Next => Some(current + 1),
            Epoch::At(e) => (e >= current).then_some(e),
        }
    }
}

/// The run bookkeeping of a store: find or create the run of a task, resume it, start it over.
pub trait StateStore: Send + Sync {
    /// Opens the unfinished run of `task` under `label` (resuming it, with up to `window`
    /// waiting requests per host in memory), or starts a new one. With `fresh`, the label's
    /// earlier state is discarded first. At an [`Epoch::At`] a label whose newest run finished
    /// is not started again: the answer is [`OpenedRun::over`].
    fn open_run(
        &self,
        task: &str,
        label: &str,
        epoch: Epoch,
        fresh: bool,
        window: usize,
    ) -> Result<OpenedRun, SinkError>;

    /// Ends a run for good (its task was deleted) and drops its frontier.
    fn end_run(&self, id: i64) -> Result<(), SinkError>;

    /// The newest run of `task` under `label`, as `crawler_runs` has it.
    fn newest_run(&self, task: &str, label: &str) -> Result<Option<StoredRun>, SinkError>;

    /// The runs not finished nor ended, as `(id, task, label)`: a cluster's worker looks for
    /// those whose resource is gone (deleted while no worker ran it), to end them.
    fn running_runs(&self) -> Result<Vec<(i64, String, String)>, SinkError>;

    /// Moves the newest run of `task` under `legacy` that was not ended and started at
    /// `not_before` (RFC 3339) or later to `label`, unless `label` has a run already: a run
    /// stored under an earlier label of the same thing (a cluster run labelled with its
    /// resource id alone, by versions before the label named the add) is found under the new
    /// one, and a run of an earlier add under the same id is not. Whether a run moved.
    fn adopt_label(&self, task: &str, legacy: &str, label: &str, not_before: &str)
        -> Result<bool, SinkError>;

    /// Opens `parts` (partition, epoch) of the split run of `task` under `label` for `owner`,
    /// creating the run if it is new: each partition is taken when it is new, released, held
    /// by `owner` already, or held by an owner `gone` says is gone; else the answer is
    /// [`PartsOpen::Busy`]. `force` takes every partition regardless (a previous owner that
    /// never released). An epoch older than a partition's is refused. The rows of the opened
    /// partitions come back as by `open_run`.
    fn open_parts(
        &self,
        _task: &str,
        _label: &str,
        _owner: &str,
        _parts: &[(u32, i64)],
        _gone: &dyn Fn(&str) -> bool,
        _force: bool,
        _window: usize,
    ) -> Result<PartsOpen, SinkError> {
        Err(SinkError {
            sink: "state",
            message: "a task split into partitions needs a shared MySQL/MariaDB store".into(),
        })
    }
}

/// The label of standalone crawls' runs (`crawler crawl`); a cluster run's is its resource's.
pub const STANDALONE: &str = "standalone";

/// The `crawler_runs.state` values.
pub(crate) const RUNNING: &str = "running";
pub(crate) const FINISHED: &str = "finished";

/// A u64 key stored in a signed 64-bit column.
pub(crate) fn key_col(key: u64) -> i64 {
    key as i64
}
