//! The per-task rate limiter: several sliding-window limits, every one of which must allow a
//! request ("at most `events` requests in any window of `per`").
//!
//! Pure: the caller passes the current instant and sleeps until the returned one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A set of sliding-window limits that all must allow a request.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    windows: Vec<Window>,
    last: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Window {
    events: usize,
    per: Duration,
    /// Start times of the last `events` reserved requests, oldest first.
    recent: VecDeque<Instant>,
}

impl RateLimiter {
    /// A limiter over `(events, per)` limits; with none it never delays.
    pub fn new(limits: &[(u32, Duration)]) -> RateLimiter {
        RateLimiter {
            windows: limits
                .iter()
                .map(|&(events, per)| Window {
                    events: events.max(1) as usize,
                    per,
                    recent: VecDeque::with_capacity(events.max(1) as usize),
                })
                .collect(),
            last: None,
        }
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        !self.windows.is_empty()
    }

    /// Reserves the earliest start time at or after `now` that every limit allows, and
    /// returns it. Reservations never go backwards in time.
    pub fn reserve(&mut self, now: Instant) -> Instant {
        if self.windows.is_empty() {
            return now;
        }
        let at = self.next_free(now);
        self.count(at);
        at
    }

    /// Counts a request started at `at` in every window.
    fn count(&mut self, at: Instant) {
        for w in &mut self.windows {
            if w.recent.len() == w.events {
                w.recent.pop_front();
            }
            w.recent.push_back(at);
        }
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    /// The earliest start time at or after `now` that every limit allows, reserving nothing.
    pub fn next_free(&self, now: Instant) -> Instant {
        let mut at = self.last.map_or(now, |l| l.max(now));
        for w in &self.windows {
            if w.recent.len() == w.events {
                at = at.max(w.recent[0] + w.per);
            }
        }
        at
    }

    /// Reserves `now` if every limit allows a request at once; else says when one will.
    pub fn try_reserve(&mut self, now: Instant) -> Result<(), Instant> {
        let at = self.next_free(now);
        if at > now {
            return Err(at);
        }
        self.reserve(now);
        Ok(())
    }

    /// The start times of the last requests reserved, oldest first (as many as the largest
    /// limit counts).
    pub fn history(&self) -> Vec<Instant> {
        self.windows
            .iter()
            .max_by_key(|w| w.events)
            .map_or_else(Vec::new, |w| w.recent.iter().copied().collect())
    }

    /// Counts requests reserved elsewhere (oldest first): those of a previous limiter whose
    /// work this one continues.
    pub fn replay(&mut self, starts: &[Instant]) {
        debug_assert!(starts.windows(2).all(|w| w[0] <= w[1]), "replayed out of order");
        for &at in starts {
            self.count(at);
        }
    }

    /// Counts the room left in every window as spent at `now`: until a window has passed,
    /// requests go only as fast as those already counted leave it (none when none were
    /// counted). For a limiter that cannot know what others spent just before it.
    pub fn fill(&mut self, now: Instant) {
        let now = self.last.map_or(now, |l| l.max(now));
        for w in &mut self.windows {
            w.recent.resize(w.events, now);
        }
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn no_limits_never_wait() {
        let mut l = RateLimiter::new(&[]);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(l.reserve(now), now);
        }
    }

    #[test]
    fn a_burst_then_the_window() {
        let mut l = RateLimiter::new(&[(3, Duration::from_secs(1))]);
        let t0 = Instant::now();
        assert_eq!(l.reserve(t0), t0);
        assert_eq!(l.reserve(t0), t0);
        assert_eq!(l.reserve(t0), t0);
        assert_eq!(l.reserve(t0), t0 + Duration::from_secs(1));
    }

    #[test]
    fn the_strictest_limit_wins() {
        let mut l = RateLimiter::new(&[(10, Duration::from_secs(1)), (2, Duration::from_millis(100))]);
        let t0 = Instant::now();
        let times: Vec<_> = (0..4).map(|_| l.reserve(t0) - t0).collect();
        assert_eq!(
            times,
            [Duration::ZERO, Duration::ZERO, Duration::from_millis(100), Duration::from_millis(100)]
        );
    }

    #[test]
    fn a_try_reserves_only_what_goes_at_once() {
        let per = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut l = RateLimiter::new(&[(2, per)]);
        assert_eq!(l.try_reserve(t0), Ok(()));
        assert_eq!(l.try_reserve(t0), Ok(()));
        assert_eq!(l.try_reserve(t0), Err(t0 + per));
        assert_eq!(l.try_reserve(t0 + per / 2), Err(t0 + per), "a refusal reserves nothing");
        assert_eq!(l.try_reserve(t0 + per), Ok(()));
        assert_eq!(RateLimiter::new(&[]).try_reserve(t0), Ok(()));
    }

    #[test]
    fn a_limiter_continues_what_another_reserved() {
        let per = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut first = RateLimiter::new(&[(4, per)]);
        for _ in 0..4 {
            first.reserve(t0);
        }
        // Continued at half the rate: nothing until the window of the four has passed, then two.
        let mut next = RateLimiter::new(&[(2, per)]);
        next.replay(&first.history());
        assert_eq!(next.reserve(t0), t0 + per);
        assert_eq!(next.reserve(t0), t0 + per);
        assert_eq!(next.reserve(t0), t0 + 2 * per);
        // A limiter filled at t0 waits one window of each limit.
        let mut filled = RateLimiter::new(&[(3, per), (1, Duration::from_millis(100))]);
        filled.fill(t0);
        assert_eq!(filled.reserve(t0), t0 + per);
        assert_eq!(filled.history().len(), 3);
        // One that continues another at twice the rate goes at the old rate for one window.
        let mut faster = RateLimiter::new(&[(4, per)]);
        let half = t0 + per / 2;
        faster.replay(&[t0, half]);
        faster.fill(half);
        assert_eq!(faster.reserve(half), t0 + per);
        assert_eq!(faster.reserve(half), half + per);
        assert_eq!(faster.reserve(half), half + per);
        assert_eq!(faster.reserve(half), half + per);
        assert_eq!(faster.reserve(half), t0 + 2 * per);
        let mut none = RateLimiter::new(&[]);
        none.fill(t0);
        assert_eq!(none.reserve(t0), t0);
        assert!(none.history().is_empty());
    }

    proptest! {
        #[test]
        fn no_window_ever_holds_more_than_its_events(
            limits in proptest::collection::vec((1u32..5, 1u64..50), 1..3),
            arrivals in proptest::collection::vec(0u64..20, 1..60),
        ) {
            let limits: Vec<(u32, Duration)> = limits.iter().map(|&(e, ms)| (e, Duration::from_millis(ms))).collect();
            let mut l = RateLimiter::new(&limits);
            let t0 = Instant::now();
            let mut now = t0;
            let mut granted = Vec::new();
            for gap in arrivals {
                now += Duration::from_millis(gap);
                let at = l.reserve(now);
                prop_assert!(at >= now);
                granted.push(at);
            }
            prop_assert!(granted.windows(2).all(|w| w[0] <= w[1]));
            for &(events, per) in &limits {
                for (i, start) in granted.iter().enumerate() {
                    let inside = granted[i..].iter().take_while(|t| **t < *start + per).count();
                    prop_assert!(inside <= events as usize, "{} in a window of {:?} > {}", inside, per, events);
                }
            }
        }
    }
}
