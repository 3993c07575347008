//! A running crawl of one task: its frontier, rate limiter, robots cache and in-flight
//! requests, driven by one dispatcher task. [`Crawl`] is the handle: stats, `cancel()`, `join()`.
//!
//! The dispatcher owns the frontier (no locks); fetch-and-extract jobs run concurrently and
//! report back through a `JoinSet`, so a panicking job is counted as an error, never a hang.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use reqwest::header::HeaderValue;
use serde::Serialize;
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::charset::decode_html;
use crate::extract::extract;
use crate::fetch::{FetchError, Fetched, Fetcher};
use crate::frontier::{Admission, Frontier, Request};
use crate::item::{rfc3339, Item};
use crate::limiter::RateLimiter;
use crate::robots::Robots;
use crate::scope::{host_allowed, resolve_link, url_key};

/// Redirect hops followed from one link before it counts as an error.
const MAX_REDIRECTS: usize = 10;
use crate::sink::ItemSender;
use crate::spec::Task;

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
    items: ItemSender,
    cookie: Option<HeaderValue>,
    counters: Counters,
    cancel: CancellationToken,
    robots: Mutex<HashMap<String, Arc<OnceCell<Robots>>>>,
}

/// Handle to a running crawl. Cheap to clone.
#[derive(Clone)]
pub struct Crawl {
    ctx: Arc<Ctx>,
    done: watch::Receiver<bool>,
    started_at: SystemTime,
}

impl Crawl {
    /// Starts crawling a task on the current tokio runtime. The crawl stops when its frontier
    /// is exhausted, when `max_pages` is reached, or when cancelled (directly or through
    /// `parent`).
    pub fn start(task: Task, fetcher: Arc<Fetcher>, items: ItemSender, parent: &CancellationToken) -> Crawl {
        let cookie = Some(task.0.spec.cookie.as_str())
            .filter(|c| !c.is_empty())
            .and_then(|c| HeaderValue::from_str(c).ok());
        let ctx = Arc::new(Ctx {
            task,
            fetcher,
            items,
            cookie,
            counters: Counters::default(),
            cancel: parent.child_token(),
            robots: Mutex::new(HashMap::new()),
        });
        let (done_tx, done) = watch::channel(false);
        let runner = ctx.clone();
        tokio::spawn(async move {
            run(runner).await;
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

/// What a job reports back to the dispatcher.
enum Outcome {
    Links { depth: u32, links: Vec<(Url, usize)> },
    Redirect(Request),
    Nothing,
}

async fn run(ctx: Arc<Ctx>) {
    let inner = &ctx.task.0;
    let mut frontier = Frontier::new(inner.spec.max_depth, inner.spec.reload);
    for seed in &inner.seeds {
        frontier.push(Request::new(seed.clone(), 0, 0, inner.rules[0].priority));
    }
    let mut limiter = RateLimiter::new(&inner.limits);
    let mut jobs: JoinSet<Outcome> = JoinSet::new();
    let max_in_flight = ctx.fetcher.config().concurrency;
    let max_pages = inner.spec.max_pages;
    let mut dispatched = 0u64;
    let counters = &ctx.counters;
    loop {
        while let Some(done) = jobs.try_join_next() {
            settle(&ctx, &mut frontier, done);
        }
        counters.queued.store(frontier.len() as u64, Relaxed);
        counters.in_flight.store(jobs.len() as u64, Relaxed);
        if ctx.cancel.is_cancelled() {
            break;
        }
        let may_dispatch = jobs.len() < max_in_flight && (max_pages == 0 || dispatched < max_pages);
        if may_dispatch {
            if let Some(req) = frontier.pop() {
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
                jobs.spawn(handle(ctx.clone(), req));
                continue;
            }
        }
        if jobs.is_empty() {
            break;
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            Some(done) = jobs.join_next() => settle(&ctx, &mut frontier, done),
        }
    }
    jobs.abort_all();
    while let Some(done) = jobs.join_next().await {
        if let Err(e) = done {
            if e.is_panic() {
                counters.errors.fetch_add(1, Relaxed);
            }
        }
    }
    counters.queued.store(frontier.len() as u64, Relaxed);
    counters.in_flight.store(0, Relaxed);
    tracing::info!(task = %ctx.task.name(), seen = frontier.seen(), cancelled = ctx.cancel.is_cancelled(), "crawl finished");
}

/// Applies a finished job's outcome to the frontier.
fn settle(ctx: &Ctx, frontier: &mut Frontier, done: Result<Outcome, tokio::task::JoinError>) {
    let rules = &ctx.task.0.rules;
    match done {
        Ok(Outcome::Links { depth, links }) => {
            for (url, rule) in links {
                frontier.push(Request::new(url, depth + 1, rule, rules[rule].priority));
            }
        }
        Ok(Outcome::Redirect(req)) => {
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
                return;
            }
            let url = req.url.clone();
            if frontier.push(req) == Admission::Seen {
                tracing::debug!(%url, "redirect target already seen");
            }
        }
        Ok(Outcome::Nothing) => {}
        Err(e) if e.is_panic() => {
            ctx.counters.errors.fetch_add(1, Relaxed);
            tracing::error!(task = %ctx.task.name(), "a page handler panicked; counted as an error");
        }
        Err(_) => {}
    }
}

/// Fetches one request and extracts from it.
async fn handle(ctx: Arc<Ctx>, req: Request) -> Outcome {
    let counters = &ctx.counters;
    let cfg = ctx.fetcher.config();
    if cfg.obey_robots && !robots_for(&ctx, &req.url).await.allowed(&path_and_query(&req.url)) {
        counters.robots_blocked.fetch_add(1, Relaxed);
        tracing::debug!(url = %req.url, "disallowed by robots.txt");
        return Outcome::Nothing;
    }
    let wait = ctx.task.0.spec.wait.0;
    if !wait.is_zero() {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Outcome::Nothing,
            _ = tokio::time::sleep(wait.mul_f64(fastrand::f64())) => {}
        }
    }
    let started = Instant::now();
    let report = ctx.fetcher.fetch(&req.url, ctx.cookie.as_ref(), true, &ctx.cancel).await;
    counters.pages.fetch_add(u64::from(report.responses), Relaxed);
    counters.retries.fetch_add(u64::from(report.tries.saturating_sub(1)), Relaxed);
    counters.fetch_micros.fetch_add(started.elapsed().as_micros() as u64, Relaxed);
    counters.fetches.fetch_add(1, Relaxed);
    let fail = |error: &dyn std::fmt::Display| {
        counters.errors.fetch_add(1, Relaxed);
        tracing::warn!(task = %ctx.task.name(), url = %req.url, %error, "page failed");
        Outcome::Nothing
    };
    let (content_type, body) = match report.result {
        Err(FetchError::Cancelled) => return Outcome::Nothing,
        Err(e) => return fail(&e),
        Ok(Fetched::NotHtml { content_type }) => return fail(&format!("not html: {content_type}")),
        Ok(Fetched::Redirect { location, .. }) => {
            return match resolve_link(&req.url, &location) {
                Some(url) if host_allowed(&url, &ctx.task.0.allow_hosts) => {
                    let mut redirected_from = req.redirected_from;
                    redirected_from.push(url_key(&req.url));
                    Outcome::Redirect(Request { url, redirected_from, ..req })
                }
                Some(url) => {
                    tracing::debug!(from = %req.url, to = %url, "redirect out of scope");
                    Outcome::Nothing
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
    if let (Some(fields), Some(table)) = (extracted.fields, &rule.table) {
        let item = Item {
            task: ctx.task.0.name.clone(),
            table: table.clone(),
            url: req.url.to_string(),
            crawled_at: rfc3339(received),
            fields,
        };
        if ctx.items.send(item).await.is_err() {
            counters.errors.fetch_add(1, Relaxed);
            tracing::error!(task = %ctx.task.name(), "item writer is gone; stopping the crawl");
            ctx.cancel.cancel();
            return Outcome::Nothing;
        }
        counters.items.fetch_add(1, Relaxed);
    }
    Outcome::Links { depth: req.depth, links: extracted.links }
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
    // Follow up to five redirects (RFC 9309); anything else unusable means "allow all".
    for _ in 0..5 {
        let report = ctx.fetcher.fetch(&url, None, false, &ctx.cancel).await;
        match report.result {
            Ok(Fetched::Body { body, .. }) => return Robots::parse(&String::from_utf8_lossy(&body), ua),
            Ok(Fetched::Redirect { location, .. }) => match url.join(&location) {
                Ok(next) => url = next,
                Err(_) => break,
            },
            Ok(Fetched::NotHtml { .. }) => unreachable!("robots.txt is fetched with html_only = false"),
            Err(e) => {
                if !matches!(e, FetchError::Status(400..=499) | FetchError::Cancelled) {
                    tracing::warn!(%url, error = %e, "robots.txt unavailable; allowing all");
                }
                break;
            }
        }
    }
    Robots::allow_all()
}
