//! Benchmark of the workers in a real cluster (etcd, 2 masters, 2 workers, fixture site, all
//! processes on 127.0.0.1): add-to-first-fetch and delete-to-last-fetch latency, reassignment
//! time after SIGTERM and SIGKILL of the worker running a task, and the extra fetches a
//! reassignment costs.
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

    // Reassignment: SIGTERM, then SIGKILL, each in a fresh cluster; a task of BOOKS books.
    let mut handover = Vec::new();
    for signal in ["SIGTERM", "SIGKILL"] {
        let mut sb = Sandbox::start(&bin, site(), false).await;
        let (_, follower) = sb.leader_and_follower().await;
        let (_, v) = sb.send(reqwest::Method::POST, &follower, json!({"name": "books"})).await;
        let victim = v["id"].as_str().unwrap().to_owned();
        sb.wait_requests("/book/", BOOKS as usize / 3, Duration::from_secs(30)).await;
        let before = sb.requests("/index.html");
        let t = Instant::now();
        let w = sb.workers.iter_mut().find(|w| w.id == victim).unwrap();
        if signal == "SIGKILL" {
            w.kill();
        } else {
            w.signal("-TERM");
        }
        sb.wait_requests("/index.html", before + 1, Duration::from_secs(10)).await;
        let took = t.elapsed();
        let survivor = sb.workers.iter().find(|w| w.id != victim).unwrap().http.clone();
        loop {
            if let Some((200, v)) = sb.get(&survivor, "/tasks").await {
                if v[0]["finished"] == true {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let fetched = sb.requests("/book/");
        handover.push((signal, took, fetched - BOOKS as usize));
    }

    println!("cluster: etcd 3.4 (1 member), 2 masters, 2 workers, lease ttl 2s; task of {BOOKS} books, 20 ms per page\n");
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| add to first fetch (through a follower), median of {rounds} | {:.0} ms |", median(first));
    println!(
        "| last fetch relative to the delete's answer, median of {rounds} (negative: before it) | {:.1} ms |",
        median(last)
    );
    for (signal, took, extra) in handover {
        println!(
            "| reassignment after {signal} of the worker running the task | {:.0} ms |",
            took.as_secs_f64() * 1000.0
        );
        println!("| extra book fetches caused by that reassignment (of {BOOKS}) | {extra} |");
    }
}
