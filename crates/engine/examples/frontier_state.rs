//! Benchmark: a frontier of millions of queued URLs with its state in SQLite, in bounded memory.
//!
//! `cargo run --release -p crawler-engine --example frontier_state [N] [HOSTS] [WINDOW]` queues
//! N URLs over HOSTS hosts (default 1,000,000 over 1 host, window 2,000) through the real
//! frontier and SQLite store, the way a crawl does: every queued URL is a state row written in
//! transactions of 1,000 and spilled beyond the window; then pops every one, marks it done and
//! reads the spilled rows back as windows run low. Prints one table row: rates and memory.

use std::time::Instant;

use crawler_engine::{
    Commit, Epoch, Frontier, PageStatus, Request, RunHandle, Sink, SqliteSink, SqliteState, StateStore,
};
use tokio_util::sync::CancellationToken;
use url::Url;

/// Resident memory now and at its peak, in bytes.
fn rss() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(bytes: usize) -> String {
    format!("{:.0} MiB", bytes as f64 / 1048576.0)
}

fn main() {
    let arg =
        |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, hosts, window) = (arg(1, 1_000_000), arg(2, 1), arg(3, 2000));
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("frontier.db");
    let state = SqliteState::open(&db).expect("state");
    let run = state.open_run("bench", "bench", Epoch::Next, false, window).expect("run");
    let handle = std::sync::Arc::new(RunHandle::new(run.id, run.epoch, CancellationToken::new()));
    let mut sink = SqliteSink::open(&db).expect("sink");
    let mut frontier = Frontier::new(u32::MAX, false, usize::MAX).with_window(window);
    let (base, _) = rss();
    let commit = |queued, page| Commit { run: Some(handle.clone()), queued, page, ..Commit::default() };

    // Queue N URLs, 1,000 per transaction.
    let started = Instant::now();
    let mut rows = Vec::with_capacity(1000);
    for i in 0..n {
        let url =
            Url::parse(&format!("http://h{}.example/catalogue/book-{i}/index.html", i % hosts)).expect("url");
        rows.extend(frontier.offer(Request::new(url, 1 + (i / 100_000) as u32, 0, 0), true).1);
        if rows.len() == 1000 {
            sink.write(&[commit(std::mem::take(&mut rows), None)]).expect("write");
        }
    }
    sink.write(&[commit(rows, None)]).expect("write");
    let queue_time = started.elapsed();
    let (queued_rss, _) = rss();
    assert_eq!(frontier.len(), n);

    // Pop them all, each marked done, reading spilled rows back as windows run low.
    let started = Instant::now();
    let mut done = Vec::with_capacity(1000);
    let mut popped = 0usize;
    let now = Instant::now();
    loop {
        while let Some(req) = frontier.pop(now) {
            frontier.done(req.host);
            done.push(commit(Vec::new(), Some((req.seq, PageStatus::Done))));
            popped += 1;
            if done.len() == 1000 {
                sink.write(&std::mem::take(&mut done)).expect("write");
            }
        }
        let refills = frontier.take_refills();
        if refills.is_empty() {
            break;
        }
        // As the writer does: what was committed before a refill is written first.
        sink.write(&std::mem::take(&mut done)).expect("write");
        for refill in refills {
            let rows =
                sink.refill(&handle, &refill.name, refill.limit).expect("a state store").expect("refill");
            let exhausted = rows.len() < refill.limit;
            let back = rows
                .into_iter()
                .map(|q| Request {
                    seq: q.seq,
                    ..Request::new(Url::parse(&q.url).expect("url"), q.depth, 0, 0)
                })
                .collect();
            frontier.refilled(&refill, back, exhausted);
        }
    }
    sink.write(&done).expect("write");
    let pop_time = started.elapsed();
    let (_, peak) = rss();
    assert_eq!(popped, n, "every queued URL popped once");
    assert!(frontier.is_empty());
    let db_size: u64 = std::fs::read_dir(dir.path())
        .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0);

    println!(
        "| {n} | {hosts} | {window} | {:.0} | {:.0} | {} | {} | {} | {} |",
        n as f64 / queue_time.as_secs_f64(),
        n as f64 / pop_time.as_secs_f64(),
        mib(queued_rss.saturating_sub(base)),
        mib(frontier.visited_bytes()),
        mib(peak),
        mib(db_size as usize),
    );
}
