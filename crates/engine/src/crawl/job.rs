//! One job of a crawl: fetch a request (minding robots.txt and the host's pace), decode,
//! extract, and report what to store and queue.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use url::Url;

use super::ctx::{note_problem, Ctx};
use super::politeness::HostThrottle;
use crate::charset::decode_page;
use crate::extract::{extract_in, MAX_DEPTH};
use crate::fetch::{FetchError, Fetched, Throttled, Want};
use crate::frontier::Request;
use crate::item::{rfc3339, Item};
use crate::scope::{host_allowed, resolve_link, url_key};
use crate::store::PageStatus;

/// What a job reports back to the dispatcher about a handled request: what to store and what
/// to queue. A job stopped before its request was handled reports `None`: it stays queued.
pub(super) struct Handled {
    /// The request's number in the run.
    pub(super) seq: u64,
    pub(super) depth: u32,
    pub(super) status: PageStatus,
    pub(super) item: Option<Item>,
    pub(super) links: Vec<(Url, usize)>,
    pub(super) redirect: Option<Request>,
    /// Never sent: robots.txt disallows it (it spends no page of `max_pages`).
    pub(super) unsent: bool,
}

pub(super) type Outcome = Option<Handled>;

/// Fetches one request and extracts from it.
pub(super) async fn handle(ctx: Arc<Ctx>, req: Request) -> Outcome {
    let counters = &ctx.counters;
    let cfg = ctx.fetcher.config();
    let key = url_key(&req.url);
    let seq = req.seq;
    let depth = req.depth;
    let ended = |status: PageStatus| {
        Some(Handled { seq, depth, status, item: None, links: Vec::new(), redirect: None, unsent: false })
    };
    let robots = match cfg.obey_robots {
        // A drain does not wait for a robots.txt to be read again later (30 s by default): the
        // request is left to the run's next owner.
        true => tokio::select! {
            // A robots.txt already read goes first: its request is not left for later.
            biased;
            robots = ctx.polite.robots_for(&req.url, Some(req.host)) => Some(robots?),
            _ = ctx.drain.cancelled(), if ctx.run.is_some() => return left_for_later(&ctx),
        },
        false => None,
    };
    if let Some(robots) = robots.as_ref().filter(|r| !r.allowed(path_and_query(&req.url))) {
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
        return ended(PageStatus::Blocked).map(|h| Handled { unsent: true, ..h });
    }
    let crawl_delay = robots.as_ref().and_then(|r| r.crawl_delay()).filter(|_| cfg.obey_crawl_delay);
    let floor = crawl_delay.map_or(Duration::ZERO, |d| d.min(cfg.max_crawl_delay.0));
    let host = req.host;
    let throttle = HostThrottle {
        polite: &ctx.polite,
        host,
        floor,
        sends: ctx.sends.as_ref(),
        sent: ctx.run.is_some().then_some((seq, &ctx.sent)),
        marked: std::sync::atomic::AtomicBool::new(false),
        drain: ctx.run.is_some().then_some(&ctx.drain),
    };
    let interval = ctx.polite.pace_interval(host, floor);
    if !interval.is_zero() {
        tokio::select! {
            turn = ctx.polite.wait_turn(host, interval) => if !turn { return None },
            _ = throttle.left_for_later() => return left_for_later(&ctx),
        }
    }
    let wait = ctx.task.0.spec.wait.0;
    if !wait.is_zero() {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return None,
            _ = throttle.left_for_later() => return left_for_later(&ctx),
            _ = tokio::time::sleep(wait.mul_f64(fastrand::f64())) => {}
        }
    }
    let started = Instant::now();
    let report =
        ctx.fetcher.fetch_paced(&req.url, ctx.cookie.as_ref(), Want::Html, &ctx.cancel, &throttle).await;
    // Any answer but a throttling one eases a learned pace.
    if matches!(&report.result, Ok(_) | Err(FetchError::Status(400..=428 | 430..=499))) {
        ctx.polite.paced_ok(host);
    }
    counters.pages.fetch_add(u64::from(report.responses), Relaxed);
    counters.retries.fetch_add(u64::from(report.tries.saturating_sub(1)), Relaxed);
    counters.fetch_micros.fetch_add(started.elapsed().as_micros() as u64, Relaxed);
    counters.fetches.fetch_add(1, Relaxed);
    let fail = |error: &dyn std::fmt::Display| {
        counters.errors.fetch_add(1, Relaxed);
        note_problem(&ctx, &req.url, error);
        ctx.recent.error(&req.url, None, error);
        tracing::warn!(task = %ctx.task.name(), url = %req.url, %error, "page failed");
        ended(PageStatus::Failed)
    };
    let (content_type, body) = match report.result {
        Err(FetchError::Cancelled) => return left_for_later(&ctx),
        Err(FetchError::Status(code)) => {
            counters.errors.fetch_add(1, Relaxed);
            let e = FetchError::Status(code);
            note_problem(&ctx, &req.url, &e);
            ctx.recent.error(&req.url, Some(code), &e);
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
                        unsent: false,
                    })
                }
                Some(url) if req.depth == 0 && ctx.task.0.seeds.contains(&req.url) => {
                    // A seed that moved (`http://example.com/` to `https://www.example.com/`)
                    // would leave the crawl with nothing but this answer: say so, and how.
                    let host = url.host_str().unwrap_or_default();
                    let problem = format!(
                        "redirected to {url}, whose host is not in allow_hosts (add {host:?} to allow_hosts, or seed it)"
                    );
                    note_problem(&ctx, &req.url, &problem);
                    tracing::warn!(task = %ctx.task.name(), url = %req.url, "seed {problem}");
                    ended(PageStatus::Skipped)
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
    let (html, encoding) = decode_page(&body, content_type.as_deref());
    let rule = &ctx.task.0.rules[req.rule];
    let extracted = match extract_in(rule, &html, encoding, &req.url, &ctx.task.0.allow_hosts) {
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
    Some(Handled {
        seq,
        depth,
        status: PageStatus::Done,
        item,
        links: extracted.links,
        redirect: None,
        unsent: false,
    })
}

/// The path and query of a URL, as robots.txt rules match them (a slice, no copy).
pub(super) fn path_and_query(url: &Url) -> &str {
    &url[url::Position::BeforePath..url::Position::AfterQuery]
}

/// A request that ends unhandled: counted as left to the next owner unless the crawl was
/// cancelled (then nothing is given back).
fn left_for_later(ctx: &Ctx) -> Option<Handled> {
    if !ctx.cancel.is_cancelled() {
        ctx.counters.left_for_later.fetch_add(1, Relaxed);
    }
    None
}
