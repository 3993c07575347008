//! The frontier of one task run: which URL to fetch next, and which were already seen.
//!
//! A pure state machine (no I/O; the caller passes the clock). Requests wait in one queue per
//! host; a host is *ready* while it has fewer than `per_host` requests in flight and is not
//! paused (by a `Retry-After`). [`Frontier::pop`] takes the best request of any ready host, so
//! a slow, saturated or paused host never holds a dispatch slot while another host could be
//! served. Among ready hosts, a paced one (ever paused: `Retry-After`, `Crawl-delay`, a pace
//! learned from 429s) goes first, since its turns are scarce and it would otherwise finish
//! last; then the order is breadth-first: lower depth first, then higher rule priority, then
//! first-come per host (the k-th request of every host before the (k+1)-th of any: hosts take
//! turns).
//!
//! Deduplication happens when a URL is queued, on its normalized form; the visited set keeps
//! only a 64-bit word per URL (56 bits of its key, its best depth, whether it is spilled). A
//! URL found again at a smaller depth while it still waits moves up to that depth (with
//! concurrent fetches a deeper path can be found first), so `max_depth` never cuts off a page
//! within reach (depths are told apart up to 126).
//!
//! With a stored run the queue is bounded: each host keeps at most `window` requests in
//! memory (*held*); later ones are *spilled* (their rows wait in the database only) and read
//! back, best `(depth, seq)` first, when the host's window runs low. The frontier asks for that
//! ([`Frontier::take_refills`]) and is given the rows ([`Frontier::refilled`]); it never does
//! I/O itself. The visited set remembers each URL's best depth and whether its row is spilled
//! (in the word it keeps anyway), so a spilled URL found again closer to a seed gets a new row
//! at that depth; its first row is dropped when it is read back (and marked superseded).
//!
//! A run split across workers ([`Frontier::with_parts`]) puts every host in one of a fixed
//! number of partitions ([`partition_of`]); this frontier holds only the hosts of the
//! partitions it owns. A URL of another partition is *sent*: it comes back as a row for the
//! shared inbox, and its owner takes it from there. Requests are numbered per partition (the
//! partition in the top bits), so owners of different partitions never pick the same number.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};

mod visited;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Instant;
use visited::{Mark, Visited};

use url::Url;

use crate::scope::url_key;
use crate::store::{part_of_seq, QueuedUrl, PART_SHIFT};

/// A host's index in the frontier (a host and port).
pub type HostId = u32;

/// With a window, the requests held over all hosts are bounded by this many windows...
pub const BUDGET_WINDOWS: usize = 50;
/// ... beyond which a host holds at most this many (so every host still makes progress).
pub const MIN_HELD: usize = 16;

/// The partition of a host (as [`host_name`] spells it) in a run split into `count`
/// partitions: FNV-1a of the name, so every worker and master computes the same one.
pub fn partition_of(host: &str, count: u32) -> u32 {
    if count <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(count)) as u32
}

/// A request waiting in the frontier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Normalized URL.
    pub url: Url,
    /// Link distance from a seed (seeds are 0).
    pub depth: u32,
    /// Index of the rule that handles the response.
    pub rule: usize,
    /// Priority of that rule; higher goes first within a depth.
    pub priority: i32,
    /// Dedup keys of the URLs whose redirects led here, oldest first (empty for links).
    pub redirected_from: Vec<u64>,
    /// The URL's host, as assigned by the frontier when it pops the request.
    pub host: HostId,
    /// The request's number in the run, as assigned by the frontier when it queues it.
    pub seq: u64,
}

/// A host whose spilled requests should be read back: up to `limit` of its spilled rows,
/// best `(depth, seq)` first, which become held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refill {
    /// The host's id in this frontier.
    pub host: HostId,
    /// The host as stored in `crawler_frontier.host` (host, and port when not the default).
    pub name: Arc<str>,
    /// Rows wanted.
    pub limit: usize,
}

/// The host part of a URL as the state rows store it: `host[:port]`, port only when not the
/// scheme's default.
pub fn host_name(url: &Url) -> &str {
    &url[url::Position::BeforeHost..url::Position::AfterPort]
}

impl Request {
    /// A request reached by a link (not by a redirect).
    pub fn new(url: Url, depth: u32, rule: usize, priority: i32) -> Request {
        Request { url, depth, rule, priority, redirected_from: Vec::new(), host: 0, seq: 0 }
    }
}

/// What happened to a URL offered to the frontier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Queued for fetching.
    Queued,
    /// Already queued or fetched in this run.
    Seen,
    /// Deeper than the task's `max_depth`.
    TooDeep,
    /// Of a partition another worker owns: to be sent to it through the shared inbox.
    Sent,
}

/// A hasher for keys that are already uniformly distributed 64-bit hashes.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Ordering of queued requests: higher is served first.
type Rank = (Reverse<u32>, i32, Reverse<u64>);

/// A queued request in compact form: the URL as text (re-parsed on pop, shared with the state
/// row that records it), no spare capacity.
struct Entry {
    seq: u64,
    key: u64,
    url: Arc<str>,
    depth: u32,
    priority: i32,
    rule: u32,
    /// Its place in its host's arrivals at its depth (set when it is held).
    turn: u32,
    redirected_from: Box<[u64]>,
}

impl Entry {
    /// First-come within a depth and priority counts per host: the k-th request of every host
    /// goes before the (k+1)-th of any, so hosts advance side by side and a crawl does not end
    /// with its last hosts served one at a time at their `per_host` limit (nor, split across
    /// workers, with the partition that moved away holding most of what was left).
    fn rank(&self) -> Rank {
        (Reverse(self.depth), self.priority, Reverse(u64::from(self.turn)))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// One host's queue and how busy it is.
#[derive(Default)]
struct HostQueue {
    name: Arc<str>,
    /// Requests held so far at each depth (the next one's turn there).
    turns: Vec<u32>,
    /// Its partition.
    part: u32,
    /// Its partition is owned elsewhere: its URLs are sent, never held.
    foreign: bool,
    queue: BinaryHeap<Entry>,
    in_flight: u32,
    /// Paused until then.
    not_before: Option<Instant>,
    /// Was ever paused (a `Retry-After`, a crawl delay, a learned pace): its turns are scarce,
    /// so when it can be served it goes before hosts that can be served any time.
    paced: bool,
    /// The rank under which the host is listed as ready, if it is.
    listed: Option<Rank>,
    /// Requests in the database only (spilled).
    spilled: u64,
    /// A refill was asked for and has not come back.
    refilling: bool,
    /// How many were spilled when it was asked for.
    asked: u64,
}

/// A ready host, ordered by whether it is paced, then by the rank of its best request.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Ready {
    paced: bool,
    rank: Rank,
    host: HostId,
}

/// The per-host queues, ready set and visited set of one task run.
pub struct Frontier {
    hosts: Vec<HostQueue>,
    /// Host ids by host name (looked up without allocating).
    host_ids: HashMap<Arc<str>, HostId>,
    ready: BinaryHeap<Ready>,
    paused: BinaryHeap<Reverse<(Instant, HostId)>>,
    visited: Visited,
    /// URLs sent to other owners' partitions, with the smallest depth sent.
    sent: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
    /// Best depth and number of each URL waiting in memory; entries of a queue at another
    /// depth are stale.
    waiting: HashMap<u64, (u32, u64), BuildHasherDefault<KeyHasher>>,
    /// Entries queued (stale ones included) and not popped.
    entries: usize,
    /// The last request number used, per partition.
    seqs: HashMap<u32, u64>,
    /// Partitions of the run, and the ones this frontier owns (`None`: all of them).
    parts: u32,
    owned: Option<HashSet<u32>>,
    max_depth: u32,
    reload: bool,
    per_host: u32,
    /// Requests held in memory per host when spilling (unbounded without).
    window: usize,
    /// Spilled requests over all hosts.
    spilled: u64,
    /// Hosts whose spilled requests should be read back.
    refills: Vec<HostId>,
    /// Rows asked for by refills not answered yet.
    incoming: usize,
    /// The id each rule is stored under (see `Task::rule_of`); none: the rule's index.
    rule_ids: Vec<u32>,
}

impl Frontier {
    /// An empty frontier serving at most `per_host` requests of one host at a time. With
    /// `reload`, URLs are not deduplicated.
    pub fn new(max_depth: u32, reload: bool, per_host: usize) -> Frontier {
        Frontier {
            hosts: Vec::new(),
            host_ids: HashMap::new(),
            ready: BinaryHeap::new(),
            paused: BinaryHeap::new(),
            visited: Visited::default(),
            sent: HashMap::default(),
            waiting: HashMap::default(),
            entries: 0,
            seqs: HashMap::new(),
            parts: 1,
            owned: None,
            max_depth,
            reload,
            per_host: per_host.clamp(1, u32::MAX as usize) as u32,
            window: usize::MAX,
            spilled: 0,
            refills: Vec::new(),
            incoming: 0,
            rule_ids: Vec::new(),
        }
    }

    /// Stores rule `i` as `ids[i]` in the rows it gives to record (a task's rules by name).
    pub fn with_rule_ids(mut self, ids: Vec<u32>) -> Frontier {
        self.rule_ids = ids;
        self
    }

    /// What a row records for rule `index`.
    fn stored_rule(&self, index: usize) -> u32 {
        self.rule_ids.get(index).copied().unwrap_or(index as u32)
    }

    /// Keeps at most `window` requests per host in memory, and once `BUDGET_WINDOWS` windows'
    /// worth are held over all hosts, at most `MIN_HELD` more per host; recorded requests
    /// beyond that are spilled to the database and read back through refills. Not with
    /// `reload`.
    pub fn with_window(mut self, window: usize) -> Frontier {
        if !self.reload {
            self.window = window.max(2);
        }
        self
    }

    /// Holds only the hosts of the `owned` partitions (of `count`); URLs of other hosts are
    /// [`Admission::Sent`].
    pub fn with_parts(mut self, count: u32, owned: impl IntoIterator<Item = u32>) -> Frontier {
        self.parts = count.max(1);
        self.owned = Some(owned.into_iter().collect());
        self
    }

    /// How many requests a host may hold now.
    fn cap(&self) -> usize {
        if self.entries >= self.window.saturating_mul(BUDGET_WINDOWS) {
            MIN_HELD.min(self.window)
        } else {
            self.window
        }
    }

    /// Offers a request; it is queued unless too deep or already seen (a URL still waiting at
    /// a greater depth is queued again at this one).
    pub fn push(&mut self, req: Request) -> Admission {
        self.offer(req, false).0
    }

    /// Like [`Frontier::push`]; with `record`, a queued request also comes back as the state row
    /// to store.
    pub fn offer(&mut self, req: Request, record: bool) -> (Admission, Option<QueuedUrl>) {
        self.admit(req, None, record)
    }

    /// Queues a request of a resumed run under the number it was stored with.
    pub fn restore(&mut self, req: Request, seq: u64) -> Admission {
        self.admit(req, Some(seq), false).0
    }

    fn admit(&mut self, req: Request, stored: Option<u64>, record: bool) -> (Admission, Option<QueuedUrl>) {
        if req.depth > self.max_depth {
            return (Admission::TooDeep, None);
        }
        let key = url_key(&req.url);
        if self.owned.is_some() {
            let host = self.host_id(&req.url);
            if self.hosts[host as usize].foreign {
                return self.send(req, key, host, record);
            }
        }
        let mut replaces = None;
        let seen = if self.reload { None } else { self.visited.get(key) };
        if let Some(seen) = seen {
            match self.waiting.get(&key) {
                Some(&(best, seq)) if req.depth < best => replaces = Some(seq),
                // Its row waits spilled, deeper: a new row at this depth; the first one is
                // dropped when it is read back.
                None if seen.spilled && Mark::capped(req.depth) < seen.depth => {}
                _ => return (Admission::Seen, None),
            }
        }
        let host = self.host_id(&req.url);
        let part = self.hosts[host as usize].part;
        let last = self.seqs.entry(part).or_insert(u64::from(part) << PART_SHIFT);
        let seq = match stored {
            Some(seq) => {
                *last = (*last).max(seq);
                seq
            }
            None => {
                *last += 1;
                *last
            }
        };
        let url: Arc<str> = Arc::from(String::from(req.url));
        let cap = self.cap();
        let stored_rule = self.stored_rule(req.rule);
        let hq = &mut self.hosts[host as usize];
        // Spill: the window (or the host's share of the budget) is full, or requests before
        // this one are spilled already. Redirect hops stay in memory with their chain (loop
        // detection needs it).
        let spill = record && req.redirected_from.is_empty() && (hq.spilled > 0 || hq.queue.len() >= cap);
        let row = record.then(|| QueuedUrl {
            seq,
            key,
            url: url.clone(),
            host: hq.name.clone(),
            part,
            depth: req.depth,
            rule: stored_rule,
            priority: req.priority,
            replaces,
            held: !spill,
            sent: false,
        });
        if !self.reload {
            let mark = Mark { depth: req.depth, spilled: spill };
            if seen.is_some() {
                self.visited.set(key, mark);
            } else {
                self.visited.add_new(key, mark);
            }
        }
        if spill {
            hq.spilled += 1;
            self.spilled += 1;
            self.waiting.remove(&key);
            return (Admission::Queued, row);
        }
        if !self.reload {
            self.waiting.insert(key, (req.depth, seq));
        }
        self.hold(
            host,
            Entry {
                seq,
                key,
                url,
                depth: req.depth,
                priority: req.priority,
                rule: req.rule as u32,
                turn: 0,
                redirected_from: req.redirected_from.into_boxed_slice(),
            },
        );
        (Admission::Queued, row)
    }

    /// A URL of another owner's partition: sent once, and again only when found closer to a
    /// seed (its owner then moves it up, or fetches it at the smaller depth).
    fn send(&mut self, req: Request, key: u64, host: HostId, record: bool) -> (Admission, Option<QueuedUrl>) {
        if !self.reload {
            match self.sent.get(&key) {
                Some(&depth) if depth <= req.depth => return (Admission::Seen, None),
                _ => {
                    self.sent.insert(key, req.depth);
                }
            }
        }
        let stored_rule = self.stored_rule(req.rule);
        let hq = &self.hosts[host as usize];
        let row = record.then(|| QueuedUrl {
            seq: 0,
            key,
            url: Arc::from(String::from(req.url)),
            host: hq.name.clone(),
            part: hq.part,
            depth: req.depth,
            rule: stored_rule,
            priority: req.priority,
            replaces: None,
            held: false,
            sent: true,
        });
        (Admission::Sent, row)
    }

    /// Puts an entry in its host's memory queue.
    fn hold(&mut self, host: HostId, mut entry: Entry) {
        let hq = &mut self.hosts[host as usize];
        let depth = entry.depth as usize;
        if hq.turns.len() <= depth {
            hq.turns.resize(depth + 1, 0);
        }
        entry.turn = hq.turns[depth];
        hq.turns[depth] = hq.turns[depth].saturating_add(1);
        let better = hq.queue.peek().is_none_or(|top| entry.rank() > top.rank());
        hq.queue.push(entry);
        self.entries += 1;
        if better {
            self.list(host);
        }
    }

    /// Counts `count` requests of the host of `url` as waiting in the database (a resumed
    /// run's requests beyond the window).
    pub fn spilled_before(&mut self, url: &Url, count: u64) {
        if count == 0 || self.window == usize::MAX {
            return;
        }
        let host = self.host_id(url);
        self.hosts[host as usize].spilled += count;
        self.spilled += count;
        self.want_refill(host);
    }

    /// Hosts whose spilled requests should be read back now. Each is asked for once until
    /// [`Frontier::refilled`] answers it.
    pub fn take_refills(&mut self) -> Vec<Refill> {
        let budget = self.window.saturating_mul(BUDGET_WINDOWS);
        let cap = self.cap();
        let hosts = std::mem::take(&mut self.refills);
        let mut refills = Vec::with_capacity(hosts.len());
        for host in hosts {
            // Within the budget, counting what earlier refills may still bring.
            let room = budget.saturating_sub(self.entries + self.incoming).max(MIN_HELD);
            let limit = (cap / 2 + 1).min(room);
            self.incoming += limit;
            let hq = &mut self.hosts[host as usize];
            hq.asked = hq.spilled;
            refills.push(Refill { host, name: hq.name.clone(), limit });
        }
        refills
    }

    /// The rows a refill read back, best first (numbered as stored); `exhausted` when fewer
    /// came than were asked for: nothing was left spilled when the refill ran. Returns the
    /// numbers of the rows dropped: their URL was queued again closer to a seed since (or waits
    /// in memory under another row); they are to be marked superseded.
    pub fn refilled(&mut self, refill: &Refill, rows: Vec<Request>, exhausted: bool) -> Vec<u64> {
        let host = refill.host;
        self.incoming = self.incoming.saturating_sub(refill.limit);
        // Spilled after the refill was asked for: not among the rows it could see.
        let hq = &mut self.hosts[host as usize];
        let later = hq.spilled.saturating_sub(hq.asked);
        let left = if exhausted { 0 } else { hq.asked.saturating_sub(rows.len() as u64) };
        self.spilled -= hq.spilled - (later + left);
        hq.spilled = later + left;
        hq.refilling = false;
        let mut dropped = Vec::new();
        for req in rows {
            let key = url_key(&req.url);
            // Beyond a lowered max_depth (a resumed run), or queued closer to a seed since.
            let best = req.depth <= self.max_depth
                && match self.waiting.get(&key) {
                    Some(&(depth, held)) if depth > req.depth => {
                        // Not expected (a URL found closer while held is not spilled under
                        // its old row), but then the held row is the one not to fetch.
                        dropped.push(held);
                        true
                    }
                    Some(_) => false,
                    None => self.visited.read_back(key, req.depth),
                };
            if !best {
                dropped.push(req.seq);
                continue;
            }
            self.waiting.insert(key, (req.depth, req.seq));
            self.hold(
                host,
                Entry {
                    seq: req.seq,
                    key,
                    url: Arc::from(String::from(req.url)),
                    depth: req.depth,
                    priority: req.priority,
                    rule: req.rule as u32,
                    turn: 0,
                    redirected_from: Box::default(),
                },
            );
        }
        self.want_refill(host);
        self.list(host);
        dropped
    }

    /// A spilled row read back that will not be fetched (its rule is gone, its URL no longer
    /// reads; the caller marks it superseded). When it was its URL's best row, the URL is
    /// forgotten: found again (by a rule that still exists), it is queued. Call before
    /// [`Frontier::refilled`] hands over the rest of the rows.
    ///
    /// Safe because no other row of the URL can still wait: rows closer to a seed come back
    /// first, a deeper row would have been dropped when this one was queued, and opening a
    /// run keeps one row per URL. Otherwise a forgotten URL's other row would be fetched too.
    pub fn unfit(&mut self, key: u64, depth: u32) {
        if self.waiting.contains_key(&key) {
            return;
        }
        if self.visited.get(key).is_some_and(|m| m.spilled && m.depth == Mark::capped(depth)) {
            self.visited.remove(key);
        }
    }

    fn want_refill(&mut self, host: HostId) {
        let cap = self.cap();
        let hq = &mut self.hosts[host as usize];
        if hq.spilled > 0 && !hq.refilling && hq.queue.len() <= cap / 2 {
            hq.refilling = true;
            self.refills.push(host);
        }
    }

    /// Numbers new requests of `seq`'s partition after it (a resumed run's last stored
    /// number of that partition).
    pub fn continue_after(&mut self, seq: u64) {
        let last = self.seqs.entry(part_of_seq(seq)).or_insert(0);
        *last = (*last).max(seq);
    }

    /// Marks a URL key as already handled (a resumed run's done, failed and skipped URLs).
    pub fn mark_handled(&mut self, key: u64) {
        self.visited.set(key, Mark { depth: 0, spilled: false });
    }

    /// Marks a URL key as waiting spilled at `depth` (a resumed run's rows beyond the window).
    pub fn mark_spilled(&mut self, key: u64, depth: u32) {
        self.visited.insert(key, Mark { depth, spilled: true });
    }

    /// The best request of any ready host at `now`; its host counts it as in flight until
    /// [`Frontier::done`].
    pub fn pop(&mut self, now: Instant) -> Option<Request> {
        while let Some(&Reverse((at, host))) = self.paused.peek() {
            if at > now {
                break;
            }
            self.paused.pop();
            let hq = &mut self.hosts[host as usize];
            if hq.not_before == Some(at) {
                hq.not_before = None;
                self.list(host);
            }
        }
        while let Some(Ready { rank, host, .. }) = self.ready.pop() {
            let hq = &mut self.hosts[host as usize];
            if hq.listed != Some(rank) {
                continue;
            }
            hq.listed = None;
            match self.head(host) {
                Some(head) if head == rank => {}
                Some(_) => {
                    self.list(host);
                    continue;
                }
                None => continue,
            }
            let hq = &mut self.hosts[host as usize];
            let e = hq.queue.pop().expect("the head exists");
            hq.in_flight += 1;
            self.entries -= 1;
            if !self.reload {
                self.waiting.remove(&e.key);
            }
            self.want_refill(host);
            self.list(host);
            // The text came from a parsed URL, so it parses again.
            let Ok(url) = Url::parse(&e.url) else {
                self.done(host);
                continue;
            };
            return Some(Request {
                url,
                depth: e.depth,
                rule: e.rule as usize,
                priority: e.priority,
                redirected_from: e.redirected_from.into_vec(),
                host,
                seq: e.seq,
            });
        }
        None
    }

    /// A request of `host` is no longer in flight.
    pub fn done(&mut self, host: HostId) {
        if let Some(hq) = self.hosts.get_mut(host as usize) {
            hq.in_flight = hq.in_flight.saturating_sub(1);
            self.list(host);
        }
    }

    /// Serves nothing of `host` before `until` (a `Retry-After`, a crawl delay).
    pub fn pause(&mut self, host: HostId, until: Instant) {
        let Some(hq) = self.hosts.get_mut(host as usize) else { return };
        hq.paced = true;
        if hq.not_before.is_none_or(|t| until > t) {
            hq.not_before = Some(until);
            hq.listed = None;
            self.paused.push(Reverse((until, host)));
        }
    }

    /// When a paused host may become ready, if one is paused.
    pub fn next_wake(&self) -> Option<Instant> {
        self.paused.peek().map(|Reverse((at, _))| *at)
    }

    /// Requests of `host` in flight.
    pub fn in_flight(&self, host: HostId) -> u32 {
        self.hosts.get(host as usize).map_or(0, |h| h.in_flight)
    }

    /// Requests waiting (in memory or spilled).
    pub fn len(&self) -> usize {
        if self.reload {
            self.entries
        } else {
            self.waiting.len() + self.spilled as usize
        }
    }

    /// Requests waiting per owned partition (in memory, stale entries included, or spilled),
    /// partitions in order.
    pub fn queued_by_part(&self) -> Vec<(u32, u64)> {
        let mut by: std::collections::BTreeMap<u32, u64> =
            self.owned.as_ref().map(|o| o.iter().map(|p| (*p, 0)).collect()).unwrap_or_default();
        for hq in self.hosts.iter().filter(|h| !h.foreign) {
            *by.entry(hq.part).or_default() += hq.queue.len() as u64 + hq.spilled;
        }
        by.into_iter().collect()
    }

    /// Requests waiting in memory.
    pub fn held(&self) -> usize {
        self.entries
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct hosts met so far.
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Distinct URLs seen in this run (queued or fetched).
    pub fn seen(&self) -> usize {
        self.visited.len()
    }

    /// Bytes held by the visited set (its table, not counting the queue).
    pub fn visited_bytes(&self) -> usize {
        // hashbrown keeps buckets at a power of two, at most 7/8 full, each a u64 slot plus
        // one control byte.
        let buckets = (self.visited.capacity() * 8 / 7).next_power_of_two();
        buckets * (8 + 1)
    }

    fn host_id(&mut self, url: &Url) -> HostId {
        let name = host_name(url);
        if let Some(id) = self.host_ids.get(name) {
            return *id;
        }
        let id = self.hosts.len() as HostId;
        let part = partition_of(name, self.parts);
        let foreign = self.owned.as_ref().is_some_and(|o| !o.contains(&part));
        let name: Arc<str> = name.into();
        self.host_ids.insert(name.clone(), id);
        self.hosts.push(HostQueue { name, part, foreign, ..HostQueue::default() });
        id
    }

    /// The rank of a host's best live request, dropping stale entries on the way.
    fn head(&mut self, host: HostId) -> Option<Rank> {
        let hq = &mut self.hosts[host as usize];
        let mut dropped = false;
        let mut head = None;
        while let Some(e) = hq.queue.peek() {
            if !self.reload && self.waiting.get(&e.key).map(|w| w.0) != Some(e.depth) {
                hq.queue.pop();
                self.entries -= 1;
                dropped = true;
                continue;
            }
            head = Some(e.rank());
            break;
        }
        if dropped {
            // The stale entries counted against the window: spilled rows may be due now.
            self.want_refill(host);
        }
        head
    }

    /// Lists a host as ready under its best request's rank, if it can be served now.
    fn list(&mut self, host: HostId) {
        let (in_flight, paused) = {
            let hq = &self.hosts[host as usize];
            (hq.in_flight, hq.not_before.is_some())
        };
        if in_flight >= self.per_host || paused {
            return;
        }
        let Some(rank) = self.head(host) else { return };
        let hq = &mut self.hosts[host as usize];
        if hq.listed != Some(rank) {
            hq.listed = Some(rank);
            self.ready.push(Ready { paced: hq.paced, rank, host });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn req(path: &str, depth: u32, priority: i32) -> Request {
        Request::new(Url::parse(&format!("http://h{path}")).unwrap(), depth, 0, priority)
    }

    #[test]
    fn dedups_depth_limits_and_orders_breadth_first() {
        let mut f = Frontier::new(2, false, usize::MAX);
        assert_eq!(f.push(req("/a", 1, 0)), Admission::Queued);
        assert_eq!(f.push(req("/a", 2, 0)), Admission::Seen);
        assert_eq!(f.push(req("/deep", 3, 0)), Admission::TooDeep);
        assert_eq!(f.push(req("/b", 2, 0)), Admission::Queued);
        assert_eq!(f.push(req("/c", 0, 0)), Admission::Queued);
        assert_eq!(f.push(req("/d", 1, 5)), Admission::Queued);
        let order: Vec<_> =
            std::iter::from_fn(|| f.pop(Instant::now())).map(|r| r.url.path().to_owned()).collect();
        assert_eq!(order, ["/c", "/d", "/a", "/b"]);
        assert_eq!(f.seen(), 4);
    }

    #[test]
    fn a_url_found_again_closer_to_a_seed_moves_up() {
        let mut f = Frontier::new(3, false, usize::MAX);
        assert_eq!(f.push(req("/x", 3, 0)), Admission::Queued);
        assert_eq!(f.push(req("/y", 2, 0)), Admission::Queued);
        assert_eq!(f.push(req("/x", 1, 0)), Admission::Queued);
        assert_eq!(f.push(req("/x", 2, 0)), Admission::Seen);
        assert_eq!(f.len(), 2);
        let order: Vec<_> = std::iter::from_fn(|| f.pop(Instant::now()))
            .map(|r| (r.url.path().to_owned(), r.depth))
            .collect();
        assert_eq!(order, [("/x".to_owned(), 1), ("/y".to_owned(), 2)]);
        // Once fetched, it stays seen.
        assert_eq!(f.push(req("/x", 0, 0)), Admission::Seen);
        assert!(f.is_empty());
    }

    #[test]
    fn reload_allows_refetching() {
        let mut f = Frontier::new(5, true, usize::MAX);
        assert_eq!(f.push(req("/a", 0, 0)), Admission::Queued);
        assert_eq!(f.push(req("/a", 1, 0)), Admission::Queued);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn visited_set_is_small_per_url() {
        let mut f = Frontier::new(1, false, usize::MAX);
        for i in 0..100_000 {
            f.push(req(&format!("/p{i}"), 0, 0));
        }
        while f.pop(Instant::now()).is_some() {}
        let per_url = f.visited_bytes() as f64 / 100_000.0;
        assert!(per_url < 40.0, "{per_url} bytes per visited URL");
    }

    fn on(host: &str, path: &str, depth: u32) -> Request {
        Request::new(Url::parse(&format!("http://{host}{path}")).unwrap(), depth, 0, 0)
    }

    #[test]
    fn a_saturated_or_paused_host_does_not_block_the_others() {
        let t0 = Instant::now();
        let mut f = Frontier::new(9, false, 2);
        for i in 0..5 {
            f.push(on("slow", &format!("/{i}"), 0));
        }
        f.push(on("fast", "/a", 1));
        f.push(on("fast", "/b", 1));
        f.push(on("other", "/x", 2));
        // Breadth-first across hosts, but at most two of "slow" at once.
        let mut hosts = Vec::new();
        while let Some(r) = f.pop(t0) {
            hosts.push((r.url.host_str().unwrap().to_owned(), r.host));
        }
        let names: Vec<&str> = hosts.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(names, ["slow", "slow", "fast", "fast", "other"]);
        assert_eq!(f.len(), 3);
        // A slot of "slow" frees: its next request goes.
        let slow = hosts[0].1;
        f.done(slow);
        assert_eq!(f.pop(t0).unwrap().url.path(), "/2");
        assert!(f.pop(t0).is_none());
        // Paused (Retry-After) with free slots: nothing of it until the pause ends.
        f.done(slow);
        f.done(slow);
        f.pause(slow, t0 + Duration::from_secs(2));
        assert!(f.pop(t0 + Duration::from_secs(1)).is_none());
        assert_eq!(f.next_wake(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(f.pop(t0 + Duration::from_secs(2)).unwrap().url.path(), "/3");
        assert_eq!(f.hosts(), 3);
    }

    #[test]
    fn a_window_spills_the_rest_and_reads_it_back() {
        let t0 = Instant::now();
        let mut f = Frontier::new(9, false, 100).with_window(4);
        let rows: Vec<QueuedUrl> =
            (0..10).filter_map(|i| f.offer(on("h", &format!("/{i}"), 1), true).1).collect();
        assert_eq!(rows.iter().filter(|r| r.held).count(), 4);
        assert_eq!((f.len(), f.held()), (10, 4));
        assert!(f.take_refills().is_empty());
        // Popping down to half the window asks for the spilled ones, once.
        assert_eq!(f.pop(t0).unwrap().url.path(), "/0");
        assert!(f.take_refills().is_empty());
        assert_eq!(f.pop(t0).unwrap().url.path(), "/1");
        let refill = f.take_refills();
        assert_eq!(refill.len(), 1);
        assert_eq!((&*refill[0].name, refill[0].limit), ("h", 3));
        f.pop(t0);
        assert!(f.take_refills().is_empty(), "asked again while the first is out");
        // Found again no closer to a seed: seen, spilled or not.
        assert_eq!(f.push(on("h", "/7", 1)), Admission::Seen);
        assert_eq!(f.push(on("h", "/3", 1)), Admission::Seen);
        // Spilled while the refill is out: not among what it reads back, still counted.
        let late = f.offer(on("h", "/late", 1), true).1.unwrap();
        assert!(!late.held);
        let back: Vec<Request> = rows[4..7]
            .iter()
            .map(|q| Request { seq: q.seq, ..Request::new(Url::parse(&q.url).unwrap(), q.depth, 0, 0) })
            .collect();
        f.refilled(&refill[0], back, false);
        assert_eq!((f.len(), f.held()), (8, 4));
        let order: Vec<String> = std::iter::from_fn(|| f.pop(t0)).map(|r| r.url.path().to_owned()).collect();
        assert_eq!(order, ["/3", "/4", "/5", "/6"]);
        // The rest: /7, /8, /9 and /late, all spilled before this ask; three come back.
        let refill = f.take_refills();
        let back: Vec<Request> = rows[7..10]
            .iter()
            .map(|q| Request { seq: q.seq, ..Request::new(Url::parse(&q.url).unwrap(), q.depth, 0, 0) })
            .collect();
        f.refilled(&refill[0], back, false);
        assert_eq!(f.len(), 4);
        assert_eq!(f.take_refills().len(), 0, "window not low yet");
        let order: Vec<String> = std::iter::from_fn(|| f.pop(t0)).map(|r| r.url.path().to_owned()).collect();
        assert_eq!(order, ["/7", "/8", "/9"]);
        assert_eq!(f.len(), 1);
        assert_eq!(f.take_refills().len(), 1);
    }

    /// A store of spilled rows for the tests: rows per host, read back best (depth, seq) first.
    #[derive(Default)]
    struct Spill(HashMap<Arc<str>, Vec<QueuedUrl>>);

    impl Spill {
        fn keep(&mut self, row: QueuedUrl) {
            if !row.held && !row.sent {
                self.0.entry(row.host.clone()).or_default().push(row);
            }
        }

        /// Reads a refill's rows (as the store does when it runs, before later commits), and
        /// whether they were all there were.
        fn read(&mut self, refill: &Refill) -> (Vec<Request>, bool) {
            let rows = self.0.entry(refill.name.clone()).or_default();
            rows.sort_by_key(|q| (q.depth, q.seq));
            let back: Vec<QueuedUrl> = rows.drain(..refill.limit.min(rows.len())).collect();
            let exhausted = back.len() < refill.limit;
            let back = back
                .into_iter()
                .map(|q| Request { seq: q.seq, ..Request::new(Url::parse(&q.url).unwrap(), q.depth, 0, 0) })
                .collect();
            (back, exhausted)
        }

        /// Answers a refill at once; returns what the frontier dropped.
        fn answer(&mut self, f: &mut Frontier, refill: &Refill) -> Vec<u64> {
            let (back, exhausted) = self.read(refill);
            f.refilled(refill, back, exhausted)
        }
    }

    #[test]
    fn a_spilled_url_found_closer_to_a_seed_is_fetched_once_at_that_depth() {
        let t0 = Instant::now();
        let mut f = Frontier::new(9, false, 100).with_window(4);
        let mut store = Spill::default();
        for i in 0..10 {
            store.keep(f.offer(on("h", &format!("/{i}"), 3), true).1.unwrap());
        }
        let first = store.0[&Arc::<str>::from("h")].iter().find(|q| q.url.ends_with("/8")).unwrap().seq;
        // /8 waits spilled at depth 3; found at 1 it gets a new row (spilled too, behind the
        // others), found again at 2 or 1 it is seen.
        let (adm, row) = f.offer(on("h", "/8", 1), true);
        let row = row.unwrap();
        assert_eq!((adm, row.depth, row.held, row.replaces), (Admission::Queued, 1, false, None));
        store.keep(row.clone());
        assert_eq!(f.push(on("h", "/8", 2)), Admission::Seen);
        assert_eq!(f.push(on("h", "/8", 1)), Admission::Seen);
        assert_eq!(f.len(), 11, "both rows wait until the deeper one is read back");
        // Drain: the closer row comes back first; the first row is dropped when read back.
        let (mut popped, mut dropped) = (Vec::new(), Vec::new());
        loop {
            while let Some(r) = f.pop(t0) {
                popped.push((r.url.path().to_owned(), r.depth));
                f.done(r.host);
            }
            let refills = f.take_refills();
            if refills.is_empty() {
                break;
            }
            for refill in refills {
                dropped.extend(store.answer(&mut f, &refill));
            }
        }
        assert!(f.is_empty());
        assert_eq!(dropped, [first]);
        let eights: Vec<_> = popped.iter().filter(|(p, _)| p == "/8").collect();
        assert_eq!(eights, [&("/8".to_owned(), 1)]);
        assert_eq!(popped.len(), 10);
        // Fetched: found again at any depth, seen.
        assert_eq!(f.push(on("h", "/8", 0)), Admission::Seen);
    }

    #[test]
    fn a_row_read_back_beyond_a_lowered_max_depth_is_dropped() {
        let mut f = Frontier::new(2, false, 100).with_window(4);
        let deep = Url::parse("http://h/deep").unwrap();
        f.spilled_before(&deep, 2);
        let refills = f.take_refills();
        assert_eq!(refills.len(), 1);
        let rows = vec![
            Request { seq: 7, ..Request::new(deep, 3, 0, 0) },
            Request { seq: 8, ..Request::new(Url::parse("http://h/ok").unwrap(), 2, 0, 0) },
        ];
        assert_eq!(f.refilled(&refills[0], rows, true), [7]);
        assert_eq!(f.pop(Instant::now()).unwrap().url.path(), "/ok");
        assert!(f.is_empty());
    }

    #[test]
    fn a_spilled_url_whose_row_no_longer_fits_can_be_queued_again() {
        let mut f = Frontier::new(9, false, 100).with_window(2);
        let held = f.offer(on("h", "/a", 1), true).1.unwrap();
        f.offer(on("h", "/c", 1), true);
        let spilled = f.offer(on("h", "/b", 2), true).1.unwrap();
        assert!(held.held && !spilled.held);
        assert_eq!(f.push(on("h", "/b", 2)), Admission::Seen);
        // /b's row comes back unfit (say its rule was removed): found again, it is queued.
        f.unfit(spilled.key, 2);
        assert_eq!(f.push(on("h", "/b", 2)), Admission::Queued);
        // A held URL, or a row that was not the best, is left alone.
        f.unfit(held.key, 1);
        assert_eq!(f.push(on("h", "/a", 1)), Admission::Seen);
    }

    #[test]
    fn a_resumed_runs_spilled_urls_are_known_with_their_depth() {
        let mut f = Frontier::new(9, false, 100).with_window(4);
        let key = |p: &str| url_key(&Url::parse(&format!("http://h{p}")).unwrap());
        f.mark_handled(key("/done"));
        f.mark_spilled(key("/far"), 5);
        assert_eq!(f.push(on("h", "/done", 0)), Admission::Seen);
        assert_eq!(f.push(on("h", "/far", 5)), Admission::Seen);
        assert_eq!(f.push(on("h", "/far", 4)), Admission::Queued);
        assert_eq!(f.push(on("h", "/far", 4)), Admission::Seen);
    }

    #[test]
    fn many_hosts_stay_within_the_budget_and_every_url_comes_out_once() {
        let t0 = Instant::now();
        let (window, hosts, per_host) = (32, 200, 40);
        let mut f = Frontier::new(9, false, 2).with_window(window);
        let mut store = Spill::default();
        let mut most_held = 0;
        for i in 0..per_host {
            for h in 0..hosts {
                let url = Url::parse(&format!("http://h{h}.example/{i}")).unwrap();
                store.keep(f.offer(Request::new(url, 1 + (i % 3) as u32, 0, 0), true).1.unwrap());
            }
            most_held = most_held.max(f.held());
        }
        let budget = window * BUDGET_WINDOWS;
        assert!(most_held <= budget + MIN_HELD * hosts, "{most_held} held");
        assert!(most_held < window * hosts, "the budget never bound: {most_held} held");
        assert_eq!(f.len(), hosts * per_host);
        // Drain: pop, finish, refill; every URL exactly once.
        let mut seen = HashSet::new();
        loop {
            let mut popped = Vec::new();
            while let Some(r) = f.pop(t0) {
                assert!(seen.insert(r.url.to_string()), "{} came out twice", r.url);
                popped.push(r.host);
            }
            let popped_any = popped.first().copied();
            for host in popped {
                f.done(host);
            }
            most_held = most_held.max(f.held());
            let refills = f.take_refills();
            if refills.is_empty() && popped_any.is_none() {
                assert!(f.is_empty(), "{} waiting, nothing to pop, no refill asked for", f.len());
                break;
            }
            for refill in refills {
                store.answer(&mut f, &refill);
                most_held = most_held.max(f.held());
            }
        }
        assert_eq!(seen.len(), hosts * per_host);
        assert!(most_held <= budget + MIN_HELD * hosts, "{most_held} held while draining");
    }

    /// Two hosts in different partitions of `count`.
    fn two_parts(count: u32) -> (String, String, u32, u32) {
        let names: Vec<String> = (1..50).map(|i| format!("h{i}")).collect();
        let a = &names[0];
        let pa = partition_of(a, count);
        let b = names.iter().find(|n| partition_of(n, count) != pa).unwrap();
        (a.clone(), b.clone(), pa, partition_of(b, count))
    }

    #[test]
    fn a_split_frontier_holds_its_partitions_and_sends_the_others() {
        let (a, b, pa, pb) = two_parts(8);
        let mut f = Frontier::new(5, false, 8).with_window(100).with_parts(8, [pa]);
        let (adm, row) = f.offer(on(&a, "/1", 1), true);
        let row = row.unwrap();
        assert_eq!((adm, row.sent, row.part, part_of_seq(row.seq)), (Admission::Queued, false, pa, pa));
        let (adm, row) = f.offer(on(&b, "/1", 1), true);
        let row = row.unwrap();
        assert_eq!((adm, row.sent, row.part), (Admission::Sent, true, pb));
        // Sent once: found again, it is seen; found closer to a seed, it is sent again.
        assert_eq!(f.offer(on(&b, "/1", 1), true).0, Admission::Seen);
        assert_eq!(f.offer(on(&b, "/1", 0), true).1.map(|r| (r.sent, r.depth)), Some((true, 0)));
        assert_eq!(f.len(), 1);
        assert_eq!(f.queued_by_part(), [(pa, 1)]);
        assert_eq!(f.pop(Instant::now()).unwrap().url.host_str(), Some(a.as_str()));
        assert!(f.pop(Instant::now()).is_none());
    }

    #[test]
    fn partitions_advance_side_by_side() {
        // Requests are numbered per partition; within a depth, the partitions take turns
        // instead of the lower partition going first (a partition that moves away must leave
        // its fair share of the work).
        let (a, b, pa, pb) = two_parts(8);
        let mut f = Frontier::new(5, false, 8).with_parts(8, [pa, pb]);
        for i in 0..4 {
            f.push(on(&a, &format!("/{i}"), 1));
        }
        for i in 0..4 {
            f.push(on(&b, &format!("/{i}"), 1));
        }
        let order: Vec<String> = std::iter::from_fn(|| f.pop(Instant::now()))
            .map(|r| r.url.host_str().unwrap().to_owned())
            .collect();
        let first_half_a = order[..4].iter().filter(|h| **h == a).count();
        assert_eq!(first_half_a, 2, "{order:?}");
    }

    #[test]
    fn host_names_are_host_and_port() {
        let name = |u: &str| host_name(&Url::parse(u).unwrap()).to_owned();
        assert_eq!(name("http://a.example:8080/x?y"), "a.example:8080");
        assert_eq!(name("https://u:p@b.example"), "b.example");
        assert_eq!(name("http://c.example?q"), "c.example");
    }

    /// One operation of the scheduler model test.
    #[derive(Clone, Debug)]
    enum Op {
        Push { host: u8, depth: u32, priority: i32 },
        Pop,
        Done(usize),
        Pause { host: u8, ms: u64 },
        Tick(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..5, 0u32..4, -1i32..2).prop_map(|(host, depth, priority)| Op::Push { host, depth, priority }),
            4 => Just(Op::Pop),
            3 => (0usize..64).prop_map(Op::Done),
            1 => (0u8..5, 1u64..50).prop_map(|(host, ms)| Op::Pause { host, ms }),
            1 => (1u64..40).prop_map(Op::Tick),
        ]
    }

    proptest! {
        #[test]
        fn pops_are_ordered_unique_and_at_the_best_depth(items in proptest::collection::vec((0u32..50, 0u32..6, -2i32..3), 1..200)) {
            let mut f = Frontier::new(4, false, usize::MAX);
            // The model: best depth per id among the admissible offers.
            let mut best: HashMap<u32, u32> = HashMap::new();
            for (id, depth, prio) in &items {
                let got = f.push(req(&format!("/{id}"), *depth, *prio));
                if *depth > 4 {
                    prop_assert_eq!(got, Admission::TooDeep);
                    continue;
                }
                let improves = best.get(id).is_none_or(|b| depth < b);
                prop_assert_eq!(got, if improves { Admission::Queued } else { Admission::Seen });
                if improves { best.insert(*id, *depth); }
            }
            prop_assert_eq!(f.len(), best.len());
            let popped: Vec<Request> = std::iter::from_fn(|| f.pop(Instant::now())).collect();
            prop_assert_eq!(popped.len(), best.len());
            for r in &popped {
                let id: u32 = r.url.path()[1..].parse().unwrap();
                prop_assert_eq!(r.depth, best[&id]);
            }
            for w in popped.windows(2) {
                prop_assert!(w[0].depth <= w[1].depth);
            }
        }

        /// With a small window (most rows spilled and read back), URLs found again at random
        /// depths while others are fetched and refills are out: every URL is fetched once, at
        /// the smallest depth it was found at before it was fetched, and every row written ends
        /// fetched, superseded by a later row, or dropped when read back (none is left waiting).
        #[test]
        fn spilled_urls_found_closer_are_fetched_once_at_their_best_depth(
            window in 2usize..6,
            ops in proptest::collection::vec((0u32..5, 0u32..40, 0u32..8), 1..300),
        ) {
            let t0 = Instant::now();
            let mut f = Frontier::new(7, false, 3).with_window(window);
            let mut store = Spill::default();
            let mut best: HashMap<String, u32> = HashMap::new();
            let mut fetched: HashMap<String, u32> = HashMap::new();
            let mut rows: HashSet<u64> = HashSet::new();
            let mut ended: HashSet<u64> = HashSet::new();
            let mut in_flight = Vec::new();
            // Refills asked for: their rows read when asked, handed over later.
            let mut out: std::collections::VecDeque<(Refill, Vec<Request>, bool)> = Default::default();
            let step = |f: &mut Frontier, store: &mut Spill, in_flight: &mut Vec<Request>,
                            fetched: &mut HashMap<String, u32>, out: &mut std::collections::VecDeque<(Refill, Vec<Request>, bool)>,
                            best: &HashMap<String, u32>, ended: &mut HashSet<u64>, done: bool| -> Result<bool, TestCaseError> {
                let mut moved = false;
                if done {
                    for r in in_flight.drain(..) {
                        f.done(r.host);
                        moved = true;
                    }
                }
                while let Some(r) = f.pop(t0) {
                    let url = r.url.to_string();
                    prop_assert!(!fetched.contains_key(&url), "{} fetched twice", url);
                    prop_assert_eq!(Some(&r.depth), best.get(&url), "{} at the wrong depth", &url);
                    fetched.insert(url, r.depth);
                    ended.insert(r.seq);
                    in_flight.push(r);
                    moved = true;
                }
                for refill in f.take_refills() {
                    let (rows, exhausted) = store.read(&refill);
                    out.push_back((refill, rows, exhausted));
                    moved = true;
                }
                if done {
                    while let Some((refill, rows, exhausted)) = out.pop_front() {
                        ended.extend(f.refilled(&refill, rows, exhausted));
                        moved = true;
                    }
                }
                Ok(moved)
            };
            for (kind, id, depth) in ops {
                if kind == 0 {
                    step(&mut f, &mut store, &mut in_flight, &mut fetched, &mut out, &best, &mut ended, id % 2 == 0)?;
                    continue;
                }
                if kind == 1 {
                    if let Some((refill, rows, exhausted)) = out.pop_front() {
                        ended.extend(f.refilled(&refill, rows, exhausted));
                    }
                    continue;
                }
                let url = format!("http://h{}.example/{}", id % 3, id);
                let (adm, row) = f.offer(Request::new(Url::parse(&url).unwrap(), depth, 0, 0), true);
                let improves = !fetched.contains_key(&url) && best.get(&url).is_none_or(|b| depth < *b);
                prop_assert_eq!(adm, if improves { Admission::Queued } else { Admission::Seen }, "{} at {}", &url, depth);
                if let Some(row) = row {
                    rows.insert(row.seq);
                    ended.extend(row.replaces);
                    store.keep(row);
                    best.insert(url, depth);
                }
            }
            while step(&mut f, &mut store, &mut in_flight, &mut fetched, &mut out, &best, &mut ended, true)? {}
            prop_assert!(f.is_empty(), "{} waiting", f.len());
            prop_assert_eq!(fetched.len(), best.len());
            prop_assert_eq!(&ended, &rows, "rows left waiting");
        }

        /// Never more than `per_host` in flight per host; a pop serves the best request of the
        /// hosts that can be served now, and finds nothing only when no host can be.
        #[test]
        fn the_scheduler_respects_per_host_limits_and_never_starves_a_ready_host(
            per_host in 1usize..4,
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut f = Frontier::new(10, false, per_host);
            // The model: queued (host, depth, priority, seq, turn: the host's count of pushes at
            // that depth),
            // in flight per host, pauses; host ids in order of first appearance.
            let mut queued: Vec<(u8, u32, i32, u64, u32)> = Vec::new();
            let mut turns: HashMap<(u8, u32), u32> = HashMap::new();
            let mut order: HashMap<u8, usize> = HashMap::new();
            let mut flying: Vec<(u8, HostId)> = Vec::new();
            let mut paused: HashMap<u8, Instant> = HashMap::new();
            let mut ids: HashMap<u8, HostId> = HashMap::new();
            let mut seq = 0u64;
            for op in ops {
                match op {
                    Op::Push { host, depth, priority } => {
                        seq += 1;
                        let url = Url::parse(&format!("http://h{host}.example/{seq}")).unwrap();
                        prop_assert_eq!(f.push(Request::new(url, depth, 0, priority)), Admission::Queued);
                        let n = order.len();
                        order.entry(host).or_insert(n);
                        let turn = turns.entry((host, depth)).or_insert(0);
                        queued.push((host, depth, priority, seq, *turn));
                        *turn += 1;
                    }
                    Op::Pop => {
                        let busy = |h: u8| flying.iter().filter(|(x, _)| *x == h).count();
                        let servable = |h: u8| busy(h) < per_host && paused.get(&h).is_none_or(|t| *t <= now);
                        // Hosts ever paused go first, then the best request: lowest depth, highest
                        // priority, earliest turn in its host; ties to the host met last.
                        let best = queued
                            .iter()
                            .filter(|q| servable(q.0))
                            .max_by_key(|q| (paused.contains_key(&q.0), Reverse(q.1), q.2, Reverse(q.4), order[&q.0]))
                            .copied();
                        let got = f.pop(now);
                        match (best, got) {
                            (None, None) => {}
                            (Some(b), Some(r)) => {
                                let id: u64 = r.url.path()[1..].parse().unwrap();
                                prop_assert_eq!(id, b.3, "served another request than the best ready one");
                                queued.retain(|q| q.3 != id);
                                flying.push((b.0, r.host));
                                ids.insert(b.0, r.host);
                                let busy = flying.iter().filter(|(x, _)| *x == b.0).count();
                                prop_assert!(busy <= per_host);
                                prop_assert_eq!(f.in_flight(r.host) as usize, busy);
                            }
                            (b, r) => prop_assert!(false, "model {:?}, frontier {:?}", b, r.map(|r| r.url)),
                        }
                    }
                    Op::Done(i) if !flying.is_empty() => {
                        let (_, id) = flying.remove(i % flying.len());
                        f.done(id);
                    }
                    Op::Done(_) => {}
                    Op::Pause { host, ms } => {
                        // Hosts are paused by the id a pop gave them.
                        let until = now + Duration::from_millis(ms);
                        if let Some(&id) = ids.get(&host) {
                            f.pause(id, until);
                            let t = paused.entry(host).or_insert(until);
                            *t = (*t).max(until);
                        }
                    }
                    Op::Tick(ms) => now += Duration::from_millis(ms),
                }
            }
        }
    }
}
