//! A running crawl of one task: its frontier, rate limiter, robots cache and in-flight
//! requests, driven by one dispatcher task. [`Crawl`] is the handle: stats, `cancel()`, `join()`.
//!
//! The dispatcher owns the frontier (no locks); fetch-and-extract jobs run concurrently and
//! report back through a `JoinSet`, so a panicking job is counted as an error, never a hang.
//! Every handled request becomes one [`Commit`] (its status, its item, the URLs it queued), so
//! a crawl started from a stored run ([`Crawl::resume`]) can be killed at any moment and
//! resumed without losing or repeating a stored page.

mod budget;
mod ctx;
mod job;
mod politeness;
mod recent;
mod sitemaps;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderValue;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::fetch::Fetcher;
use crate::frontier::{Admission, Frontier, HostId, Refill, Request};
use crate::limiter::RateLimiter;
use crate::scope::url_key;
use crate::spec::Task;
use crate::store::{
    Commit, CommitSender, OpenedRun, PageStatus, PollReply, QueuedUrl, RefillReply, RunHandle,
};
use budget::Budget;
use ctx::{Counters, Ctx};
use job::{handle, Handled, Outcome};
use politeness::Politeness;
use recent::RecentLog;
use sitemaps::read_sitemaps;

/// Sitemap URLs are taken in while fewer requests than this wait in the frontier, so a huge
/// sitemap waits for the crawl instead of filling memory (without a stored run the frontier
/// holds everything).
const FOUND_BACKLOG: usize = 100_000;

/// Redirect hops followed from one link before it counts as an error.
const MAX_REDIRECTS: usize = 10;

/// How often a split run's owner reads the URLs other workers sent to its partitions.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// How often requests sent, when no page was handled since, are marked in flight on their own.
const MARK_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Inbox rows taken in per poll.
const POLL_LIMIT: usize = 2000;

/// A share of a run split across workers: which partitions this crawl owns.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// Partitions of the run.
    pub count: u32,
    /// The partitions owned here, each with its epoch.
    pub parts: Vec<(u32, i64)>,
    /// Whether the seeds' partition is among them: this owner queues the seeds, reads the
    /// sitemaps and marks the run finished once nothing waits anywhere.
    pub home: bool,
    /// Workers sharing the run: the task's rate limits are divided among them.
    pub share: u32,
    /// When this worker's previous share of the run (stopped for a re-balance) sent its last
    /// requests, oldest first ([`Crawl::request_starts`]): the limits count them, and for one
    /// window this share goes no faster than they went (a share joining a run under way
    /// without them waits a whole window), since workers that left may have spent the rest.
    pub recent: Vec<Instant>,
    /// The robots.txt files this worker's previous share of the run read
    /// ([`Crawl::robots_read`]): not read again.
    pub robots: RobotsRead,
}

pub use ctx::CrawlStats;
pub use politeness::RobotsRead;
pub use recent::{Recent, RecentError, RecentItem};

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
        Self::spawn(task, None, None, fetcher, commits, parent)
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
        Self::spawn(task, Some(run), None, fetcher, commits, parent)
    }

    /// Runs this worker's share of a run split across workers (opened by
    /// [`crate::StateStore::open_parts`]): the hosts of its partitions; URLs of other
    /// partitions are sent to their owners through the shared inbox, and URLs sent here are
    /// taken in every half second. It ends when the run is over: the seeds' owner marks it
    /// finished once no request waits anywhere.
    pub fn resume_split(
        task: Task,
        run: OpenedRun,
        split: Split,
        fetcher: Arc<Fetcher>,
        commits: CommitSender,
        parent: &CancellationToken,
    ) -> Crawl {
        Self::spawn(task, Some(run), Some(split), fetcher, commits, parent)
    }

    fn spawn(
        task: Task,
        run: Option<OpenedRun>,
        split: Option<Split>,
        fetcher: Arc<Fetcher>,
        commits: CommitSender,
        parent: &CancellationToken,
    ) -> Crawl {
        let cookie = Some(task.0.spec.cookie.as_str())
            .filter(|c| !c.is_empty())
            .and_then(|c| HeaderValue::from_str(c).ok());
        let cancel = parent.child_token();
        let handle = run.as_ref().map(|r| {
            Arc::new(match &split {
                Some(split) => {
                    RunHandle::split(r.id, split.parts.clone(), cancel.clone()).owned_by(r.owner.clone())
                }
                None => RunHandle::new(r.id, r.epoch, cancel.clone()),
            })
        });
        // Paces dispatching; the requests wait for the limits again (`sends`) when they go.
        let limiter = task_limiter(&task, split.as_ref(), run.as_ref());
        let sends = (!task.0.limits.is_empty()).then(|| Mutex::new(limiter.clone()));
        let (pauses, paused) = mpsc::unbounded_channel();
        let read = split.as_ref().map(|s| s.robots.clone()).unwrap_or_default();
        let polite = Politeness::new(fetcher.clone(), cancel.clone(), pauses, read);
        let ctx = Arc::new(Ctx {
            task,
            fetcher,
            commits,
            run: handle,
            cookie,
            counters: Counters::default(),
            cancel,
            drain: CancellationToken::new(),
            split,
            polite,
            first_problem: Mutex::new(None),
            stopped_by: Mutex::new(None),
            recent: RecentLog::default(),
            part_queues: Mutex::new(Vec::new()),
            sends,
            sent: Mutex::new(Vec::new()),
            completed: std::sync::atomic::AtomicBool::new(false),
            writer_stuck: std::sync::atomic::AtomicBool::new(false),
        });
        let (done_tx, done) = watch::channel(false);
        let runner = ctx.clone();
        tokio::spawn(async move {
            run_crawl(runner, run, limiter, paused).await;
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

    /// Why the crawl stopped before its end other than by `cancel` or `drain`: a newer owner
    /// took its run over, a store it could not read, its writer gone. `None` otherwise.
    pub fn stop_reason(&self) -> Option<String> {
        if self.is_fenced() {
            return Some(
                "its run was taken over by a newer owner (another crawl of the same task and database)"
                    .into(),
            );
        }
        self.ctx.stopped_by.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A split run's share: requests waiting per partition held (as of the last half second).
    pub fn part_queues(&self) -> Vec<(u32, u64)> {
        self.ctx.part_queues.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The robots.txt files it has read, for [`Split::robots`].
    pub fn robots_read(&self) -> RobotsRead {
        self.ctx.polite.read()
    }

    /// Once the crawl has ended: when it started its last rate-limited requests, oldest first
    /// (as many as its largest limit counts), for [`Split::recent`].
    pub fn request_starts(&self) -> Vec<Instant> {
        self.ctx
            .sends
            .as_ref()
            .map_or_else(Vec::new, |s| s.lock().unwrap_or_else(|p| p.into_inner()).history())
    }

    /// The last failures and items.
    pub fn recent(&self) -> Recent {
        self.ctx.recent.snapshot()
    }

    /// Current counters.
    pub fn stats(&self) -> CrawlStats {
        self.ctx.counters.snapshot()
    }

    /// Asks the crawl to stop: the queue is dropped and in-flight requests are abandoned.
    pub fn cancel(&self) {
        self.ctx.cancel.cancel();
    }

    /// Asks the crawl to stop gracefully: nothing new is started, the requests in flight are
    /// finished and committed, then it ends (a split run's partitions are released).
    pub fn drain(&self) {
        self.ctx.drain.cancel();
    }

    /// Whether the crawl ended because its work was done: its frontier exhausted, its page
    /// budget spent, or (a split run's share) its run over. False while it runs and when it
    /// was stopped, failed or fenced.
    pub fn completed(&self) -> bool {
        self.ctx.completed.load(Relaxed)
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

/// A finished job: its id and outcome, or why it did not finish.
type JobResult = Result<(tokio::task::Id, Outcome), tokio::task::JoinError>;

/// The jobs in flight and the host of each.
#[derive(Default)]
struct Jobs {
    set: JoinSet<Outcome>,
    /// The host and request number of each job.
    hosts: HashMap<tokio::task::Id, (HostId, u64)>,
}

/// Jobs waiting on their host beyond `concurrency` at most (each a small future): past them,
/// waiting jobs hold slots again.
const MAX_WAITING_JOBS: usize = 1024;

/// Whether the dispatcher may start another job: fewer than `concurrency` are at work (jobs
/// waiting on their host, see [`Politeness`], do not count).
fn has_room(ctx: &Ctx, jobs: usize, concurrency: usize) -> bool {
    let waiting = ctx.polite.jobs_waiting_on_hosts().min(MAX_WAITING_JOBS);
    jobs.saturating_sub(waiting) < concurrency
}

async fn run_crawl(
    ctx: Arc<Ctx>,
    stored: Option<OpenedRun>,
    mut limiter: RateLimiter,
    mut paused: mpsc::UnboundedReceiver<(HostId, Instant)>,
) {
    if stored.as_ref().is_some_and(|r| r.over) {
        // Finished before it came here: nothing to crawl, nothing to commit.
        ctx.completed.store(true, Relaxed);
        return;
    }
    let inner = &ctx.task.0;
    let record = ctx.run.is_some();
    let cfg = ctx.fetcher.config();
    let mut frontier = Frontier::new(inner.spec.max_depth, inner.spec.reload, cfg.per_host)
        .with_rule_ids(inner.rule_ids.clone());
    if record {
        frontier = frontier.with_window(cfg.queue_window);
    }
    let split = ctx.split.clone();
    if let Some(split) = &split {
        frontier = frontier.with_parts(split.count, split.parts.iter().map(|(p, _)| *p));
    }
    let home = split.as_ref().is_none_or(|s| s.home);
    let mut budget = Budget::new(inner.spec.max_pages, split.as_ref().map(|s| s.share));
    let mut first = Commit { run: ctx.run.clone(), ..Commit::default() };
    match stored {
        Some(run) if run.resumed => {
            budget.count_handled(run.handled);
            for key in run.seen {
                frontier.mark_handled(key);
            }
            for (key, depth) in run.spilled_keys {
                frontier.mark_spilled(key, depth);
            }
            for seq in run.last_seqs {
                frontier.continue_after(seq);
            }
            for q in run.queued {
                // Unreadable, its rule gone, or beyond a lowered max_depth: skipped.
                // Or seen: another URL of the same 56-bit identity in the visited set.
                let restored = stored_request(&ctx, &q).map(|req| frontier.restore(req, q.seq));
                if restored != Some(Admission::Queued) {
                    supersede(&ctx, q.seq).await;
                }
            }
            for (url, count) in run.spilled {
                if let Ok(url) = Url::parse(&url) {
                    frontier.spilled_before(&url, count);
                }
            }
        }
        _ if !home => {}
        _ => {
            for seed in &inner.seeds {
                let req = Request::new(seed.clone(), 0, 0, inner.rules[0].priority);
                first.queued.extend(frontier.offer(req, record).1);
            }
        }
    }
    if !first.queued.is_empty() {
        send_commit(&ctx, first).await;
    }
    // Sitemaps are read beside the crawl; their URLs arrive in batches (bounded, so a huge
    // sitemap waits for the frontier rather than filling memory).
    let (found_tx, mut found) = mpsc::channel::<Vec<Url>>(2);
    let mut discovering = home && (!inner.sitemaps.is_empty() || inner.spec.sitemaps_from_robots);
    let sitemaps = discovering.then(|| tokio::spawn(read_sitemaps(ctx.clone(), found_tx)));
    let mut polls: JoinSet<(bool, Option<PollReply>)> = JoinSet::new();
    let mut next_poll = Instant::now();
    let mut polling = false;
    // A split run: the run is over (ended by its seeds' owner or a delete), or, on the seeds'
    // owner, nothing waits anywhere.
    let mut over = false;
    let mut quiet = false;
    let mut draining = false;
    let mut jobs = Jobs::default();
    let mut refills: JoinSet<(Refill, Option<RefillReply>)> = JoinSet::new();
    let max_in_flight = ctx.fetcher.config().concurrency;
    let counters = &ctx.counters;
    let mut next_mark = Instant::now() + MARK_EVERY;
    loop {
        while let Some(done) = jobs.set.try_join_next_with_id() {
            settle(&ctx, &mut frontier, &mut jobs, &mut budget, done).await;
        }
        if record && Instant::now() >= next_mark {
            // Slow pages: what was sent is marked without waiting for one of them to end.
            let sent = take_sent(&ctx);
            if !sent.is_empty() {
                send_commit(&ctx, Commit { run: ctx.run.clone(), sent, ..Commit::default() }).await;
            }
            next_mark = Instant::now() + MARK_EVERY;
        }
        while let Ok((host, until)) = paused.try_recv() {
            frontier.pause(host, until);
        }
        while let Some(done) = refills.try_join_next() {
            refilled(&ctx, &mut frontier, done).await;
        }
        while discovering && frontier.len() < FOUND_BACKLOG {
            match found.try_recv() {
                Ok(urls) => queue_found(&ctx, &mut frontier, urls).await,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => discovering = false,
            }
        }
        for refill in frontier.take_refills() {
            ask_refill(&ctx, &mut refills, refill).await;
        }
        while let Some(done) = polls.try_join_next() {
            polling = false;
            polled(&ctx, &mut frontier, done, &mut over, &mut quiet).await;
        }
        budget.take_answers(&ctx);
        over |= budget.run_over();
        if !draining {
            budget.top_up(&ctx, !frontier.is_empty(), has_room(&ctx, jobs.set.len(), max_in_flight)).await;
        }
        let idle = jobs.set.is_empty() && frontier.is_empty() && !discovering && refills.is_empty();
        if split.is_some() && !polling && !draining && Instant::now() >= next_poll {
            *ctx.part_queues.lock().unwrap_or_else(|p| p.into_inner()) = frontier.queued_by_part();
            ask_poll(&ctx, &mut polls, idle).await;
            polling = true;
            next_poll = Instant::now() + POLL_EVERY;
        }
        counters.queued.store(frontier.len() as u64, Relaxed);
        counters.in_flight.store(jobs.set.len() as u64, Relaxed);
        if ctx.cancel.is_cancelled() || over || (quiet && home) {
            break;
        }
        if ctx.drain.is_cancelled() {
            draining = true;
            if jobs.set.is_empty() {
                break;
            }
        }
        let room = has_room(&ctx, jobs.set.len(), max_in_flight) && budget.allows() && !draining;
        // While the task's limits hold requests back, the loop goes on settling, polling and
        // refilling, and wakes when they allow one.
        let now = Instant::now();
        let limited_until = Some(limiter.next_free(now)).filter(|free| *free > now);
        if room && limited_until.is_none() {
            // Only a request whose host can be served now: a busy or paused host never holds
            // a slot another host could use.
            if let Some(req) = frontier.pop(now) {
                let host = req.host;
                // A request robots.txt (read already) disallows is never sent: it takes no turn
                // under the task's limits nor of its host's pace (each took a full interval).
                let obeyed = ctx.fetcher.config().obey_robots;
                if !(obeyed && ctx.polite.known_disallowed(&req.url, limiter.is_limited())) {
                    limiter.reserve(now);
                    if let Some(until) = ctx.polite.hold_after_pop(host, Instant::now()) {
                        frontier.pause(host, until);
                    }
                }
                budget.spend();
                let seq = req.seq;
                let job = jobs.set.spawn(handle(ctx.clone(), req));
                jobs.hosts.insert(job.id(), (host, seq));
                continue;
            }
        }
        if jobs.set.is_empty()
            && (budget.exhausted() || (split.is_none() && frontier.is_empty() && !discovering))
        {
            break;
        }
        // While limited nothing can be popped before the limits allow it (and a paused host
        // whose time has come stays listed until a pop: waking for it would spin).
        let wake = match (room, limited_until) {
            (false, _) => None,
            (true, Some(free)) => Some(free),
            (true, None) => frontier.next_wake(),
        };
        let poll_at = (split.is_some() && !polling && !draining).then_some(next_poll);
        let mark_at = (record && !jobs.set.is_empty()).then_some(next_mark);
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            _ = ctx.drain.cancelled(), if !draining => {}
            Some(done) = polls.join_next() => {
                polling = false;
                polled(&ctx, &mut frontier, done, &mut over, &mut quiet).await;
            }
            _ = sleep_until_some(poll_at) => {}
            Some(done) = jobs.set.join_next_with_id() => {
                settle(&ctx, &mut frontier, &mut jobs, &mut budget, done).await
            }
            Some((host, until)) = paused.recv() => frontier.pause(host, until),
            Some(done) = refills.join_next() => refilled(&ctx, &mut frontier, done).await,
            Some(reply) = budget.answer(), if budget.taking() => budget.answered(&ctx, reply),
            urls = found.recv(), if discovering && frontier.len() < FOUND_BACKLOG => match urls {
                Some(urls) => queue_found(&ctx, &mut frontier, urls).await,
                None => discovering = false,
            },
            _ = sleep_until_some(wake) => {}
            _ = sleep_until_some(mark_at) => {}
            _ = ctx.polite.room_freed(), if !room => {}
        }
    }
    if let Some(reader) = sitemaps {
        reader.abort();
    }
    let finished = !ctx.cancel.is_cancelled() && !draining;
    // Pages already handled are committed; requests still in flight are abandoned and stay
    // queued in the stored run.
    jobs.set.abort_all();
    while let Some(done) = jobs.set.join_next_with_id().await {
        settle(&ctx, &mut frontier, &mut jobs, &mut budget, done).await;
    }
    // A split run is finished by its seeds' owner only (the others end when it is over); a
    // share that stops before lets its partitions go.
    let fenced = ctx.run.as_ref().is_some_and(|r| r.is_fenced());
    budget.finish(&ctx).await;
    budget.refund(counters.left_for_later.load(Relaxed));
    let last = Commit {
        run: ctx.run.clone(),
        finished: finished && !over && (split.is_none() || (home && quiet) || budget.exhausted()),
        release: split.is_some() && !finished && !fenced,
        unused_pages: budget.unused(),
        ..Commit::default()
    };
    if record && (last.finished || last.release) {
        send_commit(&ctx, last).await;
    }
    counters.queued.store(frontier.len() as u64, Relaxed);
    counters.in_flight.store(0, Relaxed);
    ctx.completed.store(finished && !ctx.run.as_ref().is_some_and(|r| r.is_fenced()), Relaxed);
    tracing::info!(task = %ctx.task.name(), seen = frontier.seen(), finished, "crawl ended");
}

/// A task's rate limits as this crawl keeps them: in a split run, its share of them. A share
/// of a run under way counts what its previous share here sent, and goes no faster than that
/// for one window: workers that left may have spent the rest of it (a share with no previous
/// one waits a whole window). Likewise a whole run resumed (after a stop or a crash, or taken
/// over from another owner in a cluster) waits a whole window: the crawl before may have spent
/// it just before it stopped.
///
/// Each window is kept 2 % longer (20 ms at most): a request reaches its site a little after
/// its turn, by a varying amount, and the site must never see more than the limit.
fn task_limiter(task: &Task, split: Option<&Split>, run: Option<&OpenedRun>) -> RateLimiter {
    let resumed = run.is_some_and(|r| r.resumed);
    let limits: Vec<_> = shared_limits(&task.0.limits, split.map_or(1, |s| s.share))
        .into_iter()
        .map(|(events, per)| (events, per + (per / 50).min(std::time::Duration::from_millis(20))))
        .collect();
    let mut limiter = RateLimiter::new(&limits);
    if let Some(split) = split {
        // Requests reserved for later by a share that then stopped were never sent.
        let now = Instant::now();
        let recent: Vec<Instant> = split.recent.iter().map(|t| (*t).min(now)).collect();
        limiter.replay(&recent);
        if resumed {
            limiter.fill(now);
        }
    } else if resumed {
        limiter.fill(Instant::now());
    }
    limiter
}

/// A task's rate limits as one of `share` workers applies them, so that together they keep
/// them: `events / share` per window, or one per `share / events` windows when fewer events
/// than workers.
fn shared_limits(limits: &[(u32, std::time::Duration)], share: u32) -> Vec<(u32, std::time::Duration)> {
    let share = share.max(1);
    limits
        .iter()
        .map(|&(events, per)| {
            if events >= share {
                (events / share, per)
            } else {
                (1, per.mul_f64(f64::from(share) / f64::from(events.max(1))))
            }
        })
        .collect()
}

/// Sends a poll of the inbox to the writer (ordered after every commit sent so far); `idle`
/// says whether nothing was waiting or in flight here when it was sent.
async fn ask_poll(ctx: &Ctx, polls: &mut JoinSet<(bool, Option<PollReply>)>, idle: bool) {
    let Some(run) = &ctx.run else { return };
    // Only the seeds' owner decides that the run is finished; only it asks.
    let census = ctx.split.as_ref().filter(|s| s.home).map(|s| s.count);
    match ctx.commits.poll(run.clone(), POLL_LIMIT, census).await {
        Ok(answer) => {
            polls.spawn(async move { (idle, answer.await.ok()) });
        }
        Err(_) => writer_gone(ctx),
    }
}

/// Takes the URLs sent to this owner into the frontier, committing them with the removal of
/// their inbox rows; notes whether the run is over, or quiet (nothing waits anywhere, and
/// nothing did here when the poll was sent).
async fn polled(
    ctx: &Ctx,
    frontier: &mut Frontier,
    done: Result<(bool, Option<PollReply>), tokio::task::JoinError>,
    over: &mut bool,
    quiet: &mut bool,
) {
    let (idle, polled) = match done {
        Ok((idle, Some(Ok(p)))) => (idle, p),
        Ok((_, Some(Err(e)))) => {
            store_failed(ctx, "read the inbox", &e);
            return;
        }
        Ok((_, None)) | Err(_) => return writer_gone(ctx),
    };
    *over |= polled.over;
    if polled.rows.is_empty() {
        *quiet = idle && !polled.waiting_elsewhere && frontier.is_empty();
        return;
    }
    *quiet = false;
    let mut commit = Commit { run: ctx.run.clone(), ..Commit::default() };
    for q in &polled.rows {
        commit.taken.push((q.part, q.key, q.depth));
        if let Some(req) = stored_request(ctx, q) {
            commit.queued.extend(frontier.offer(req, true).1);
        }
    }
    send_commit(ctx, commit).await;
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
    if !commit.queued.is_empty() {
        send_commit(ctx, commit).await;
    }
}

/// A stored request as the frontier takes it, if it still fits the task.
fn stored_request(ctx: &Ctx, q: &QueuedUrl) -> Option<Request> {
    match (Url::parse(&q.url), ctx.task.rule_of(q.rule)) {
        (Ok(url), Some(rule)) => {
            Some(Request { seq: q.seq, ..Request::new(url, q.depth, rule, ctx.task.0.rules[rule].priority) })
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
async fn refilled(
    ctx: &Ctx,
    frontier: &mut Frontier,
    done: Result<(Refill, Option<RefillReply>), tokio::task::JoinError>,
) {
    match done {
        Ok((refill, Some(Ok(rows)))) => {
            let exhausted = rows.len() < refill.limit;
            let mut reqs = Vec::with_capacity(rows.len());
            for q in &rows {
                match stored_request(ctx, q) {
                    Some(req) => reqs.push(req),
                    None => {
                        frontier.unfit(q.key, q.depth);
                        supersede(ctx, q.seq).await;
                    }
                }
            }
            for seq in frontier.refilled(&refill, reqs, exhausted) {
                supersede(ctx, seq).await;
            }
        }
        Ok((_, Some(Err(e)))) => store_failed(ctx, "read queued requests back", &e),
        Ok((_, None)) | Err(_) => writer_gone(ctx),
    }
}

/// A stored request not to be fetched: it no longer fits the task (its rule is gone, its URL
/// unreadable, beyond a lowered `max_depth`), or its URL was queued again closer to a seed
/// since. Marked superseded, so that nothing waits for it (a split run ends once no request
/// waits anywhere), without counting it as handled (a later, closer find of the URL is still
/// fetched).
async fn supersede(ctx: &Ctx, seq: u64) {
    let Some(run) = &ctx.run else { return };
    send_commit(
        ctx,
        Commit { run: Some(run.clone()), page: Some((seq, PageStatus::Superseded)), ..Commit::default() },
    )
    .await;
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// How long a crawl stopped at once still waits for a writer that takes no commits (it waits
/// for its database) before it drops what it has not handed over.
const STOPPED_SEND_WAIT: Duration = Duration::from_secs(1);

/// Sends a commit to the writer; whether it took it (a crawl whose writer is gone stops). A
/// crawl stopped at once (a delete, a lost lease, a drain that ran out of time) waits for a
/// writer that is behind for [`STOPPED_SEND_WAIT`] in all, not the minutes the writer may wait
/// for its database: the commits it drops are not stored, so their pages are fetched again.
async fn send_commit(ctx: &Ctx, commit: Commit) -> bool {
    let send = ctx.commits.send(commit);
    tokio::pin!(send);
    let sent = tokio::select! {
        biased;
        sent = &mut send => sent.is_ok(),
        _ = ctx.cancel.cancelled() => {
            let wait = if ctx.writer_stuck.load(Relaxed) { Duration::ZERO } else { STOPPED_SEND_WAIT };
            match tokio::time::timeout(wait, send).await {
                Ok(sent) => sent.is_ok(),
                Err(_) => {
                    if !ctx.writer_stuck.swap(true, Relaxed) {
                        tracing::warn!(
                            task = %ctx.task.name(),
                            "stopped while the writer takes nothing; dropping what it has not taken"
                        );
                    }
                    return false;
                }
            }
        }
    };
    if !sent {
        writer_gone(ctx);
    }
    sent
}

/// The stored requests sent since the last commit, to be marked in flight with the next.
fn take_sent(ctx: &Ctx) -> Vec<u64> {
    std::mem::take(&mut *ctx.sent.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The state store failed a request the crawl cannot go on without.
fn store_failed(ctx: &Ctx, doing: &str, e: &crate::store::SinkError) {
    ctx.counters.errors.fetch_add(1, Relaxed);
    tracing::error!(task = %ctx.task.name(), error = %e, "cannot {doing}; stopping the crawl");
    stopped_by(ctx, format!("cannot {doing}: {e}"));
    ctx.cancel.cancel();
}

fn writer_gone(ctx: &Ctx) {
    if !ctx.cancel.is_cancelled() {
        ctx.counters.errors.fetch_add(1, Relaxed);
        tracing::error!(task = %ctx.task.name(), "item writer is gone; stopping the crawl");
        stopped_by(ctx, "its writer is gone".into());
        ctx.cancel.cancel();
    }
}

/// Keeps the first reason the crawl stopped on its own.
fn stopped_by(ctx: &Ctx, why: String) {
    ctx.stopped_by.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(why);
}

/// Applies a finished job's outcome to the frontier and commits it. A request never sent
/// (robots.txt disallows it) gives its page of the budget back.
async fn settle(ctx: &Ctx, frontier: &mut Frontier, jobs: &mut Jobs, budget: &mut Budget, done: JobResult) {
    let id = match &done {
        Ok((id, _)) => *id,
        Err(e) => e.id(),
    };
    let job = jobs.hosts.remove(&id);
    if let Some((host, _)) = job {
        frontier.done(host);
    }
    let done = done.map(|(_, outcome)| outcome);
    let rules = &ctx.task.0.rules;
    let record = ctx.run.is_some();
    let (seq, depth, mut status, item, links, redirect, unsent) = match done {
        Ok(Some(Handled { seq, depth, status, item, links, redirect, unsent })) => {
            (seq, depth, status, item, links, redirect, unsent)
        }
        Ok(None) => return,
        Err(e) => {
            if e.is_panic() {
                ctx.counters.errors.fetch_add(1, Relaxed);
                tracing::error!(task = %ctx.task.name(), "a page handler panicked; counted as an error");
                // Failed for good: a row left waiting would keep the run from ever ending.
                if let (true, Some((_, seq))) = (record, job) {
                    let failed = Commit {
                        run: ctx.run.clone(),
                        page: Some((seq, PageStatus::Failed)),
                        sent: take_sent(ctx),
                        ..Commit::default()
                    };
                    send_commit(ctx, failed).await;
                }
            }
            return;
        }
    };
    if unsent {
        budget.refund(1);
    }
    let mut commit = Commit {
        run: ctx.run.clone(),
        page: record.then_some((seq, status)),
        sent: if record { take_sent(ctx) } else { Vec::new() },
        ..Commit::default()
    };
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
        ctx.recent.item(item);
    }
    commit.item = item;
    if commit.page.is_none() && commit.item.is_none() && commit.queued.is_empty() {
        return;
    }
    if send_commit(ctx, commit).await && has_item {
        ctx.counters.items.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::shared_limits;
    use std::time::Duration;

    #[test]
    fn workers_sharing_a_run_keep_its_rate_limits_together() {
        let s = Duration::from_secs(1);
        assert_eq!(shared_limits(&[(20, s)], 1), [(20, s)]);
        assert_eq!(shared_limits(&[(20, s)], 4), [(5, s)]);
        // 10 a second over 3 workers: 3 each (9 in all, never above 10).
        assert_eq!(shared_limits(&[(10, s)], 3), [(3, s)]);
        // Fewer events than workers: one per longer window each, 2 per second in all.
        assert_eq!(shared_limits(&[(2, s)], 4), [(1, Duration::from_secs(2))]);
    }
}
