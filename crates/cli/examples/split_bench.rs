//! Benchmark of one task split across workers: pages per second of the same task with 1, 2
//! and 4 workers, the rate when a second worker joins mid-crawl, and the most requests any
//! site saw at once (counting every worker). Starts its own etcd, MariaDB, one `crawler
//! master`, the workers, and HOSTS fixture sites on 127.0.1.1... in this process (each its own
//! server answering after LATENCY ms).
//!
//! `cargo build --release && cargo run --release -p crawler --example split_bench [HOSTS] [BOOKS] [LATENCY_MS]`

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crawler_fixture::etcd::EtcdCluster;
use crawler_fixture::mariadb::MariaDb;
use crawler_fixture::{Fixture, Site};
use serde_json::{json, Value};

const PER_HOST: usize = 2;
const CONCURRENCY: usize = 32;

fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

fn bin() -> String {
    std::env::var("CRAWLER_BIN").unwrap_or_else(|_| "target/release/crawler".into())
}

struct Proc {
    http: String,
    child: Child,
}

/// Starts a crawler process; with `LOGS=DIR` set, its log goes to `DIR/<label>.log`.
fn spawn(args: &[&str], config: &Path, label: &str) -> Proc {
    let http = free_addr();
    let log = match std::env::var("LOGS") {
        Ok(dir) => Stdio::from(std::fs::File::create(Path::new(&dir).join(format!("{label}.log"))).unwrap()),
        Err(_) => Stdio::null(),
    };
    let child = Command::new(bin())
        .args(args)
        .args(["--http", &http])
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("crawler binary (build it with cargo build --release, or set CRAWLER_BIN)");
    Proc { http, child }
}

/// User + system CPU seconds of a live process.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

async fn get(client: &reqwest::Client, addr: &str, path: &str) -> Option<Value> {
    let r = client.get(format!("http://{addr}{path}")).timeout(Duration::from_secs(2)).send().await.ok()?;
    serde_json::from_str(&r.text().await.ok()?).ok()
}

async fn wait_workers(client: &reqwest::Client, master: &str, n: usize) {
    let started = Instant::now();
    loop {
        let seen = get(client, master, "/crawler/workers").await.and_then(|v| v.as_array().map(Vec::len));
        let leader = get(client, master, "/crawler/leader").await.is_some_and(|v| v["id"].is_string());
        if leader && seen == Some(n) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "workers did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pages the sites answered (robots.txt left out), over all sites.
fn pages(sites: &[Fixture]) -> usize {
    sites.iter().map(|s| s.requests().iter().filter(|r| r.path != "/robots.txt").count()).sum()
}

/// Fetches beyond one per URL per run, over the first `runs` runs (each fetches every page).
fn duplicates(sites: &[Fixture], runs: usize) -> usize {
    let mut per: HashMap<String, usize> = HashMap::new();
    for s in sites {
        for r in s.requests().iter().filter(|r| r.path != "/robots.txt") {
            *per.entry(format!("{}{}", s.addr(), r.path)).or_default() += 1;
        }
    }
    per.values().sum::<usize>() - per.len() * runs
}

fn task(name: &str, sites: &[Fixture]) -> Value {
    let seeds: Vec<String> = sites.iter().map(|s| s.url("/index.html")).collect();
    json!({"name": name, "task": {
        "seeds": seeds,
        "max_depth": 10,
        "rule": [
            {"name": "index", "follow": [{"select": "a.tag", "rule": "tag"}]},
            {"name": "tag", "follow": [{"select": "a.book", "rule": "book"}, {"select": "a.next", "rule": "tag"}]},
            {"name": "book", "table": "book", "fields": {"title": "h1.title", "price": "span.price"}}
        ]
    }})
}

struct Run {
    workers: usize,
    wall: f64,
    pages: usize,
    cpu: f64,
    /// CPU seconds of this process (the fixture sites) and of MariaDB during the run.
    others: (f64, f64),
    dupes: usize,
    rates: Vec<(f64, f64)>,
}

impl Run {
    /// The median of the half-second rates between the first and the last second (start-up
    /// and the tail left out).
    fn steady(&self) -> f64 {
        let mut r: Vec<f64> =
            self.rates.iter().filter(|(t, _)| *t > 1.0 && *t < self.wall - 1.0).map(|(_, r)| *r).collect();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied().unwrap_or(0.0)
    }
}

/// The MariaDB server's pid.
fn mariadbd() -> u32 {
    let out = Command::new("pgrep").args(["-n", "mariadbd"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// One crawl of the task by `n` workers (plus `join` more started `join_after` into it).
#[allow(clippy::too_many_arguments)]
async fn run(
    client: &reqwest::Client,
    master: &str,
    eps: &str,
    config: &Path,
    sites: &[Fixture],
    db: &MariaDb,
    name: &str,
    n: usize,
    join: Option<Duration>,
    round: usize,
) -> Run {
    let mut workers: Vec<Proc> = (0..n)
        .map(|i| {
            spawn(
                &["worker", "--cluster", "--id", &format!("w{i}"), "--etcd", eps],
                config,
                &format!("{name}-w{i}"),
            )
        })
        .collect();
    wait_workers(client, master, n).await;
    let cpu_before = (cpu_secs(std::process::id()), cpu_secs(mariadbd()));
    let before = pages(sites);
    let duplicates_before = duplicates(sites, round);
    let started = Instant::now();
    let r = client
        .post(format!("http://{master}/crawler/resource"))
        .body(task(name, sites).to_string())
        .send()
        .await;
    assert_eq!(r.unwrap().status(), 200);
    let mut rates = Vec::new();
    let mut last = (started, before);
    let mut joined = false;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = (Instant::now(), pages(sites));
        rates.push((
            started.elapsed().as_secs_f64(),
            (now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64(),
        ));
        last = now;
        if join.is_some_and(|a| !joined && started.elapsed() >= a) {
            let label = format!("{name}-w{n}");
            workers.push(spawn(
                &["worker", "--cluster", "--id", &format!("w{n}"), "--etcd", eps],
                config,
                &label,
            ));
            joined = true;
        }
        let state = db.query(&format!("SELECT state FROM crawler_runs WHERE task = '{name}'"));
        if state.trim() == "finished" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "the crawl did not finish");
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = workers.iter().map(|w| cpu_secs(w.child.id())).sum();
    let others = (cpu_secs(std::process::id()) - cpu_before.0, cpu_secs(mariadbd()) - cpu_before.1);
    let fetched = pages(sites) - before;
    let _ = client
        .delete(format!("http://{master}/crawler/resource"))
        .body(json!({"name": name}).to_string())
        .send()
        .await;
    for w in &mut workers {
        let _ = Command::new("kill").args(["-TERM", &w.child.id().to_string()]).status();
    }
    for w in &mut workers {
        let _ = w.child.wait();
    }
    wait_workers(client, master, 0).await;
    let dupes = duplicates(sites, round + 1) - duplicates_before;
    Run { workers: n + usize::from(joined), wall, pages: fetched, cpu, others, dupes, rates }
}

#[tokio::main]
async fn main() {
    let arg = |i: usize, d: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (hosts, books, latency) = (arg(1, 200) as u8, arg(2, 40) as u32, arg(3, 20));
    let site = Site { books, tags: 1, per_page: books.max(1), latency: Duration::from_millis(latency) };
    let sites = Fixture::start_chain(site, hosts).await.unwrap();
    let etcd = EtcdCluster::start(1);
    let eps = etcd.endpoints().join(",");
    let db = MariaDb::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crawler.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\nconcurrency = {CONCURRENCY}\nper_host = {PER_HOST}\nretries = 1\ntimeout = \"10s\"\n\
             [storage]\nurl = \"{}\"\nbatch = 100\n[cluster]\nlease_ttl = \"2s\"\n[api]\nrate = \"10000/s\"\n",
            db.url
        ),
    )
    .unwrap();
    let mut master = spawn(&["master", "--id", "m1", "--grpc", &free_addr(), "--etcd", &eps], &config, "m1");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let per_site = site.clean_paths().len();
    println!(
        "one task over {hosts} sites on 127.0.1.x ({per_site} pages each, {latency} ms a page), 64 partitions, \
         per_host {PER_HOST}, concurrency {CONCURRENCY} per worker, MariaDB, lease TTL 2 s\n"
    );
    let mut runs = Vec::new();
    for (round, n) in [1usize, 2, 4].into_iter().enumerate() {
        let r =
            run(&client, &master.http, &eps, &config, &sites, &db, &format!("w{n}"), n, None, round).await;
        runs.push(r);
    }
    let joined =
        run(&client, &master.http, &eps, &config, &sites, &db, "join", 1, Some(Duration::from_secs(3)), 3)
            .await;
    println!(
        "| workers | wall s | pages | pages/s | x one worker | steady pages/s | x one worker | workers' CPU s | \
         fixture CPU s | MariaDB CPU s | fetched twice |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let one = runs[0].pages as f64 / runs[0].wall;
    let one_steady = runs[0].steady();
    for r in &runs {
        let rate = r.pages as f64 / r.wall;
        println!(
            "| {} | {:.2} | {} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            r.workers,
            r.wall,
            r.pages,
            rate,
            rate / one,
            r.steady(),
            r.steady() / one_steady,
            r.cpu,
            r.others.0,
            r.others.1,
            r.dupes
        );
    }
    println!("\njoin: one worker, a second started 3 s in; pages/s per half second:");
    let line: Vec<String> = joined.rates.iter().map(|(t, r)| format!("{t:.1}s {r:.0}")).collect();
    println!("{}", line.join(", "));
    let max = sites.iter().map(Fixture::max_in_flight).max().unwrap_or(0);
    println!("\nmost requests in flight at one site, over every run: {max} (per_host {PER_HOST})");
    let _ = master.child.kill();
}
