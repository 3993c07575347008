//! Prometheus metrics of a master, rendered by hand in the text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Counters of one master.
#[derive(Default)]
pub struct Metrics {
    calls: Mutex<BTreeMap<(String, u16), u64>>,
    forward_count: AtomicU64,
    forward_micros: AtomicU64,
}

impl Metrics {
    /// Counts an API call by route and status.
    pub fn call(&self, route: &str, status: u16) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route.to_owned(), status))
            .or_default() += 1;
    }

    /// Records the latency of one forwarded call.
    pub fn forwarded(&self, took: Duration) {
        self.forward_count.fetch_add(1, Relaxed);
        self.forward_micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// The text format, with the gauges the caller knows.
    pub fn render(&self, leader: bool, resources: usize, workers: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# HELP crawler_master_is_leader 1 if this master is the leader.\n# TYPE crawler_master_is_leader gauge\ncrawler_master_is_leader {}", u8::from(leader));
        let _ = writeln!(s, "# HELP crawler_resources Resources stored.\n# TYPE crawler_resources gauge\ncrawler_resources {resources}");
        let _ = writeln!(
            s,
            "# HELP crawler_workers Live workers.\n# TYPE crawler_workers gauge\ncrawler_workers {workers}"
        );
        let _ = writeln!(s, "# HELP crawler_api_calls_total API calls by route and status.\n# TYPE crawler_api_calls_total counter");
        for ((route, status), n) in self.calls.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(s, "crawler_api_calls_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "# HELP crawler_forward_seconds Calls forwarded to the leader.\n# TYPE crawler_forward_seconds summary\ncrawler_forward_seconds_count {}\ncrawler_forward_seconds_sum {}",
            self.forward_count.load(Relaxed),
            self.forward_micros.load(Relaxed) as f64 / 1e6
        );
        s
    }
}
