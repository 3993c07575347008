//! Benchmark: memory of the frontier's visited set and queue at one million URLs.
//!
//! `cargo run --release -p crawler-engine --example frontier_memory [N]` prints a table:
//! bytes per visited URL (what stays for the whole run) and per queued URL (while waiting).

use std::time::Instant;

use crawler_engine::{Frontier, Request};
use url::Url;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn request(i: usize) -> Request {
    let url =
        Url::parse(&format!("http://books.example.com/catalogue/book-{i}/index.html?ref=list")).unwrap();
    Request::new(url, 1, 0, 0)
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);

    // Visited set: push and pop one at a time, so the queue stays empty.
    let base = rss_bytes();
    let started = Instant::now();
    let mut f = Frontier::new(u32::MAX, false, usize::MAX);
    for i in 0..n {
        f.push(request(i));
        f.pop(Instant::now());
    }
    let visited_time = started.elapsed();
    let visited_rss = rss_bytes().saturating_sub(base);
    let dup_started = Instant::now();
    let dups = (0..n / 10).filter(|i| f.push(request(*i)) != crawler_engine::Admission::Seen).count();
    let dup_time = dup_started.elapsed();
    assert_eq!(dups, 0, "a seen URL was queued again");
    let visited_table = f.visited_bytes();
    drop(f);

    // Queue: push everything, then drain.
    let base = rss_bytes();
    let mut q = Frontier::new(u32::MAX, false, usize::MAX);
    for i in 0..n {
        q.push(request(i + n));
    }
    let queued_rss = rss_bytes().saturating_sub(base);
    assert_eq!(q.len(), n);

    println!("| URLs | visited set (table) | visited set (RSS) | bytes/visited URL | queue (RSS) | bytes/queued URL | push+pop | dedup check |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {:.1} MiB | {:.1} MiB | {:.1} | {:.1} MiB | {:.0} | {:.0} ns | {:.0} ns |",
        visited_table as f64 / 1048576.0,
        visited_rss as f64 / 1048576.0,
        visited_rss.max(visited_table) as f64 / n as f64,
        queued_rss as f64 / 1048576.0,
        queued_rss as f64 / n as f64,
        visited_time.as_nanos() as f64 / n as f64,
        dup_time.as_nanos() as f64 / (n / 10) as f64,
    );
}
