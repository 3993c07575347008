//! Benchmark of the workers in a real cluster (etcd, 2 masters, 2 workers, fixture site, all
//! processes on 127.0.0.1): add-to-first-fetch and delete-to-last-fetch latency, reassignment
//! time after SIGTERM and SIGKILL of the worker running a task, and the extra fetches a
//! reassignment costs (a task of `MOVE_BOOKS` books, default 20,000, stored in MariaDB, moved
//! a third of the way through; every item is checked to be stored exactly once).
//!
//! `cargo build --release && cargo run --release -p crawler --example worker_bench`

#[path = "../tests/support/sandbox.rs"]
mod sandbox;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crawler_fixture::Site;
use sandbox::Sandbox;
use serde_json::json;

const BOOKS: u32 = 300;

fn site() -> Site {
    Site { books: BOOKS, tags: 3, per_page: 10, latency: Duration::from_millis(20) }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let bin = PathBuf::from(std::env::var("CRAWLER_BIN").unwrap_or_else(|_| "target/release/crawler".into()));
    let rounds = 5;

    // Add and delete latency, through a follower.
    let sb = Sandbox::start(&bin, site(), false).await;
    let (_, follower) = sb.leader_and_follower().await;
    let (mut first, mut last) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let before = sb.requests("/index.html");
        let t = Instant::now();
        let (s, v) = sb.send(reqwest::Method::POST, &follower, json!({"name": "books"})).await;
        assert_eq!(s, 200, "{v}");
        sb.wait_requests("/index.html", before + 1, Duration::from_secs(5)).await;
        first.push(t.elapsed().as_secs_f64() * 1000.0);
        sb.wait_requests("/book/", sb.requests("/book/") + 10, Duration::from_secs(10)).await;
        let (s, _) = sb.send(reqwest::Method::DELETE, &follower, json!({"name": "books"})).await;
        let deleted = Instant::now();
        assert_eq!(s, 200);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let last_at = sb.fixture.requests().last().unwrap().at;
        // Signed: negative when the last request reached the site before the delete was answered.
        last.push(if last_at >= deleted {
            (last_at - deleted).as_secs_f64() * 1000.0
        } else {
            -((deleted - last_at).as_secs_f64() * 1000.0)
        });
    }
    drop(sb);

    // Reassignment: SIGTERM, then SIGKILL, each in a fresh cluster storing into MariaDB.
    let books: u32 = std::env::var("MOVE_BOOKS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let big = Site { books, tags: 20, per_page: 20, latency: Duration::from_millis(1) };
    let mut handover = Vec::new();
    for signal in ["SIGTERM", "SIGKILL"] {
        let mut sb = Sandbox::start(&bin, big, true).await;
        let (_, follower) = sb.leader_and_follower().await;
        let (_, v) = sb.send(reqwest::Method::POST, &follower, json!({"name": "books"})).await;
        let victim = v["id"].as_str().unwrap().to_owned();
        sb.wait_requests("/book/", books as usize / 3, Duration::from_secs(600)).await;
        let survivor = sb.workers.iter().find(|w| w.id != victim).unwrap();
        // A split task's share may be listed on the survivor from the start (holding no host
        // of this one-host site): the move is done when the survivor fetches for it.
        let before = sb.pages_on(survivor, "books").await;
        let t = Instant::now();
        let w = sb.workers.iter_mut().find(|w| w.id == victim).unwrap();
        if signal == "SIGKILL" {
            w.kill();
        } else {
            w.signal("-TERM");
        }
        let survivor = sb.workers.iter().find(|w| w.id != victim).unwrap();
        sb.wait_fetching(survivor, "books", before, Duration::from_secs(30)).await;
        let took = t.elapsed();
        let survivor = survivor.http.clone();
        let started = Instant::now();
        loop {
            if let Some((200, v)) = sb.get(&survivor, "/tasks").await {
                if v[0]["finished"] == true {
                    break;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(900), "the moved task did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let rows = sb.rows();
        let mut urls: Vec<&String> = rows.iter().map(|(u, _)| u).collect();
        urls.sort();
        urls.dedup();
        let once = rows.len() == books as usize && urls.len() == books as usize;
        let fetched = sb.requests("/book/");
        handover.push((signal, took, fetched - books as usize, sb.requests("/index.html"), once));
    }

    println!("cluster: etcd 3.4 (1 member), 2 masters, 2 workers, lease ttl 2s; task of {BOOKS} books, 20 ms per page\n");
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| add to first fetch (through a follower), median of {rounds} | {:.0} ms |", median(first));
    println!(
        "| last fetch relative to the delete's answer, median of {rounds} (negative: before it) | {:.1} ms |",
        median(last)
    );
    for (signal, took, extra, seeds, once) in handover {
        println!(
            "| {signal} of the worker running a {books}-book task (MariaDB): the survivor fetching for it after | {:.0} ms |",
            took.as_secs_f64() * 1000.0
        );
        println!(
            "| extra book fetches caused by that move (of {books}) | {extra} ({:.2} %) |",
            100.0 * extra as f64 / f64::from(books)
        );
        println!("| seed fetched (1: the run continued, not restarted) | {seeds} |");
        println!("| every item stored exactly once in MariaDB | {} |", if once { "yes" } else { "NO" });
    }
}
