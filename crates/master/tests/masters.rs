//! Masters against a real etcd on 127.0.0.1: leader election, writes through followers,
//! status codes, assignment, reassignment, handover, governance.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crawler_coord::{keys, Etcd, ResourceRecord, Session, WorkerRecord};
use crawler_fixture::etcd::EtcdCluster;
use crawler_master::MasterConfig;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct MasterProc {
    id: String,
    http: SocketAddr,
    grpc: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

async fn start_master(id: &str, etcd: &[String], token: &str, rate: f64) -> MasterProc {
    start_master_with(id, etcd, token, rate, Duration::from_secs(2)).await
}

async fn start_master_with(id: &str, etcd: &[String], token: &str, rate: f64, ttl: Duration) -> MasterProc {
    start_master_tasks(id, etcd, token, rate, ttl, &["books"]).await
}

/// A master whose config holds the tasks `names` (each the same small task).
async fn start_master_tasks(
    id: &str,
    etcd: &[String],
    token: &str,
    rate: f64,
    ttl: Duration,
    names: &[&str],
) -> MasterProc {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (h, g) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
    let cfg = MasterConfig {
        id: id.into(),
        http_advertise: h.to_string(),
        grpc_advertise: g.to_string(),
        etcd: etcd.to_vec(),
        lease_ttl: ttl,
        tasks: names
            .iter()
            .map(|name| {
                serde_json::from_value(
                    json!({"name": name, "seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a"}]}),
                )
                .unwrap()
            })
            .collect(),
        token: token.into(),
        rate_per_sec: rate,
        default_partitions: 1,
    };
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { crawler_master::run(cfg, http, grpc, s).await.unwrap() });
    MasterProc { id: id.into(), http: h, grpc: g, stop, task }
}

/// A worker as masters see it: a record under a lease.
async fn register_worker(etcd: &Etcd, id: &str) -> Session {
    let session = Session::start(etcd, Duration::from_secs(2)).await.unwrap();
    let record = WorkerRecord { id: id.into(), address: format!("{id}.local:1") };
    crawler_coord::register_worker(etcd, &record, &session).await.unwrap();
    session
}

async fn stored(etcd: &Etcd) -> Vec<ResourceRecord> {
    crawler_coord::list_resources(etcd).await.unwrap()
}

async fn call(
    method: reqwest::Method,
    addr: SocketAddr,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn leader_of(m: &MasterProc) -> Option<String> {
    let (status, v) = call(reqwest::Method::GET, m.http, "/crawler/leader", None, None).await;
    (status == 200).then(|| v["id"].as_str().unwrap().to_owned())
}

async fn agreed_leader(ms: &[&MasterProc], within: Duration) -> String {
    let started = Instant::now();
    loop {
        let mut ids = Vec::new();
        for m in ms {
            ids.push(leader_of(m).await);
        }
        if let Some(Some(first)) = ids.first() {
            if ids.iter().all(|i| i.as_deref() == Some(first)) && ms.iter().any(|m| &m.id == first) {
                return first.clone();
            }
        }
        assert!(started.elapsed() < within, "no agreed leader: {ids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the master sees `n` live workers.
async fn wait_workers(m: &MasterProc, n: usize) {
    let started = Instant::now();
    loop {
        let (status, v) = call(reqwest::Method::GET, m.http, "/crawler/workers", None, None).await;
        if status == 200 && v.as_array().map_or(0, Vec::len) == n {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{} never saw {n} workers: {v}", m.id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stored_names(etcd: &Etcd) -> Vec<String> {
    stored(etcd).await.into_iter().map(|r| r.name).collect()
}

async fn is_leader_metric(m: &MasterProc) -> bool {
    let (_, v) = call(reqwest::Method::GET, m.http, "/metrics", None, None).await;
    v.as_str().unwrap().lines().any(|l| l == "crawler_master_is_leader 1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_writes_through_followers_and_status_codes() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let etcd = Etcd::connect(&eps, Duration::from_secs(5)).await.unwrap();
    let ms = [
        start_master("m1", &eps, "", 1000.0).await,
        start_master("m2", &eps, "", 1000.0).await,
        start_master("m3", &eps, "", 1000.0).await,
    ];
    let leader = agreed_leader(&ms.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    let mut flags = Vec::new();
    for m in &ms {
        flags.push(is_leader_metric(m).await);
    }
    assert_eq!(flags.iter().filter(|f| **f).count(), 1, "{flags:?}");
    let followers: Vec<&MasterProc> = ms.iter().filter(|m| m.id != leader).collect();
    use reqwest::Method as M;

    // No worker yet: 503.
    let (s, v) =
        call(M::POST, followers[0].http, "/crawler/resource", Some(json!({"name": "books"})), None).await;
    assert_eq!((s, v["error"].as_str().unwrap()), (503, "no live worker"));

    let _w1 = register_worker(&etcd, "w1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, v) =
        call(M::POST, followers[0].http, "/crawler/resource", Some(json!({"name": "books"})), None).await;
    assert_eq!((s, &v), (200, &json!({"id": "w1", "address": "w1.local:1"})));
    let recs = stored(&etcd).await;
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].name.as_str(), recs[0].assigned_node.as_str()), ("books", "w1"));
    // Added by name: stored with the master's spec, so every worker runs that task.
    let stored_spec: crawler_engine::TaskSpec =
        serde_json::from_value(recs[0].task.clone().expect("the master's spec")).unwrap();
    assert_eq!(
        (stored_spec.name.as_str(), stored_spec.seeds.as_slice()),
        ("books", &["http://127.0.0.1:9/".to_owned()][..])
    );

    // Inline task through the other follower; then its listing on every master.
    let inline =
        json!({"name": "inline", "task": {"seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a"}]}});
    let (s, _) = call(M::POST, followers[1].http, "/crawler/resource", Some(inline.clone()), None).await;
    assert_eq!(s, 200);
    for m in &ms {
        let (s, v) = call(M::GET, m.http, "/crawler/resources", None, None).await;
        assert_eq!(s, 200);
        let mut names: Vec<&str> =
            v.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        names.sort();
        if names.len() < 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(names, ["books", "inline"]);
    }
    let (s, v) = call(M::GET, followers[0].http, "/crawler/workers", None, None).await;
    assert_eq!((s, v), (200, json!([{"id": "w1", "address": "w1.local:1", "load": 2}])));

    // 409, 400s.
    let (s, v) =
        call(M::POST, followers[0].http, "/crawler/resource", Some(json!({"name": "books"})), None).await;
    assert_eq!(s, 409, "{v}");
    let (s, _) = call(M::POST, followers[0].http, "/crawler/resource", Some(inline), None).await;
    assert_eq!(s, 409);
    let (s, v) =
        call(M::POST, followers[0].http, "/crawler/resource", Some(json!({"name": "nope"})), None).await;
    assert_eq!((s, v["error"].as_str().unwrap()), (400, "unknown task \"nope\" and no inline task spec"));
    let (s, v) = call(M::POST, followers[0].http, "/crawler/resource", Some(json!({"nam": "x"})), None).await;
    assert!(s == 400 && v["error"].as_str().unwrap().starts_with("bad body"), "{v}");
    let bad_spec = json!({"name": "bad", "task": {"seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a", "follow": [{"select": "a", "rule": "zz"}]}]}});
    let (s, v) = call(M::POST, followers[1].http, "/crawler/resource", Some(bad_spec), None).await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (400, "task[bad].rule[a].follow[0].rule: no rule named \"zz\"")
    );
    let (s, _) =
        call(M::POST, followers[0].http, "/crawler/resource", Some(json!({"name": "../etc"})), None).await;
    assert_eq!(s, 400);

    // Delete through a follower, then 404.
    let (s, v) =
        call(M::DELETE, followers[1].http, "/crawler/resource", Some(json!({"name": "books"})), None).await;
    assert_eq!((s, v), (200, json!({})));
    let (s, _) =
        call(M::DELETE, followers[0].http, "/crawler/resource", Some(json!({"name": "books"})), None).await;
    assert_eq!(s, 404);
    assert_eq!(stored(&etcd).await.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["inline"]);

    // The same through gRPC on a follower: codes map like HTTP.
    let mut grpc = crawler_proto::crawler_master_client::CrawlerMasterClient::connect(format!(
        "http://{}",
        followers[0].grpc
    ))
    .await
    .unwrap();
    let spec = |name: &str| crawler_proto::ResourceSpec { name: name.into(), ..Default::default() };
    let node = grpc.add_resource(spec("books")).await.unwrap().into_inner();
    assert_eq!(node.id, "w1");
    assert_eq!(grpc.add_resource(spec("books")).await.unwrap_err().code(), tonic::Code::AlreadyExists);
    assert_eq!(grpc.add_resource(spec("nope")).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    grpc.delete_resource(spec("books")).await.unwrap();
    assert_eq!(grpc.delete_resource(spec("books")).await.unwrap_err().code(), tonic::Code::NotFound);

    for m in &ms {
        m.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_loaded_assignment_and_moves_off_a_dead_worker() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let etcd = Etcd::connect(&eps, Duration::from_secs(5)).await.unwrap();
    let ms = [start_master("a", &eps, "", 1000.0).await, start_master("b", &eps, "", 1000.0).await];
    let leader = agreed_leader(&ms.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    let follower = ms.iter().find(|m| m.id != leader).unwrap();
    let w1 = register_worker(&etcd, "w1").await;
    let _w2 = register_worker(&etcd, "w2").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got = Vec::new();
    for i in 0..6 {
        let body = json!({"name": format!("t{i}"), "task": {"seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a"}]}});
        let (s, v) = call(reqwest::Method::POST, follower.http, "/crawler/resource", Some(body), None).await;
        assert_eq!(s, 200, "{v}");
        got.push(v["id"].as_str().unwrap().to_owned());
    }
    // Least loaded, ties to the smallest id: alternating, w1 first.
    assert_eq!(got, ["w1", "w2", "w1", "w2", "w1", "w2"]);

    // w1's lease is revoked: the leader moves its three resources to w2.
    let started = Instant::now();
    w1.close().await;
    loop {
        let recs = stored(&etcd).await;
        if recs.iter().all(|r| r.assigned_node == "w2") {
            assert_eq!(recs.len(), 6);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "not moved: {recs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("resources moved off a dead worker in {:?}", started.elapsed());
    for m in &ms {
        m.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_resigns_and_a_follower_takes_over_at_once() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let ms = vec![
        start_master("x", &eps, "", 1000.0).await,
        start_master("y", &eps, "", 1000.0).await,
        start_master("z", &eps, "", 1000.0).await,
    ];
    let leader = agreed_leader(&ms.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    let (stopping, rest): (Vec<MasterProc>, Vec<MasterProc>) = ms.into_iter().partition(|m| m.id == leader);
    let started = Instant::now();
    stopping[0].stop.cancel();
    let new = agreed_leader(&rest.iter().collect::<Vec<_>>(), Duration::from_secs(5)).await;
    let took = started.elapsed();
    println!("handover after a graceful stop: {took:?}");
    assert_ne!(new, leader);
    // Under the lease TTL (2 s): without resigning, the followers would wait it out.
    assert!(took < Duration::from_secs(2), "handover took {took:?}, as long as a lease expiry");
    tokio::time::timeout(Duration::from_secs(5), async {
        while !stopping[0].task.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await
        }
    })
    .await
    .expect("the stopped master exits");
    for m in &rest {
        m.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_and_rate_limit() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let m = start_master("solo", &eps, "s3cret", 2.0).await;
    use reqwest::Method as M;
    let (s, v) = call(M::POST, m.http, "/crawler/resource", Some(json!({"name": "books"})), None).await;
    assert_eq!((s, v["error"].as_str().unwrap()), (401, "missing bearer token"));
    let (s, _) =
        call(M::DELETE, m.http, "/crawler/resource", Some(json!({"name": "books"})), Some("wrong")).await;
    assert_eq!(s, 401);
    // Failed authentications take from the rate (2/s, a burst of 2) too: a fresh bucket for
    // the next two calls.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut grpc =
        crawler_proto::crawler_master_client::CrawlerMasterClient::connect(format!("http://{}", m.grpc))
            .await
            .unwrap();
    let err = grpc
        .add_resource(crawler_proto::ResourceSpec { name: "books".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // The scheme is matched ignoring case (RFC 7235): `bearer` is a bearer token too (401
    // "missing bearer token" before). No worker: the add itself answers 503.
    let lower = reqwest::Client::new()
        .post(format!("http://{}/crawler/resource", m.http))
        .header("authorization", "bearer s3cret")
        .body(json!({"name": "books"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status().as_u16(), 503, "{}", lower.text().await.unwrap());
    // Reads need no token but count against the rate: 2/s with a burst of 2. Eight calls at
    // once (well within the half second a new token takes): two pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let calls: Vec<_> = (0..8)
        .map(|_| tokio::spawn(async move { call(M::GET, m.http, "/crawler/resources", None, None).await.0 }))
        .collect();
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 6, "{statuses:?}");
    let (_, metrics) = call(M::GET, m.http, "/metrics", None, None).await;
    assert!(metrics
        .as_str()
        .unwrap()
        .contains("crawler_api_calls_total{route=\"GET /crawler/resources\",status=\"429\"} 6"));
    // Guessing the token is throttled like any call: of eight wrong tokens at once, two are
    // answered 401 and six 429 (all eight were 401 before, at any rate).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let guesses: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(async move {
                let body = json!({"name": "books"});
                call(M::DELETE, m.http, "/crawler/resource", Some(body), Some(&format!("guess{i}"))).await.0
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for g in guesses {
        statuses.push(g.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [401, 401, 429, 429, 429, 429, 429, 429]);
    m.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_revoked_steps_down_and_the_cluster_recovers() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let etcd = Etcd::connect(&eps, Duration::from_secs(5)).await.unwrap();
    let ms = [start_master("r1", &eps, "", 1000.0).await, start_master("r2", &eps, "", 1000.0).await];
    let all: Vec<&MasterProc> = ms.iter().collect();
    let leader = agreed_leader(&all, Duration::from_secs(10)).await;
    let _w = register_worker(&etcd, "w1").await;

    // Revoke the leader's session lease behind its back (as if etcd expired it).
    let resp = etcd
        .call("get", |mut c| async move {
            c.get(format!("{}/", keys::ELECTION), Some(etcd_client::GetOptions::new().with_prefix())).await
        })
        .await
        .unwrap();
    let first = resp.kvs().iter().min_by_key(|kv| kv.create_revision()).unwrap();
    assert_eq!(first.value(), leader.as_bytes());
    let lease = first.lease();
    etcd.call("revoke", |mut c| async move { c.lease_revoke(lease).await }).await.unwrap();

    // The old leader stops claiming leadership within a second (it does not wait for its
    // keep-alive), a leader is agreed again, and exactly one master says it leads.
    let old = ms.iter().find(|m| m.id == leader).unwrap();
    let started = Instant::now();
    loop {
        let new = leader_of(old).await;
        if !is_leader_metric(old).await || new.as_deref() == Some(&leader) {
            break;
        }
        // Under the lease TTL (2 s): it notices the lost key, not only its keep-alive's failure.
        assert!(started.elapsed() < Duration::from_secs(2), "the old leader still claims to lead");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let now = agreed_leader(&all, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut flags = Vec::new();
    for m in &ms {
        flags.push((m.id.clone(), is_leader_metric(m).await));
    }
    assert_eq!(
        flags.iter().filter(|(_, f)| *f).map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        [now.as_str()]
    );

    // Writes work through either master.
    for (i, m) in ms.iter().enumerate() {
        let body = json!({"name": format!("after{i}"), "task": {"seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a"}]}});
        let (s, v) = call(reqwest::Method::POST, m.http, "/crawler/resource", Some(body), None).await;
        assert_eq!(s, 200, "{v}");
    }
    for m in &ms {
        m.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_back_after_its_ttl_a_leader_is_agreed_without_waiting_out_the_old_leases() {
    // A restarted etcd gives every lease a new TTL: the sessions the masters took for lost
    // while it was down kept their election keys one TTL more, and every new candidacy waited
    // behind them (no leader, writes 503). The masters revoke them first.
    let ttl = Duration::from_secs(6);
    let mut etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let ms = [
        start_master_with("e1", &eps, "", 1000.0, ttl).await,
        start_master_with("e2", &eps, "", 1000.0, ttl).await,
    ];
    let all: Vec<&MasterProc> = ms.iter().collect();
    agreed_leader(&all, Duration::from_secs(10)).await;
    etcd_srv.members[0].kill();
    // Past the TTL: every master has taken its session for lost (at its deadline: its
    // renewals' hanging does not hold that back), and the leader no longer leads.
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    for m in &ms {
        assert!(!is_leader_metric(m).await, "{} still leads past its lease", m.id);
    }
    etcd_srv.members[0].restart();
    etcd_srv.wait_healthy(Duration::from_secs(20));
    let back = Instant::now();
    loop {
        let mut leading = 0;
        for m in &ms {
            leading += usize::from(is_leader_metric(m).await);
        }
        if leading == 1 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(20), "no leader after etcd came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back.elapsed() < ttl / 2, "a leader only {:?} after etcd was back", back.elapsed());
    agreed_leader(&all, Duration::from_secs(10)).await;
    for m in &ms {
        m.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_leaves_a_task_named_alone_to_the_leader_s_config() {
    // A rolling change of the masters' configs: the leader knows `newtask`, a follower not yet.
    // The follower answered 400 "unknown task" without asking the leader.
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let etcd = Etcd::connect(&eps, Duration::from_secs(5)).await.unwrap();
    let two = Duration::from_secs(2);
    let leader = start_master_tasks("n1", &eps, "", 1000.0, two, &["books", "newtask"]).await;
    assert_eq!(agreed_leader(&[&leader], Duration::from_secs(10)).await, "n1");
    let follower = start_master_tasks("n2", &eps, "", 1000.0, two, &["books"]).await;
    assert_eq!(agreed_leader(&[&leader, &follower], Duration::from_secs(10)).await, "n1");
    let _w = register_worker(&etcd, "w1").await;
    for m in [&leader, &follower] {
        wait_workers(m, 1).await;
    }
    let body = json!({"name": "newtask"});
    let (s, v) = call(reqwest::Method::POST, follower.http, "/crawler/resource", Some(body), None).await;
    assert_eq!(s, 200, "{v}");
    // A task neither knows is still refused, by the leader, with the same answer.
    let body = json!({"name": "nosuch"});
    let (s, v) = call(reqwest::Method::POST, follower.http, "/crawler/resource", Some(body), None).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("unknown task"), "{v}");
    for m in [&leader, &follower] {
        m.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused() {
    let etcd_srv = EtcdCluster::start(1);
    let m = start_master("big", &etcd_srv.endpoints(), "", 1000.0).await;
    let huge = json!({"name": "x", "task": {"pad": "y".repeat(2 << 20)}});
    // HTTP/1.1 headers announcing 2 MiB, the body not sent: answered 413 as JSON before the
    // body is read. (A client that writes the whole body first may meet a closed connection
    // instead of the answer, depending on how much the socket buffers took: not a test.)
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(m.http).await.unwrap();
        let head = format!(
            "POST /crawler/resource HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            m.http,
            huge.to_string().len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            loop {
                let n = tcp.read(&mut buf).await.unwrap_or(0);
                answer.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&answer);
                if n == 0 || text.contains("larger than") {
                    break;
                }
            }
        });
        read.await.expect("an oversized HTTP/1.1 request got no answer within 10 s");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        let v: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(v["error"].as_str().unwrap().contains("larger than"), "{v}");
    }

    // The same over HTTP/2 without TLS (h2c, prior knowledge): answered, and as JSON.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let sent = h2.post(format!("http://{}/crawler/resource", m.http)).body(huge.to_string()).send();
    let resp = tokio::time::timeout(Duration::from_secs(10), sent)
        .await
        .expect("an oversized h2c request got no answer within 10 s")
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status().as_u16(), 413);
    let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert!(v["error"].as_str().unwrap().contains("larger than"), "{v}");

    // Over gRPC: a task over the limit is refused as too large (it failed at etcd's request
    // limit as an internal error before), on both services.
    let mut grpc =
        crawler_proto::crawler_master_client::CrawlerMasterClient::connect(format!("http://{}", m.grpc))
            .await
            .unwrap();
    let big = crawler_proto::ResourceSpec {
        name: "big".into(),
        task_json: format!(
            r#"{{"seeds":["http://127.0.0.1:9/"],"cookie":"{}","rule":[{{"name":"a"}}]}}"#,
            "c".repeat(2 << 20)
        ),
        ..Default::default()
    };
    let err = grpc.add_resource(big).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");

    // h2c headers announcing a body over the limit, the body not sent (the client waits for
    // the answer first): answered 413 at once.
    let tcp = tokio::net::TcpStream::connect(m.http).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}/crawler/resource", m.http))
        .header("content-type", "application/json")
        .header("content-length", (2 << 20).to_string())
        .body(())
        .unwrap();
    let (answer, _body_never_sent) = h2.send_request(req, false).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("h2c headers with a Content-Length over the limit got no answer within 10 s")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.data())
        .await
        .expect("413 body")
        .transpose()
        .unwrap()
    {
        text.extend_from_slice(&chunk);
    }
    let v: Value = serde_json::from_slice(&text).unwrap();
    assert!(v["error"].as_str().unwrap().contains("larger than"), "{v}");
    m.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_clients_work_unchanged_on_every_master() {
    use crawler_proto::compat::crawler_master_client::CrawlerMasterClient;
    use crawler_proto::compat::ResourceSpec;
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let etcd = Etcd::connect(&eps, Duration::from_secs(5)).await.unwrap();
    let ms = [start_master("o1", &eps, "", 1000.0).await, start_master("o2", &eps, "", 1000.0).await];
    let all: Vec<&MasterProc> = ms.iter().collect();
    let leader_id = agreed_leader(&all, Duration::from_secs(10)).await;
    let leader = ms.iter().find(|m| m.id == leader_id).unwrap();
    let follower = ms.iter().find(|m| m.id != leader_id).unwrap();
    let _w1 = register_worker(&etcd, "w1").await;
    let _w2 = register_worker(&etcd, "w2").await;
    wait_workers(leader, 2).await;

    // A client generated from the original proto (no package: /CrawlerMaster/AddResource),
    // through the follower and the leader.
    for (m, name) in [(follower, "books"), (leader, "more")] {
        let mut client = CrawlerMasterClient::connect(format!("http://{}", m.grpc)).await.unwrap();
        let task = if name == "books" { None } else { Some(()) };
        let spec = ResourceSpec { id: format!("req-{name}"), name: name.into(), ..ResourceSpec::default() };
        if task.is_some() {
            // Not a task of the config and the original has no inline spec: 400 as InvalidArgument.
            let err = client.add_resource(spec).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
            continue;
        }
        let node = client.add_resource(spec.clone()).await.unwrap().into_inner();
        let first = node.id.clone();
        assert!(first == "w1" || first == "w2", "{node:?}");
        assert_eq!(node.address, format!("{first}.local:1"));
        // A retry with the same request id answers the worker that was stored, although the
        // other worker is now the less loaded one.
        let mut other = CrawlerMasterClient::connect(format!("http://{}", leader.grpc)).await.unwrap();
        let again = other.add_resource(spec).await.unwrap().into_inner();
        assert_eq!(again.id, first);
        let stored = stored(&etcd).await;
        assert_eq!(
            stored.iter().map(|r| (r.name.as_str(), r.assigned_node.as_str())).collect::<Vec<_>>(),
            [(name, first.as_str())]
        );
        // A new request id for the same name: it exists.
        let err = other
            .add_resource(ResourceSpec {
                id: "req-other".into(),
                name: name.into(),
                ..ResourceSpec::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::AlreadyExists);
        client.delete_resource(ResourceSpec { name: name.into(), ..ResourceSpec::default() }).await.unwrap();
        assert!(stored_names(&etcd).await.is_empty());
    }

    // The original walkthrough's HTTP body, and its other ResourceSpec fields, are accepted;
    // the id makes the call idempotent.
    use reqwest::Method as M;
    let walkthrough = json!({"id": "zjx", "name": "books"});
    let (s, first) = call(M::POST, follower.http, "/crawler/resource", Some(walkthrough), None).await;
    assert_eq!(s, 200, "{first}");
    let full = json!({"id": "zjx", "name": "books", "assigned_node": "", "creation_time": 0});
    let (s, again) = call(M::POST, leader.http, "/crawler/resource", Some(full), None).await;
    assert_eq!((s, &again), (200, &first));
    // As the original's grpc-gateway spells the fields too (lower camel case; 400 before).
    let camel = json!({"id": "zjx", "name": "books", "assignedNode": "", "creationTime": "0"});
    let (s, again) = call(M::POST, follower.http, "/crawler/resource", Some(camel), None).await;
    assert_eq!((s, &again), (200, &first));
    for m in &ms {
        m.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_input_gets_a_short_json_error() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let m = start_master("odd", &eps, "", 1000.0).await;
    agreed_leader(&[&m], Duration::from_secs(10)).await;
    use reqwest::Method as M;
    let json_error = |s: u16, v: &Value, want: u16| {
        assert_eq!(s, want, "{v}");
        assert!(v["error"].is_string(), "not a JSON error: {v}");
    };
    // Unknown route, wrong method.
    let (s, v) = call(M::GET, m.http, "/nope", None, None).await;
    json_error(s, &v, 404);
    let (s, v) = call(M::PUT, m.http, "/crawler/resource", Some(json!({"name": "books"})), None).await;
    json_error(s, &v, 405);
    // A task name that is not UTF-8 once decoded.
    let (s, v) = call(M::GET, m.http, "/crawler/stats/%FF", None, None).await;
    json_error(s, &v, 400);
    // Only an object is a resource.
    let (s, v) = call(M::POST, m.http, "/crawler/resource", Some(json!(["books"])), None).await;
    json_error(s, &v, 400);
    let (s, v) = call(M::DELETE, m.http, "/crawler/resource", Some(json!(["books"])), None).await;
    json_error(s, &v, 400);
    // A huge name is refused with a short message, over HTTP and gRPC.
    let name = "n".repeat(500_000);
    let (s, v) = call(M::POST, m.http, "/crawler/resource", Some(json!({ "name": name })), None).await;
    json_error(s, &v, 400);
    assert!(v.to_string().len() < 300, "{} bytes of error", v.to_string().len());
    let mut grpc =
        crawler_proto::crawler_master_client::CrawlerMasterClient::connect(format!("http://{}", m.grpc))
            .await
            .unwrap();
    let err = grpc
        .add_resource(crawler_proto::ResourceSpec { name: name.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        &err.message()[..100.min(err.message().len())]
    );
    assert!(err.message().len() < 300);
    let long_id = json!({"id": "i".repeat(1000), "name": "books"});
    let (s, v) = call(M::POST, m.http, "/crawler/resource", Some(long_id), None).await;
    json_error(s, &v, 400);
    m.stop.cancel();
}

/// Waits until `key` exists in etcd, failing after `within`.
async fn wait_key(etcd: &Etcd, key: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let k = key.to_owned();
        let resp = etcd.call("get", |mut c| {
            let k = k.clone();
            async move { c.get(k, None).await }
        });
        if !resp.await.unwrap().kvs().is_empty() {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{key} was not put back within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_master_record_is_put_back_and_forwarding_goes_on() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let etcd = Etcd::connect(&eps, Duration::from_secs(5)).await.unwrap();
    let ms = [start_master("k1", &eps, "", 1000.0).await, start_master("k2", &eps, "", 1000.0).await];
    let all: Vec<&MasterProc> = ms.iter().collect();
    let leader = agreed_leader(&all, Duration::from_secs(10)).await;
    let _w = register_worker(&etcd, "w1").await;
    // (The add below needs a worker the masters have seen: it raced their watch before.)
    for m in &ms {
        wait_workers(m, 1).await;
    }
    // An operator deletes the leader's record (`etcdctl del /crawler/masters/<leader>`).
    let key = keys::master(&leader);
    let k = key.clone();
    etcd.call("del", |mut c| {
        let k = k.clone();
        async move { c.delete(k, None).await }
    })
    .await
    .unwrap();
    let took = wait_key(&etcd, &key, Duration::from_secs(1)).await;
    println!("the leader's record was put back after {took:?}");
    assert_eq!(agreed_leader(&all, Duration::from_secs(1)).await, leader);
    // Followers forward again.
    let follower = ms.iter().find(|m| m.id != leader).unwrap();
    let body = json!({"name": "books"});
    let (s, v) = call(reqwest::Method::POST, follower.http, "/crawler/resource", Some(body), None).await;
    assert_eq!(s, 200, "{v}");
    for m in &ms {
        m.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_campaigns_once_and_waits() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let etcd = Etcd::connect(&eps, Duration::from_secs(5)).await.unwrap();
    let ms = [start_master("c1", &eps, "", 1000.0).await, start_master("c2", &eps, "", 1000.0).await];
    let all: Vec<&MasterProc> = ms.iter().collect();
    agreed_leader(&all, Duration::from_secs(10)).await;
    let candidates = || async {
        let resp = etcd
            .call("get", |mut c| async move {
                c.get(format!("{}/", keys::ELECTION), Some(etcd_client::GetOptions::new().with_prefix()))
                    .await
            })
            .await
            .unwrap();
        let mut keys: Vec<(String, i64)> = resp
            .kvs()
            .iter()
            .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.create_revision()))
            .collect();
        keys.sort();
        keys
    };
    let before = candidates().await;
    assert_eq!(before.len(), 2, "{before:?}");
    // Longer than any request timeout of the etcd client (3 s): the follower's candidacy is
    // the same key, created once, so its seniority stands.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(candidates().await, before);
    for m in &ms {
        m.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_right_after_a_delete_stores_a_new_resource() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let etcd = Etcd::connect(&eps, Duration::from_secs(5)).await.unwrap();
    let ms = [start_master("m1", &eps, "", 100_000.0).await, start_master("m2", &eps, "", 100_000.0).await];
    let leader = agreed_leader(&ms.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    let _w1 = register_worker(&etcd, "w1").await;
    for m in &ms {
        wait_workers(m, 1).await;
    }
    // One kept-alive client, so each call follows the last as closely as a script's would.
    let client = reqwest::Client::new();
    let send = |method: reqwest::Method, addr: SocketAddr, body: Value| {
        let req = client.request(method, format!("http://{addr}/crawler/resource")).body(body.to_string());
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    use reqwest::Method as M;
    // The original walkthrough's pattern, on the leader and through the follower: add with the
    // client's id, delete, add again at once.
    for m in [ms.iter().find(|m| m.id == leader).unwrap(), ms.iter().find(|m| m.id != leader).unwrap()] {
        let mut last = 0;
        for round in 0..200 {
            let body = json!({"id": "zjx", "name": "books"});
            let (s, v) = send(M::POST, m.http, body.clone()).await;
            assert_eq!(s, 200, "round {round}: {v}");
            let (s, v) = send(M::DELETE, m.http, json!({"name": "books"})).await;
            assert_eq!(s, 200, "round {round}: {v}");
            let (s, v) = send(M::POST, m.http, body).await;
            assert_eq!(s, 200, "round {round}: {v}");
            let recs = stored(&etcd).await;
            assert_eq!(recs.len(), 1, "round {round}: the re-add stored nothing");
            assert!(recs[0].creation_time >= last, "round {round}");
            last = recs[0].creation_time;
            let (s, v) = send(M::DELETE, m.http, json!({"name": "books"})).await;
            assert_eq!(s, 200, "round {round}: {v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_pass_for_a_forwarding_master() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let etcd = Etcd::connect(&eps, Duration::from_secs(5)).await.unwrap();
    // 2 calls a second per master, a burst of 2.
    let ms = [start_master("m1", &eps, "", 2.0).await, start_master("m2", &eps, "", 2.0).await];
    let leader = agreed_leader(&ms.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    let _w1 = register_worker(&etcd, "w1").await;
    let leader = ms.iter().find(|m| m.id == leader).unwrap();
    wait_workers(leader, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut grpc =
        crawler_proto::crawler_master_client::CrawlerMasterClient::connect(format!("http://{}", leader.grpc))
            .await
            .unwrap();
    // The forwarding mark, as an old master or a curious client would send it, on deletes of
    // names that do not exist (each answered at once: the bucket barely refills meanwhile).
    let mut codes = Vec::new();
    for i in 0..8 {
        let mut req =
            tonic::Request::new(crawler_proto::ResourceSpec { name: format!("t{i}"), ..Default::default() });
        req.metadata_mut().insert("x-crawler-forwarded", "1".parse().unwrap());
        codes.push(grpc.delete_resource(req).await.map_or_else(|e| e.code(), |_| tonic::Code::Ok));
    }
    let limited = codes.iter().filter(|c| **c == tonic::Code::ResourceExhausted).count();
    assert!(limited >= 5, "the rate limit held for marked calls: {codes:?}");
    // The leader's bucket is spent now; the follower's is full. Writes through the follower,
    // forwarded with its real mark, are not counted again at the leader.
    let follower = ms.iter().find(|m| m.id != leader.id).unwrap();
    for i in 0..2 {
        let body = json!({"name": format!("f{i}"), "task": {"seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a"}]}});
        let (s, v) = call(reqwest::Method::POST, follower.http, "/crawler/resource", Some(body), None).await;
        assert_eq!(s, 200, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_record_that_does_not_hold_together_leaves_the_leader_leading() {
    let etcd_srv = EtcdCluster::start(1);
    let eps = etcd_srv.endpoints();
    let etcd = Etcd::connect(&eps, Duration::from_secs(5)).await.unwrap();
    let ms = [start_master("m1", &eps, "", 1000.0).await, start_master("m2", &eps, "", 1000.0).await];
    agreed_leader(&ms.iter().collect::<Vec<_>>(), Duration::from_secs(10)).await;
    let _w1 = register_worker(&etcd, "w1").await;
    // An operator's `etcdctl put` of a split record with an epoch missing, owned by a worker
    // that is gone: planning a move on it indexed past its epochs and panicked every leader.
    let key = crawler_coord::keys::resource("x");
    let value = r#"{"id":"i","name":"x","assigned_node":"gone","creation_time":1,"partitions":{"home":0,"owners":["gone"],"epochs":[]}}"#;
    etcd.call("put", |mut c| {
        let key = key.clone();
        async move { c.put(key, value, None).await }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader = agreed_leader(&ms.iter().collect::<Vec<_>>(), Duration::from_secs(5)).await;
    let m = ms.iter().find(|m| m.id == leader).unwrap();
    let (s, v) =
        call(reqwest::Method::POST, m.http, "/crawler/resource", Some(json!({"name": "books"})), None).await;
    assert_eq!(s, 200, "{v}");
}
