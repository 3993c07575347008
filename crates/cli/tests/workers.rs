//! The whole system on real processes: etcd, two `crawler master`s, two `crawler worker
//! --cluster`s sharing MariaDB (or one SQLite file), and the fixture site. Adds, deletes, worker SIGKILL,
//! SIGTERM and SIGSTOP, and a master leader killed while workers crawl.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crawler_fixture::etcd::EtcdCluster;
use crawler_fixture::mariadb::MariaDb;
use crawler_fixture::{Fixture, Site};
use serde_json::{json, Value};

fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

struct Proc {
    id: String,
    http: String,
    child: Option<Child>,
}

impl Proc {
    fn spawn(id: &str, args: &[&str], dir: &Path) -> Proc {
        let http = free_addr();
        let log = std::fs::File::create(dir.join(format!("{id}.log"))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crawler"));
        cmd.args(args)
            .args(["--id", id, "--http", &http])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if args[0] == "master" {
            cmd.args(["--grpc", &free_addr()]);
        }
        Proc { id: id.into(), http, child: Some(cmd.spawn().unwrap()) }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
        }
        self.kill();
    }
}

struct Sandbox {
    _etcd: EtcdCluster,
    mariadb: Option<MariaDb>,
    dir: tempfile::TempDir,
    fixture: Fixture,
    masters: Vec<Proc>,
    workers: Vec<Proc>,
    client: reqwest::Client,
}

impl Sandbox {
    /// Items go to a shared SQLite file, or to MariaDB with `mysql`.
    async fn start(site: Site, mysql: bool) -> Sandbox {
        let etcd = EtcdCluster::start(1);
        let mariadb = mysql.then(MariaDb::start);
        let fixture = Fixture::start(site).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("crawler.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[engine]
concurrency = 4
per_host = 4
retries = 1
backoff = "10ms"
timeout = "2s"

[storage]
url = "{storage}"
batch = 5

[cluster]
lease_ttl = "2s"

[api]
rate = "10000/s"

[[task]]
name = "books"
seeds = ["{seed}"]
max_depth = 100

  [[task.rule]]
  name = "index"
  follow = [{{ select = "a.tag", rule = "tag" }}]

  [[task.rule]]
  name = "tag"
  follow = [{{ select = "a.book", rule = "book" }}, {{ select = "a.next", rule = "tag" }}]

  [[task.rule]]
  name = "book"
  table = "book"
  fields = {{ title = "h1.title" }}
"#,
                storage = match &mariadb {
                    Some(m) => m.url.clone(),
                    None => format!("sqlite://{}", dir.path().join("items.db").display()),
                },
                seed = fixture.url("/index.html"),
            ),
        )
        .unwrap();
        let eps = etcd.endpoints().join(",");
        let cfg = config.to_str().unwrap().to_owned();
        let masters = ["m1", "m2"]
            .iter()
            .map(|id| Proc::spawn(id, &["master", "--etcd", &eps, "--config", &cfg], dir.path()))
            .collect();
        let workers = ["w1", "w2"]
            .iter()
            .map(|id| Proc::spawn(id, &["worker", "--cluster", "--etcd", &eps, "--config", &cfg], dir.path()))
            .collect();
        let sb =
            Sandbox { _etcd: etcd, mariadb, dir, fixture, masters, workers, client: reqwest::Client::new() };
        sb.wait_workers(2).await;
        sb
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("items.db")
    }

    async fn get(&self, addr: &str, path: &str) -> Option<(u16, Value)> {
        let r = self
            .client
            .get(format!("http://{addr}{path}"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let s = r.status().as_u16();
        let text = r.text().await.ok()?;
        Some((s, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    async fn send(&self, method: reqwest::Method, addr: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .request(method, format!("http://{addr}/crawler/resource"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null))
    }

    /// A follower's address (any master that is not the leader).
    async fn leader_and_follower(&self) -> (String, String) {
        loop {
            for m in &self.masters {
                if let Some((200, v)) = self.get(&m.http, "/crawler/leader").await {
                    let leader = v["id"].as_str().unwrap().to_owned();
                    if let Some(f) = self.masters.iter().find(|x| x.id != leader && x.child.is_some()) {
                        return (leader, f.http.clone());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_workers(&self, n: usize) {
        let started = Instant::now();
        loop {
            for m in self.masters.iter().filter(|m| m.child.is_some()) {
                if let Some((200, v)) = self.get(&m.http, "/crawler/workers").await {
                    if v.as_array().unwrap().len() == n {
                        return;
                    }
                }
            }
            assert!(started.elapsed() < Duration::from_secs(15), "workers did not register");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn tasks_on(&self, worker: &Proc) -> Vec<String> {
        match self.get(&worker.http, "/tasks").await {
            Some((200, v)) => v
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["finished"] == false)
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect(),
            _ => Vec::new(),
        }
    }

    fn requests(&self, path_prefix: &str) -> usize {
        self.fixture.requests().iter().filter(|r| r.path.starts_with(path_prefix)).count()
    }

    async fn wait_requests(&self, path_prefix: &str, at_least: usize, within: Duration) -> Duration {
        let started = Instant::now();
        while self.requests(path_prefix) < at_least {
            assert!(
                started.elapsed() < within,
                "{path_prefix}: {} requests, wanted {at_least}",
                self.requests(path_prefix)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        started.elapsed()
    }

    fn rows(&self) -> Vec<(String, String)> {
        if let Some(m) = &self.mariadb {
            return m
                .query("SELECT url, title FROM book WHERE task = 'books'")
                .lines()
                .map(|l| {
                    let (u, t) = l.split_once('\t').unwrap();
                    (u.to_owned(), t.to_owned())
                })
                .collect();
        }
        let conn = rusqlite::Connection::open(self.db()).unwrap();
        let mut stmt = conn.prepare("SELECT url, title FROM book WHERE task = 'books'").unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(Result::unwrap).collect()
    }
}

fn slow_site() -> Site {
    Site { books: 60, tags: 2, per_page: 5, latency: Duration::from_millis(40) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_delete_and_readd_through_a_follower() {
    let sb = Sandbox::start(slow_site(), false).await;
    let (_, follower) = sb.leader_and_follower().await;
    let t0 = Instant::now();
    let (s, v) = sb.send(reqwest::Method::POST, &follower, json!({"name": "books"})).await;
    assert_eq!(s, 200, "{v}");
    let first = sb.wait_requests("/index.html", 1, Duration::from_secs(5)).await;
    println!("add to first fetch: {:?} (add answered after {:?})", t0.elapsed(), t0.elapsed() - first);
    sb.wait_requests("/book/", 5, Duration::from_secs(10)).await;

    let (s, _) = sb.send(reqwest::Method::DELETE, &follower, json!({"name": "books"})).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_grace = sb.fixture.requests().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sb.fixture.requests().len(), after_grace, "requests went on after the delete");
    for w in &sb.workers {
        assert!(sb.tasks_on(w).await.is_empty());
    }

    // Re-adding starts a fresh crawl from the seeds.
    let (s, _) = sb.send(reqwest::Method::POST, &follower, json!({"name": "books"})).await;
    assert_eq!(s, 200);
    sb.wait_requests("/index.html", 2, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_s_resource_moves_and_every_item_is_stored_once() {
    let mut sb = Sandbox::start(slow_site(), true).await;
    let (_, follower) = sb.leader_and_follower().await;
    let (s, v) = sb.send(reqwest::Method::POST, &follower, json!({"name": "books"})).await;
    assert_eq!(s, 200, "{v}");
    let victim = v["id"].as_str().unwrap().to_owned();
    sb.wait_requests("/book/", 15, Duration::from_secs(10)).await;
    let index_before = sb.requests("/index.html");
    let killed = Instant::now();
    sb.workers.iter_mut().find(|w| w.id == victim).unwrap().kill();
    // The survivor starts the task from its seeds once the lease (2 s) has expired.
    sb.wait_requests("/index.html", index_before + 1, Duration::from_secs(3) + Duration::from_millis(500))
        .await;
    println!("reassignment after SIGKILL of a worker: {:?}", killed.elapsed());
    let survivor = sb.workers.iter().find(|w| w.id != victim).unwrap();
    let started = Instant::now();
    loop {
        let done =
            matches!(sb.get(&survivor.http, "/tasks").await, Some((200, v)) if v[0]["finished"] == true);
        if done {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the moved crawl did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rows = sb.rows();
    let mut urls: Vec<&String> = rows.iter().map(|(u, _)| u).collect();
    urls.sort();
    urls.dedup();
    assert_eq!((rows.len(), urls.len()), (60, 60), "every book exactly once, in MariaDB");
    for (u, t) in &rows {
        let id: u32 = u.rsplit('/').next().unwrap().trim_end_matches(".html").parse().unwrap();
        assert_eq!(t, &crawler_fixture::book_title(id));
    }
    let fetched = sb.requests("/book/");
    println!("book fetches: {fetched} for 60 books ({} extra from restarting at the seeds)", fetched - 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_a_worker_hands_over_at_once_and_a_paused_worker_never_doubles_up() {
    let sb =
        Sandbox::start(Site { books: 400, tags: 2, per_page: 5, latency: Duration::from_millis(40) }, false)
            .await;
    let (_, follower) = sb.leader_and_follower().await;
    let (s, v) = sb.send(reqwest::Method::POST, &follower, json!({"name": "books"})).await;
    assert_eq!(s, 200, "{v}");
    let first = v["id"].as_str().unwrap().to_owned();
    sb.wait_requests("/book/", 5, Duration::from_secs(10)).await;
    let a = sb.workers.iter().find(|w| w.id == first).unwrap();
    let b = sb.workers.iter().find(|w| w.id != first).unwrap();

    // SIGSTOP the worker past its lease: the task moves; on SIGCONT the paused worker finds
    // its lease gone and stops its copy.
    a.signal("-STOP");
    let index_before = sb.requests("/index.html");
    sb.wait_requests("/index.html", index_before + 1, Duration::from_secs(4)).await;
    assert_eq!(sb.tasks_on(b).await, ["books"]);
    a.signal("-CONT");
    let resumed = Instant::now();
    loop {
        if sb.tasks_on(a).await.is_empty() {
            break;
        }
        assert!(resumed.elapsed() < Duration::from_secs(2), "the resumed worker kept its copy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("a resumed worker stopped its stale copy after {:?}", resumed.elapsed());
    sb.wait_workers(2).await;
    assert_eq!(sb.tasks_on(b).await, ["books"]);

    // SIGTERM the worker that runs it now: it revokes its lease, the task moves at once.
    let index_before = sb.requests("/index.html");
    let t = Instant::now();
    b.signal("-TERM");
    sb.wait_requests("/index.html", index_before + 1, Duration::from_secs(2)).await;
    println!("reassignment after SIGTERM of a worker: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(1), "handover took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_master_leader_does_not_interrupt_crawling() {
    let mut sb =
        Sandbox::start(Site { books: 200, tags: 2, per_page: 5, latency: Duration::from_millis(20) }, false)
            .await;
    let (leader, follower) = sb.leader_and_follower().await;
    let (s, _) = sb.send(reqwest::Method::POST, &follower, json!({"name": "books"})).await;
    assert_eq!(s, 200);
    sb.wait_requests("/book/", 5, Duration::from_secs(10)).await;
    sb.masters.iter_mut().find(|m| m.id == leader).unwrap().kill();
    let killed = Instant::now();
    let before = sb.requests("/book/");
    // Crawling goes on during the masters' failover (lease 2 s).
    sb.wait_requests("/book/", before + 20, Duration::from_millis(1500)).await;
    println!(
        "{} book fetches in the {:?} after the leader died",
        sb.requests("/book/") - before,
        killed.elapsed()
    );
}
