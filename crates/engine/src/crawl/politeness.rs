//! What a crawl owes each host: its robots.txt (read once, read again while unavailable) and
//! its pace (a `Crawl-delay`, or what its 429s taught), with the waits they impose.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::fetch::{FetchError, Fetched, Fetcher, HeldBy, Throttled, Want};
use crate::frontier::HostId;
use crate::limiter::RateLimiter;
use crate::robots::{Robots, MAX_ROBOTS_BYTES};

/// The readable robots.txt files a crawl has read, per origin: a split run's next share on the
/// same worker starts with them instead of reading every host's file again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RobotsRead(HashMap<String, Arc<Robots>>);

/// Reads of an unavailable robots.txt before its host's URLs are skipped.
const ROBOTS_READS: u32 = 3;

/// What a crawl owes each host, and the state behind it: robots.txt per origin (the lock of
/// an origin is held while it is read, so its requests wait for one read; settled ones are read
/// without it) and the pace per host. Tells the dispatcher which hosts to hold back.
pub(super) struct Politeness {
    fetcher: Arc<Fetcher>,
    cancel: CancellationToken,
    /// Hosts to hold back until then, to the dispatcher.
    pauses: mpsc::UnboundedSender<(HostId, Instant)>,
    robots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<HostRobots>>>>>,
    robots_settled: Mutex<HashMap<String, Arc<Robots>>>,
    paced: Mutex<HashMap<HostId, Pace>>,
    /// Whether `paced` holds any host: until one is paced, the per-request checks take no lock.
    any_paced: AtomicBool,
    /// Jobs waiting on their host (its `Retry-After`, its robots.txt read again later, or the
    /// read of it another job is making): the dispatcher does not count them against
    /// `concurrency`, so a host that makes its requests wait holds no slot of the others.
    waiting: AtomicUsize,
    /// Told when a job starts waiting: the dispatcher may have room again.
    room: tokio::sync::Notify,
    /// Hosts that asked to wait (`Retry-After`, a 429): no try goes to them before then, also
    /// from requests already taken by the dispatcher (a pause in the frontier holds back only
    /// those still queued).
    holds: Mutex<Holds>,
    /// Whether `holds` has any host: until then the per-try check takes no lock.
    any_hold: AtomicBool,
}

/// Hosts held back, and until when the last of them is.
struct Holds {
    by_host: HashMap<HostId, Instant>,
    last: Instant,
}

impl Default for Holds {
    fn default() -> Holds {
        Holds { by_host: HashMap::new(), last: Instant::now() }
    }
}

/// A job counted as waiting on its host while this lives (see [`Politeness::waiting_on_host`]).
pub(super) struct WaitingOnHost<'a>(&'a Politeness);

impl Drop for WaitingOnHost<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Relaxed);
    }
}

impl Politeness {
    pub(super) fn new(
        fetcher: Arc<Fetcher>,
        cancel: CancellationToken,
        pauses: mpsc::UnboundedSender<(HostId, Instant)>,
        read: RobotsRead,
    ) -> Politeness {
        Politeness {
            fetcher,
            cancel,
            pauses,
            robots: Mutex::new(HashMap::new()),
            robots_settled: Mutex::new(read.0),
            paced: Mutex::new(HashMap::new()),
            any_paced: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            room: tokio::sync::Notify::new(),
            holds: Mutex::new(Holds::default()),
            any_hold: AtomicBool::new(false),
        }
    }

    /// Holds every try to `host` back until `until` (kept if later than one already set).
    fn hold(&self, host: HostId, until: Instant) {
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        holds.by_host.retain(|_, at| *at > now);
        let at = holds.by_host.entry(host).or_insert(until);
        *at = (*at).max(until);
        holds.last = holds.last.max(until);
        self.any_hold.store(true, Relaxed);
    }

    /// Until when `host` asked to wait, if it still does. Once every hold is over they are
    /// dropped, and the per-try check takes no lock again.
    fn held(&self, host: HostId, now: Instant) -> Option<Instant> {
        if !self.any_hold.load(Relaxed) {
            return None;
        }
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        if holds.last <= now {
            holds.by_host.clear();
            self.any_hold.store(false, Relaxed);
            return None;
        }
        holds.by_host.get(&host).copied().filter(|at| *at > now)
    }

    /// Counts the caller as a job waiting on its host until the guard drops, and tells the
    /// dispatcher.
    pub(super) fn waiting_on_host(&self) -> WaitingOnHost<'_> {
        self.waiting.fetch_add(1, Relaxed);
        self.room.notify_one();
        WaitingOnHost(self)
    }

    /// Jobs waiting on their host now.
    pub(super) fn jobs_waiting_on_hosts(&self) -> usize {
        self.waiting.load(Relaxed)
    }

    /// Resolves when a job has started waiting on its host since the last call.
    pub(super) async fn room_freed(&self) {
        self.room.notified().await;
    }

    /// The robots.txt files read so far and readable (a host whose file was unavailable for
    /// good gets another chance in the next share).
    pub(super) fn read(&self) -> RobotsRead {
        let settled = self.robots_settled.lock().unwrap_or_else(|p| p.into_inner());
        let readable = settled.iter().filter(|(_, r)| r.unavailable_reason().is_none());
        RobotsRead(readable.map(|(o, r)| (o.clone(), r.clone())).collect())
    }

    /// The robots.txt rules for a URL's origin, read once per crawl (or before it, by the
    /// previous share of a split run on this worker). One that could not be read
    /// (5xx, unreachable) is read again after `robots_retry`, up to [`ROBOTS_READS`] reads; until
    /// then the host is paused (`host`) and its requests wait; after them everything is disallowed.
    pub(super) async fn robots_for(&self, url: &Url, host: Option<HostId>) -> Option<Arc<Robots>> {
        let origin = url.origin().ascii_serialization();
        if let Some(r) = self.settled(&origin) {
            return Some(r);
        }
        let cell = {
            let mut map = self.robots.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(origin.clone()).or_default().clone()
        };
        // Another job may be reading the file (or waiting to read it again): wait without a slot.
        let mut slot = match cell.try_lock() {
            Ok(slot) => slot,
            Err(_) => {
                let _waiting = self.waiting_on_host();
                cell.lock().await
            }
        };
        let retry = self.fetcher.config().robots_retry.0;
        loop {
            let reads = match &*slot {
                Some(h) if h.robots.unavailable_reason().is_none() || h.reads >= ROBOTS_READS => {
                    let mut settled = self.robots_settled.lock().unwrap_or_else(|p| p.into_inner());
                    settled.insert(origin, h.robots.clone());
                    return Some(h.robots.clone());
                }
                Some(h) => {
                    let at = h.read_at + retry;
                    if let Some(host) = host {
                        let _ = self.pauses.send((host, at));
                    }
                    let _waiting = self.waiting_on_host();
                    tokio::select! {
                        _ = self.cancel.cancelled() => return None,
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                    h.reads
                }
                None => 0,
            };
            let (robots, last_read) = self.fetch_robots(&origin).await?;
            let reads = if last_read { ROBOTS_READS } else { reads + 1 };
            if let Some(why) = robots.unavailable_reason() {
                let last = reads >= ROBOTS_READS;
                tracing::warn!(%origin, reason = why, read = reads, "robots.txt unavailable; {}",
                    if last { "the host is disallowed" } else { "the host waits to read it again" });
            }
            *slot = Some(HostRobots { robots: Arc::new(robots), read_at: Instant::now(), reads });
        }
    }

    /// One read of an origin's robots.txt (`None` when the crawl was cancelled), and whether it
    /// is worth no other: a host whose name does not resolve will not come back during a crawl,
    /// so it is not waited for.
    async fn fetch_robots(&self, origin: &str) -> Option<(Robots, bool)> {
        let Ok(mut url) = Url::parse(&format!("{origin}/robots.txt")) else {
            return Some((Robots::allow_all(), true));
        };
        let ua = &self.fetcher.config().user_agent;
        // Follow up to five redirects (RFC 9309), so up to six fetches; a missing file (4xx)
        // allows all, an unavailable one (5xx, unreachable) disallows all; only the first
        // 500 KiB are parsed. One byte more is read, so that the parser knows a longer file
        // was cut and drops its cut line (at exactly the cap it took `Disallow: /private/` cut
        // to `Disallow: /` for a rule).
        for _ in 0..6 {
            let want = Want::Prefix(MAX_ROBOTS_BYTES as u64 + 1);
            let report = self.fetcher.fetch(&url, None, want, &self.cancel).await;
            match report.result {
                Ok(Fetched::Body { body, .. }) => return Some((Robots::parse(&body, ua), true)),
                Ok(Fetched::Redirect { location, .. }) => match url.join(&location) {
                    Ok(next) => url = next,
                    Err(_) => break,
                },
                Ok(Fetched::NotHtml { .. }) => unreachable!("robots.txt is fetched as any content type"),
                Err(FetchError::Cancelled) => return None,
                // A 429 is the server saying "not now", as a 5xx is: not "no robots.txt".
                Err(FetchError::Status(429)) => {
                    return Some((
                        Robots::unavailable("robots.txt unavailable (http status 429)".into()),
                        false,
                    ))
                }
                Err(FetchError::Status(400..=499)) => break,
                Err(e) => {
                    let unresolved = matches!(e, FetchError::Network(_)) && !resolves(&url).await;
                    let why = match unresolved {
                        true => format!("robots.txt unavailable ({e}; the host name does not resolve)"),
                        false => format!("robots.txt unavailable ({e})"),
                    };
                    return Some((Robots::unavailable(why), unresolved));
                }
            }
        }
        Some((Robots::allow_all(), true))
    }

    /// The least time between two request starts on `host`: its `Crawl-delay` (`floor`) or the
    /// interval learned from its 429s, whichever is longer.
    pub(super) fn pace_interval(&self, host: HostId, floor: Duration) -> Duration {
        let Some(paced) = self.paced_hosts() else { return floor };
        paced.get(&host).map_or(floor, |p| p.learned.max(floor))
    }

    /// The paces, once some host has one (the common crawl never takes this lock).
    fn paced_hosts(&self) -> Option<std::sync::MutexGuard<'_, HashMap<HostId, Pace>>> {
        if !self.any_paced.load(Relaxed) {
            return None;
        }
        Some(self.paced.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The paces, for a host about to get one.
    fn pacing(&self) -> std::sync::MutexGuard<'_, HashMap<HostId, Pace>> {
        self.any_paced.store(true, Relaxed);
        self.paced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A host answered. A learned interval holds while the host throttles now and then; after
    /// [`PACE_HOLD`] without a 429 each answer shrinks it by 5 % (a server that allows more again
    /// gets more again, a 429 at a time).
    pub(super) fn paced_ok(&self, host: HostId) {
        let Some(mut paced) = self.paced_hosts() else { return };
        let now = Instant::now();
        let Some(p) = paced.get_mut(&host) else { return };
        if p.throttled_at.is_some_and(|t| now.duration_since(t) > PACE_HOLD) {
            p.learned = p.learned.mul_f64(0.95);
            if p.learned < Duration::from_millis(1) {
                p.learned = Duration::ZERO;
            }
        }
    }

    /// A host throttled us (a 429, or any answer with `Retry-After`). A second time confirms it
    /// (once alone says little of a rate): requests are then spaced so that at most `per_host`
    /// start per `Retry-After` window (it throttled us at `per_host` in flight), with 3 %
    /// slack; each later window with a 429 widens that by a quarter (429s within one window of
    /// the last counted one answer requests sent together: they count once). See
    /// [`Politeness::paced_ok`] for the way back.
    fn paced_throttled(&self, host: HostId, retry_after: Option<Duration>) {
        let now = Instant::now();
        let per_host = self.fetcher.config().per_host.clamp(1, 1000) as u32;
        let mut paced = self.pacing();
        let p = paced.entry(host).or_insert_with(|| Pace::new(now));
        if p.throttled(now, retry_after, per_host) {
            tracing::debug!(host, interval_ms = p.learned.as_millis() as u64, "host throttles us; pacing it");
        }
    }

    /// Whether `url` is disallowed by its origin's robots.txt, read already (`false` while
    /// it is not: the request finds out when it asks). Looked at only where it matters: a host
    /// paced, or `limited` (the task's rate limits).
    pub(super) fn known_disallowed(&self, url: &Url, limited: bool) -> bool {
        if !limited && !self.any_paced.load(Relaxed) {
            return false;
        }
        let origin = url.origin().ascii_serialization();
        self.settled(&origin).is_some_and(|r| !r.allowed(super::job::path_and_query(url)))
    }

    /// The robots.txt of `origin`, once read for good.
    fn settled(&self, origin: &str) -> Option<Arc<Robots>> {
        self.robots_settled.lock().unwrap_or_else(|p| p.into_inner()).get(origin).cloned()
    }

    /// When the dispatcher, having just taken a request of `host`, may take the next one: after
    /// the turn that request will get, for a paced host (so at most one request of a paced host
    /// waits for its turn holding a slot); `None` for a host without a pace.
    pub(super) fn hold_after_pop(&self, host: HostId, now: Instant) -> Option<Instant> {
        let paced = self.paced_hosts()?;
        let p = paced.get(&host)?;
        let interval = p.learned.max(p.interval);
        (!interval.is_zero()).then(|| p.next.max(now) + interval)
    }

    /// Whether a request to `host` may be sent now, with the connection slots held: the
    /// host's last one went at least `interval` before (its turn was taken in
    /// [`Politeness::wait_turn`], but a request may be held after its turn, and the next one
    /// must not then follow it closer), and the task's rate limits allow one. Both are counted
    /// only when both allow it (the host's next turn then comes `interval` later at the
    /// earliest); else the answer is when to ask again.
    pub(super) fn clear_to_send(
        &self,
        host: HostId,
        interval: Duration,
        sends: Option<&Mutex<RateLimiter>>,
    ) -> Result<(), (Instant, HeldBy)> {
        if let Some(until) = self.held(host, Instant::now()) {
            return Err((until, HeldBy::Host));
        }
        let mut paced = (!interval.is_zero()).then(|| self.pacing());
        let mut limits = sends.map(|s| s.lock().unwrap_or_else(|p| p.into_inner()));
        // After the locks: a time read before them could be older than one recorded meanwhile.
        let now = Instant::now();
        if let Some(sent) = paced.as_ref().and_then(|p| p.get(&host)).and_then(|p| p.sent) {
            if sent + interval > now {
                return Err((sent + interval, HeldBy::Host));
            }
        }
        if let Some(limits) = limits.as_mut() {
            limits.try_reserve(now).map_err(|at| (at, HeldBy::Limits))?;
        }
        if let Some(paced) = paced.as_mut() {
            let pace = paced.entry(host).or_insert_with(|| Pace::new(now));
            pace.sent = Some(now);
            pace.next = pace.next.max(now + interval);
        }
        Ok(())
    }

    /// Waits for this request's turn on a paced host (requests start at least `delay` apart: a
    /// `Crawl-delay`, or what its 429s taught) and pauses the host in the frontier until the turn
    /// after it, so the next request of the host does not hold a slot while it waits. `false` when
    /// cancelled.
    pub(super) async fn wait_turn(&self, host: HostId, delay: Duration) -> bool {
        let now = Instant::now();
        let turn = {
            let mut paced = self.pacing();
            let pace = paced.entry(host).or_insert_with(|| Pace::new(now));
            let turn = pace.next.max(now);
            pace.next = turn + delay;
            pace.interval = delay;
            turn
        };
        let _ = self.pauses.send((host, turn + delay));
        if turn <= now {
            return true;
        }
        // Waiting for its turn (a Crawl-delay, a learned pace) holds no slot of other hosts.
        let _waiting = self.waiting_on_host();
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep_until(turn.into()) => true,
        }
    }
}

/// Whether a URL's host name resolves to an address (an IP literal always does).
async fn resolves(url: &Url) -> bool {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            tokio::net::lookup_host((host, port)).await.is_ok_and(|mut addrs| addrs.next().is_some())
        }
        _ => false,
    }
}

/// A host's robots.txt as read, and how often it was tried.
struct HostRobots {
    robots: Arc<Robots>,
    read_at: Instant,
    reads: u32,
}

/// A host's pacing: when its next request may start, and the interval learned from its 429s.
struct Pace {
    next: Instant,
    /// When the host's last request was sent.
    sent: Option<Instant>,
    learned: Duration,
    /// The interval of the last turn taken (a `Crawl-delay` or the learned one).
    interval: Duration,
    /// The last 429.
    throttled_at: Option<Instant>,
    /// The last 429 that changed the pace.
    counted_at: Option<Instant>,
}
/// The longest interval learned from 429s.
const PACE_MAX: Duration = Duration::from_secs(60);

impl Pace {
    /// Learns from a throttling answer at `now` (see [`Politeness::paced_throttled`]); whether
    /// the pace changed.
    fn throttled(&mut self, now: Instant, retry_after: Option<Duration>, per_host: u32) -> bool {
        let window =
            retry_after.unwrap_or(Duration::from_secs(1)).clamp(Duration::from_millis(100), PACE_MAX);
        if self.throttled_at.replace(now).is_none() {
            return false;
        }
        if self.counted_at.is_some_and(|c| now.duration_since(c) < window) {
            return false;
        }
        self.counted_at = Some(now);
        let interval = match self.learned.is_zero() {
            true => window.mul_f64(1.03) / per_host.max(1),
            false => self.learned.mul_f64(1.25),
        };
        self.learned = interval.min(PACE_MAX);
        true
    }

    fn new(now: Instant) -> Pace {
        Pace {
            next: now,
            sent: None,
            learned: Duration::ZERO,
            interval: Duration::ZERO,
            throttled_at: None,
            counted_at: None,
        }
    }
}

/// How long a learned interval holds after the host's last 429.
const PACE_HOLD: Duration = Duration::from_secs(30);

/// How a request waits after its host throttled it: the host is held back for `Retry-After`,
/// its pace is learned, and the retry then takes its turn like any other request of the host.
pub(super) struct HostThrottle<'a> {
    pub(super) polite: &'a Politeness,
    pub(super) host: HostId,
    pub(super) floor: Duration,
    /// The task's rate limits, which every try waits for.
    pub(super) sends: Option<&'a Mutex<RateLimiter>>,
    /// A stored request: its number, noted as sent (once) when its first try goes.
    pub(super) sent: Option<(u64, &'a Mutex<Vec<u64>>)>,
    pub(super) marked: AtomicBool,
    /// A stored request: fired when the crawl drains, so a retry still to come is left to the
    /// run's next owner (its row still waits) instead of drawing out the drain.
    pub(super) drain: Option<&'a tokio_util::sync::CancellationToken>,
}

impl Throttled for HostThrottle<'_> {
    fn wait(
        &self,
        retry_after: Option<Duration>,
        backoff: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.hold_back(retry_after, backoff);
            {
                let _waiting = self.polite.waiting_on_host();
                tokio::time::sleep(retry_after.unwrap_or(backoff)).await;
            }
            // (Counted as waiting in there when it sleeps, once.)
            let interval = self.polite.pace_interval(self.host, self.floor);
            if !interval.is_zero() {
                self.polite.wait_turn(self.host, interval).await;
            }
        })
    }

    fn hold_back(&self, retry_after: Option<Duration>, backoff: Duration) {
        self.polite.paced_throttled(self.host, retry_after);
        let until = Instant::now() + retry_after.unwrap_or(backoff);
        self.polite.hold(self.host, until);
        let _ = self.polite.pauses.send((self.host, until));
    }

    fn held_until(
        &self,
        at: Instant,
        by: HeldBy,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            // Held back by its host (its Retry-After, its pace): no slot meanwhile. Held back by
            // the task's limits it keeps its slot: another request would wait for them too.
            let _waiting = (by == HeldBy::Host).then(|| self.polite.waiting_on_host());
            tokio::time::sleep_until(at.into()).await;
        })
    }

    fn left_for_later(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        match self.drain {
            Some(drain) => Box::pin(drain.cancelled()),
            None => Box::pin(std::future::pending()),
        }
    }

    fn clear_to_send(&self) -> Result<(), (Instant, HeldBy)> {
        let interval = self.polite.pace_interval(self.host, self.floor);
        self.polite.clear_to_send(self.host, interval, self.sends)?;
        if let Some((seq, sent)) = self.sent.filter(|_| !self.marked.swap(true, Relaxed)) {
            sent.lock().unwrap_or_else(|p| p.into_inner()).push(seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_widens_once_per_window_with_429s() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let second = Some(Duration::from_secs(1));
        let mut p = Pace::new(t0);
        // The first 429 only starts counting; the second sets per_host (8) per second.
        assert!(!p.throttled(at(0), second, 8));
        assert!(p.throttled(at(50), second, 8));
        assert_eq!(p.learned, Duration::from_millis(1030) / 8);
        // 429s arriving every 200 ms (closer than a window): one widening per window, not none.
        let mut widened = 0;
        for i in 1..=20 {
            widened += u32::from(p.throttled(at(50 + i * 200), second, 8));
        }
        assert_eq!(widened, 4, "one per second over four seconds");
        let want = (Duration::from_millis(1030) / 8).mul_f64(1.25f64.powi(4));
        assert!(p.learned.abs_diff(want) < Duration::from_micros(1), "{:?} vs {want:?}", p.learned);
    }

    #[tokio::test]
    async fn ip_literals_and_loopback_names_resolve_without_the_network() {
        for u in ["http://127.0.0.1:1/robots.txt", "http://[::1]:1/robots.txt", "http://localhost/robots.txt"]
        {
            assert!(resolves(&Url::parse(u).unwrap()).await, "{u}");
        }
    }
}
