//! Real `crawler master` processes on a real etcd: SIGKILL and SIGTERM of the leader, an etcd
//! member killed. Workers are stood in for by lease-backed records (the worker process is
//! another issue); everything listens on 127.0.0.1.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crawler_coord::{Etcd, ResourceRecord, Session, WorkerRecord};
use crawler_fixture::etcd::EtcdCluster;
use crawler_fixture::wait::{logged, spawn_listening};
use serde_json::{json, Value};

struct MasterProcess {
    id: String,
    http: String,
    child: Option<Child>,
}

impl MasterProcess {
    /// Starts a master on free ports (again on new ones if a port was taken first) and waits
    /// until it serves.
    fn start(id: &str, etcd: &[String], config: &Path) -> MasterProcess {
        let log = config.with_file_name(format!("{id}.log"));
        let build = |ports: &[u16]| {
            let (http, grpc) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_crawler"));
            cmd.args(["master", "--id", id, "--http", &http, "--grpc", &grpc, "--etcd", &etcd.join(",")])
                .arg("--config")
                .arg(config)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            cmd
        };
        let (child, ports) =
            spawn_listening(2, &log, Duration::from_secs(20), build, |_| logged(&log, "master serving"));
        MasterProcess { id: id.into(), http: format!("127.0.0.1:{}", ports[0]), child: Some(child) }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn terminate(&mut self) -> Child {
        let c = self.child.take().unwrap();
        let ok = Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap();
        assert!(ok.success());
        c
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("crawler.toml");
    std::fs::write(
        &path,
        "[cluster]\nlease_ttl = \"2s\"\n\n[api]\nrate = \"10000/s\"\n\n[[task]]\nname = \"books\"\nseeds = [\"http://127.0.0.1:9/\"]\n  [[task.rule]]\n  name = \"a\"\n",
    )
    .unwrap();
    path
}

async fn register_worker(etcd: &Etcd, id: &str, ttl: Duration) -> Session {
    let session = Session::start(etcd, ttl).await.unwrap();
    let record = WorkerRecord { id: id.into(), address: format!("{id}.local:1") };
    crawler_coord::register_worker(etcd, &record, &session).await.unwrap();
    session
}

async fn stored(etcd: &Etcd) -> Vec<ResourceRecord> {
    crawler_coord::list_resources(etcd).await.unwrap()
}

async fn http(
    client: &reqwest::Client,
    method: reqwest::Method,
    addr: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let mut req = client.request(method, format!("http://{addr}{path}")).timeout(Duration::from_secs(15));
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// Waits until every given master names the same leader, one of them; returns its id.
async fn agreed_leader(client: &reqwest::Client, ms: &[&MasterProcess], within: Duration) -> String {
    let started = Instant::now();
    loop {
        let mut ids = Vec::new();
        for m in ms {
            ids.push(match http(client, reqwest::Method::GET, &m.http, "/crawler/leader", None).await {
                Ok((200, v)) => v["id"].as_str().map(str::to_owned),
                _ => None,
            });
        }
        if let Some(Some(first)) = ids.first() {
            if ids.iter().all(|i| i.as_deref() == Some(first)) && ms.iter().any(|m| &m.id == first) {
                return first.clone();
            }
        }
        assert!(started.elapsed() < within, "no agreed leader within {within:?}: {ids:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkilled_during_200_concurrent_adds_loses_no_acknowledged_add() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let etcd = Etcd::connect(&eps, Duration::from_secs(5)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut ms: Vec<MasterProcess> =
        ["m1", "m2", "m3"].iter().map(|id| MasterProcess::start(id, &eps, &cfg)).collect();
    let client = reqwest::Client::new();
    let leader = agreed_leader(&client, &ms.iter().collect::<Vec<_>>(), Duration::from_secs(15)).await;
    let _w1 = register_worker(&etcd, "w1", Duration::from_secs(2)).await;
    let _w2 = register_worker(&etcd, "w2", Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let addrs: Arc<Vec<String>> = Arc::new(ms.iter().map(|m| m.http.clone()).collect());
    let mut adds = Vec::new();
    for i in 0..200 {
        let (client, addrs) = (client.clone(), addrs.clone());
        adds.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 3)).await;
            let body = json!({"name": format!("r{i}"), "task": {"seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a"}]}});
            // A client retries 503 and network errors against another master, as a user would.
            for attempt in 0..40 {
                let addr = &addrs[fastrand::usize(..addrs.len())];
                match http(&client, reqwest::Method::POST, addr, "/crawler/resource", Some(body.clone())).await {
                    Ok((200, v)) => return (i, 200, v["id"].as_str().unwrap_or("").to_owned()),
                    Ok((409, _)) if attempt > 0 => return (i, 409, String::new()),
                    Ok((503, _)) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    Ok((s, v)) => panic!("add r{i}: {s} {v}"),
                }
            }
            (i, 0, String::new())
        }));
    }
    // Kill the leader while the adds are in flight.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let killed_at = Instant::now();
    ms.iter_mut().find(|m| m.id == leader).unwrap().kill();
    let survivors: Vec<&MasterProcess> = ms.iter().filter(|m| m.id != leader).collect();
    let new_leader = agreed_leader(&client, &survivors, Duration::from_secs(10)).await;
    println!("failover after SIGKILL of the leader (lease ttl 2s): {:?}", killed_at.elapsed());
    assert_ne!(new_leader, leader);

    let mut acknowledged = Vec::new();
    for a in adds {
        let (i, status, worker) = a.await.unwrap();
        assert_ne!(status, 0, "r{i} never succeeded");
        if status == 200 {
            assert!(worker == "w1" || worker == "w2", "r{i} went to {worker:?}");
            acknowledged.push(format!("r{i}"));
        }
    }
    let recs = stored(&etcd).await;
    let mut names: Vec<&str> = recs.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "a resource is stored twice");
    assert_eq!(names.len(), 200, "every add succeeded or found its own earlier success");
    for a in &acknowledged {
        assert!(names.contains(&a.as_str()), "acknowledged {a} is missing");
    }
    assert!(recs.iter().all(|r| r.assigned_node == "w1" || r.assigned_node == "w2"));
    let per_worker = recs.iter().filter(|r| r.assigned_node == "w1").count();
    assert!((90..=110).contains(&per_worker), "uneven: {per_worker} of 200 on w1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_hands_over_in_well_under_a_second() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut ms: Vec<MasterProcess> =
        ["a", "b", "c"].iter().map(|id| MasterProcess::start(id, &eps, &cfg)).collect();
    let client = reqwest::Client::new();
    let leader = agreed_leader(&client, &ms.iter().collect::<Vec<_>>(), Duration::from_secs(15)).await;
    let started = Instant::now();
    let mut child = ms.iter_mut().find(|m| m.id == leader).unwrap().terminate();
    let survivors: Vec<&MasterProcess> = ms.iter().filter(|m| m.id != leader).collect();
    let new_leader = agreed_leader(&client, &survivors, Duration::from_secs(5)).await;
    let took = started.elapsed();
    println!("handover after SIGTERM of the leader: {took:?}");
    assert_ne!(new_leader, leader);
    // Under the lease TTL (2 s): without resigning, the followers would wait it out.
    assert!(took < Duration::from_secs(2), "handover took {took:?}, as long as a lease expiry");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "a SIGTERMed master exits 0, got {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_member_killed_is_invisible_to_api_clients() {
    let mut etcd_srv = EtcdCluster::start(3);
    let eps = etcd_srv.endpoints();
    let etcd = Etcd::connect(&eps, Duration::from_secs(10)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let ms: Vec<MasterProcess> = ["p", "q"].iter().map(|id| MasterProcess::start(id, &eps, &cfg)).collect();
    let client = reqwest::Client::new();
    agreed_leader(&client, &ms.iter().collect::<Vec<_>>(), Duration::from_secs(15)).await;
    // The stand-in worker's lease outlives etcd's own leader election on a loaded machine:
    // this test is about the masters' API, not about a worker's liveness.
    let _w = register_worker(&etcd, "w1", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The harshest member to lose: etcd's own raft leader.
    let mut raft_leader = None;
    for (i, ep) in eps.iter().enumerate() {
        let mut c = etcd_client::Client::connect([ep.as_str()], None).await.unwrap();
        let st = c.status().await.unwrap();
        if st.header().map(|h| h.member_id()) == Some(st.leader()) {
            raft_leader = Some(i);
        }
    }
    let raft_leader = raft_leader.expect("etcd has a leader");
    let mut statuses = Vec::new();
    for i in 0..60 {
        if i == 10 {
            etcd_srv.members[raft_leader].kill();
        }
        let m = &ms[i % 2];
        let body = json!({"name": format!("e{i}"), "task": {"seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a"}]}});
        let add = http(&client, reqwest::Method::POST, &m.http, "/crawler/resource", Some(body)).await;
        let del = http(
            &client,
            reqwest::Method::DELETE,
            &ms[(i + 1) % 2].http,
            "/crawler/resource",
            Some(json!({"name": format!("e{i}")})),
        )
        .await;
        statuses.push((i, add, del));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ok = |r: &Result<(u16, Value), String>| matches!(r, Ok((200, _)));
    let bad: Vec<_> = statuses.iter().filter(|(_, a, d)| !ok(a) || !ok(d)).collect();
    assert!(bad.is_empty(), "API errors while an etcd member was down: {bad:?}");
}
