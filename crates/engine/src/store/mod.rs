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
pub use mysql::{MysqlSink, MysqlState};
pub use sqlite::{SqliteSink, SqliteState};
pub use writer::{CommitSender, SinkWriter};

/// A storage failure. Fatal for the run: items are never dropped silently.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {message}")]
pub struct SinkError {
    /// Which store failed (`sqlite`, `mysql`, `jsonl`, `writer`).
    pub sink: &'static str,
    /// What went wrong.
    pub message: String,
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
    /// Not fetched: robots.txt disallows it, or it redirects out of scope.
    Skipped = 3,
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
    /// Link distance from a seed.
    pub depth: u32,
    /// Index of the rule that handles it.
    pub rule: u32,
    /// That rule's priority.
    pub priority: i32,
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
    stop: CancellationToken,
    fenced: AtomicBool,
}

impl RunHandle {
    /// A handle whose loss of the run cancels `stop`.
    pub fn new(id: i64, epoch: i64, stop: CancellationToken) -> RunHandle {
        RunHandle { id, epoch, stop, fenced: AtomicBool::new(false) }
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
}

/// A destination for commits. Stores with state write every part of a batch or none of it;
/// commits of a fenced run are skipped (and the run's handle is fenced).
pub trait Sink: Send + 'static {
    /// Writes a batch. A `(task, url)` already stored in a table is updated, not duplicated.
    fn write(&mut self, batch: &[Commit]) -> Result<(), SinkError>;
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
    /// Requests already handled (done, failed or skipped): their keys.
    pub handled: Vec<u64>,
    /// Requests waiting, each URL once at its smallest depth.
    pub queued: Vec<QueuedUrl>,
    /// The largest request number used so far (new requests continue after it).
    pub last_seq: u64,
}

impl OpenedRun {
    /// Folds the stored rows of a run into where to start from. A URL found again closer to a
    /// seed has a second row; it counts as handled once any of its rows is.
    pub(crate) fn from_rows(
        id: i64,
        epoch: i64,
        rows: impl IntoIterator<Item = (QueuedUrl, u8)>,
    ) -> OpenedRun {
        let mut run = OpenedRun { id, epoch, resumed: true, ..OpenedRun::default() };
        let mut handled = std::collections::HashSet::new();
        let mut waiting: std::collections::HashMap<u64, QueuedUrl> = std::collections::HashMap::new();
        for (q, status) in rows {
            run.last_seq = run.last_seq.max(q.seq);
            if status != PageStatus::Queued as u8 {
                handled.insert(q.key);
                continue;
            }
            match waiting.get(&q.key) {
                Some(w) if (w.depth, w.seq) <= (q.depth, q.seq) => {}
                _ => {
                    waiting.insert(q.key, q);
                }
            }
        }
        run.queued = waiting.into_values().filter(|q| !handled.contains(&q.key)).collect();
        run.queued.sort_unstable_by_key(|q| q.seq);
        run.handled = handled.into_iter().collect();
        run
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

/// The run bookkeeping of a store: find or create the run of a task, resume it, start it over.
pub trait StateStore: Send + Sync {
    /// Opens the unfinished run of `task` under `label` (resuming it), or starts a new one.
    /// With `fresh`, the label's earlier state is discarded first.
    fn open_run(&self, task: &str, label: &str, epoch: Epoch, fresh: bool) -> Result<OpenedRun, SinkError>;

    /// Ends a run for good (its task was deleted) and drops its frontier.
    fn end_run(&self, id: i64) -> Result<(), SinkError>;
}

/// The `crawler_runs.state` values.
pub(crate) const RUNNING: &str = "running";
pub(crate) const FINISHED: &str = "finished";

/// A u64 key stored in a signed 64-bit column.
pub(crate) fn key_col(key: u64) -> i64 {
    key as i64
}
