//! The whole system on real processes (see `support/sandbox.rs`): adds, deletes, worker
//! SIGKILL, SIGTERM and SIGSTOP, and a master leader killed while workers crawl.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use crawler_fixture::Site;
use serde_json::json;
use support::proxy::Proxy;
use support::sandbox::Sandbox;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_crawler"))
}

fn slow_site() -> Site {
    Site { books: 60, tags: 2, per_page: 5, latency: Duration::from_millis(40) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_delete_and_readd_through_a_follower() {
    let sb = Sandbox::start(bin(), slow_site(), false).await;
    let (_, follower) = sb.leader_and_follower().await;
    let t0 = Instant::now();
    let (s, v) = sb.send(reqwest::Method::POST, &follower, json!({"name": "books"})).await;
    assert_eq!(s, 200, "{v}");
    // The answer names the worker and the address it registered (its --http).
    let assigned = sb.workers.iter().find(|w| w.id == v["id"].as_str().unwrap()).unwrap();
    assert_eq!(v["address"].as_str().unwrap(), assigned.http);
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
    let books = 200;
    let site = Site { books, tags: 2, per_page: 5, latency: Duration::from_millis(20) };
    let mut sb = Sandbox::start(bin(), site, true).await;
    let (_, follower) = sb.leader_and_follower().await;
    let (s, v) = sb.send(reqwest::Method::POST, &follower, json!({"name": "books"})).await;
    assert_eq!(s, 200, "{v}");
    let victim = v["id"].as_str().unwrap().to_owned();
    sb.wait_requests("/book/", 60, Duration::from_secs(20)).await;
    let survivor = sb.workers.iter().find(|w| w.id != victim).unwrap();
    // The task is split (MariaDB): the survivor may hold an empty share of it already.
    let before = sb.pages_on(survivor, "books").await;
    let killed = Instant::now();
    sb.workers.iter_mut().find(|w| w.id == victim).unwrap().kill();
    // The survivor continues the run from MariaDB once the lease (2 s) has expired.
    let survivor = sb.workers.iter().find(|w| w.id != victim).unwrap();
    sb.wait_fetching(survivor, "books", before, Duration::from_secs(4)).await;
    println!("the survivor fetching after SIGKILL of a worker: {:?}", killed.elapsed());
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
    sb.assert_every_book_once(books);
    // Not restarted from the seeds: only what was in flight (4) or not yet committed (2
    // batches of 5) at the kill may be fetched again.
    assert_eq!(sb.requests("/index.html"), 1);
    let extra = sb.requests("/book/") - books as usize;
    println!("book fetches: {extra} extra for {books} books after a SIGKILL");
    assert!(extra <= 4 + 2 * 5, "{extra} books fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_a_worker_hands_over_at_once_and_a_paused_worker_never_doubles_up() {
    let sb = Sandbox::start(
        bin(),
        Site { books: 400, tags: 2, per_page: 5, latency: Duration::from_millis(40) },
        false,
    )
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
    sb.wait_task(b, "books", Duration::from_secs(4)).await;
    a.signal("-CONT");
    let resumed = Instant::now();
    loop {
        if sb.tasks_on(a).await.is_empty() {
            break;
        }
        assert!(resumed.elapsed() < Duration::from_secs(15), "the resumed worker kept its copy for 15 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("a resumed worker stopped its stale copy after {:?}", resumed.elapsed());
    sb.wait_workers(2).await;
    assert_eq!(sb.tasks_on(b).await, ["books"]);

    // SIGTERM the worker that runs it now: it revokes its lease, the task moves at once.
    let t = Instant::now();
    b.signal("-TERM");
    // Within the lease TTL (2 s): a worker that did not revoke its lease would be waited out.
    sb.wait_task(a, "books", Duration::from_secs(2)).await;
    println!("reassignment after SIGTERM of a worker: {:?}", t.elapsed());
    // Every move continued the same run: the seeds were fetched once, and the crawl goes on.
    let before = sb.requests("/book/");
    sb.wait_requests("/book/", before + 5, Duration::from_secs(5)).await;
    assert_eq!(sb.requests("/index.html"), 1, "a move restarted the task from its seeds");
    if sb.log(&a.id).contains("taken over") {
        println!("the resumed worker's late commits were refused (fenced)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_master_leader_does_not_interrupt_crawling() {
    let mut sb = Sandbox::start(
        bin(),
        Site { books: 200, tags: 2, per_page: 5, latency: Duration::from_millis(20) },
        false,
    )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawls_go_on_while_etcd_is_briefly_unreachable() {
    let mut sb = Sandbox::start(
        bin(),
        Site { books: 3000, tags: 2, per_page: 5, latency: Duration::from_millis(20) },
        false,
    )
    .await;
    let (_, follower) = sb.leader_and_follower().await;
    let (s, v) = sb.send(reqwest::Method::POST, &follower, json!({"name": "books"})).await;
    assert_eq!(s, 200, "{v}");
    let runner = v["id"].as_str().unwrap().to_owned();
    sb.wait_requests("/book/", 5, Duration::from_secs(10)).await;
    // etcd down (for well under the 2 s lease, restart included): the crawl keeps fetching.
    sb.etcd.members[0].kill();
    let before = sb.requests("/book/");
    sb.wait_requests("/book/", before + 3, Duration::from_millis(900)).await;
    sb.etcd.members[0].restart();
    sb.etcd.wait_healthy(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Still one copy, on the same worker; the crawl goes on.
    let w = sb.workers.iter().find(|w| w.id == runner).unwrap();
    let other = sb.workers.iter().find(|w| w.id != runner).unwrap();
    assert_eq!(sb.tasks_on(w).await, ["books"]);
    assert!(sb.tasks_on(other).await.is_empty());
    assert_eq!(sb.requests("/index.html"), 1, "the task was restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_and_restart_mid_crawl_loses_nothing_and_the_crawl_finishes() {
    let books = 400;
    let site = Site { books, tags: 2, per_page: 5, latency: Duration::from_millis(40) };
    let mut sb = Sandbox::start(bin(), site, true).await;
    sb.add_books().await;
    sb.wait_requests("/book/", 60, Duration::from_secs(20)).await;
    // MariaDB crashes and is back 3 s later (a restart, a failover): the workers' writers wait
    // for it, crawls that stopped on it are started again.
    sb.stop_db();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    sb.restart_db();
    println!("MariaDB down for {:?}", down.elapsed());
    sb.wait_every_book_once(books, Duration::from_secs(60)).await;
    for w in &sb.workers {
        assert!(!sb.log(&w.id).contains("sink failed"), "{}'s writer gave up:\n{}", w.id, sb.log(&w.id));
    }
    sb.wait_workers(2).await;
    let extra = sb.refetched_books(books, "across a database restart");
    // What was in flight (4 per worker) or not yet committed (2 batches of 5 per worker) when
    // a crawl stopped on the database, for each of the two workers' shares.
    assert!(extra <= 2 * (4 + 2 * 5), "{extra} books fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_writer_fails_starts_a_new_one_and_its_crawls_again() {
    let books = 300;
    let site = Site { books, tags: 2, per_page: 5, latency: Duration::from_millis(40) };
    let sb = Sandbox::start(bin(), site, true).await;
    sb.add_books().await;
    sb.wait_requests("/book/", 40, Duration::from_secs(20)).await;
    // The items table changed under the crawl: every insert is refused (strict mode, a column
    // without a default), and the writers fail.
    sb.query("ALTER TABLE book ADD COLUMN poison INT NOT NULL");
    let failed = |sb: &Sandbox| sb.workers.iter().any(|w| sb.log(&w.id).contains("sink failed"));
    let started = Instant::now();
    while !failed(&sb) {
        assert!(started.elapsed() < Duration::from_secs(20), "no writer failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Operators see it in the metrics.
    crawler_fixture::wait::until("a failed writer in the metrics", Duration::from_secs(5), || async {
        let mut seen = false;
        for w in &sb.workers {
            let text =
                reqwest::get(format!("http://{}/metrics", w.http)).await.unwrap().text().await.unwrap();
            seen |= text
                .lines()
                .any(|l| l.starts_with("crawler_worker_writer_failures_total ") && !l.ends_with(" 0"));
        }
        seen
    })
    .await;
    // Mended a little later: the workers' new writers store again, with no restart of theirs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sb.query("ALTER TABLE book DROP COLUMN poison");
    sb.wait_every_book_once(books, Duration::from_secs(90)).await;
    assert!(sb.workers.iter().any(|w| sb.log(&w.id).contains("a new writer started")));
    for w in &sb.workers {
        let text = reqwest::get(format!("http://{}/metrics", w.http)).await.unwrap().text().await.unwrap();
        assert!(text.lines().any(|l| l == "crawler_worker_writer_up 1"), "{}: {text}", w.id);
    }
    sb.wait_workers(2).await;
    let extra = sb.refetched_books(books, "across failed writers");
    // What each failed writer held (a batch of 5 and a queue of 5) and what was in flight (4),
    // for a few failures on each of the two workers.
    assert!(extra <= 3 * 2 * (5 + 5 + 4), "{extra} books fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_past_every_lease_then_back_the_crawl_finishes_where_it_stopped() {
    let books = 300;
    let site = Site { books, tags: 2, per_page: 5, latency: Duration::from_millis(40) };
    let mut sb = Sandbox::start(bin(), site, true).await;
    sb.add_books().await;
    sb.wait_requests("/book/", 40, Duration::from_secs(20)).await;
    // etcd gone for 5 s: every worker's lease (2 s) runs out, so each stops its crawls.
    sb.etcd.members[0].kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    sb.etcd.members[0].restart();
    sb.etcd.wait_healthy(Duration::from_secs(10));
    sb.wait_every_book_once(books, Duration::from_secs(60)).await;
    for w in &sb.workers {
        assert!(sb.log(&w.id).contains("lease lost"), "{} kept its lease through the outage?", w.id);
    }
    sb.wait_workers(2).await;
    let extra = sb.refetched_books(books, "across an etcd outage");
    // Each worker stopped its share at once: what was in flight (4) and not yet committed (2
    // batches of 5), twice over.
    assert!(extra <= 2 * (4 + 2 * 5), "{extra} books fetched again");
}

/// A MariaDB sandbox whose only live worker is w3, which reaches MariaDB through a proxy and
/// waits at most 1 s for a database it cannot reach (the first two workers are stopped).
async fn w3_alone_through_a_proxy(site: Site) -> (Sandbox, Proxy) {
    let mut sb = Sandbox::start(bin(), site, true).await;
    let proxy = Proxy::start(sb.db_addr()).await;
    sb.add_worker_through("w3", proxy.addr);
    sb.wait_workers(3).await;
    sb.workers[0].signal("-TERM");
    sb.workers[1].signal("-TERM");
    sb.wait_workers(1).await;
    (sb, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_the_database_gives_its_tasks_up_until_it_reaches_it_again() {
    let books = 300;
    let site = Site { books, tags: 2, per_page: 5, latency: Duration::from_millis(40) };
    let (mut sb, mut proxy) = w3_alone_through_a_proxy(site).await;
    assert_eq!(sb.add_books().await["id"], "w3");
    sb.wait_requests("/book/", 40, Duration::from_secs(20)).await;
    // Cut off: its writer waits out its outage, a new one cannot open the database, and w3
    // gives up its registration (and so its task).
    proxy.cut();
    let cut = Instant::now();
    sb.wait_workers(0).await;
    println!("w3 left {:?} after it was cut off", cut.elapsed());
    assert!(sb.log("w3").contains("the stores cannot be reached"), "{}", sb.log("w3"));
    // A worker that reaches the database takes the task over and finishes it.
    sb.add_worker("w4");
    sb.wait_every_book_once(books, Duration::from_secs(60)).await;
    let extra = sb.refetched_books(books, "across a worker cut off");
    // What w3 had in flight (4), the page whose commit waited for room, and what its writer
    // held and could not store (a batch and a queue, 5 each).
    assert!(extra <= 4 + 1 + 2 * 5, "{extra} books fetched again");
    // Mended: w3 registers again.
    proxy.mend().await;
    sb.wait_workers(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_cut_off_from_the_database_leaves_once_its_tasks_cannot_open() {
    let books = 100;
    let site = Site { books, tags: 2, per_page: 5, latency: Duration::from_millis(20) };
    let (mut sb, mut proxy) = w3_alone_through_a_proxy(site).await;
    // Cut off while it has nothing to write: nothing tells it yet.
    proxy.cut();
    // The task goes to w3, whose runs cannot open; after a few failures it probes the
    // database, cannot open it, and leaves.
    assert_eq!(sb.add_books().await["id"], "w3");
    let added = Instant::now();
    sb.wait_workers(0).await;
    println!("w3 left {:?} after the task was added", added.elapsed());
    assert!(sb.log("w3").contains("the stores cannot be reached"), "{}", sb.log("w3"));
    // A worker that reaches the database runs the task; nothing was fetched twice.
    sb.add_worker("w4");
    sb.wait_every_book_once(books, Duration::from_secs(60)).await;
    assert_eq!(sb.refetched_books(books, "with a cut-off worker assigned first"), 0);
    // Mended: w3 registers again.
    proxy.mend().await;
    sb.wait_workers(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_answers_its_http_api_until_it_has_left() {
    // Pages take 1.5 s: a SIGTERMed worker drains what is in flight before it revokes its
    // lease. Its HTTP server stopped at the signal, so for the whole drain the masters found a
    // registered worker that refused them (`/tasks`, the stats).
    let site = Site { books: 40, tags: 2, per_page: 5, latency: Duration::from_millis(1500) };
    let sb = Sandbox::start(bin(), site, false).await;
    let etcd = crawler_coord::Etcd::connect(&sb.etcd.endpoints(), Duration::from_secs(5)).await.unwrap();
    let first = sb.add_books().await["id"].as_str().unwrap().to_owned();
    let w = sb.workers.iter().find(|w| w.id == first).unwrap();
    sb.wait_requests("/index.html", 1, Duration::from_secs(10)).await;
    w.signal("-TERM");
    let key = crawler_coord::keys::worker(&w.id);
    let registered = || async {
        let k = key.clone();
        let resp = etcd.call("get", |mut c| {
            let k = k.clone();
            async move { c.get(k, None).await }
        });
        !resp.await.unwrap().kvs().is_empty()
    };
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut answered = 0;
    loop {
        // `/tasks` for the masters, `/healthz` for a liveness probe (which answered 503 for
        // the whole drain).
        let mut ok = true;
        for path in ["/tasks", "/healthz"] {
            ok &= client
                .get(format!("http://{}{path}", w.http))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
        }
        // Asked after the request: a record gone now was gone or going when it was refused.
        let still = registered().await;
        if !still {
            break;
        }
        assert!(ok, "registered, but its HTTP API refused after {:?}", started.elapsed());
        answered += 1;
        assert!(started.elapsed() < Duration::from_secs(10), "the worker never left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered > 0);
    println!("answered {answered} times over {:?} of draining", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_record_is_deleted_registers_again_at_once() {
    let sb = Sandbox::start(bin(), slow_site(), false).await;
    let etcd = crawler_coord::Etcd::connect(&sb.etcd.endpoints(), Duration::from_secs(5)).await.unwrap();
    let w = &sb.workers[0];
    let key = crawler_coord::keys::worker(&w.id);
    // An operator deletes the record while the worker's lease lives.
    let k = key.clone();
    etcd.call("del", |mut c| {
        let k = k.clone();
        async move { c.delete(k, None).await }
    })
    .await
    .unwrap();
    let deleted = Instant::now();
    crawler_fixture::wait::until("the worker to register again", Duration::from_secs(10), || async {
        let k = key.clone();
        let resp = etcd.call("get", |mut c| {
            let k = k.clone();
            async move { c.get(k, None).await }
        });
        !resp.await.unwrap().kvs().is_empty()
    })
    .await;
    println!("a deleted worker record was put back after {:?}", deleted.elapsed());
    // Registered and healthy (it says so just after the put lands); every master sees both
    // workers again.
    crawler_fixture::wait::until("the worker to be healthy again", Duration::from_secs(5), || async {
        sb.get(&w.http, "/healthz").await.map(|(s, _)| s) == Some(200)
    })
    .await;
    sb.wait_workers(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_moved_off_a_dead_worker_stays_finished() {
    let books = 30;
    let site = Site { books, tags: 2, per_page: 5, latency: Duration::from_millis(5) };
    // SQLite: the task stays whole (one run, on one worker).
    let mut sb = Sandbox::start(bin(), site, false).await;
    let first = sb.add_books().await["id"].as_str().unwrap().to_owned();
    let victim = sb.workers.iter().position(|w| w.id == first).unwrap();
    crawler_fixture::wait::until("the crawl to finish", Duration::from_secs(20), || {
        finished_on(&sb, &sb.workers[victim])
    })
    .await;
    sb.assert_every_book_once(books);
    let fetched = sb.fixture.requests().len();
    sb.workers[victim].kill();
    // The task moves to the survivor, which finds its run finished: nothing is fetched again.
    let survivor = 1 - victim;
    crawler_fixture::wait::until("the survivor to hold the finished task", Duration::from_secs(10), || {
        finished_on(&sb, &sb.workers[survivor])
    })
    .await;
    let (_, follower) = sb.leader_and_follower().await;
    let stats = sb.get(&follower, "/crawler/stats").await.unwrap().1;
    let books_stats = stats.as_array().unwrap().iter().find(|t| t["name"] == "books").unwrap().clone();
    assert_eq!(books_stats["worker"], sb.workers[survivor].id.as_str(), "{stats}");
    assert_eq!(books_stats["state"], "finished", "{stats}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sb.fixture.requests().len(), fetched, "the finished task was crawled again");
    assert!(sb.tasks_on(&sb.workers[survivor]).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_add_under_the_client_s_own_id_crawls_again() {
    // MariaDB: the task is split. The original's walkthrough sends its own id with each add.
    let sb = Sandbox::start(bin(), slow_site(), true).await;
    let (_, follower) = sb.leader_and_follower().await;
    let body = json!({"id": "zjx", "name": "books"});
    let (s, v) = sb.send(reqwest::Method::POST, &follower, body.clone()).await;
    assert_eq!(s, 200, "{v}");
    sb.wait_requests("/book/", 5, Duration::from_secs(10)).await;
    let (s, v) = sb.send(reqwest::Method::DELETE, &follower, json!({"name": "books"})).await;
    assert_eq!(s, 200, "{v}");
    crawler_fixture::wait::until("the crawl to stop", Duration::from_secs(5), || async {
        let mut idle = true;
        for w in &sb.workers {
            idle &= sb.tasks_on(w).await.is_empty();
        }
        idle
    })
    .await;
    let books = sb.requests("/book/");
    // The same body again: a new crawl from the seeds (before, it found the deleted run and
    // crawled nothing).
    let (s, v) = sb.send(reqwest::Method::POST, &follower, body).await;
    assert_eq!(s, 200, "{v}");
    sb.wait_requests("/index.html", 2, Duration::from_secs(10)).await;
    sb.wait_requests("/book/", books + 5, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_deleted_while_no_worker_runs_it_has_its_run_ended_by_the_next_worker() {
    // MariaDB: one run in the shared database. Every worker dies mid-crawl, the task is
    // deleted meanwhile: its run stayed `running`, with its frontier, for good.
    let mut sb = Sandbox::start(bin(), slow_site(), true).await;
    sb.add_books().await;
    sb.wait_requests("/book/", 5, Duration::from_secs(10)).await;
    for w in &mut sb.workers {
        w.kill();
    }
    let (_, follower) = sb.leader_and_follower().await;
    let (s, v) = sb.send(reqwest::Method::DELETE, &follower, json!({"name": "books"})).await;
    assert_eq!(s, 200, "{v}");
    let state = "SELECT state FROM crawler_runs WHERE task = 'books'";
    let frontier = "SELECT COUNT(*) FROM crawler_frontier";
    assert_eq!(sb.query(state).trim(), "running");
    assert_ne!(sb.query(frontier).trim(), "0");
    // The next worker to register ends it.
    sb.add_worker("w3");
    crawler_fixture::wait::until("the run to be ended", Duration::from_secs(10), || async {
        sb.query(state).trim() == "ended" && sb.query(frontier).trim() == "0"
    })
    .await;
    assert!(sb.log("w3").contains("run of a deleted resource ended"), "{}", sb.log("w3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_config_lacks_the_task_runs_it_from_the_master_s_spec() {
    let books = 30;
    let site = Site { books, tags: 2, per_page: 5, latency: Duration::from_millis(5) };
    let mut sb = Sandbox::start(bin(), site, false).await;
    // w3 knows no task; w1 and w2 leave, so the task goes to w3.
    sb.add_worker_with("w3", |text| text[..text.find("[[task]]").unwrap()].to_owned());
    sb.wait_workers(3).await;
    sb.workers[0].signal("-TERM");
    sb.workers[1].signal("-TERM");
    sb.wait_workers(1).await;
    assert_eq!(sb.add_books().await["id"], "w3");
    sb.wait_every_book_once(books, Duration::from_secs(20)).await;
    assert!(!sb.log("w3").contains("cannot run this resource"), "{}", sb.log("w3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_answers_tasks_and_metrics_while_a_reconcile_waits_for_the_database() {
    let site = Site { books: 400, tags: 2, per_page: 5, latency: Duration::from_millis(40) };
    let mut sb = Sandbox::start(bin(), site, true).await;
    sb.add_books().await;
    sb.wait_requests("/book/", 20, Duration::from_secs(20)).await;
    // The database goes down, then the task is deleted: the workers stop their shares and
    // flush what they hold, which waits for the database (up to `outage`, two minutes).
    sb.stop_db();
    let (_, follower) = sb.leader_and_follower().await;
    let (s, v) = sb.send(reqwest::Method::DELETE, &follower, json!({"name": "books"})).await;
    assert_eq!(s, 200, "{v}");
    // Each worker's reconcile has stopped its share and could not end the run: it goes on to
    // flush, which waits for the database.
    crawler_fixture::wait::until("the reconciles to reach the database", Duration::from_secs(15), || async {
        sb.workers.iter().all(|w| sb.log(&w.id).contains("cannot end the run"))
    })
    .await;
    // Meanwhile every worker answers at once (they waited for the reconcile before), and no
    // longer lists the deleted task.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    for w in &sb.workers {
        for path in ["/tasks", "/metrics"] {
            let resp = client.get(format!("http://{}{path}", w.http)).send().await;
            let text = match resp {
                Ok(r) if r.status() == 200 => r.text().await.unwrap(),
                other => panic!("{}{path} did not answer within 1 s: {other:?}", w.id),
            };
            if path == "/tasks" {
                assert!(!text.contains("\"books\""), "{}: the deleted task still listed: {text}", w.id);
            }
        }
    }
    sb.restart_db();
}

/// Whether `worker` lists the task `books` as finished.
async fn finished_on(sb: &Sandbox, worker: &support::sandbox::Proc) -> bool {
    sb.task_entries(worker).await.iter().any(|t| t["name"] == "books" && t["finished"] == true)
}
