//! A running crawl of one task: its frontier, rate limiter, robots cache and in-flight
//! requests, driven by one dispatcher task. [`Crawl`] is the handle: stats, `cancel()`, `join()`.
//!
//! The dispatcher owns the frontier (no locks); fetch-and-extract jobs run concurrently and
//! report back through a `JoinSet`, so a panicking job is counted as an error, never a hang.
//! Every handled request becomes one [`Commit`] (its status, its item, the URLs it queued), so
//! a crawl started from a stored run ([`Crawl::resume`]) can be killed at any moment and
//! resumed without losing or repeating a stored page.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderValue;
use serde::Serialize;
use tokio::sync::{mpsc, watch, OnceCell};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::charset::decode_html;
use crate::extract::extract;
use crate::fetch::{FetchError, Fetched, Fetcher};
use crate::frontier::{Admission, Frontier, HostId, Refill, Request};
use crate::item::{rfc3339, Item};
use crate::limiter::RateLimiter;
use crate::robots::Robots;
use crate::scope::{host_allowed, resolve_link, url_key};

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
    robots: Mutex<HashMap<String, Arc<OnceCell<Robots>>>>,
    /// Why the first request that failed or was skipped did so (for "nothing could be fetched").
    first_problem: Mutex<Option<String>>,
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
            first_problem: Mutex::new(None),
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
        if jobs.set.is_empty() && (!budget || frontier.is_empty()) {
            break;
        }
        let wake = if room { frontier.next_wake() } else { None };
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            Some(done) = jobs.set.join_next_with_id() => settle(&ctx, &mut frontier, &mut jobs, done).await,
            Some((host, until)) = paused.recv() => frontier.pause(host, until),
            Some(done) = refills.join_next() => refilled(&ctx, &mut frontier, done),
            _ = sleep_until_some(wake) => {}
        }
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
    let robots = if cfg.obey_robots { Some(robots_for(&ctx, &req.url).await) } else { None };
    if let Some(robots) = robots.filter(|r| !r.allowed(&path_and_query(&req.url))) {
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
    let wait = ctx.task.0.spec.wait.0;
    if !wait.is_zero() {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return None,
            _ = tokio::time::sleep(wait.mul_f64(fastrand::f64())) => {}
        }
    }
    let started = Instant::now();
    let host = req.host;
    let pause = |wait: Duration| {
        let _ = ctx.pauses.send((host, Instant::now() + wait));
    };
    let report = ctx.fetcher.fetch_paced(&req.url, ctx.cookie.as_ref(), true, &ctx.cancel, &pause).await;
    counters.pages.fetch_add(u64::from(report.responses), Relaxed);
    counters.retries.fetch_add(u64::from(report.tries.saturating_sub(1)), Relaxed);
    counters.fetch_micros.fetch_add(started.elapsed().as_micros() as u64, Relaxed);
    counters.fetches.fetch_add(1, Relaxed);
    let fail = |error: &dyn std::fmt::Display| {
        counters.errors.fetch_add(1, Relaxed);
        note_problem(&ctx, &req.url, error);
        tracing::warn!(task = %ctx.task.name(), url = %req.url, %error, "page failed");
        ended(PageStatus::Failed)
    };
    let (content_type, body) = match report.result {
        Err(FetchError::Cancelled) => return None,
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

/// The robots.txt rules for a URL's origin, fetched once per crawl.
async fn robots_for(ctx: &Ctx, url: &Url) -> Robots {
    let origin = url.origin().ascii_serialization();
    let cell = {
        let mut map = ctx.robots.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(origin.clone()).or_default().clone()
    };
    cell.get_or_init(|| fetch_robots(ctx, origin)).await.clone()
}

async fn fetch_robots(ctx: &Ctx, origin: String) -> Robots {
    let Ok(mut url) = Url::parse(&format!("{origin}/robots.txt")) else {
        return Robots::allow_all();
    };
    let ua = &ctx.fetcher.config().user_agent;
    // Follow up to five redirects (RFC 9309); a missing file (4xx) allows all, an unavailable
    // one (5xx, unreachable) disallows all for this run.
    for _ in 0..5 {
        let report = ctx.fetcher.fetch(&url, None, false, &ctx.cancel).await;
        match report.result {
            Ok(Fetched::Body { body, .. }) => return Robots::parse(&String::from_utf8_lossy(&body), ua),
            Ok(Fetched::Redirect { location, .. }) => match url.join(&location) {
                Ok(next) => url = next,
                Err(_) => break,
            },
            Ok(Fetched::NotHtml { .. }) => unreachable!("robots.txt is fetched with html_only = false"),
            Err(FetchError::Status(400..=499) | FetchError::Cancelled) => break,
            Err(e) => {
                tracing::warn!(%url, error = %e, "robots.txt unavailable; the host is disallowed");
                return Robots::unavailable(format!("robots.txt unavailable ({e})"));
            }
        }
    }
    Robots::allow_all()
}
