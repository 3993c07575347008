//! A running crawl of one task: its frontier, rate limiter, robots cache and in-flight
//! requests, driven by one dispatcher task. [`Crawl`] is the handle: stats, `cancel()`, `join()`.
//!
//! The dispatcher owns the frontier (no locks); fetch-and-extract jobs run concurrently and
//! report back through a `JoinSet`, so a panicking job is counted as an error, never a hang.
//! Every handled request becomes one [`Commit`] (its status, its item, the URLs it queued), so
//! a crawl started from a stored run ([`Crawl::resume`]) can be killed at any moment and
//! resumed without losing or repeating a stored page.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderValue;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::charset::decode_html;
use crate::extract::{extract, MAX_DEPTH};
use crate::fetch::{FetchError, Fetched, Fetcher, Throttled, Want};
use crate::frontier::{Admission, Frontier, HostId, Refill, Request};
use crate::item::{rfc3339, Item};
use crate::limiter::RateLimiter;
use crate::robots::{Robots, MAX_ROBOTS_BYTES};
use crate::scope::{host_allowed, resolve_link, url_key};
use crate::sitemap::{self, Sitemap, MAX_SITEMAP_BYTES, MAX_SITEMAP_FILES};

/// Redirect hops followed from one link before it counts as an error.
const MAX_REDIRECTS: usize = 10;
use crate::spec::Task;
use crate::store::{Commit, CommitSender, OpenedRun, PageStatus, QueuedUrl, RefillReply, RunHandle};

/// Live counters of one crawl.
#[derive(Debug, Default)]
struct Counters {
    pages: AtomicU64,
    items: AtomicU64,
    errors: AtomicU64,
    queued: AtomicU64,
    in_flight: AtomicU64,
    retries: AtomicU64,
    robots_blocked: AtomicU64,
    fetch_micros: AtomicU64,
    fetches: AtomicU64,
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
    fn snapshot(&self) -> CrawlStats {
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
struct Ctx {
    task: Task,
    fetcher: Arc<Fetcher>,
    commits: CommitSender,
    /// The stored run, if the crawl has one.
    run: Option<Arc<RunHandle>>,
    cookie: Option<HeaderValue>,
    counters: Counters,
    cancel: CancellationToken,
    /// Hosts that asked us to wait (`Retry-After`), reported by jobs to the dispatcher.
    pauses: mpsc::UnboundedSender<(HostId, Instant)>,
    /// robots.txt per origin; the lock is held while it is read, so a host's requests wait
    /// for one read.
    robots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<HostRobots>>>>>,
    /// The robots.txt per origin once settled (read, or given up on): the lock-free path.
    robots_settled: Mutex<HashMap<String, Arc<Robots>>>,
    /// Pacing per host: its next start, and the interval learned from its 429s.
    paced: Mutex<HashMap<HostId, Pace>>,
    /// Why the first request that failed or was skipped did so (for "nothing could be fetched").
    first_problem: Mutex<Option<String>>,
    /// The last failures and items, for operators.
    recent: Mutex<Recent>,
}

/// How many recent failures and items a crawl keeps.
const RECENT_ERRORS: usize = 20;
const RECENT_ITEMS: usize = 5;
/// Field values of a recent item are cut to this many bytes.
const RECENT_VALUE_BYTES: usize = 200;

/// A recent failure of a crawl.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecentError {
    /// The request's URL.
    pub url: String,
    /// The HTTP status, when the failure was one.
    pub status: Option<u16>,
    /// What went wrong.
    pub reason: String,
    /// When, RFC 3339.
    pub at: String,
}

/// A recent item of a crawl (values cut to 200 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecentItem {
    /// The page's URL.
    pub url: String,
    /// The item's table.
    pub table: String,
    /// Field names and values.
    pub fields: Vec<(String, Option<String>)>,
    /// When, RFC 3339.
    pub at: String,
}

/// The last failures and items of a crawl, newest last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Recent {
    /// Failed requests.
    pub errors: std::collections::VecDeque<RecentError>,
    /// Stored items.
    pub items: std::collections::VecDeque<RecentItem>,
}

/// Handle to a running crawl. Cheap to clone.
#[derive(Clone)]
pub struct Crawl {
    ctx: Arc<Ctx>,
    done: watch::Receiver<bool>,
    started_at: SystemTime,
}

impl Crawl {
    /// Starts crawling a task from its seeds on the current tokio runtime, with no stored
    /// state (only items are committed). The crawl stops when its frontier is exhausted, when
    /// `max_pages` is reached, or when cancelled (directly or through `parent`).
    pub fn start(
        task: Task,
        fetcher: Arc<Fetcher>,
        commits: CommitSender,
        parent: &CancellationToken,
    ) -> Crawl {
        Self::spawn(task, None, fetcher, commits, parent)
    }

    /// Starts or continues a stored run (opened by a [`crate::StateStore`]): a resumed run
    /// skips what it already handled and fetches what was queued; a new one starts from the
    /// seeds. Its state is committed with its items; once another owner takes the run over,
    /// the store refuses its commits and the crawl stops.
    pub fn resume(
        task: Task,
        run: OpenedRun,
        fetcher: Arc<Fetcher>,
        commits: CommitSender,
        parent: &CancellationToken,
    ) -> Crawl {
        Self::spawn(task, Some(run), fetcher, commits, parent)
    }

    fn spawn(
        task: Task,
        run: Option<OpenedRun>,
        fetcher: Arc<Fetcher>,
        commits: CommitSender,
        parent: &CancellationToken,
    ) -> Crawl {
        let cookie = Some(task.0.spec.cookie.as_str())
            .filter(|c| !c.is_empty())
            .and_then(|c| HeaderValue::from_str(c).ok());
        let cancel = parent.child_token();
        let handle = run.as_ref().map(|r| Arc::new(RunHandle::new(r.id, r.epoch, cancel.clone())));
        let (pauses, paused) = mpsc::unbounded_channel();
        let ctx = Arc::new(Ctx {
            task,
            fetcher,
            commits,
            run: handle,
            cookie,
            counters: Counters::default(),
            cancel,
            pauses,
            robots: Mutex::new(HashMap::new()),
            robots_settled: Mutex::new(HashMap::new()),
            paced: Mutex::new(HashMap::new()),
            first_problem: Mutex::new(None),
            recent: Mutex::new(Recent::default()),
        });
        let (done_tx, done) = watch::channel(false);
        let runner = ctx.clone();
        tokio::spawn(async move {
            run_crawl(runner, run, paused).await;
            let _ = done_tx.send(true);
        });
        Crawl { ctx, done, started_at: SystemTime::now() }
    }

    /// The task being crawled.
    pub fn task(&self) -> &Task {
        &self.ctx.task
    }

    /// When the crawl started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// Whether a newer owner took the stored run over (the crawl stopped without finishing).
    pub fn is_fenced(&self) -> bool {
        self.ctx.run.as_ref().is_some_and(|r| r.is_fenced())
    }

    /// Why the first request that failed (or was disallowed by robots.txt) did so, if one did:
    /// the reason to give when a crawl fetched nothing at all.
    pub fn first_problem(&self) -> Option<String> {
        self.ctx.first_problem.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The last failures and items.
    pub fn recent(&self) -> Recent {
        self.ctx.recent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Current counters.
    pub fn stats(&self) -> CrawlStats {
        self.ctx.counters.snapshot()
    }

    /// Asks the crawl to stop: the queue is dropped and in-flight requests are abandoned.
    pub fn cancel(&self) {
        self.ctx.cancel.cancel();
    }

    /// Whether the crawl has ended.
    pub fn is_finished(&self) -> bool {
        *self.done.borrow()
    }

    /// Waits for the crawl to end and returns its final counters.
    pub async fn join(&self) -> CrawlStats {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
        self.stats()
    }
}

/// What a job reports back to the dispatcher about a handled request: what to store and what
/// to queue. A job stopped before its request was handled reports `None`: it stays queued.
struct Handled {
    /// The request's number in the run.
    seq: u64,
    depth: u32,
    status: PageStatus,
    item: Option<Item>,
    links: Vec<(Url, usize)>,
    redirect: Option<Request>,
}

type Outcome = Option<Handled>;

/// A finished job: its id and outcome, or why it did not finish.
type JobResult = Result<(tokio::task::Id, Outcome), tokio::task::JoinError>;

/// The jobs in flight and the host of each.
#[derive(Default)]
struct Jobs {
    set: JoinSet<Outcome>,
    hosts: HashMap<tokio::task::Id, HostId>,
}

async fn run_crawl(
    ctx: Arc<Ctx>,
    stored: Option<OpenedRun>,
    mut paused: mpsc::UnboundedReceiver<(HostId, Instant)>,
) {
    let inner = &ctx.task.0;
    let record = ctx.run.is_some();
    let cfg = ctx.fetcher.config();
    let mut frontier = Frontier::new(inner.spec.max_depth, inner.spec.reload, cfg.per_host);
    if record {
        frontier = frontier.with_window(cfg.queue_window);
    }
    let mut dispatched = 0u64;
    let mut first = Commit { run: ctx.run.clone(), ..Commit::default() };
    match stored {
        Some(run) if run.resumed => {
            dispatched = run.handled;
            for key in run.seen {
                frontier.mark_handled(key);
            }
            frontier.continue_after(run.last_seq);
            for q in run.queued {
                if let Some(req) = stored_request(&ctx, &q) {
                    frontier.restore(req, q.seq);
                }
            }
            for (url, count) in run.spilled {
                if let Ok(url) = Url::parse(&url) {
                    frontier.spilled_before(&url, count);
                }
            }
        }
        _ => {
            for seed in &inner.seeds {
                let req = Request::new(seed.clone(), 0, 0, inner.rules[0].priority);
                first.queued.extend(frontier.offer(req, record).1);
            }
        }
    }
    if !first.queued.is_empty() && ctx.commits.send(first).await.is_err() {
        writer_gone(&ctx);
    }
    // Sitemaps are read beside the crawl; their URLs arrive in batches (bounded, so a huge
    // sitemap waits for the frontier rather than filling memory).
    let (found_tx, mut found) = mpsc::channel::<Vec<Url>>(2);
    let mut discovering = !inner.sitemaps.is_empty() || inner.spec.sitemaps_from_robots;
    let sitemaps = discovering.then(|| tokio::spawn(read_sitemaps(ctx.clone(), found_tx)));
    let mut limiter = RateLimiter::new(&inner.limits);
    let mut jobs = Jobs::default();
    let mut refills: JoinSet<(Refill, Option<RefillReply>)> = JoinSet::new();
    let max_in_flight = ctx.fetcher.config().concurrency;
    let max_pages = inner.spec.max_pages;
    let counters = &ctx.counters;
    loop {
        while let Some(done) = jobs.set.try_join_next_with_id() {
            settle(&ctx, &mut frontier, &mut jobs, done).await;
        }
        while let Ok((host, until)) = paused.try_recv() {
            frontier.pause(host, until);
        }
        while let Some(done) = refills.try_join_next() {
            refilled(&ctx, &mut frontier, done);
        }
        while discovering {
            match found.try_recv() {
                Ok(urls) => queue_found(&ctx, &mut frontier, urls).await,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => discovering = false,
            }
        }
        for refill in frontier.take_refills() {
            ask_refill(&ctx, &mut refills, refill).await;
        }
        counters.queued.store(frontier.len() as u64, Relaxed);
        counters.in_flight.store(jobs.set.len() as u64, Relaxed);
        if ctx.cancel.is_cancelled() {
            break;
        }
        let budget = max_pages == 0 || dispatched < max_pages;
        let room = jobs.set.len() < max_in_flight && budget;
        if room {
            // Only a request whose host can be served now: a busy or paused host never holds
            // a slot another host could use.
            if let Some(req) = frontier.pop(Instant::now()) {
                let now = Instant::now();
                let at = limiter.reserve(now);
                // Even a zero sleep waits for the next timer tick (1 ms): sleep only when limited.
                if at > now {
                    tokio::select! {
                        _ = ctx.cancel.cancelled() => break,
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                dispatched += 1;
                let host = req.host;
                let job = jobs.set.spawn(handle(ctx.clone(), req));
                jobs.hosts.insert(job.id(), host);
                continue;
            }
        }
        if jobs.set.is_empty() && (!budget || (frontier.is_empty() && !discovering)) {
            break;
        }
        let wake = if room { frontier.next_wake() } else { None };
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            Some(done) = jobs.set.join_next_with_id() => settle(&ctx, &mut frontier, &mut jobs, done).await,
            Some((host, until)) = paused.recv() => frontier.pause(host, until),
            Some(done) = refills.join_next() => refilled(&ctx, &mut frontier, done),
            urls = found.recv(), if discovering => match urls {
                Some(urls) => queue_found(&ctx, &mut frontier, urls).await,
                None => discovering = false,
            },
            _ = sleep_until_some(wake) => {}
        }
    }
    if let Some(reader) = sitemaps {
        reader.abort();
    }
    let finished = !ctx.cancel.is_cancelled();
    // Pages already handled are committed; requests still in flight are abandoned and stay
    // queued in the stored run.
    jobs.set.abort_all();
    while let Some(done) = jobs.set.join_next_with_id().await {
        settle(&ctx, &mut frontier, &mut jobs, done).await;
    }
    if finished
        && record
        && ctx
            .commits
            .send(Commit { run: ctx.run.clone(), finished: true, ..Commit::default() })
            .await
            .is_err()
    {
        writer_gone(&ctx);
    }
    counters.queued.store(frontier.len() as u64, Relaxed);
    counters.in_flight.store(0, Relaxed);
    tracing::info!(task = %ctx.task.name(), seen = frontier.seen(), finished, "crawl ended");
}

/// Queues the page URLs a sitemap listed, at depth 0 under the sitemap rule, and commits them.
async fn queue_found(ctx: &Ctx, frontier: &mut Frontier, urls: Vec<Url>) {
    let inner = &ctx.task.0;
    let rule = inner.sitemap_rule;
    let mut commit = Commit { run: ctx.run.clone(), ..Commit::default() };
    for url in urls {
        let req = Request::new(url, 0, rule, inner.rules[rule].priority);
        commit.queued.extend(frontier.offer(req, ctx.run.is_some()).1);
    }
    if !commit.queued.is_empty() && ctx.commits.send(commit).await.is_err() {
        writer_gone(ctx);
    }
}

/// A stored request as the frontier takes it, if it still fits the task.
fn stored_request(ctx: &Ctx, q: &QueuedUrl) -> Option<Request> {
    match (Url::parse(&q.url), ctx.task.0.rules.get(q.rule as usize)) {
        (Ok(url), Some(rule)) => {
            Some(Request { seq: q.seq, ..Request::new(url, q.depth, q.rule as usize, rule.priority) })
        }
        _ => {
            tracing::warn!(task = %ctx.task.name(), url = %q.url, rule = q.rule, "stored url no longer fits the task; dropped");
            None
        }
    }
}

/// Sends a refill to the writer (ordered after every commit sent so far); its answer arrives
/// through `refills`.
async fn ask_refill(ctx: &Ctx, refills: &mut JoinSet<(Refill, Option<RefillReply>)>, refill: Refill) {
    let Some(run) = &ctx.run else { return };
    match ctx.commits.refill(run.clone(), &refill.name, refill.limit).await {
        Ok(answer) => {
            refills.spawn(async move {
                let reply = answer.await.ok();
                (refill, reply)
            });
        }
        Err(_) => writer_gone(ctx),
    }
}

/// Hands the rows a refill read back to the frontier.
fn refilled(
    ctx: &Ctx,
    frontier: &mut Frontier,
    done: Result<(Refill, Option<RefillReply>), tokio::task::JoinError>,
) {
    match done {
        Ok((refill, Some(Ok(rows)))) => {
            let exhausted = rows.len() < refill.limit;
            let reqs = rows.iter().filter_map(|q| stored_request(ctx, q)).collect();
            frontier.refilled(&refill, reqs, exhausted);
        }
        Ok((_, Some(Err(e)))) => {
            ctx.counters.errors.fetch_add(1, Relaxed);
            tracing::error!(task = %ctx.task.name(), error = %e, "cannot read queued requests back; stopping the crawl");
            ctx.cancel.cancel();
        }
        Ok((_, None)) | Err(_) => writer_gone(ctx),
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn writer_gone(ctx: &Ctx) {
    if !ctx.cancel.is_cancelled() {
        ctx.counters.errors.fetch_add(1, Relaxed);
        tracing::error!(task = %ctx.task.name(), "item writer is gone; stopping the crawl");
        ctx.cancel.cancel();
    }
}

/// Applies a finished job's outcome to the frontier and commits it.
async fn settle(ctx: &Ctx, frontier: &mut Frontier, jobs: &mut Jobs, done: JobResult) {
    let id = match &done {
        Ok((id, _)) => *id,
        Err(e) => e.id(),
    };
    if let Some(host) = jobs.hosts.remove(&id) {
        frontier.done(host);
    }
    let done = done.map(|(_, outcome)| outcome);
    let rules = &ctx.task.0.rules;
    let record = ctx.run.is_some();
    let (seq, depth, mut status, item, links, redirect) = match done {
        Ok(Some(Handled { seq, depth, status, item, links, redirect })) => {
            (seq, depth, status, item, links, redirect)
        }
        Ok(None) => return,
        Err(e) => {
            if e.is_panic() {
                ctx.counters.errors.fetch_add(1, Relaxed);
                tracing::error!(task = %ctx.task.name(), "a page handler panicked; counted as an error");
            }
            return;
        }
    };
    let mut commit =
        Commit { run: ctx.run.clone(), page: record.then_some((seq, status)), ..Commit::default() };
    for (url, rule) in links {
        let req = Request::new(url, depth + 1, rule, rules[rule].priority);
        commit.queued.extend(frontier.offer(req, record).1);
    }
    if let Some(req) = redirect {
        let target = url_key(&req.url);
        let problem = if req.redirected_from.contains(&target) {
            Some("redirect loop")
        } else if req.redirected_from.len() > MAX_REDIRECTS {
            Some("too many redirects")
        } else {
            None
        };
        if let Some(problem) = problem {
            ctx.counters.errors.fetch_add(1, Relaxed);
            tracing::warn!(task = %ctx.task.name(), url = %req.url, error = problem, "page failed");
            status = PageStatus::Failed;
            commit.page = record.then_some((seq, status));
        } else {
            let url = req.url.clone();
            let (admission, row) = frontier.offer(req, record);
            if admission == Admission::Seen {
                tracing::debug!(%url, "redirect target already seen");
            }
            commit.queued.extend(row);
        }
    }
    let has_item = item.is_some();
    if let Some(item) = &item {
        note_item(ctx, item);
    }
    commit.item = item;
    if commit.page.is_none() && commit.item.is_none() && commit.queued.is_empty() {
        return;
    }
    if ctx.commits.send(commit).await.is_err() {
        writer_gone(ctx);
    } else if has_item {
        ctx.counters.items.fetch_add(1, Relaxed);
    }
}

/// Fetches one request and extracts from it.
async fn handle(ctx: Arc<Ctx>, req: Request) -> Outcome {
    let counters = &ctx.counters;
    let cfg = ctx.fetcher.config();
    let key = url_key(&req.url);
    let seq = req.seq;
    let depth = req.depth;
    let ended = |status: PageStatus| {
        Some(Handled { seq, depth, status, item: None, links: Vec::new(), redirect: None })
    };
    let robots = match cfg.obey_robots {
        true => Some(robots_for(&ctx, &req.url, Some(req.host)).await?),
        false => None,
    };
    if let Some(robots) = robots.as_ref().filter(|r| !r.allowed(&path_and_query(&req.url))) {
        if ctx.cancel.is_cancelled() {
            return None;
        }
        counters.robots_blocked.fetch_add(1, Relaxed);
        note_problem(&ctx, &req.url, &robots.unavailable_reason().unwrap_or("disallowed by robots.txt"));
        if req.depth == 0 {
            tracing::warn!(task = %ctx.task.name(), url = %req.url, "seed disallowed by robots.txt; skipped");
        } else {
            tracing::debug!(url = %req.url, "disallowed by robots.txt");
        }
        return ended(PageStatus::Skipped);
    }
    let crawl_delay = robots.as_ref().and_then(|r| r.crawl_delay()).filter(|_| cfg.obey_crawl_delay);
    let floor = crawl_delay.map_or(Duration::ZERO, |d| d.min(cfg.max_crawl_delay.0));
    let interval = pace_interval(&ctx, req.host, floor);
    if !interval.is_zero() && !wait_turn(&ctx, req.host, interval).await {
        return None;
    }
    let wait = ctx.task.0.spec.wait.0;
    if !wait.is_zero() {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return None,
            _ = tokio::time::sleep(wait.mul_f64(fastrand::f64())) => {}
        }
    }
    let started = Instant::now();
    let host = req.host;
    let throttle = HostThrottle { ctx: &ctx, host, floor };
    let report =
        ctx.fetcher.fetch_paced(&req.url, ctx.cookie.as_ref(), Want::Html, &ctx.cancel, &throttle).await;
    if report.result.is_ok() {
        paced_ok(&ctx, host);
    }
    counters.pages.fetch_add(u64::from(report.responses), Relaxed);
    counters.retries.fetch_add(u64::from(report.tries.saturating_sub(1)), Relaxed);
    counters.fetch_micros.fetch_add(started.elapsed().as_micros() as u64, Relaxed);
    counters.fetches.fetch_add(1, Relaxed);
    let fail = |error: &dyn std::fmt::Display| {
        counters.errors.fetch_add(1, Relaxed);
        note_problem(&ctx, &req.url, error);
        note_error(&ctx, &req.url, None, error);
        tracing::warn!(task = %ctx.task.name(), url = %req.url, %error, "page failed");
        ended(PageStatus::Failed)
    };
    let (content_type, body) = match report.result {
        Err(FetchError::Cancelled) => return None,
        Err(FetchError::Status(code)) => {
            counters.errors.fetch_add(1, Relaxed);
            let e = FetchError::Status(code);
            note_problem(&ctx, &req.url, &e);
            note_error(&ctx, &req.url, Some(code), &e);
            tracing::warn!(task = %ctx.task.name(), url = %req.url, error = %e, "page failed");
            return ended(PageStatus::Failed);
        }
        Err(e) => return fail(&e),
        Ok(Fetched::NotHtml { content_type }) => return fail(&format!("not html: {content_type}")),
        Ok(Fetched::Redirect { location, .. }) => {
            return match resolve_link(&req.url, &location) {
                Some(url) if host_allowed(&url, &ctx.task.0.allow_hosts) => {
                    let mut redirected_from = req.redirected_from;
                    redirected_from.push(key);
                    Some(Handled {
                        seq,
                        depth,
                        status: PageStatus::Done,
                        item: None,
                        links: Vec::new(),
                        redirect: Some(Request { url, redirected_from, ..req }),
                    })
                }
                Some(url) => {
                    tracing::debug!(from = %req.url, to = %url, "redirect out of scope");
                    ended(PageStatus::Skipped)
                }
                None => fail(&format!("bad redirect location {location:?}")),
            };
        }
        Ok(Fetched::Body { content_type, body, .. }) => (content_type, body),
    };
    let received = SystemTime::now();
    let html = decode_html(&body, content_type.as_deref());
    let rule = &ctx.task.0.rules[req.rule];
    let extracted = match extract(rule, &html, &req.url, &ctx.task.0.allow_hosts) {
        Ok(x) => x,
        Err(e) => return fail(&e),
    };
    if let Some(at) = extracted.cut_at {
        tracing::warn!(task = %ctx.task.name(), url = %req.url, at, "page nests deeper than {MAX_DEPTH} elements; read up to byte {at}");
    }
    drop(html);
    let item = match (extracted.fields, &rule.table) {
        (Some(fields), Some(table)) => Some(Item {
            task: ctx.task.0.name.clone(),
            table: table.clone(),
            url: req.url.to_string(),
            crawled_at: rfc3339(received),
            fields,
        }),
        _ => None,
    };
    Some(Handled { seq, depth, status: PageStatus::Done, item, links: extracted.links, redirect: None })
}

/// Keeps a failure among the recent ones.
fn note_error(ctx: &Ctx, url: &Url, status: Option<u16>, reason: &dyn std::fmt::Display) {
    let mut recent = ctx.recent.lock().unwrap_or_else(|p| p.into_inner());
    if recent.errors.len() == RECENT_ERRORS {
        recent.errors.pop_front();
    }
    let at = rfc3339(SystemTime::now());
    recent.errors.push_back(RecentError { url: url.to_string(), status, reason: reason.to_string(), at });
}

/// Keeps an item among the recent ones (values cut).
fn note_item(ctx: &Ctx, item: &Item) {
    let cut = |v: &str| {
        let mut end = v.len().min(RECENT_VALUE_BYTES);
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        v[..end].to_owned()
    };
    let fields = item.fields.iter().map(|(k, v)| (k.to_string(), v.as_deref().map(cut))).collect();
    let mut recent = ctx.recent.lock().unwrap_or_else(|p| p.into_inner());
    if recent.items.len() == RECENT_ITEMS {
        recent.items.pop_front();
    }
    let at = item.crawled_at.clone();
    recent.items.push_back(RecentItem { url: item.url.clone(), table: item.table.to_string(), fields, at });
}

/// Keeps the first problem of the crawl.
fn note_problem(ctx: &Ctx, url: &Url, problem: &dyn std::fmt::Display) {
    let mut first = ctx.first_problem.lock().unwrap_or_else(|p| p.into_inner());
    if first.is_none() {
        *first = Some(format!("{url}: {problem}"));
    }
}

fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Reads of an unavailable robots.txt before its host's URLs are skipped.
const ROBOTS_READS: u32 = 3;

/// A host's robots.txt as read, and how often it was tried.
struct HostRobots {
    robots: Arc<Robots>,
    read_at: Instant,
    reads: u32,
}

/// The robots.txt rules for a URL's origin, read once per crawl. One that could not be read
/// (5xx, unreachable) is read again after `robots_retry`, up to [`ROBOTS_READS`] reads; until
/// then the host is paused (`host`) and its requests wait; after them everything is disallowed.
async fn robots_for(ctx: &Ctx, url: &Url, host: Option<HostId>) -> Option<Arc<Robots>> {
    let origin = url.origin().ascii_serialization();
    if let Some(r) = ctx.robots_settled.lock().unwrap_or_else(|p| p.into_inner()).get(&origin) {
        return Some(r.clone());
    }
    let cell = {
        let mut map = ctx.robots.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(origin.clone()).or_default().clone()
    };
    let mut slot = cell.lock().await;
    let retry = ctx.fetcher.config().robots_retry.0;
    loop {
        let reads = match &*slot {
            Some(h) if h.robots.unavailable_reason().is_none() || h.reads >= ROBOTS_READS => {
                let mut settled = ctx.robots_settled.lock().unwrap_or_else(|p| p.into_inner());
                settled.insert(origin, h.robots.clone());
                return Some(h.robots.clone());
            }
            Some(h) => {
                let at = h.read_at + retry;
                if let Some(host) = host {
                    let _ = ctx.pauses.send((host, at));
                }
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return None,
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
                h.reads
            }
            None => 0,
        };
        let robots = fetch_robots(ctx, &origin).await?;
        if let Some(why) = robots.unavailable_reason() {
            let last = reads + 1 >= ROBOTS_READS;
            tracing::warn!(%origin, reason = why, read = reads + 1, "robots.txt unavailable; {}",
                if last { "the host is disallowed" } else { "the host waits to read it again" });
        }
        *slot = Some(HostRobots { robots: Arc::new(robots), read_at: Instant::now(), reads: reads + 1 });
    }
}

/// One read of an origin's robots.txt (`None` when the crawl was cancelled).
async fn fetch_robots(ctx: &Ctx, origin: &str) -> Option<Robots> {
    let Ok(mut url) = Url::parse(&format!("{origin}/robots.txt")) else {
        return Some(Robots::allow_all());
    };
    let ua = &ctx.fetcher.config().user_agent;
    // Follow up to five redirects (RFC 9309); a missing file (4xx) allows all, an unavailable
    // one (5xx, unreachable) disallows all; only the first 500 KiB are read.
    for _ in 0..5 {
        let report = ctx.fetcher.fetch(&url, None, Want::Prefix(MAX_ROBOTS_BYTES as u64), &ctx.cancel).await;
        match report.result {
            Ok(Fetched::Body { body, .. }) => return Some(Robots::parse(&body, ua)),
            Ok(Fetched::Redirect { location, .. }) => match url.join(&location) {
                Ok(next) => url = next,
                Err(_) => break,
            },
            Ok(Fetched::NotHtml { .. }) => unreachable!("robots.txt is fetched as any content type"),
            Err(FetchError::Cancelled) => return None,
            Err(FetchError::Status(400..=499)) => break,
            Err(e) => return Some(Robots::unavailable(format!("robots.txt unavailable ({e})"))),
        }
    }
    Some(Robots::allow_all())
}

/// A host's pacing: when its next request may start, and the interval learned from its 429s.
struct Pace {
    next: Instant,
    learned: Duration,
    /// The last 429.
    throttled_at: Option<Instant>,
}
/// The longest interval learned from 429s.
const PACE_MAX: Duration = Duration::from_secs(60);

impl Pace {
    fn new(now: Instant) -> Pace {
        Pace { next: now, learned: Duration::ZERO, throttled_at: None }
    }
}

/// The least time between two request starts on `host`: its `Crawl-delay` (`floor`) or the
/// interval learned from its 429s, whichever is longer.
fn pace_interval(ctx: &Ctx, host: HostId, floor: Duration) -> Duration {
    let paced = ctx.paced.lock().unwrap_or_else(|p| p.into_inner());
    paced.get(&host).map_or(floor, |p| p.learned.max(floor))
}

/// A host answered. A learned interval holds while the host throttles now and then; after
/// [`PACE_HOLD`] without a 429 each answer shrinks it by 5 % (a server that allows more again
/// gets more again, a 429 at a time).
fn paced_ok(ctx: &Ctx, host: HostId) {
    let now = Instant::now();
    let mut paced = ctx.paced.lock().unwrap_or_else(|p| p.into_inner());
    let Some(p) = paced.get_mut(&host) else { return };
    if p.throttled_at.is_some_and(|t| now.duration_since(t) > PACE_HOLD) {
        p.learned = p.learned.mul_f64(0.95);
        if p.learned < Duration::from_millis(1) {
            p.learned = Duration::ZERO;
        }
    }
}

/// How long a learned interval holds after the host's last 429.
const PACE_HOLD: Duration = Duration::from_secs(30);

/// A host throttled us (429). A second 429 confirms it (one alone says little of a rate):
/// requests are then spaced so that at most `per_host` start per `Retry-After` window (it
/// throttled us at `per_host` in flight), with 3 % slack; every further 429 widens that by a
/// quarter. See [`paced_ok`] for the way back.
fn paced_throttled(ctx: &Ctx, host: HostId, retry_after: Option<Duration>) {
    let now = Instant::now();
    let per_host = ctx.fetcher.config().per_host.clamp(1, 1000) as u32;
    let mut paced = ctx.paced.lock().unwrap_or_else(|p| p.into_inner());
    let p = paced.entry(host).or_insert_with(|| Pace::new(now));
    let window = retry_after.unwrap_or(Duration::from_secs(1)).clamp(Duration::from_millis(100), PACE_MAX);
    let Some(last) = p.throttled_at.replace(now) else { return };
    let interval = match p.learned.is_zero() {
        true => window.mul_f64(1.03) / per_host,
        // 429s of one window answer requests sent together: they count once.
        false if now.duration_since(last) < window => return,
        false => p.learned.mul_f64(1.25),
    };
    p.learned = interval.min(PACE_MAX);
    tracing::debug!(host, interval_ms = p.learned.as_millis() as u64, "host throttles us; pacing it");
}

/// How a request waits after its host throttled it: the host is held back for `Retry-After`,
/// its pace is learned, and the retry then takes its turn like any other request of the host.
struct HostThrottle<'a> {
    ctx: &'a Ctx,
    host: HostId,
    floor: Duration,
}

impl Throttled for HostThrottle<'_> {
    fn wait(
        &self,
        retry_after: Option<Duration>,
        backoff: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            paced_throttled(self.ctx, self.host, retry_after);
            let wait = retry_after.unwrap_or(backoff);
            let _ = self.ctx.pauses.send((self.host, Instant::now() + wait));
            tokio::time::sleep(wait).await;
            let interval = pace_interval(self.ctx, self.host, self.floor);
            if !interval.is_zero() {
                wait_turn(self.ctx, self.host, interval).await;
            }
        })
    }
}

/// Waits for this request's turn on a paced host (requests start at least `delay` apart: a
/// `Crawl-delay`, or what its 429s taught) and pauses the host in the frontier until the turn
/// after it, so the next request of the host does not hold a slot while it waits. `false` when
/// cancelled.
async fn wait_turn(ctx: &Ctx, host: HostId, delay: Duration) -> bool {
    let now = Instant::now();
    let turn = {
        let mut paced = ctx.paced.lock().unwrap_or_else(|p| p.into_inner());
        let pace = paced.entry(host).or_insert_with(|| Pace::new(now));
        let turn = pace.next.max(now);
        pace.next = turn + delay;
        turn
    };
    let _ = ctx.pauses.send((host, turn + delay));
    if turn <= now {
        return true;
    }
    tokio::select! {
        _ = ctx.cancel.cancelled() => false,
        _ = tokio::time::sleep_until(turn.into()) => true,
    }
}

/// Reads the task's sitemaps (and those the seeds' robots.txt name, when asked), following
/// indexes, and sends the page URLs in scope to the dispatcher.
async fn read_sitemaps(ctx: Arc<Ctx>, found: mpsc::Sender<Vec<Url>>) {
    let inner = &ctx.task.0;
    let mut queue: VecDeque<Url> = inner.sitemaps.iter().cloned().collect();
    if inner.spec.sitemaps_from_robots {
        let mut origins = HashSet::new();
        for seed in &inner.seeds {
            if !origins.insert(seed.origin().ascii_serialization()) {
                continue;
            }
            let Some(robots) = robots_for(&ctx, seed, None).await else { return };
            queue.extend(robots.sitemaps().iter().filter_map(|s| seed.join(s).ok()));
        }
    }
    let mut read = HashSet::new();
    while let Some(url) = queue.pop_front() {
        if !read.insert(url.clone()) {
            continue;
        }
        if read.len() > MAX_SITEMAP_FILES {
            tracing::warn!(task = %ctx.task.name(), "more than {MAX_SITEMAP_FILES} sitemaps; the rest are not read");
            break;
        }
        let report =
            ctx.fetcher.fetch(&url, ctx.cookie.as_ref(), Want::Any(MAX_SITEMAP_BYTES), &ctx.cancel).await;
        ctx.counters.pages.fetch_add(u64::from(report.responses), Relaxed);
        let failed = |problem: &dyn std::fmt::Display| {
            ctx.counters.errors.fetch_add(1, Relaxed);
            note_problem(&ctx, &url, &format_args!("sitemap: {problem}"));
            note_error(&ctx, &url, None, &format_args!("sitemap: {problem}"));
            tracing::warn!(task = %ctx.task.name(), %url, error = %problem, "sitemap failed");
        };
        let body = match report.result {
            Ok(Fetched::Body { body, .. }) => body,
            Ok(Fetched::Redirect { location, .. }) => {
                queue.extend(url.join(&location).ok());
                continue;
            }
            Ok(Fetched::NotHtml { .. }) => unreachable!("sitemaps are fetched as any content type"),
            Err(FetchError::Cancelled) => return,
            Err(e) => {
                failed(&e);
                continue;
            }
        };
        match sitemap::parse(&body) {
            Ok(Sitemap::Index(locs)) => queue.extend(locs.iter().filter_map(|l| url.join(l).ok())),
            Ok(Sitemap::Pages(locs)) => {
                let urls: Vec<Url> = locs
                    .iter()
                    .filter_map(|l| resolve_link(&url, l))
                    .filter(|u| host_allowed(u, &inner.allow_hosts))
                    .collect();
                tracing::debug!(%url, listed = locs.len(), in_scope = urls.len(), "sitemap read");
                for chunk in urls.chunks(1000) {
                    if found.send(chunk.to_vec()).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => failed(&e),
        }
    }
}
