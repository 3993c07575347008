//! The state a crawl's dispatcher and jobs share, and its counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use reqwest::header::HeaderValue;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::politeness::Politeness;
use super::recent::RecentLog;
use crate::fetch::Fetcher;
use crate::limiter::RateLimiter;
use crate::spec::Task;
use crate::store::{CommitSender, RunHandle};

/// Live counters of one crawl.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) pages: AtomicU64,
    pub(super) items: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) queued: AtomicU64,
    pub(super) in_flight: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) robots_blocked: AtomicU64,
    pub(super) fetch_micros: AtomicU64,
    pub(super) fetches: AtomicU64,
    /// Dispatched requests a drain left to the run's next owner before they were tried (or
    /// tried again): pages of a shared budget this share did not use.
    pub(super) left_for_later: AtomicU64,
}

/// A snapshot of a crawl's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CrawlStats {
    /// HTTP responses received (retries and redirects included).
    pub pages: u64,
    /// Items handed to the sinks.
    pub items: u64,
    /// Requests that failed for good, pages that could not be handled.
    pub errors: u64,
    /// Requests waiting in the frontier.
    pub queued: u64,
    /// Requests being fetched or handled.
    pub in_flight: u64,
    /// Retries made.
    pub retries: u64,
    /// Requests skipped because robots.txt disallows them.
    pub robots_blocked: u64,
    /// Sum of fetch latencies in microseconds (for averages).
    pub fetch_micros: u64,
    /// Fetches timed.
    pub fetches: u64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> CrawlStats {
        CrawlStats {
            pages: self.pages.load(Relaxed),
            items: self.items.load(Relaxed),
            errors: self.errors.load(Relaxed),
            queued: self.queued.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            retries: self.retries.load(Relaxed),
            robots_blocked: self.robots_blocked.load(Relaxed),
            fetch_micros: self.fetch_micros.load(Relaxed),
            fetches: self.fetches.load(Relaxed),
        }
    }
}

/// Shared state of one crawl, read by its jobs.
pub(super) struct Ctx {
    pub(super) task: Task,
    pub(super) fetcher: Arc<Fetcher>,
    pub(super) commits: CommitSender,
    /// The stored run, if the crawl has one.
    pub(super) run: Option<Arc<RunHandle>>,
    pub(super) cookie: Option<HeaderValue>,
    pub(super) counters: Counters,
    pub(super) cancel: CancellationToken,
    /// Fired to stop gracefully: finish what is in flight, start nothing new.
    pub(super) drain: CancellationToken,
    /// This crawl's share of a run split across workers.
    pub(super) split: Option<super::Split>,
    /// robots.txt and pace per host.
    pub(super) polite: Politeness,
    /// Why the first request that failed or was skipped did so (for "nothing could be fetched").
    pub(super) first_problem: Mutex<Option<String>>,
    /// Why the crawl stopped on its own before its end (a store it could not read, its writer
    /// gone).
    pub(super) stopped_by: Mutex<Option<String>>,
    /// The last failures and items, for operators.
    pub(super) recent: RecentLog,
    /// Set when the crawl ended because its work was done (not stopped, failed or fenced).
    pub(super) completed: std::sync::atomic::AtomicBool,
    /// A split run: requests waiting per owned partition, as of the last poll.
    pub(super) part_queues: Mutex<Vec<(u32, u64)>>,
    /// The task's rate limits, kept at the moment each try is sent, with the connection slots
    /// held (`None` without limits).
    pub(super) sends: Option<Mutex<RateLimiter>>,
    /// Stored requests sent since the last commit, to be marked in flight with the next.
    pub(super) sent: Mutex<Vec<u64>>,
    /// Stopped at once, the crawl found its writer not taking commits (see `send_commit`):
    /// the rest are dropped without a wait.
    pub(super) writer_stuck: std::sync::atomic::AtomicBool,
}

/// Keeps the first problem of the crawl.
pub(super) fn note_problem(ctx: &Ctx, url: &Url, problem: &dyn std::fmt::Display) {
    let mut first = ctx.first_problem.lock().unwrap_or_else(|p| p.into_inner());
    if first.is_none() {
        *first = Some(format!("{url}: {problem}"));
    }
}
