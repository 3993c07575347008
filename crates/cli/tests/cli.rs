//! The `crawler` binary as a user runs it: exit codes, the summary line, SQLite rows, JSON
//! lines, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crawler_fixture::{book_title, Fixture, Site};

fn crawler() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crawler"))
}

fn config(fx: &Fixture, dir: &Path, extra_task: &str) -> PathBuf {
    let text = format!(
        r#"
[engine]
concurrency = 8
retries = 1
backoff = "10ms"
timeout = "1s"
max_body = "1MiB"
robots_retry = "200ms"

[storage]
url = "sqlite://{db}"
batch = 7

[[task]]
name = "books"
seeds = ["{seed}"]
max_depth = 5

  [[task.rule]]
  name = "index"
  follow = [{{ select = "a.tag", rule = "tag" }}, {{ select = "a.odd", rule = "book" }}]

  [[task.rule]]
  name = "tag"
  follow = [{{ select = "a.book", rule = "book" }}, {{ select = "a.next", rule = "tag" }}]

  [[task.rule]]
  name = "book"
  table = "book"
  fields = {{ title = "h1.title", author = "span.author", price = "span.price", rating = "span.rating" }}
  follow = [{{ select = "a.book", rule = "book" }}]
{extra_task}
"#,
        db = dir.join("crawl.db").display(),
        seed = fx.url("/index.html"),
    );
    let path = dir.join("crawler.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A site of 3,000 books at 5 ms a page (a crawl of a few seconds), and a config (see
/// [`config`], with `extra_task`) that crawls all of it; the fixture comes first so that a task
/// may name its URLs.
async fn long_crawl(dir: &Path, extra_task: impl FnOnce(&Fixture) -> String) -> (Fixture, PathBuf) {
    let site = Site { books: 3000, tags: 1, per_page: 30, latency: Duration::from_millis(5) };
    let fx = Fixture::start(site).await.unwrap();
    let cfg = config(&fx, dir, &extra_task(&fx));
    let text = std::fs::read_to_string(&cfg).unwrap().replace("max_depth = 5", "max_depth = 500");
    std::fs::write(&cfg, text).unwrap();
    (fx, cfg)
}

/// Starts `crawler crawl --config CFG` with its output piped.
fn spawn_crawl(cfg: &Path, extra: &[&str]) -> std::process::Child {
    crawler()
        .arg("crawl")
        .arg("--config")
        .arg(cfg)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the site has had `n` book requests.
async fn wait_books(fx: &Fixture, n: usize) {
    let books = || fx.requests().iter().filter(|r| r.path.starts_with("/book/")).count();
    crawler_fixture::wait::until(&format!("{n} book pages fetched"), Duration::from_secs(60), || async {
        books() >= n
    })
    .await;
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no stdout; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["elapsed_ms", "errors", "items", "pages", "resumed", "robots_blocked"]);
    v
}

fn sqlite_titles(db: &Path) -> Vec<(String, Option<String>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT url, title FROM book WHERE task = 'books' ORDER BY url").unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    rows.map(Result::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawl_stores_sqlite_and_jsonl_and_prints_the_summary_last() {
    let fx = Fixture::start(Site::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fx, dir.path(), "");
    let jsonl = dir.path().join("items.jsonl");
    let mut cmd = crawler();
    cmd.arg("crawl").arg("--config").arg(&cfg).arg("--output").arg(&jsonl);
    let out = run(cmd).await;
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let s = summary(&out);
    // 60 books, three GBK pages, the 429-then-200 page, the gzip page, the malformed page.
    assert_eq!(s["items"], 66);
    // 404, 500, slow (timeout), huge, binary, redirect loop.
    assert_eq!(s["errors"], 6);
    assert!(s["pages"].as_u64().unwrap() >= 66 + 1 + 3 * 2);

    let rows = sqlite_titles(&dir.path().join("crawl.db"));
    assert_eq!(rows.len(), 66);
    assert!(rows.contains(&(fx.url("/book/7.html"), Some(book_title(7)))));

    let text = std::fs::read_to_string(&jsonl).unwrap();
    let mut urls: Vec<String> = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["task"], "books");
        assert_eq!(v["table"], "book");
        assert!(v["crawled_at"].as_str().unwrap().ends_with('Z'));
        let url = v["url"].as_str().unwrap().to_owned();
        let title = v["data"]["title"].as_str().map(str::to_owned);
        assert!(rows.contains(&(url.clone(), title)), "{line}");
        urls.push(url);
    }
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 66);

    // The seed system's name for standalone mode does the same.
    let db2 = dir.path().join("again.db");
    let cfg2 = std::fs::read_to_string(&cfg).unwrap().replace("crawl.db", "again.db");
    std::fs::write(&cfg, cfg2).unwrap();
    let mut cmd = crawler();
    cmd.args(["worker", "--cluster=false", "--config"]).arg(&cfg);
    let out = run(cmd).await;
    assert!(out.status.success());
    assert_eq!(summary(&out)["items"], 66);
    assert_eq!(sqlite_titles(&db2).len(), 66);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_flag_runs_only_the_named_tasks() {
    let fx = Fixture::start(Site::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trap = format!(
        "\n[[task]]\nname = \"trap\"\nseeds = [\"{}\"]\nmax_depth = 2\n  [[task.rule]]\n  name = \"t\"\n  follow = [{{ select = \"a.trap\", rule = \"t\" }}]\n",
        fx.url("/trap/1.html")
    );
    let cfg = config(&fx, dir.path(), &trap);
    let mut cmd = crawler();
    cmd.arg("crawl").arg("--config").arg(&cfg).args(["--task", "trap"]);
    let out = run(cmd).await;
    assert!(out.status.success());
    assert_eq!(summary(&out)["pages"], 3);
    let paths: Vec<String> = fx.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/robots.txt", "/trap/1.html", "/trap/2.html", "/trap/3.html"]);

    let mut cmd = crawler();
    cmd.arg("crawl").arg("--config").arg(&cfg).args(["--task", "nope"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "crawler: config: --task: no task named \"nope\" in the config"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_with_one_line_naming_the_key_and_starts_nothing() {
    let fx = Fixture::start(Site::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(config(&fx, dir.path(), "")).unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("concurrency = 8", "concurrency = \"lots\"", "engine.concurrency: invalid type"),
        ("concurrency = 8", "concurency = 8", "engine.concurency: unknown field `concurency`"),
        ("retries = 1", "retries = 1\nproxies = [\"not a url\"]", "engine.proxies[0]:"),
        (
            "title = \"h1.title\"",
            "title = \"h1[[\"",
            "task[books].rule[book].fields.title.select: bad CSS selector",
        ),
        (
            "rule = \"tag\" }, { select = \"a.odd\"",
            "rule = \"tags\" }, { select = \"a.odd\"",
            "task[books].rule[index].follow[0].rule: no rule named \"tags\"",
        ),
        (
            "max_depth = 5",
            "max_depth = 5\nlimits = [{ events = 0, per = \"1s\" }]",
            "task[books].limits[0]: events and per must both be above zero",
        ),
        ("batch = 7", "batch = 0", "storage.batch: must be between"),
        // A MySQL URL the driver cannot use: named before anything starts (exit 1 before).
        ("url = \"sqlite://", "url = \"mysql://u@127.0.0.1:1/db?frobnicate=1&x=", "storage.url: "),
        ("[storage]", "[storage\n", "line "),
    ];
    for (from, to, expect) in cases {
        assert!(good.contains(from), "{from}");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
        let mut cmd = crawler();
        cmd.arg("crawl").arg("--config").arg(&path);
        let out = run(cmd).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{to}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(&format!("crawler: config: {expect}")), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    let mut missing = crawler();
    missing.args(["crawl", "--config", "/nonexistent/crawler.toml"]);
    let out = run(missing).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/crawler.toml"));
    let mut bad_flag = crawler();
    bad_flag.args(["crawl", "--frobnicate"]);
    let out = run(bad_flag).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--frobnicate"), "{stderr}");

    // Cluster commands check their flags before starting anything.
    let good_path = dir.path().join("good.toml");
    std::fs::write(&good_path, &good).unwrap();
    let good_path = good_path.to_str().unwrap();
    let no_etcd = dir.path().join("no-etcd.toml");
    std::fs::write(&no_etcd, "[cluster]\netcd = []\n").unwrap();
    let no_etcd = no_etcd.to_str().unwrap();
    for (args, expect) in [
        // Found before the runs are opened (with --fresh, after they were deleted, before).
        (
            vec!["crawl", "--config", good_path, "--fresh", "--output", "no/such/dir/items.jsonl"],
            "crawler: config: --output: no/such/dir/items.jsonl: No such file",
        ),
        // Named where it came from (as --etcd before).
        (
            vec!["worker", "--cluster", "--id", "w", "--config", no_etcd],
            "crawler: config: cluster.etcd: no etcd",
        ),
        // Cluster flags a standalone worker would ignore.
        (vec!["worker", "--cluster=false", "--id", "w"], "crawler: config: --id: only with --cluster"),
        (
            vec!["worker", "--cluster=false", "--etcd", "http://127.0.0.1:9"],
            "crawler: config: --etcd: only with",
        ),
        (vec!["worker", "--cluster", "--etcd", "http://127.0.0.1:9"], "crawler: config: --id: a worker id"),
        (
            vec!["master", "--id", "m", "--http", "nope", "--grpc", ":0"],
            "crawler: config: --http: \"nope\" is not an address",
        ),
        (
            vec!["master", "--id", "m", "--http", ":0", "--grpc", ":0", "--etcd", "127.0.0.1:2379"],
            "crawler: config: --etcd:",
        ),
        (
            vec!["worker", "--cluster", "--id", "w", "--etcd", "http://127.0.0.1:9", "--advertise", ":7101"],
            "crawler: config: --advertise:",
        ),
        // Standalone flags a cluster worker would ignore (it started, and wrote no file).
        (
            vec!["worker", "--id", "w", "--etcd", "http://127.0.0.1:9", "--output", "items.jsonl"],
            "crawler: config: --output: only with --cluster=false",
        ),
        (vec!["worker", "--id", "w", "--etcd", "http://127.0.0.1:9", "--fresh"], "crawler: config: --fresh:"),
        // A missing required flag is named, on the one line (clap put it on the next).
        (
            vec!["master", "--http", ":0", "--grpc", ":0"],
            "crawler: the following required arguments were not provided: --id",
        ),
    ] {
        let mut cmd = crawler();
        cmd.args(&args).current_dir(dir.path());
        let out = run(cmd).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with(expect) && stderr.lines().count() == 1, "{args:?}: {stderr}");
    }

    assert!(fx.requests().is_empty(), "a bad config started a crawl");
    assert!(!dir.path().join("crawl.db").exists(), "a bad config created the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_cleanly_and_keeps_what_was_crawled() {
    let dir = tempfile::tempdir().unwrap();
    let (fx, cfg) = long_crawl(dir.path(), |_| String::new()).await;
    let text = std::fs::read_to_string(&cfg).unwrap().replace("batch = 7", "batch = 1000");
    std::fs::write(&cfg, text).unwrap();
    let child = spawn_crawl(&cfg, &[]);
    wait_books(&fx, 100).await;
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(130), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let s = summary(&out);
    let items = s["items"].as_u64().unwrap();
    assert!((50..3000).contains(&items), "{items}");
    // Every item counted was written, although the batch (1000) was never full.
    assert_eq!(sqlite_titles(&dir.path().join("crawl.db")).len() as u64, items);
    assert_eq!(s["resumed"], false);

    // The run is left resumable: the next crawl continues it and fetches no stored page again.
    let mut cmd = crawler();
    cmd.arg("crawl").arg("--config").arg(&cfg);
    let out = run(cmd).await;
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(summary(&out)["resumed"], true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming books: "));
    assert_eq!(sqlite_titles(&dir.path().join("crawl.db")).len(), 3000 + 6);
    let twice = book_fetches(&fx).values().filter(|n| **n > 1).count();
    assert!(twice <= 8, "{twice} books fetched twice (8 in flight at most)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_whose_run_another_crawl_takes_over_exits_1_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let (fx, cfg) = long_crawl(dir.path(), |_| String::new()).await;
    let first = spawn_crawl(&cfg, &[]);
    wait_books(&fx, 50).await;
    // The same command again on the same database: the second takes the run over.
    let second = spawn_crawl(&cfg, &[]);
    let first = tokio::task::spawn_blocking(move || first.wait_with_output().unwrap()).await.unwrap();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("crawler: books stopped before its end: its run was taken over"), "{stderr}");
    summary(&first);
    let second = tokio::task::spawn_blocking(move || second.wait_with_output().unwrap()).await.unwrap();
    assert!(second.status.success(), "stderr: {}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(summary(&second)["resumed"], true);
    // Every book once, from the two of them.
    assert_eq!(sqlite_titles(&dir.path().join("crawl.db")).len(), 3000 + 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_finished_before_an_interrupt_is_not_crawled_again_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (fx, cfg) = long_crawl(dir.path(), |fx| {
        format!(
            "[[task]]\nname = \"small\"\nseeds = [\"{}\"]\nmax_depth = 0\n\n  [[task.rule]]\n  name = \"one\"\n  \
             table = \"small\"\n  fields = {{ title = \"h1.title\" }}\n",
            fx.url("/book/1.html")
        )
    })
    .await;
    let jsonl = dir.path().join("items.jsonl");
    let crawl = |extra: &[&str]| {
        let mut cmd = crawler();
        cmd.arg("crawl").arg("--config").arg(&cfg).arg("--output").arg(&jsonl).args(extra);
        cmd
    };
    let child = spawn_crawl(&cfg, &["--output", jsonl.to_str().unwrap()]);
    wait_books(&fx, 100).await;
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(130), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let db = rusqlite::Connection::open(dir.path().join("crawl.db")).unwrap();
    let runs = |task: &str| -> Vec<String> {
        let mut stmt = db.prepare("SELECT state FROM crawler_runs WHERE task = ?1 ORDER BY id").unwrap();
        stmt.query_map([task], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(runs("small"), ["finished"]);
    let lines = |task: &str| {
        let needle = format!("\"task\":\"{task}\"");
        std::fs::read_to_string(&jsonl).unwrap().lines().filter(|l| l.contains(&needle)).count()
    };
    assert_eq!(lines("small"), 1);

    // The same command again: books resumes, small (finished in the interrupted crawl) is not
    // crawled again, and its item is not written twice.
    let out = run(crawl(&[])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("small: finished in the interrupted crawl; not crawled again"), "{stderr}");
    assert_eq!(summary(&out)["resumed"], true);
    assert_eq!((runs("small"), lines("small")), (vec!["finished".to_owned()], 1));
    assert_eq!(runs("books"), ["finished"]);
    assert_eq!(lines("books"), 3000 + 6);
    // With nothing left to resume, a finished task starts a new run.
    let out = run(crawl(&["--task", "small"])).await;
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(runs("small"), ["finished", "finished"]);
}

/// How often each book page was requested.
fn book_fetches(fx: &Fixture) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for r in fx.requests().into_iter().filter(|r| r.path.starts_with("/book/")) {
        *counts.entry(r.path).or_default() += 1;
    }
    counts
}

/// Every row of the book table, with the host part of the URL cut off.
fn book_rows(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT task, substr(url, instr(substr(url, 8), '/') + 7), title, author, price, rating FROM book ORDER BY url",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            let cols: Vec<Option<String>> = (0..6).map(|i| r.get(i)).collect::<Result<_, _>>()?;
            Ok(format!("{cols:?}"))
        })
        .unwrap();
    let mut rows: Vec<String> = rows.map(Result::unwrap).collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_moment_then_rerun_ends_with_the_tables_of_an_uninterrupted_crawl() {
    let site = Site { books: 2000, tags: 2, per_page: 40, latency: Duration::from_millis(3) };
    let deep = |cfg: &Path| {
        let text = std::fs::read_to_string(cfg).unwrap().replace("max_depth = 5", "max_depth = 500");
        std::fs::write(cfg, text).unwrap();
    };
    // The reference: one uninterrupted run on its own copy of the site.
    let reference = {
        let fx = Fixture::start(site).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&fx, dir.path(), "");
        deep(&cfg);
        let mut cmd = crawler();
        cmd.arg("crawl").arg("--config").arg(&cfg);
        assert!(run(cmd).await.status.success());
        book_rows(&dir.path().join("crawl.db"))
    };
    assert_eq!(reference.len(), 2000 + 6);

    let fx = Fixture::start(site).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fx, dir.path(), "");
    deep(&cfg);
    let db = dir.path().join("crawl.db");
    // Killed at three moments (by books requested so far), each time restarted.
    for (round, at) in [150usize, 800, 1500].into_iter().enumerate() {
        let mut child = crawler()
            .arg("crawl")
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while book_fetches(&fx).len() < at {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: only {} books in 60 s",
                book_fetches(&fx).len()
            );
            assert!(child.try_wait().unwrap().is_none(), "round {round}: the crawl ended before the kill");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.kill().unwrap();
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.contains("resuming books: "), round > 0, "round {round}: {stderr}");
    }
    let mut cmd = crawler();
    cmd.arg("crawl").arg("--config").arg(&cfg);
    let out = run(cmd).await;
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(summary(&out)["resumed"], true);
    assert_eq!(book_rows(&db), reference);
    // Each kill may lose the requests in flight (8) and the commits not yet written
    // (2 batches of 7): at most 3 x 22 pages fetched a second time.
    let counts = book_fetches(&fx);
    assert_eq!(counts.len(), 2000);
    let extra: usize = counts.values().map(|n| n - 1).sum();
    assert!(extra <= 3 * 22, "{extra} extra book fetches");

    // A finished run is not resumed: the next crawl starts over; --fresh discards an
    // unfinished one.
    for fresh in [false, true] {
        if fresh {
            let mut child =
                crawler().arg("crawl").arg("--config").arg(&cfg).stdout(Stdio::null()).spawn().unwrap();
            let start = fx.requests().len();
            crawler_fixture::wait::until("300 more requests", Duration::from_secs(60), || {
                assert!(child.try_wait().unwrap().is_none(), "the crawl ended before the kill");
                let n = fx.requests().len();
                async move { n >= start + 300 }
            })
            .await;
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let mut cmd = crawler();
        cmd.arg("crawl").arg("--config").arg(&cfg);
        if fresh {
            cmd.arg("--fresh");
        }
        let out = run(cmd).await;
        assert!(out.status.success());
        assert_eq!(summary(&out)["resumed"], false);
        assert_eq!(summary(&out)["items"], 2006);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_loses_the_summary_not_the_exit_status() {
    let fx = Fixture::start(Site::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fx, dir.path(), "");
    let mut child = crawler()
        .arg("crawl")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the summary is written (`crawler crawl | head -c0`).
    drop(child.stdout.take());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A panic, exit 101, before.
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("crawler: the summary could not be written to stdout: Broken pipe"), "{stderr}");
    assert!(!sqlite_titles(&dir.path().join("crawl.db")).is_empty());
}

#[test]
fn version_names_commit_and_profile() {
    let out = crawler().arg("version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with(&format!("crawler {} (commit ", env!("CARGO_PKG_VERSION"))), "{line}");
    assert!(line.contains(" build)"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pprof_serves_cpu_profiles_while_crawling() {
    use std::io::BufRead;
    // A crawl that outlasts the profile's second (the process is killed after it).
    let site = Site { books: 50_000, tags: 2, per_page: 50, latency: Duration::ZERO };
    let fx = Fixture::start(site).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fx, dir.path(), "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("max_depth = 5", "max_depth = 500");
    std::fs::write(&cfg, text).unwrap();
    let mut child = crawler()
        .arg("crawl")
        .arg("--config")
        .arg(&cfg)
        .args(["--pprof", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The address it serves on is the first line on stderr; the rest is drained.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("pprof: serving on ") {
                let _ = tx.send(url.split("/debug").next().unwrap().to_owned());
            }
        }
    });
    let base = rx.recv_timeout(Duration::from_secs(10)).expect("the pprof address on stderr");
    let client = reqwest::Client::new();
    // A client that goes away mid-profile does not leave the profiler busy (every later
    // profile answered 409 before).
    let gone = client
        .get(format!("{base}/debug/pprof/profile?seconds=5"))
        .timeout(Duration::from_millis(300))
        .send();
    assert!(gone.await.is_err(), "the 5 s profile answered within 300 ms");
    // Once the server has seen the client go, the profiler is free, well before the 5 s are
    // over (409 while busy; a profile of one second once free).
    let freed = std::time::Instant::now();
    loop {
        let next = client.get(format!("{base}/debug/pprof/profile?seconds=1")).send().await.unwrap();
        if next.status() != 409 {
            assert_eq!(next.status(), 200);
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(3),
            "the profiler stayed busy after its client went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The sampler counts CPU time and skips samples taken inside libc (where a busy loopback
    // crawl spends much of it), so one second may hold few samples: up to five profiles are
    // taken, and one of them must hold samples.
    let mut samples = 0;
    for _ in 0..5 {
        let resp = client.get(format!("{base}/debug/pprof/profile?seconds=1")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.unwrap();
        use pprof::protos::Message;
        let profile = pprof::protos::Profile::decode(body.as_ref()).expect("a pprof protobuf profile");
        let strings = &profile.string_table;
        let sample_types: Vec<&str> =
            profile.sample_type.iter().map(|t| strings[t.ty as usize].as_str()).collect();
        assert!(sample_types.contains(&"samples") || sample_types.contains(&"cpu"), "{sample_types:?}");
        samples = profile.sample.len();
        if samples > 0 {
            break;
        }
    }
    assert!(samples > 0, "no samples in five one-second profiles while crawling");
    let svg = client.get(format!("{base}/debug/pprof/flamegraph?seconds=1")).send().await.unwrap();
    assert_eq!(svg.status(), 200);
    assert!(svg.text().await.unwrap().contains("<svg"));
    let bad = client.get(format!("{base}/debug/pprof/profile?seconds=x")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let heap = client.get(format!("{base}/debug/pprof/heap")).send().await.unwrap();
    assert_eq!(heap.status(), 501);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_that_could_fetch_no_seed_exits_3_with_the_reason() {
    let fx = Fixture::start(Site::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = config(&fx, dir.path(), "");
    // Every seed on a port nobody listens on (the listener above is dropped).
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&fx.url("/index.html"), &format!("http://{closed}/index.html"));
    std::fs::write(&cfg, text).unwrap();
    let mut cmd = crawler();
    cmd.arg("crawl").arg("--config").arg(&cfg);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(3), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("crawler: not one seed could be fetched (books: http://127.0.0.1:"), "{last}");
    assert!(last.contains("network"), "{last}");
    assert_eq!(summary(&out)["pages"], 0);
    // A seed disallowed by robots.txt: named in a warning, counted, and nothing fetched.
    let cfg = config(&fx, dir.path(), "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&fx.url("/index.html"), &fx.url("/private/secret.html"))
        .replace("crawl.db", "blocked.db");
    std::fs::write(&cfg, text).unwrap();
    let mut cmd = crawler();
    cmd.arg("crawl").arg("--config").arg(&cfg);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("seed disallowed by robots.txt"), "{stderr}");
    assert!(stderr.lines().last().unwrap().contains("disallowed by robots.txt"), "{stderr}");
    assert_eq!(summary(&out)["robots_blocked"], 1);
}
