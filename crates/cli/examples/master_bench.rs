//! Benchmark of the masters: add/delete throughput and latency through the leader and
//! through a follower (forwarding overhead), and failover time after SIGKILL and SIGTERM of
//! the leader. Starts its own etcd and three `crawler master` processes on 127.0.0.1.
//!
//! `cargo build --release && cargo run --release -p crawler --example master_bench [OPS]`

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crawler_coord::{Etcd, Session, WorkerRecord};
use crawler_fixture::etcd::EtcdCluster;
use serde_json::json;

const TTL_SECS: u64 = 2;

fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

struct Master {
    id: String,
    http: String,
    child: Child,
}

fn start(id: &str, etcd: &[String], config: &std::path::Path) -> Master {
    let bin = std::env::var("CRAWLER_BIN").unwrap_or_else(|_| "target/release/crawler".into());
    let (http, grpc) = (free_addr(), free_addr());
    let child = Command::new(bin)
        .args(["master", "--id", id, "--http", &http, "--grpc", &grpc, "--etcd", &etcd.join(",")])
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("crawler binary (build it with cargo build --release, or set CRAWLER_BIN)");
    Master { id: id.into(), http, child }
}

async fn leader_of(client: &reqwest::Client, addr: &str) -> Option<String> {
    let r = client
        .get(format!("http://{addr}/crawler/leader"))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
    v["id"].as_str().map(str::to_owned)
}

async fn agreed(client: &reqwest::Client, ms: &[&Master]) -> String {
    loop {
        let mut ids = Vec::new();
        for m in ms {
            ids.push(leader_of(client, &m.http).await);
        }
        if let Some(Some(first)) = ids.first() {
            if ids.iter().all(|i| i.as_deref() == Some(first)) && ms.iter().any(|m| &m.id == first) {
                return first.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// `ops` adds then `ops` deletes against `addr`, `conc` clients at a time.
async fn run_ops(
    client: &reqwest::Client,
    addr: &str,
    ops: usize,
    conc: usize,
    tag: &str,
) -> [(f64, f64, f64); 2] {
    let mut out = [(0.0, 0.0, 0.0); 2];
    for (k, method) in ["POST", "DELETE"].iter().enumerate() {
        let started = Instant::now();
        let mut lat = Vec::with_capacity(ops);
        for chunk in (0..ops).collect::<Vec<_>>().chunks(conc) {
            let mut tasks = Vec::new();
            for &i in chunk {
                let (client, url) = (client.clone(), format!("http://{addr}/crawler/resource"));
                let name = format!("{tag}{i}");
                let body = if k == 0 {
                    json!({"name": name, "task": {"seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a"}]}})
                } else {
                    json!({"name": name})
                };
                let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                tasks.push(tokio::spawn(async move {
                    let t = Instant::now();
                    let r = client.request(method, url).body(body.to_string()).send().await.unwrap();
                    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
                    t.elapsed()
                }));
            }
            for t in tasks {
                lat.push(t.await.unwrap());
            }
        }
        let total = started.elapsed().as_secs_f64();
        lat.sort();
        out[k] = (ops as f64 / total, pct(&lat, 0.5), pct(&lat, 0.99));
    }
    out
}

#[tokio::main]
async fn main() {
    let ops: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(400);
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crawler.toml");
    std::fs::write(&config, format!("[cluster]\nlease_ttl = \"{TTL_SECS}s\"\n[api]\nrate = \"100000/s\"\n"))
        .unwrap();
    let mut ms: Vec<Master> = ["m1", "m2", "m3"].iter().map(|id| start(id, &eps, &config)).collect();
    let client = reqwest::Client::new();
    let leader = agreed(&client, &ms.iter().collect::<Vec<_>>()).await;
    let etcd = Etcd::connect(&eps, Duration::from_secs(5)).await.unwrap();
    let mut workers = Vec::new();
    for w in ["w1", "w2"] {
        let s = Session::start(&etcd, Duration::from_secs(10)).await.unwrap();
        let record = WorkerRecord { id: w.into(), address: format!("{w}:1") };
        crawler_coord::register_worker(&etcd, &record, &s).await.unwrap();
        workers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader_addr = ms.iter().find(|m| m.id == leader).unwrap().http.clone();
    let follower_addr = ms.iter().find(|m| m.id != leader).unwrap().http.clone();

    println!("{ops} adds then {ops} deletes per row; etcd 3.4 (1 member, fsync on), 3 masters, lease ttl {TTL_SECS}s\n");
    println!(
        "| path | clients | add/s | add p50 ms | add p99 ms | delete/s | delete p50 ms | delete p99 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (path, addr) in [("leader", &leader_addr), ("follower (forwarded)", &follower_addr)] {
        for conc in [1, 2, 16] {
            let [a, d] = run_ops(&client, addr, ops, conc, &format!("{}{conc}x", &path[..1])).await;
            println!(
                "| {path} | {conc} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} |",
                a.0, a.1, a.2, d.0, d.1, d.2
            );
        }
    }

    println!("\n| failover | new leader agreed by the survivors after |");
    println!("|---|---:|");
    for signal in ["SIGTERM", "SIGKILL"] {
        let leader = agreed(&client, &ms.iter().collect::<Vec<_>>()).await;
        let i = ms.iter().position(|m| m.id == leader).unwrap();
        let started = Instant::now();
        if signal == "SIGKILL" {
            ms[i].child.kill().unwrap();
        } else {
            Command::new("kill").args(["-TERM", &ms[i].child.id().to_string()]).status().unwrap();
        }
        let survivors: Vec<&Master> = ms.iter().filter(|m| m.id != leader).collect();
        agreed(&client, &survivors).await;
        println!("| {signal} of the leader | {:.0} ms |", started.elapsed().as_secs_f64() * 1000.0);
        let _ = ms[i].child.wait();
        ms[i] = start(&leader, &eps, &config);
    }
    for m in &mut ms {
        let _ = m.child.kill();
    }
}
