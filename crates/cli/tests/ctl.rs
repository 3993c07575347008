//! `crawler ctl` against a real cluster sandbox (etcd, 2 masters, 2 workers, the fixture site):
//! every subcommand, JSON output parsed, errors and exit codes, failover to the next master.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crawler_fixture::Site;
use serde_json::Value;
use support::sandbox::Sandbox;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_crawler"))
}

/// Runs `crawler ctl --master MASTERS ARGS...`.
async fn ctl(masters: &str, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("ctl").args(["--master", masters]).args(args);
    let run = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    // ctl's own timeouts end every call within seconds; this bound only guards the test.
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("ctl answered within 60 s").unwrap()
}

fn json(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn text(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The exit code and the one line on stderr.
fn failure(out: &Output) -> (i32, String) {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    (out.status.code().unwrap(), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_against_a_live_cluster() {
    let site = Site { books: 40, tags: 2, per_page: 5, latency: Duration::from_millis(20) };
    let sb = Sandbox::start(bin(), site, false).await;
    // A leader is elected (until then every master answers writes and `leader` with 503).
    sb.leader_and_follower().await;
    let dead = format!("http://127.0.0.1:{}", crawler_fixture::wait::free_port());
    // The first master of the list cannot be reached: every call goes to the next.
    let masters = format!("{dead},{}", sb.masters[0].http);
    let ids: Vec<&str> = sb.masters.iter().map(|m| m.id.as_str()).collect();

    let leader = json(&ctl(&masters, &["leader", "-o", "json"]).await);
    assert!(ids.contains(&leader["id"].as_str().unwrap()), "{leader}");
    let table = text(&ctl(&masters, &["leader"]).await);
    assert!(table.starts_with("ID") && table.contains(leader["id"].as_str().unwrap()), "{table}");

    let ms = json(&ctl(&masters, &["ls", "masters", "-o", "json"]).await);
    let ms = ms.as_array().unwrap();
    assert_eq!(ms.len(), 2);
    assert_eq!(ms.iter().filter(|m| m["leader"] == true).count(), 1);
    let ws = json(&ctl(&masters, &["-o", "json", "ls", "workers"]).await);
    let mut worker_ids: Vec<&str> =
        ws.as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap()).collect();
    worker_ids.sort();
    assert_eq!(worker_ids, ["w1", "w2"]);
    let table = text(&ctl(&masters, &["ls", "workers"]).await);
    assert!(table.lines().next().unwrap().split_whitespace().eq(["ID", "ADDRESS", "LOAD"]), "{table}");

    // Add a task of the config, and one from a TOML file.
    let added = json(&ctl(&masters, &["add", "books", "-o", "json"]).await);
    assert!(worker_ids.contains(&added["id"].as_str().unwrap()), "{added}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mini.toml");
    std::fs::write(
        &file,
        format!(
            "seeds = [\"{}\"]\nmax_depth = 0\ncookie = \"session=secret\"\n[[rule]]\nname = \"page\"\n",
            sb.fixture.url("/index.html")
        ),
    )
    .unwrap();
    let out = text(&ctl(&masters, &["add", "mini", "--task", file.to_str().unwrap()]).await);
    assert!(out.starts_with("added mini on w"), "{out}");
    // Shown at once (figures are cached, the list of tasks is not), its cookie hidden.
    let mini = json(&ctl(&masters, &["stats", "mini", "-o", "json"]).await);
    assert_eq!(mini["name"], "mini");
    let detail = reqwest::get(format!("http://{}/crawler/stats/mini", sb.masters[0].http)).await.unwrap();
    let detail: Value = serde_json::from_str(&detail.text().await.unwrap()).unwrap();
    assert_eq!(detail["spec"]["cookie"], "(set)", "{detail}");

    // Errors: the API's (exit 1), a bad task file (exit 2), bad flags (exit 2).
    let (code, err) = failure(&ctl(&masters, &["add", "books"]).await);
    assert_eq!(code, 1);
    assert!(err.contains("409"), "{err}");
    std::fs::write(&file, "seeds = [").unwrap();
    let (code, err) = failure(&ctl(&masters, &["add", "bad", "--task", file.to_str().unwrap()]).await);
    assert_eq!(code, 2);
    assert!(err.contains("mini.toml"), "{err}");
    std::fs::write(&file, "seeds = [\"ftp://x/\"]\n[[rule]]\nname = \"a\"\n").unwrap();
    let (code, err) = failure(&ctl(&masters, &["add", "bad", "--task", file.to_str().unwrap()]).await);
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("seeds[0]"), "{err}");
    let (code, _) = failure(&ctl(&masters, &["ls", "nothing"]).await);
    assert_eq!(code, 2);

    // Stats: the crawl's figures come from its worker and rise.
    crawler_fixture::wait::until("books to report pages", Duration::from_secs(30), || async {
        let v = json(&ctl(&masters, &["stats", "books", "-o", "json"]).await);
        v["pages"].as_u64().unwrap_or(0) > 0 && v["state"] != "waiting"
    })
    .await;
    let all = json(&ctl(&masters, &["stats", "-o", "json"]).await);
    let mut names: Vec<&str> = all.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["books", "mini"]);
    let table = text(&ctl(&masters, &["stats"]).await);
    assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("books")), "{table}");
    let (code, err) = failure(&ctl(&masters, &["stats", "nope"]).await);
    assert_eq!((code, err.contains("404")), (1, true), "{err}");
    // One task's detail (what the dashboard shows): spec from the store, recent items from
    // the worker running it.
    let detail_url = format!("http://{}/crawler/stats/books", sb.masters[1].http);
    crawler_fixture::wait::until("books' recent items", Duration::from_secs(30), || async {
        let body = reqwest::get(&detail_url).await.unwrap().text().await.unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["recent"]["items"].as_array().is_some_and(|items| !items.is_empty())
    })
    .await;
    let body = reqwest::get(&detail_url).await.unwrap().text().await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["spec"]["name"], "books", "{v}");
    let item = &v["recent"]["items"][0];
    assert!(item["url"].as_str().unwrap().contains("/book/"), "{item}");
    assert_eq!(item["table"], "book");
    let missing = reqwest::get(format!("http://{}/crawler/stats/nope", sb.masters[1].http)).await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let watched = text(&ctl(&masters, &["watch", "--count", "2", "--every-ms", "100"]).await);
    assert_eq!(watched.matches("NAME").count(), 2, "{watched}");
    // `ctl watch | head -1`: once its reader is gone, watch ends (it polled for ever before).
    let mut watch = std::process::Command::new(bin())
        .args(["ctl", "--master", &masters, "watch", "-o", "json", "--every-ms", "50"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(watch.stdout.take().unwrap()), &mut first)
        .unwrap();
    assert!(first.starts_with('['), "{first}");
    crawler_fixture::wait::until("watch to end without a reader", Duration::from_secs(5), || {
        let ended = watch.try_wait().unwrap().is_some();
        async move { ended }
    })
    .await;

    // Delete, and delete again.
    let res = json(&ctl(&masters, &["ls", "resources", "-o", "json"]).await);
    assert_eq!(res.as_array().unwrap().len(), 2);
    assert_eq!(text(&ctl(&masters, &["delete", "mini"]).await), "deleted mini\n");
    let (code, err) = failure(&ctl(&masters, &["delete", "mini"]).await);
    assert_eq!((code, err.contains("404")), (1, true), "{err}");

    // No master reachable at all.
    let (code, err) = failure(&ctl(&dead, &["leader"]).await);
    assert_eq!(code, 1);
    assert!(err.contains("no master reachable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_ctl_exits_130_not_0() {
    // A master that takes the connection and never answers; Ctrl-C meanwhile. An add may or
    // may not have happened: a script must not read success (exit 0 before).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let master = format!("http://{}", silent.local_addr().unwrap());
    let mut child = std::process::Command::new(bin())
        .args(["ctl", "--master", &master, "add", "books"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Accepted (so the call waits for an answer), then interrupted.
    let (_held, _) = silent.accept().unwrap();
    // (Its signal handler is set up beside the call; a moment for it.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(130));
}
