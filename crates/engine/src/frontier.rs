//! The frontier of one task run: which URL to fetch next, and which were already seen.
//!
//! A pure state machine (no I/O, no clock). Ordering is breadth-first: lower depth first, then
//! higher rule priority, then first-come. Deduplication happens when a URL is queued, on its
//! normalized form; the visited set keeps only a 64-bit key per URL. A URL found again at a
//! smaller depth while it still waits moves up to that depth (with concurrent fetches a deeper
//! path can be found first), so `max_depth` never cuts off a page within reach.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use url::Url;

use crate::scope::url_key;
use crate::store::QueuedUrl;

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
}

impl Request {
    /// A request reached by a link (not by a redirect).
    pub fn new(url: Url, depth: u32, rule: usize, priority: i32) -> Request {
        Request { url, depth, rule, priority, redirected_from: Vec::new() }
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

/// A queued request in compact form: the URL as text (re-parsed on pop), no spare capacity.
struct Entry {
    seq: u64,
    key: u64,
    url: Box<str>,
    depth: u32,
    priority: i32,
    rule: u32,
    redirected_from: Box<[u64]>,
}

impl Entry {
    fn rank(&self) -> (std::cmp::Reverse<u32>, i32, std::cmp::Reverse<u64>) {
        (std::cmp::Reverse(self.depth), self.priority, std::cmp::Reverse(self.seq))
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

/// The queue and visited set of one task run.
pub struct Frontier {
    queue: BinaryHeap<Entry>,
    visited: HashSet<u64, BuildHasherDefault<KeyHasher>>,
    /// Best depth of each URL still waiting; entries of the queue at another depth are stale.
    waiting: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
    seq: u64,
    max_depth: u32,
    reload: bool,
}

impl Frontier {
    /// An empty frontier. With `reload`, URLs are not deduplicated.
    pub fn new(max_depth: u32, reload: bool) -> Frontier {
        Frontier {
            queue: BinaryHeap::new(),
            visited: HashSet::default(),
            waiting: HashMap::default(),
            seq: 0,
            max_depth,
            reload,
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
        if req.depth > self.max_depth {
            return (Admission::TooDeep, None);
        }
        let key = url_key(&req.url);
        if !self.reload {
            if self.visited.insert(key) {
                self.waiting.insert(key, req.depth);
            } else {
                match self.waiting.get_mut(&key) {
                    Some(best) if req.depth < *best => *best = req.depth,
                    _ => return (Admission::Seen, None),
                }
            }
        }
        self.seq += 1;
        let url = String::from(req.url).into_boxed_str();
        let row = record.then(|| QueuedUrl {
            key,
            url: url.to_string(),
            depth: req.depth,
            rule: req.rule as u32,
            priority: req.priority,
        });
        self.queue.push(Entry {
            seq: self.seq,
            key,
            url,
            depth: req.depth,
            priority: req.priority,
            rule: req.rule as u32,
            redirected_from: req.redirected_from.into_boxed_slice(),
        });
        (Admission::Queued, row)
    }

    /// Marks a URL key as already handled (a resumed run's done, failed and skipped URLs).
    pub fn mark_handled(&mut self, key: u64) {
        self.visited.insert(key);
    }

    /// The next request to fetch.
    pub fn pop(&mut self) -> Option<Request> {
        while let Some(e) = self.queue.pop() {
            if !self.reload {
                // Skip the entry left behind when its URL moved to a smaller depth.
                if self.waiting.get(&e.key) != Some(&e.depth) {
                    continue;
                }
                self.waiting.remove(&e.key);
            }
            // The text came from a parsed URL, so it parses again.
            let Ok(url) = Url::parse(&e.url) else { continue };
            return Some(Request {
                url,
                depth: e.depth,
                rule: e.rule as usize,
                priority: e.priority,
                redirected_from: e.redirected_from.into_vec(),
            });
        }
        None
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        if self.reload {
            self.queue.len()
        } else {
            self.waiting.len()
        }
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(path: &str, depth: u32, priority: i32) -> Request {
        Request::new(Url::parse(&format!("http://h{path}")).unwrap(), depth, 0, priority)
    }

    #[test]
    fn dedups_depth_limits_and_orders_breadth_first() {
        let mut f = Frontier::new(2, false);
        assert_eq!(f.push(req("/a", 1, 0)), Admission::Queued);
        assert_eq!(f.push(req("/a", 2, 0)), Admission::Seen);
        assert_eq!(f.push(req("/deep", 3, 0)), Admission::TooDeep);
        assert_eq!(f.push(req("/b", 2, 0)), Admission::Queued);
        assert_eq!(f.push(req("/c", 0, 0)), Admission::Queued);
        assert_eq!(f.push(req("/d", 1, 5)), Admission::Queued);
        let order: Vec<_> = std::iter::from_fn(|| f.pop()).map(|r| r.url.path().to_owned()).collect();
        assert_eq!(order, ["/c", "/d", "/a", "/b"]);
        assert_eq!(f.seen(), 4);
    }

    #[test]
    fn a_url_found_again_closer_to_a_seed_moves_up() {
        let mut f = Frontier::new(3, false);
        assert_eq!(f.push(req("/x", 3, 0)), Admission::Queued);
        assert_eq!(f.push(req("/y", 2, 0)), Admission::Queued);
        assert_eq!(f.push(req("/x", 1, 0)), Admission::Queued);
        assert_eq!(f.push(req("/x", 2, 0)), Admission::Seen);
        assert_eq!(f.len(), 2);
        let order: Vec<_> =
            std::iter::from_fn(|| f.pop()).map(|r| (r.url.path().to_owned(), r.depth)).collect();
        assert_eq!(order, [("/x".to_owned(), 1), ("/y".to_owned(), 2)]);
        // Once fetched, it stays seen.
        assert_eq!(f.push(req("/x", 0, 0)), Admission::Seen);
        assert!(f.is_empty());
    }

    #[test]
    fn reload_allows_refetching() {
        let mut f = Frontier::new(5, true);
        assert_eq!(f.push(req("/a", 0, 0)), Admission::Queued);
        assert_eq!(f.push(req("/a", 1, 0)), Admission::Queued);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn visited_set_is_small_per_url() {
        let mut f = Frontier::new(1, false);
        for i in 0..100_000 {
            f.push(req(&format!("/p{i}"), 0, 0));
        }
        while f.pop().is_some() {}
        let per_url = f.visited_bytes() as f64 / 100_000.0;
        assert!(per_url < 40.0, "{per_url} bytes per visited URL");
    }

    proptest! {
        #[test]
        fn pops_are_ordered_unique_and_at_the_best_depth(items in proptest::collection::vec((0u32..50, 0u32..6, -2i32..3), 1..200)) {
            let mut f = Frontier::new(4, false);
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
            let popped: Vec<Request> = std::iter::from_fn(|| f.pop()).collect();
            prop_assert_eq!(popped.len(), best.len());
            for r in &popped {
                let id: u32 = r.url.path()[1..].parse().unwrap();
                prop_assert_eq!(r.depth, best[&id]);
            }
            for w in popped.windows(2) {
                prop_assert!(w[0].depth <= w[1].depth);
            }
        }
    }
}
