//! A cluster sandbox on real processes: etcd, two `crawler master`s, two `crawler worker
//! --cluster`s sharing MariaDB (or one SQLite file), and the fixture site, all on 127.0.0.1.
//! Any process can be SIGKILLed, SIGSTOPped or SIGTERMed. Shared by the tests and the worker
//! benchmark.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crawler_fixture::etcd::EtcdCluster;
use crawler_fixture::mariadb::MariaDb;
use crawler_fixture::wait::{logged, spawn_listening};
use crawler_fixture::{Fixture, Site};
use serde_json::Value;

pub struct Proc {
    pub id: String,
    pub http: String,
    child: Option<Child>,
}

impl Proc {
    /// Starts a master or worker on free ports (again on new ones if a port was taken first)
    /// and waits until it serves (a master) or has registered (a worker).
    fn spawn(bin: &Path, id: &str, args: &[&str], dir: &Path) -> Proc {
        let log = dir.join(format!("{id}.log"));
        let master = args[0] == "master";
        let build = |ports: &[u16]| {
            let mut cmd = Command::new(bin);
            cmd.args(args)
                .args(["--id", id, "--http", &format!("127.0.0.1:{}", ports[0])])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            if master {
                cmd.args(["--grpc", &format!("127.0.0.1:{}", ports[1])]);
            }
            cmd
        };
        let marker = if master { "master serving" } else { "registered" };
        let ports = if master { 2 } else { 1 };
        let (child, ports) =
            spawn_listening(ports, &log, Duration::from_secs(20), build, |_| logged(&log, marker));
        Proc { id: id.into(), http: format!("127.0.0.1:{}", ports[0]), child: Some(child) }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    pub fn kill(&mut self) {
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

pub struct Sandbox {
    pub etcd: EtcdCluster,
    mariadb: Option<MariaDb>,
    dir: tempfile::TempDir,
    pub fixture: Fixture,
    pub masters: Vec<Proc>,
    pub workers: Vec<Proc>,
    client: reqwest::Client,
    /// How to start another worker: the binary, etcd endpoints, the config file.
    spawn: (PathBuf, String, String),
}

impl Sandbox {
    /// Items go to a shared SQLite file, or to MariaDB with `mysql`.
    pub async fn start(bin: &Path, site: Site, mysql: bool) -> Sandbox {
        Self::start_with(bin, site, mysql, 4).await
    }

    /// The same, with `per_host` requests per host in flight on each worker.
    pub async fn start_with(bin: &Path, site: Site, mysql: bool, per_host: usize) -> Sandbox {
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
per_host = {per_host}
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
            .map(|id| Proc::spawn(bin, id, &["master", "--etcd", &eps, "--config", &cfg], dir.path()))
            .collect();
        let workers = ["w1", "w2"]
            .iter()
            .map(|id| {
                Proc::spawn(bin, id, &["worker", "--cluster", "--etcd", &eps, "--config", &cfg], dir.path())
            })
            .collect();
        let spawn = (bin.to_owned(), eps, cfg);
        let sb =
            Sandbox { etcd, mariadb, dir, fixture, masters, workers, client: reqwest::Client::new(), spawn };
        sb.wait_workers(2).await;
        // A leader is elected: until then writes answer 503.
        sb.leader_and_follower().await;
        sb
    }

    /// Starts one more worker (registered when this returns).
    pub fn add_worker(&mut self, id: &str) {
        let (bin, eps, cfg) = &self.spawn;
        let w =
            Proc::spawn(bin, id, &["worker", "--cluster", "--etcd", eps, "--config", cfg], self.dir.path());
        self.workers.push(w);
    }

    /// Starts one more worker whose database connections go through `proxy` (see
    /// `support::proxy`), waiting at most 1 s for a database it cannot reach.
    pub fn add_worker_through(&mut self, id: &str, proxy: std::net::SocketAddr) {
        let url = self.mariadb.as_ref().expect("a sandbox with MariaDB").url.clone();
        // Over TCP: the driver would otherwise move to the server's unix socket, past the proxy.
        let through = url.replace(&self.db_addr().to_string(), &proxy.to_string()) + "?prefer_socket=false";
        self.add_worker_with(id, |text| {
            text.replace(url.as_str(), &through).replace("[storage]\n", "[storage]\noutage = \"1s\"\n")
        });
    }

    /// Starts one more worker with its own config: the sandbox's, changed by `edit`.
    pub fn add_worker_with(&mut self, id: &str, edit: impl FnOnce(String) -> String) {
        let (bin, eps, cfg) = &self.spawn;
        let own = self.dir.path().join(format!("{id}.toml"));
        std::fs::write(&own, edit(std::fs::read_to_string(cfg).unwrap())).unwrap();
        let own = own.to_str().unwrap();
        let w =
            Proc::spawn(bin, id, &["worker", "--cluster", "--etcd", eps, "--config", own], self.dir.path());
        self.workers.push(w);
    }

    /// The sandbox's MariaDB's address.
    pub fn db_addr(&self) -> std::net::SocketAddr {
        let url = &self.mariadb.as_ref().expect("a sandbox with MariaDB").url;
        url.split('@').nth(1).unwrap().split('/').next().unwrap().parse().unwrap()
    }

    /// Runs an SQL query on the sandbox's MariaDB.
    pub fn query(&self, sql: &str) -> String {
        self.mariadb.as_ref().expect("a sandbox with MariaDB").query(sql)
    }

    /// Kills the sandbox's MariaDB (as a crash would), keeping its data.
    pub fn stop_db(&mut self) {
        self.mariadb.as_mut().expect("a sandbox with MariaDB").stop();
    }

    /// Starts the stopped MariaDB again on its port and data (blocks until it serves).
    pub fn restart_db(&mut self) {
        tokio::task::block_in_place(|| self.mariadb.as_mut().expect("a sandbox with MariaDB").restart());
    }

    /// What a master or worker logged so far.
    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{id}.log"))).unwrap_or_default()
    }

    /// Waits until `worker` runs the task `name`; returns how long that took.
    pub async fn wait_task(&self, worker: &Proc, name: &str, within: Duration) -> Duration {
        let t = std::time::Instant::now();
        loop {
            if self.tasks_on(worker).await.iter().any(|n| n == name) {
                return t.elapsed();
            }
            assert!(t.elapsed() < within, "{} did not take {name} within {within:?}", worker.id);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("items.db")
    }

    pub async fn get(&self, addr: &str, path: &str) -> Option<(u16, Value)> {
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

    pub async fn send(&self, method: reqwest::Method, addr: &str, body: Value) -> (u16, Value) {
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

    /// The leader's id and a follower's address (any live master that is not the leader),
    /// once every live master knows the same leader.
    pub async fn leader_and_follower(&self) -> (String, String) {
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < Duration::from_secs(20), "no leader with a live follower in 20 s");
            // Every live master must know the leader: one that does not yet answers 503.
            let mut seen = Vec::new();
            for m in self.masters.iter().filter(|m| m.child.is_some()) {
                seen.push(match self.get(&m.http, "/crawler/leader").await {
                    Some((200, v)) => v["id"].as_str().map(str::to_owned),
                    _ => None,
                });
            }
            if let Some(Some(leader)) = seen.first() {
                if seen.iter().all(|s| s.as_ref() == Some(leader)) {
                    if let Some(f) = self.masters.iter().find(|x| x.id != *leader && x.child.is_some()) {
                        return (leader.clone(), f.http.clone());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every live master (the leader included, which assigns) sees `n` workers.
    pub async fn wait_workers(&self, n: usize) {
        let started = Instant::now();
        loop {
            let mut agreed = true;
            for m in self.masters.iter().filter(|m| m.child.is_some()) {
                let seen = match self.get(&m.http, "/crawler/workers").await {
                    Some((200, v)) => v.as_array().map_or(0, Vec::len),
                    _ => 0,
                };
                agreed &= seen == n;
            }
            if agreed {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "workers did not register");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `worker`'s `GET /tasks` entries (none when it does not answer).
    pub async fn task_entries(&self, worker: &Proc) -> Vec<Value> {
        match self.get(&worker.http, "/tasks").await {
            Some((200, Value::Array(tasks))) => tasks,
            _ => Vec::new(),
        }
    }

    pub async fn tasks_on(&self, worker: &Proc) -> Vec<String> {
        let tasks = self.task_entries(worker).await;
        tasks
            .iter()
            .filter(|t| t["finished"] == false)
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Responses `worker` has had for the task `name` (0 when it does not run it).
    pub async fn pages_on(&self, worker: &Proc, name: &str) -> u64 {
        let tasks = self.task_entries(worker).await;
        tasks.iter().filter(|t| t["name"] == name).filter_map(|t| t["pages"].as_u64()).sum()
    }

    /// Waits until `worker` has had more than `before` responses for the task `name` (it runs
    /// the task and fetches: listing it is not enough, as a split task's share on a worker
    /// may hold no host); returns how long that took.
    pub async fn wait_fetching(&self, worker: &Proc, name: &str, before: u64, within: Duration) -> Duration {
        let t = Instant::now();
        while self.pages_on(worker, name).await <= before {
            assert!(t.elapsed() < within, "{} did not fetch for {name} within {within:?}", worker.id);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        t.elapsed()
    }

    pub fn requests(&self, path_prefix: &str) -> usize {
        self.fixture.requests().iter().filter(|r| r.path.starts_with(path_prefix)).count()
    }

    pub async fn wait_requests(&self, path_prefix: &str, at_least: usize, within: Duration) -> Duration {
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

    /// Adds the `books` task through a follower; the add's answer.
    pub async fn add_books(&self) -> Value {
        let (_, follower) = self.leader_and_follower().await;
        let (s, v) = self.send(reqwest::Method::POST, &follower, serde_json::json!({"name": "books"})).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// How many book pages were fetched more than once, once the seeds are known to have been
    /// fetched once (the task was not restarted from them); printed, with `when`.
    pub fn refetched_books(&self, books: u32, when: &str) -> usize {
        assert_eq!(self.requests("/index.html"), 1, "the task was restarted from its seeds");
        let extra = self.requests("/book/") - books as usize;
        println!("book fetches: {extra} extra for {books} books {when}");
        extra
    }

    /// Waits (at most `within`) until `books` books are stored, then checks that each is
    /// stored exactly once, with its title.
    pub async fn wait_every_book_once(&self, books: u32, within: Duration) {
        let started = Instant::now();
        loop {
            let stored = self.rows().len();
            if stored >= books as usize {
                break;
            }
            assert!(started.elapsed() < within, "{stored} of {books} books stored after {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.assert_every_book_once(books);
    }

    /// Every one of `books` books is stored exactly once, with its title.
    pub fn assert_every_book_once(&self, books: u32) {
        let rows = self.rows();
        let mut urls: Vec<&String> = rows.iter().map(|(u, _)| u).collect();
        urls.sort();
        urls.dedup();
        assert_eq!((rows.len(), urls.len()), (books as usize, books as usize), "every book exactly once");
        for (u, t) in &rows {
            let id: u32 = u.rsplit('/').next().unwrap().trim_end_matches(".html").parse().unwrap();
            assert_eq!(t, &crawler_fixture::book_title(id));
        }
    }

    pub fn rows(&self) -> Vec<(String, String)> {
        if let Some(m) = &self.mariadb {
            let tables = "SELECT COUNT(*) FROM information_schema.tables \
                          WHERE table_schema = 'crawl' AND table_name = 'book'";
            if m.query(tables).trim() == "0" {
                return Vec::new(); // no item stored yet
            }
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
        let tables: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'book'", [], |r| r.get(0))
            .unwrap();
        if tables == 0 {
            return Vec::new(); // no item stored yet
        }
        let mut stmt = conn.prepare("SELECT url, title FROM book WHERE task = 'books'").unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(Result::unwrap).collect()
    }
}
