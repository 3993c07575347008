//! The one retry policy of the control plane: exponential backoff with jitter, capped, and
//! optionally bounded by a deadline. Every loop in coord, master and worker that retries
//! (etcd calls, watches, keep-alives, forwarding to the leader) waits through a [`Backoff`].
//! (The worker's per-resource restarts and failed opens, retried at its reconciles rather than
//! in a loop, keep a plain doubling of their own: `Backoffs` in its runner.)

use std::time::{Duration, Instant};

/// Delays that double from `first` up to `max`, each jittered to 50-100 % of its nominal value
/// (so retrying processes spread out), optionally until a deadline.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    nominal: Duration,
    deadline: Option<Instant>,
}

impl Backoff {
    /// Starts at `first`, doubling up to `max`, with no deadline.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max: max.max(first), nominal: first, deadline: None }
    }

    /// The same, giving up once `within` has passed from now.
    pub fn within(mut self, within: Duration) -> Backoff {
        self.deadline = Some(Instant::now() + within);
        self
    }

    /// The next delay; `None` when the deadline has passed (the delay is cut to end at it).
    pub fn next_delay(&mut self) -> Option<Duration> {
        let nominal = self.nominal;
        self.nominal = (self.nominal * 2).min(self.max);
        let delay = nominal.mul_f64(0.5 + fastrand::f64() / 2.0);
        match self.deadline {
            None => Some(delay),
            Some(d) => {
                let left = d.checked_duration_since(Instant::now()).filter(|l| !l.is_zero())?;
                Some(delay.min(left))
            }
        }
    }

    /// Sleeps the next delay; `false` (at once) when the deadline has passed.
    pub async fn wait(&mut self) -> bool {
        match self.next_delay() {
            Some(d) => {
                tokio::time::sleep(d).await;
                true
            }
            None => false,
        }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Back to the first delay (after a success); the deadline stays.
    pub fn reset(&mut self) {
        self.nominal = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let nominal = [100, 200, 400, 400, 400];
        for n in nominal {
            let d = b.next_delay().unwrap();
            assert!(d >= Duration::from_millis(n / 2) && d <= Duration::from_millis(n), "{d:?} for {n}");
        }
        b.reset();
        assert!(b.next_delay().unwrap() <= Duration::from_millis(100));
    }

    #[test]
    fn a_deadline_ends_the_delays() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10)).within(Duration::ZERO);
        assert!(b.expired());
        assert_eq!(b.next_delay(), None);
        let mut b =
            Backoff::new(Duration::from_secs(10), Duration::from_secs(10)).within(Duration::from_secs(60));
        assert!(!b.expired());
        assert!(b.next_delay().is_some());
    }
}
