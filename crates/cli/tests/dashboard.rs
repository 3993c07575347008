//! The web dashboard in real browsers (headless Chromium through chromedriver, headless Firefox
//! through geckodriver), each against its own real cluster sandbox (etcd, 2 masters, 2 workers, the fixture site): the page lists the leader
//! and both workers; adding a task through the form starts a crawl whose counters rise on the
//! page; killing the worker that runs it shows the worker gone and the task on the other one;
//! deleting the task removes it. A screenshot of each step is saved under
//! `target/tmp/dashboard/<browser>/`.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crawler_fixture::wait::until;
use crawler_fixture::Site;
use serde_json::Value;
use support::sandbox::Sandbox;
use support::webdriver::{Browser, Kind};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_crawler"))
}

fn shot(kind: Kind, name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard").join(kind.name()).join(format!("{name}.png"))
}

/// The ids in the first column of a table's body.
const IDS: &str =
    "return [...document.querySelectorAll(arguments[0] || '#workers tbody tr')].map(r => r.dataset.id);";

async fn rows(b: &Browser, table: &str) -> Vec<String> {
    let v = b.eval(&IDS.replace("arguments[0] || '#workers tbody tr'", &format!("'{table} tbody tr'"))).await;
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap_or("").to_owned()).collect()
}

/// A task row's cells by column name, if the row is shown.
async fn task_row(b: &Browser, name: &str) -> Option<Value> {
    let v = b
        .eval(&format!(
            "const r = document.querySelector('#tasks tbody tr[data-name=\"{name}\"]');
             if (!r) return null;
             const o = {{}};
             r.querySelectorAll('td[data-col]').forEach(td => o[td.dataset.col] = td.textContent);
             return o;"
        ))
        .await;
    (!v.is_null()).then_some(v)
}

fn num(row: &Value, col: &str) -> u64 {
    row[col].as_str().unwrap_or("0").parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_and_steers_a_live_cluster_in_chromium() {
    scenario(Kind::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_and_steers_a_live_cluster_in_firefox() {
    scenario(Kind::Firefox).await;
}

async fn scenario(kind: Kind) {
    // Slow enough (40 pages a second at most) that the crawl runs through every step.
    let site = Site { books: 2000, tags: 2, per_page: 5, latency: Duration::from_millis(100) };
    let mut sb = Sandbox::start(bin(), site, false).await;
    let logs = tempfile::tempdir().unwrap();
    let b = Browser::start(kind, logs.path()).await;
    let (leader, _) = sb.leader_and_follower().await;
    b.goto(&format!("http://{}/", sb.masters[0].http)).await;

    // The leader and both workers.
    until("the page to show the leader and both workers", Duration::from_secs(20), || async {
        let shown = b.eval("return document.querySelector('#leader').textContent;").await;
        shown == leader.as_str() && rows(&b, "#workers").await == ["w1", "w2"]
    })
    .await;
    assert_eq!(rows(&b, "#masters").await.len(), 2);
    b.screenshot(&shot(kind, "1-cluster")).await;

    // Add a task through the form: its counters rise on the page.
    b.type_into("#add-name", "books").await;
    b.click("#add-submit").await;
    until("the task's pages to show", Duration::from_secs(20), || async {
        task_row(&b, "books").await.is_some_and(|r| num(&r, "pages") > 0)
    })
    .await;
    let first = num(&task_row(&b, "books").await.unwrap(), "pages");
    until("the task's pages to rise", Duration::from_secs(20), || async {
        task_row(&b, "books").await.is_some_and(|r| num(&r, "pages") > first && r["state"] == "running")
    })
    .await;
    assert_eq!(b.eval("return document.querySelector('#add-error').textContent;").await, "");
    b.screenshot(&shot(kind, "2-task-running")).await;

    // The master refuses the stats polls for a while (as at its rate limit): the page keeps
    // what it showed and says so (it blanked the tasks table and their history before).
    b.eval(
        "window.realFetch = window.realFetch || window.fetch;
         window.fetch = (p, o) => String(p) === '/crawler/stats'
           ? Promise.resolve(new Response('{\"error\":\"rate limit\"}', { status: 429 }))
           : window.realFetch(p, o);
         return null;",
    )
    .await;
    until("the page to say it was not updated", Duration::from_secs(10), || async {
        let u = b.eval("return document.querySelector('#updated').textContent;").await;
        u.as_str().is_some_and(|u| u.contains("not updated") && u.contains("429"))
    })
    .await;
    assert!(task_row(&b, "books").await.is_some(), "the tasks table went blank on a 429");
    b.eval("window.fetch = window.realFetch; return null;").await;
    until("the page to update again", Duration::from_secs(10), || async {
        let u = b.eval("return document.querySelector('#updated').textContent;").await;
        u.as_str().is_some_and(|u| u.starts_with("updated"))
    })
    .await;

    // Its detail: spec and figures.
    // The name cell: Firefox cannot scroll a whole table row into view to click it.
    b.click("#tasks tbody tr[data-name=\"books\"] td:first-child").await;
    until("the task's detail", Duration::from_secs(10), || async {
        let spec = b.eval("const d = document.querySelector('#detail'); return d.hidden ? '' : document.querySelector('#detail-spec').textContent;").await;
        spec.as_str().is_some_and(|s| s.contains("seeds"))
    })
    .await;
    b.screenshot(&shot(kind, "3-task-detail")).await;

    // Kill the worker that runs it: gone from the page, the task shown on the other worker.
    let running_on = task_row(&b, "books").await.unwrap()["worker"].as_str().unwrap().to_owned();
    let other = if running_on == "w1" { "w2" } else { "w1" };
    sb.workers.iter_mut().find(|w| w.id == running_on).unwrap().kill();
    until("the dead worker gone and the task moved", Duration::from_secs(30), || async {
        rows(&b, "#workers").await == [other]
            && task_row(&b, "books").await.is_some_and(|r| r["worker"] == other && r["state"] != "waiting")
    })
    .await;
    b.screenshot(&shot(kind, "4-worker-killed")).await;

    // Delete it, confirming the dialog: the row goes.
    b.click("#tasks tbody tr[data-name=\"books\"] button[data-action=\"delete\"]").await;
    b.accept_dialog().await;
    until("the deleted task to leave the page", Duration::from_secs(20), || async {
        task_row(&b, "books").await.is_none()
    })
    .await;
    b.screenshot(&shot(kind, "5-task-deleted")).await;

    // A bad spec through the form shows the API's error next to it.
    b.type_into("#add-name", "broken").await;
    b.type_into("#add-spec", "seeds = [\"ftp://x/\"]\n[[rule]]\nname = \"a\"").await;
    b.click("#add-submit").await;
    until("the API's error under the form", Duration::from_secs(10), || async {
        let e = b.eval("return document.querySelector('#add-error').textContent;").await;
        e.as_str().is_some_and(|e| e.starts_with("400") && e.contains("seeds[0]"))
    })
    .await;
    b.screenshot(&shot(kind, "6-form-error")).await;
    b.close().await;
}
