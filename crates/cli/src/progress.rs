//! The live progress line shown on a terminal: pages, items, errors, queue and rate.

use std::io::Write;
use std::time::{Duration, Instant};

use crawler_engine::Crawl;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running progress line on stderr.
pub struct Progress {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts redrawing the line twice a second.
    pub fn spawn(crawls: Vec<Crawl>) -> Progress {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let (mut pages, mut items, mut errors, mut queued) = (0, 0, 0, 0);
                for c in &crawls {
                    let s = c.stats();
                    pages += s.pages;
                    items += s.items;
                    errors += s.errors;
                    queued += s.queued + s.in_flight;
                }
                // The rate over the last tick, so a stall shows at once.
                let now = Instant::now();
                let rate = (pages - last.1.min(pages)) as f64 / (now - last.0).as_secs_f64().max(0.001);
                last = (now, pages);
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[2Kpages {pages}  items {items}  errors {errors}  queued {queued}  {rate:.0} pages/s"
                );
                let _ = err.flush();
            }
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        });
        Progress { stop, task }
    }

    /// Clears the line.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
