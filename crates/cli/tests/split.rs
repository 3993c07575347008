//! One task split across workers, on real processes: etcd, two masters, three workers sharing
//! MariaDB, and 24 sites on 127.0.1.x whose indexes link to each other (one seed reaches them
//! all). The task spreads over every worker; a SIGTERMed worker hands its partitions over with
//! zero refetch; a worker that joins mid-crawl receives partitions; a SIGKILLed worker's
//! partitions move within the lease TTL and at most its in-flight and uncommitted pages are
//! fetched again; every item is stored exactly once; no site ever sees more than `per_host`
//! requests at once, counting every worker; a delete stops every worker's share at once. A task's
//! rate limits hold for the whole cluster as the sites see them, also while workers join and
//! leave.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use crawler_fixture::wait::until;
use crawler_fixture::{Fixture, Site};
use serde_json::{json, Value};
use support::sandbox::Sandbox;

const PER_HOST: usize = 2;
const HOSTS: u8 = 24;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_crawler"))
}

fn site() -> Site {
    Site { books: 60, tags: 2, per_page: 10, latency: Duration::from_millis(100) }
}

/// The task, inline: one seed, every site in scope, 16 partitions.
fn task(name: &str, sites: &[Fixture]) -> Value {
    let hosts: Vec<String> = sites.iter().map(|s| s.addr().ip().to_string()).collect();
    json!({"name": name, "task": {
        "seeds": [sites[0].url("/index.html")],
        "allow_hosts": hosts,
        "max_depth": 100,
        "partitions": 16,
        "rule": [
            {"name": "index", "follow": [{"select": "a.tag", "rule": "tag"}, {"select": "a.host", "rule": "index"}]},
            {"name": "tag", "follow": [{"select": "a.book", "rule": "book"}, {"select": "a.next", "rule": "tag"}]},
            {"name": "book", "table": "book", "fields": {"title": "h1.title"}}
        ]
    }})
}

/// Fetches per URL over all sites (robots.txt left out).
fn fetches(sites: &[Fixture]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for s in sites {
        for r in s.requests().into_iter().filter(|r| r.path != "/robots.txt") {
            *out.entry(format!("{}{}", s.addr(), r.path)).or_default() += 1;
        }
    }
    out
}

fn extra(f: &HashMap<String, usize>) -> usize {
    let twice: Vec<_> = f.iter().filter(|(_, n)| **n > 1).collect();
    if !twice.is_empty() {
        println!("fetched more than once: {twice:?}");
    }
    f.values().map(|n| n - 1).sum()
}

/// Partitions per worker of the task, as `GET /crawler/resources` shows them.
async fn spread(sb: &Sandbox, master: &str, name: &str) -> BTreeMap<String, u64> {
    let Some((200, v)) = sb.get(master, "/crawler/resources").await else { return BTreeMap::new() };
    let r = v.as_array().unwrap().iter().find(|r| r["name"] == name).cloned().unwrap_or(Value::Null);
    r["partitions"]
        .as_object()
        .map(|o| o.iter().map(|(w, n)| (w.clone(), n.as_u64().unwrap())).collect())
        .unwrap_or_default()
}

/// A worker's figures for the task: (pages, partitions held).
async fn share(sb: &Sandbox, worker: usize, name: &str) -> Option<(u64, usize)> {
    let tasks = sb.task_entries(&sb.workers[worker]).await;
    let t = tasks.iter().find(|t| t["name"] == name)?;
    Some((t["pages"].as_u64()?, t["partitions"].as_array().map_or(0, Vec::len)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_spreads_over_workers_hands_over_and_stays_polite_across_them() {
    let mut sb = Sandbox::start_with(bin(), site(), true, PER_HOST).await;
    sb.add_worker("w3");
    sb.wait_workers(3).await;
    let sites = Fixture::start_chain(site(), HOSTS).await.unwrap();
    let pages = site().clean_paths().len() * usize::from(HOSTS);
    let (_, follower) = sb.leader_and_follower().await;
    let master = sb.masters[0].http.clone();

    // The task spreads: every worker holds partitions, every worker fetches.
    let (s, v) = sb.send(reqwest::Method::POST, &follower, task("hosts", &sites)).await;
    assert_eq!(s, 200, "{v}");
    let at_add = spread(&sb, &master, "hosts").await;
    assert_eq!(at_add.keys().collect::<Vec<_>>(), ["w1", "w2", "w3"], "{at_add:?}");
    assert!(at_add.values().all(|n| (5..=6).contains(n)), "16 partitions over 3 workers: {at_add:?}");
    until("every worker to fetch", Duration::from_secs(20), || async {
        let mut all = true;
        for w in 0..3 {
            all &= share(&sb, w, "hosts").await.is_some_and(|(p, _)| p > 0);
        }
        all
    })
    .await;
    // The add's answer names the worker holding the seeds' partition; every worker shows its
    // partitions (with their queues) in /tasks and /metrics; the masters' figures sum them.
    let home = crawler_engine::partition_of(&sites[0].addr().to_string(), 16);
    let owner = sb.workers.iter().position(|w| w.id == v["id"]).unwrap();
    let (_, tasks) = sb.get(&sb.workers[owner].http, "/tasks").await.unwrap();
    let parts = tasks[0]["partitions"].as_array().unwrap();
    assert!(parts.iter().any(|p| p["part"] == home && p["queued"].is_u64()), "{tasks}");
    let (_, metrics) = sb.get(&sb.workers[owner].http, "/metrics").await.unwrap();
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains(&format!("crawler_task_partitions{{task=\"hosts\"}} {}", parts.len())),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("crawler_task_partition_queued{{task=\"hosts\",partition=\"{home}\"}}"))
    );
    let (_, stats) = sb.get(&master, "/crawler/stats").await.unwrap();
    let figures = stats.as_array().unwrap().iter().find(|t| t["name"] == "hosts").unwrap().clone();
    assert_eq!(figures["workers"], json!(["w1", "w2", "w3"]), "{figures}");
    assert_eq!(figures["worker"], v["id"]);
    assert!(figures["pages"].as_u64().unwrap() > 0 && figures["state"] == "running", "{figures}");

    // SIGTERM of w3: it drains, commits and lets its partitions go; the others take them.
    sb.workers[2].signal("-TERM");
    until("w3's partitions to move", Duration::from_secs(10), || async {
        let now = spread(&sb, &master, "hosts").await;
        !now.contains_key("w3") && now.len() == 2
    })
    .await;
    let before = fetches(&sites).len();
    until("crawling to go on after the SIGTERM", Duration::from_secs(20), || async {
        fetches(&sites).len() > before + 50
    })
    .await;
    if extra(&fetches(&sites)) != 0 {
        for w in ["w1", "w2", "w3", "m1", "m2"] {
            println!("--- {w}\n{}", sb.log(w));
        }
    }
    assert_eq!(extra(&fetches(&sites)), 0, "a drained worker's pages are not fetched again");

    // A worker joining mid-crawl receives partitions and fetches.
    sb.add_worker("w4");
    until("w4 to receive partitions", Duration::from_secs(10), || async {
        spread(&sb, &master, "hosts").await.get("w4").is_some_and(|n| *n >= 5)
    })
    .await;
    until("w4 to fetch", Duration::from_secs(20), || async {
        share(&sb, 3, "hosts").await.is_some_and(|(p, parts)| p > 0 && parts >= 5)
    })
    .await;
    if extra(&fetches(&sites)) != 0 {
        for w in ["w1", "w2", "w4"] {
            println!("--- {w}\n{}", sb.log(w));
        }
    }
    assert_eq!(extra(&fetches(&sites)), 0, "a re-balance moves partitions without refetch");
    assert!(fetches(&sites).len() < pages, "the crawl is still going");

    // SIGKILL of w1: its partitions move once its lease (2 s) expires.
    sb.workers[0].kill();
    let killed = Instant::now();
    until("w1's partitions to move", Duration::from_secs(10), || async {
        !spread(&sb, &master, "hosts").await.contains_key("w1")
    })
    .await;
    let moved = killed.elapsed();
    println!("partitions of a SIGKILLed worker moved after {moved:?} (lease TTL 2 s)");
    assert!(moved < Duration::from_secs(2 + 1 + 1), "moved after {moved:?}");

    until("every page fetched", Duration::from_secs(60), || async { fetches(&sites).len() == pages }).await;
    until("the run to finish", Duration::from_secs(20), || async {
        sb.query("SELECT state FROM crawler_runs WHERE task = 'hosts'").trim() == "finished"
    })
    .await;
    let fetched = fetches(&sites);
    // What w1 had in flight (concurrency 4) or fetched but not committed (2 batches of 5).
    let again = extra(&fetched);
    println!("{again} pages fetched again of {pages} after a SIGTERM, a join and a SIGKILL");
    assert!(again <= 4 + 2 * 5, "{again} pages fetched again");
    let books = u64::from(site().books) * u64::from(HOSTS);
    let stored = sb.query("SELECT COUNT(*), COUNT(DISTINCT url) FROM book WHERE task = 'hosts'");
    assert_eq!(stored.trim(), format!("{books}\t{books}"), "every book exactly once");
    for s in &sites {
        assert!(s.max_in_flight() <= PER_HOST, "{} saw {} requests at once", s.addr(), s.max_in_flight());
    }

    // A delete stops every worker's share at once.
    let (s, v) = sb.send(reqwest::Method::POST, &follower, task("again", &sites)).await;
    assert_eq!(s, 200, "{v}");
    until("the new task to fetch on both workers", Duration::from_secs(20), || async {
        share(&sb, 1, "again").await.is_some_and(|(p, _)| p > 0)
            && share(&sb, 3, "again").await.is_some_and(|(p, _)| p > 0)
    })
    .await;
    let (s, v) = sb.send(reqwest::Method::DELETE, &follower, json!({"name": "again"})).await;
    assert_eq!(s, 200, "{v}");
    until("both shares to stop", Duration::from_secs(5), || async {
        share(&sb, 1, "again").await.is_none() && share(&sb, 3, "again").await.is_none()
    })
    .await;
    let stopped = sites.iter().map(|s| s.requests().len()).sum::<usize>();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sites.iter().map(|s| s.requests().len()).sum::<usize>(), stopped, "fetching after the delete");

    // w2 SIGKILLed after the run finished: its partitions move, the run stays finished (the
    // masters say so), and nothing is fetched again.
    sb.workers[1].kill();
    until("w2's partitions to move", Duration::from_secs(10), || async {
        !spread(&sb, &master, "hosts").await.contains_key("w2")
    })
    .await;
    // w4, the one worker left, holds every partition and lists the run finished (before, it
    // listed nothing and the masters said `waiting`).
    until("w4 to hold the finished run and the masters to say so", Duration::from_secs(10), || async {
        if share(&sb, 3, "hosts").await.is_none_or(|(_, parts)| parts != 16) {
            return false;
        }
        let stats = sb.get(&master, "/crawler/stats").await.map(|(_, v)| v).unwrap_or_default();
        let hosts = stats.as_array().and_then(|a| a.iter().find(|t| t["name"] == "hosts").cloned());
        hosts.is_some_and(|h| h["state"] == "finished" && h["worker_answered"] == true)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sites.iter().map(|s| s.requests().len()).sum::<usize>(), stopped, "the finished run fetched");
}

/// The largest number of requests in any window of `per` among `at` (sorted).
fn busiest_window(at: &[Instant], per: Duration) -> usize {
    (0..at.len()).map(|i| at[i..].iter().take_while(|t| **t < at[i] + per).count()).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_tasks_rate_limit_holds_across_workers_as_they_join_and_leave() {
    const LIMIT: usize = 20;
    let fast = Site { latency: Duration::from_millis(10), ..site() };
    let mut sb = Sandbox::start_with(bin(), fast, true, PER_HOST).await;
    sb.wait_workers(2).await;
    let sites = Fixture::start_chain(fast, HOSTS).await.unwrap();
    let (_, follower) = sb.leader_and_follower().await;
    let master = sb.masters[0].http.clone();
    let mut limited = task("limited", &sites);
    limited["task"]["limits"] = json!([{"events": LIMIT, "per": "1s"}]);
    // Every host from the start, so that every worker has work for its part of the limit.
    limited["task"]["seeds"] = sites.iter().map(|s| s.url("/index.html")).collect();
    let (s, v) = sb.send(reqwest::Method::POST, &follower, limited).await;
    assert_eq!(s, 200, "{v}");
    // Each worker alone could fetch far more (4 at once, 10 ms a page): the limit binds.
    until("both workers to fetch", Duration::from_secs(20), || async {
        share(&sb, 0, "limited").await.is_some_and(|(p, _)| p > 0)
            && share(&sb, 1, "limited").await.is_some_and(|(p, _)| p > 0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A third worker joins: every share is restarted with a third of the limit.
    sb.add_worker("w3");
    until("w3 to fetch", Duration::from_secs(20), || async {
        share(&sb, 2, "limited").await.is_some_and(|(p, _)| p > 0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // One leaves: the other two go back to half each.
    sb.workers[0].signal("-TERM");
    until("w1's partitions to move", Duration::from_secs(10), || async {
        !spread(&sb, &master, "limited").await.contains_key("w1")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (s, v) = sb.send(reqwest::Method::DELETE, &follower, json!({"name": "limited"})).await;
    assert_eq!(s, 200, "{v}");
    until("the shares to stop", Duration::from_secs(5), || async {
        share(&sb, 1, "limited").await.is_none() && share(&sb, 2, "limited").await.is_none()
    })
    .await;

    // As the sites saw them (robots.txt, fetched once per host, is not one of the task's
    // requests): never more than the limit in any second, whoever sent them. The windows are
    // 100 ms short of a second: a request checked at a window's edge may reach its site a
    // little later than the one a second before it (more on a loaded machine).
    let mut at: Vec<Instant> =
        sites.iter().flat_map(|s| s.requests()).filter(|r| r.path != "/robots.txt").map(|r| r.at).collect();
    at.sort();
    let span = at.last().unwrap().duration_since(at[0]).as_secs_f64();
    let busiest = busiest_window(&at, Duration::from_millis(900));
    println!(
        "{} requests in {span:.1} s ({:.1}/s, limit {LIMIT}/s); busiest 900 ms: {busiest}, busiest second: {}",
        at.len(),
        at.len() as f64 / span,
        busiest_window(&at, Duration::from_secs(1))
    );
    assert!(busiest <= LIMIT, "{busiest} requests within 900 ms (limit {LIMIT} a second)");
    // The limit is used, not starved: the joins and leaves cost a second or two of it.
    assert!(at.len() as f64 / span >= LIMIT as f64 * 0.6, "{} requests in {span:.1} s", at.len());
    for s in &sites {
        assert!(s.max_in_flight() <= PER_HOST, "{} saw {} requests at once", s.addr(), s.max_in_flight());
    }
}
