//! End-to-end crawls of the fixture site on 127.0.0.1: what the site received, what the
//! database holds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crawler_engine::{
    ByteSize, Crawl, CrawlStats, EngineConfig, Epoch, Fetcher, HumanDuration, OpenedRun, PageStatus,
    SinkWriter, SqliteSink, SqliteState, StateStore, Task, TaskSpec,
};
use crawler_fixture::{
    book_author, book_price, book_rating, book_title, Fixture, Page, Script, Site, GBK_AUTHOR, GBK_TITLE,
};
use tokio_util::sync::CancellationToken;

/// Requests held in memory per host: small, so every crawl here spills to the database and
/// reads back.
const WINDOW: usize = 8;

fn engine() -> EngineConfig {
    EngineConfig {
        queue_window: WINDOW,
        concurrency: 8,
        per_host: 4,
        retries: 2,
        backoff: HumanDuration(Duration::from_millis(20)),
        timeout: HumanDuration(Duration::from_secs(1)),
        max_body: ByteSize(1 << 20),
        robots_retry: HumanDuration(Duration::from_millis(200)),
        ..EngineConfig::default()
    }
}

/// The fixture's task: index -> tags -> books, plus the trap and the odd pages.
fn task(fx: &Fixture) -> TaskSpec {
    let json = format!(
        r#"{{"name":"books","seeds":["{seed}"],"max_depth":5,"rule":[
          {{"name":"index","follow":[{{"select":"a.tag","rule":"tag"}},{{"select":"a.trap","rule":"trap"}},{{"select":"a.odd","rule":"book"}}]}},
          {{"name":"tag","follow":[{{"select":"a.book","rule":"book"}},{{"select":"a.next","rule":"tag"}}]}},
          {{"name":"book","table":"book","fields":{{"title":"h1.title","author":"span.author","price":"span.price","rating":"span.rating"}},
            "follow":[{{"select":"a.book","rule":"book"}}]}},
          {{"name":"trap","follow":[{{"select":"a.trap","rule":"trap"}}]}}]}}"#,
        seed = fx.url("/index.html"),
    );
    serde_json::from_str(&json).unwrap()
}

/// Makes the named rule the first one (the one that handles the seeds).
fn seeds_under(spec: &mut TaskSpec, rule: &str, seeds: Vec<String>) {
    let i = spec.rules.iter().position(|r| r.name == rule).unwrap();
    let r = spec.rules.remove(i);
    spec.rules.insert(0, r);
    spec.seeds = seeds;
}

/// Starts a stored run's crawl, committing to SQLite in batches of `batch` (or after `flush`).
fn resume_stored(
    cfg: EngineConfig,
    task: Task,
    run: OpenedRun,
    db: &Path,
    (batch, flush): (usize, Duration),
    stop: &CancellationToken,
) -> (Crawl, SinkWriter) {
    let writer = SinkWriter::spawn(vec![Box::new(SqliteSink::open(db).unwrap())], batch, flush);
    let fetcher = Arc::new(Fetcher::new(cfg).unwrap());
    (Crawl::resume(task, run, fetcher, writer.sender(), stop), writer)
}

/// Crawls a task to the end as a stored run (resumed if the database holds an unfinished one).
async fn crawl(cfg: EngineConfig, spec: TaskSpec, db: &Path) -> CrawlStats {
    let task = Task::compile(spec).unwrap();
    let run = SqliteState::open(db)
        .unwrap()
        .open_run(task.name(), "test", Epoch::Next, false, task.queue_window(WINDOW))
        .unwrap();
    let (crawl, writer) =
        resume_stored(cfg, task, run, db, (10, Duration::from_millis(50)), &CancellationToken::new());
    let stats = crawl.join().await;
    drop(crawl);
    assert_eq!(writer.close().await.unwrap(), stats.items);
    stats
}

type Row = (String, Option<String>, Option<String>, Option<String>, Option<String>);

fn rows(db: &Path) -> HashMap<String, Row> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT task, url, title, author, price, rating FROM book").unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(1)?, (r.get(0)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// The most of `times` (in order) that fall within `window` of one another.
fn busiest(times: &[std::time::Instant], window: Duration) -> usize {
    (0..times.len())
        .map(|i| times[i..].iter().filter(|t| t.duration_since(times[i]) < window).count())
        .max()
        .unwrap_or(0)
}

fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").unwrap().1;
    &rest[rest.find('/').unwrap()..]
}

#[tokio::test]
async fn crawls_the_site_once_per_url_and_stores_every_book() {
    let site = Site::default();
    let fx = Fixture::start(site).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crawl.db");
    let cfg = engine();
    let ua = cfg.user_agent.clone();
    let mut spec = task(&fx);
    // A second seed on a port nobody listens on: an unreachable host.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    spec.seeds.push(format!("http://{closed}/index.html"));
    let stats = crawl(cfg, spec, &db).await;

    let log = fx.requests();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in &log {
        *counts.entry(r.path.as_str()).or_default() += 1;
        assert_eq!(r.user_agent, ua);
    }
    // Retried: always-500 and the slow page (timeouts) 1 + 2 times, the 429 page once more.
    assert_eq!(counts.remove("/error500.html"), Some(3));
    assert_eq!(counts.remove("/slow.html"), Some(3));
    assert_eq!(counts.remove("/busy.html"), Some(2));
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "fetched more than once: {repeated:?}");
    for must in [
        "/robots.txt",
        "/index.html",
        "/loop/a",
        "/loop/b",
        "/redirect/book/2",
        "/redirect/offsite",
        "/trap/5.html",
        "/missing.html",
        "/huge.html",
        "/binary.bin",
    ] {
        assert!(counts.contains_key(must), "{must} was never requested");
    }
    for never in ["/private/secret.html", "/trap/6.html"] {
        assert!(!counts.contains_key(never), "{never} was requested");
    }
    for path in site.clean_paths() {
        assert!(counts.contains_key(path.as_str()), "{path} was never requested");
    }

    // Retry-After: 1 was honoured (the backoff alone would have been ~20 ms).
    let busy: Vec<_> = log.iter().filter(|r| r.path == "/busy.html").map(|r| r.at).collect();
    assert!(
        busy[1].duration_since(busy[0]) >= Duration::from_millis(950),
        "{:?}",
        busy[1].duration_since(busy[0])
    );

    // Every book, three GBK pages, the 429-then-200 page, the gzip page, the malformed page.
    let rows = rows(&db);
    assert_eq!(rows.len() as u32, site.books + 6, "{:?}", rows.keys().collect::<Vec<_>>());
    for id in 0..site.books {
        let row = &rows[&fx.url(&format!("/book/{id}.html"))];
        assert_eq!(
            row,
            &(
                "books".into(),
                Some(book_title(id)),
                Some(book_author(id)),
                Some(book_price(id)),
                Some(book_rating(id))
            )
        );
    }
    assert_eq!(rows[&fx.url("/gzip.html")].1, Some(book_title(4)));
    let malformed = &rows[&fx.url("/malformed.html")];
    assert_eq!((malformed.1.as_deref(), malformed.4.as_deref()), (Some("Malformed bold"), Some("3")));
    for gbk in ["/gbk-meta.html", "/gbk-header.html", "/gbk-sniff.html"] {
        let row = &rows[&fx.url(gbk)];
        assert_eq!((row.1.as_deref(), row.2.as_deref()), (Some(GBK_TITLE), Some(GBK_AUTHOR)));
    }
    assert_eq!(rows[&fx.url("/busy.html")].1, Some(book_title(0)));

    // 404, always-500, timeout, oversized, binary, the redirect loop.
    assert_eq!(stats.errors, 6);
    // always-500 and timeout twice each, 429 once.
    assert_eq!(stats.retries, 5);
    // The private page, and the unreachable seed: its robots.txt could not be read, so its
    // host is disallowed (RFC 9309).
    assert_eq!(stats.robots_blocked, 2);
    assert_eq!(stats.items, site.books as u64 + 6);
    // Every request but robots.txt and the three that timed out got a response.
    assert_eq!(stats.pages, log.len() as u64 - 1 - 3);
    assert!(rows.keys().all(|u| !path_of(u).contains('#')));
}

#[tokio::test]
async fn nothing_beyond_max_depth_is_fetched() {
    let fx = Fixture::start(Site::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = task(&fx);
    spec.max_depth = 3;
    seeds_under(&mut spec, "trap", vec![fx.url("/trap/1.html")]);
    let stats = crawl(engine(), spec, &dir.path().join("c.db")).await;
    let paths: Vec<String> =
        fx.requests().into_iter().map(|r| r.path).filter(|p| p != "/robots.txt").collect();
    assert_eq!(paths, ["/trap/1.html", "/trap/2.html", "/trap/3.html", "/trap/4.html"]);
    assert_eq!(stats.pages, 4);
    assert_eq!(stats.errors, 0);
}

#[tokio::test]
async fn rate_limits_hold_in_every_window_and_max_pages_stops() {
    let fx = Fixture::start(Site::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = task(&fx);
    spec.max_pages = 12;
    spec.limits = serde_json::from_str(r#"[{"events":4,"per":"1s"},{"events":100,"per":"1m"}]"#).unwrap();
    seeds_under(&mut spec, "tag", vec![fx.url("/tag/0/page-1.html")]);
    let stats = crawl(engine(), spec, &dir.path().join("c.db")).await;
    let times: Vec<_> = fx.requests().into_iter().filter(|r| r.path != "/robots.txt").map(|r| r.at).collect();
    assert_eq!(times.len(), 12, "max_pages");
    assert_eq!(stats.pages, 12);
    // The server sees arrivals a little after the limiter's start times; allow 200 ms of
    // scheduling jitter on a loaded machine.
    let inside = busiest(&times, Duration::from_millis(800));
    assert!(inside <= 4, "{inside} requests within 800ms");
    let span = times.last().unwrap().duration_since(times[0]);
    assert!(span >= Duration::from_millis(1800), "12 requests at 4 per second took only {span:?}");
}

#[tokio::test]
async fn a_run_taken_over_in_a_cluster_keeps_the_limits_across_the_handover() {
    // Owner 1 (epoch 1) sends at 4 a second and stops; owner 2 (epoch 2, the next assignment)
    // takes the run over at once. Owner 1 may have spent the current window: owner 2 waits
    // one before it sends, so the site never sees more than 4 in a second.
    limits_hold_across_a_restart("res-1", [Epoch::At(1), Epoch::At(2)], true).await;
}

#[tokio::test]
async fn a_resumed_standalone_run_keeps_the_limits_across_the_restart() {
    // The same with a standalone crawl stopped and started again at once: the resumed run
    // went off with an empty window (the site saw up to twice the limit in a second).
    limits_hold_across_a_restart("standalone", [Epoch::Next, Epoch::Next], false).await;
}

/// A run stopped after six pages at 4 a second and opened again at once under `epochs`: the
/// site never sees more than 4 requests in a second.
async fn limits_hold_across_a_restart(label: &str, epochs: [Epoch; 2], taken_over: bool) {
    let fx = Fixture::start(Site::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let mut spec = task(&fx);
    spec.limits = serde_json::from_str(r#"[{"events":4,"per":"1s"}]"#).unwrap();
    spec.max_pages = 14;
    let state = SqliteState::open(&db).unwrap();
    let pages =
        || fx.requests().into_iter().filter(|r| r.path != "/robots.txt").map(|r| r.at).collect::<Vec<_>>();
    for (i, epoch) in epochs.into_iter().enumerate() {
        let run = state.open_run("books", label, epoch, false, WINDOW).unwrap();
        assert_eq!((run.resumed, run.taken_over), (i == 1, i == 1 && taken_over));
        let stop = CancellationToken::new();
        let task = Task::compile(spec.clone()).unwrap();
        let (crawl, writer) = resume_stored(engine(), task, run, &db, (10, Duration::from_millis(50)), &stop);
        if i == 0 {
            crawler_fixture::wait::until("six pages fetched", Duration::from_secs(20), || async {
                pages().len() >= 6
            })
            .await;
            stop.cancel();
        }
        tokio::time::timeout(Duration::from_secs(30), crawl.join()).await.expect("the crawl ends");
        drop(crawl);
        writer.close().await.unwrap();
    }
    let times = pages();
    assert!(times.len() >= 12, "{} requests", times.len());
    // As in the test above: 200 ms of the window left for arrival jitter.
    let inside = busiest(&times, Duration::from_millis(800));
    assert!(inside <= 4, "{inside} requests within 800 ms, around the restart");
}

#[tokio::test]
async fn rate_limits_and_crawl_delay_hold_at_the_site_for_retries_too() {
    // Every book answers 503 once, then its page: the retries reach the site as well. The task
    // allows 4 requests a second, the host asks for 150 ms between requests.
    const PATHS: [&str; 10] = [
        "/book/0.html",
        "/book/1.html",
        "/book/2.html",
        "/book/3.html",
        "/book/4.html",
        "/book/5.html",
        "/book/6.html",
        "/book/7.html",
        "/book/8.html",
        "/book/9.html",
    ];
    let fx = scripted(|_| {
        let page = Page::body("text/html", "<h1 class=\"title\">A book</h1>");
        let mut script = vec![("/robots.txt", vec![robots("User-agent: *\nCrawl-delay: 0.15\n")])];
        script.extend(PATHS.map(|p| (p, vec![Page::status(503, "busy"), page.clone()])));
        script
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = books(&fx, 0..10);
    spec.limits = serde_json::from_str(r#"[{"events":4,"per":"1s"}]"#).unwrap();
    let stats = crawl(engine(), spec, &dir.path().join("c.db")).await;
    assert_eq!((stats.pages, stats.retries, stats.errors), (20, 10, 0));
    let at = starts(&fx, "/book/");
    assert_eq!(at.len(), 20);
    let inside = busiest(&at, Duration::from_millis(950));
    assert!(inside <= 4, "{inside} requests within 950 ms, retries included (limit 4 a second)");
    for pair in at.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(gap >= Duration::from_millis(140), "requests {gap:?} apart under Crawl-delay: 0.15");
    }
}

#[tokio::test]
async fn a_gbk_page_s_links_send_their_query_in_gbk_as_browsers_do() {
    let html =
        r#"<html><body><a href="/search?kw=小说">novels</a> <a href="/书/1.html">a book</a></body></html>"#;
    let (gbk, _, _) = encoding_rs::GBK.encode(html);
    let body = Page::body("text/html; charset=gbk", gbk.into_owned());
    let fx = scripted(|_| vec![("/gbk.html", vec![body])]).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = every_link("g", &fx.url("/gbk.html"), r#""max_depth":1"#);
    crawl(EngineConfig { obey_robots: false, ..engine() }, spec, &dir.path().join("g.db")).await;
    let paths: Vec<String> = fx.requests().iter().map(|r| r.path.clone()).collect();
    // The query in the page's encoding, the path in UTF-8 (before, both were UTF-8).
    assert!(paths.contains(&"/search?kw=%D0%A1%CB%B5".to_owned()), "{paths:?}");
    assert!(paths.contains(&"/%E4%B9%A6/1.html".to_owned()), "{paths:?}");
}

#[tokio::test]
async fn per_host_and_global_concurrency_are_respected() {
    let site = Site { latency: Duration::from_millis(30), ..Site::default() };
    for (concurrency, per_host, expect) in [(16, 3, 3), (2, 8, 2)] {
        let fx = Fixture::start(site).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = EngineConfig { concurrency, per_host, ..engine() };
        let mut spec = task(&fx);
        seeds_under(&mut spec, "book", (0..10).map(|i| fx.url(&format!("/book/{i}.html"))).collect());
        spec.rules[0].follow.clear();
        crawl(cfg, spec, &dir.path().join("c.db")).await;
        assert_eq!(fx.max_in_flight(), expect, "concurrency {concurrency}, per_host {per_host}");
    }
}

#[tokio::test]
async fn cookie_is_sent_and_robots_can_be_ignored() {
    let fx = Fixture::start(Site::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = task(&fx);
    spec.cookie = "session=abc; lang=en".into();
    spec.max_depth = 1;
    let cfg = EngineConfig { obey_robots: false, ..engine() };
    crawl(cfg, spec, &dir.path().join("c.db")).await;
    let log = fx.requests();
    assert_eq!(fx.count("/robots.txt"), 0);
    assert_eq!(fx.count("/private/secret.html"), 1);
    assert!(log.iter().all(|r| r.cookie == "session=abc; lang=en"));
}

#[tokio::test]
async fn cancel_stops_fetching_and_keeps_what_was_stored() {
    let site = Site { books: 5000, tags: 2, per_page: 50, latency: Duration::from_millis(5) };
    let fx = Fixture::start(site).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let mut spec = task(&fx);
    spec.max_depth = 1000;
    spec.rules[2].follow.clear();
    let fetcher = Arc::new(Fetcher::new(engine()).unwrap());
    let writer =
        SinkWriter::spawn(vec![Box::new(SqliteSink::open(&db).unwrap())], 100, Duration::from_secs(30));
    let shutdown = CancellationToken::new();
    let crawl = Crawl::start(Task::compile(spec).unwrap(), fetcher, writer.sender(), &shutdown);
    crawler_fixture::wait::until("150 items", Duration::from_secs(60), || async {
        crawl.stats().items >= 150
    })
    .await;
    shutdown.cancel();
    let stats =
        tokio::time::timeout(Duration::from_secs(10), crawl.join()).await.expect("a cancelled crawl stops");
    assert!(crawl.is_finished());
    drop(crawl);
    // The last partial batch is written on close, long before the 30 s linger.
    let written = writer.close().await.unwrap();
    assert_eq!(written, stats.items);
    assert_eq!(rows(&db).len() as u64, stats.items);
    assert!(stats.items < 5000);
    let seen = fx.requests().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fx.requests().len(), seen, "requests continued after the crawl ended");
}

/// A store that takes nothing while `stuck` is set (a database being waited for), for at most
/// 10 s a batch (so a test that fails does not hang).
struct Stuck(Arc<std::sync::atomic::AtomicBool>);

impl crawler_engine::Sink for Stuck {
    fn write(&mut self, _: &[crawler_engine::Commit]) -> Result<(), crawler_engine::SinkError> {
        let since = std::time::Instant::now();
        while self.0.load(std::sync::atomic::Ordering::Relaxed) && since.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_stopped_while_its_writer_takes_nothing_ends_within_seconds() {
    let site = Site { books: 500, tags: 2, per_page: 50, latency: Duration::from_millis(2) };
    let fx = Fixture::start(site).await.unwrap();
    let mut spec = task(&fx);
    spec.max_depth = 1000;
    let stuck = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = SinkWriter::spawn(vec![Box::new(Stuck(stuck.clone()))], 5, Duration::from_millis(10));
    let shutdown = CancellationToken::new();
    let fetcher = Arc::new(Fetcher::new(engine()).unwrap());
    let crawl = Crawl::start(Task::compile(spec).unwrap(), fetcher, writer.sender(), &shutdown);
    // The writer holds its first batch and its queue fills: the crawl can hand over nothing.
    crawler_fixture::wait::until("20 pages", Duration::from_secs(20), || async { crawl.stats().pages >= 20 })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = std::time::Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), crawl.join())
        .await
        .expect("a crawl stopped at once does not wait for its writer");
    println!("stopped after {:?} with the writer taking nothing", stopped.elapsed());
    drop(crawl);
    stuck.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.close().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_run_resumes_without_refetching_what_was_stored() {
    let books = 3000;
    let site = Site { books, tags: 3, per_page: 50, latency: Duration::from_millis(2) };
    let fx = Fixture::start(site).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let cfg = engine();
    let mut spec = task(&fx);
    spec.max_depth = 1000;
    // Books only: no trap, no odd pages.
    spec.rules[0].follow.retain(|f| f.select == "a.tag");
    let state = SqliteState::open(&db).unwrap();

    // First run: stopped a third of the way, the way Ctrl-C stops it.
    let run = state.open_run("books", "test", Epoch::Next, false, WINDOW).unwrap();
    assert!(!run.resumed);
    let shutdown = CancellationToken::new();
    let task = Task::compile(spec.clone()).unwrap();
    let (first, writer) =
        resume_stored(cfg.clone(), task, run, &db, (100, Duration::from_millis(200)), &shutdown);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while first.stats().items < u64::from(books) / 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run stored {} items in 60 s",
            first.stats().items
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    first.join().await;
    drop(first);
    writer.close().await.unwrap();
    let stored = rows(&db).len();
    assert!(stored < books as usize, "the first run was not interrupted");
    let before = fx.requests().len();

    // Second run: resumes, fetches only what was not stored, and finishes the task.
    let resumed = state.open_run("books", "test", Epoch::Next, false, WINDOW).unwrap();
    assert!(resumed.resumed);
    assert!(resumed.handled >= stored as u64, "{} handled < {stored} stored", resumed.handled);
    // Bounded memory: one host, so at most a window of its waiting requests comes back in
    // memory; the rest wait in the database.
    assert!(resumed.queued.len() <= WINDOW, "{} held", resumed.queued.len());
    assert_eq!(resumed.spilled.len(), 1);
    assert_eq!(resumed.queued.len() as u64 + resumed.spilled[0].1, resumed.waiting);
    // Resumed with the task's rules in another order (as after a rule is inserted before the
    // others): each waiting request keeps the rule it was queued under (rules were stored by
    // index, and the book pages waiting under rule 2 were handled by the rule now third).
    let mut reordered = spec.clone();
    reordered.rules.reverse();
    let stats = crawl(cfg.clone(), reordered, &db).await;
    assert!(stats.pages > 0);
    let all = rows(&db);
    assert_eq!(all.len(), books as usize);
    for (url, (task, title, ..)) in &all {
        let id: u32 = path_of(url).trim_start_matches("/book/").trim_end_matches(".html").parse().unwrap();
        assert_eq!((task.as_str(), title.as_deref()), ("books", Some(book_title(id).as_str())));
    }
    // Only the requests in flight at the stop may be fetched twice.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in fx.requests() {
        *counts.entry(r.path).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(p, n)| **n > 1 && p.starts_with("/book/")).collect();
    assert!(twice.len() <= cfg.concurrency, "{} pages fetched twice: {twice:?}", twice.len());
    assert!(fx.requests().len() > before);

    // The run finished, so the next one starts over from the seeds.
    let next = state.open_run("books", "test", Epoch::Next, false, WINDOW).unwrap();
    assert!(!next.resumed);
}

#[tokio::test]
async fn a_resumed_reload_run_fetches_every_request_it_stored() {
    // A reload task keeps its whole queue in memory (nothing is deduplicated, nothing spills):
    // resumed, it loads every waiting row, not one window of them.
    let fx = scripted(|_| {
        let links: String = (0..30).map(|i| format!("<a href=\"/p{i}.html\">p</a>")).collect();
        let mut script = vec![("/r.html", vec![Page::html(links)])];
        script.extend(numbered("/p", 30, Duration::from_millis(300)));
        script
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let spec = every_link("again", &fx.url("/r.html"), r#""reload":true"#);
    let task = Task::compile(spec.clone()).unwrap();
    let state = SqliteState::open(&db).unwrap();
    let run = state.open_run("again", "test", Epoch::Next, false, task.queue_window(WINDOW)).unwrap();
    let shutdown = CancellationToken::new();
    let (first, writer) = resume_stored(engine(), task, run, &db, (10, Duration::from_millis(50)), &shutdown);
    while fx.requests().iter().filter(|r| r.path.starts_with("/p")).count() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    first.join().await;
    drop(first);
    writer.close().await.unwrap();
    let waiting = state.open_run("again", "test", Epoch::Next, false, WINDOW).unwrap().waiting;
    assert!(waiting > WINDOW as u64, "{waiting} waiting: the stop came too late to matter");

    crawl(engine(), spec, &db).await;
    for i in 0..30 {
        assert!(fx.count(&format!("/p{i}.html")) >= 1, "/p{i}.html never fetched");
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let left: u32 = conn
        .query_row("SELECT COUNT(*) FROM crawler_frontier WHERE status IN (0, 5, 6)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_request_in_flight_is_marked_so_and_fetched_again_after_a_stop() {
    // One book on a slow host (2 s a page, robots.txt too) beside ten on a fast one: the slow
    // request is marked in flight while the site holds it.
    let slow = Fixture::start(Site { latency: Duration::from_secs(2), ..Site::default() }).await.unwrap();
    let cfg = EngineConfig { timeout: HumanDuration(Duration::from_secs(10)), ..engine() };
    let fast = Fixture::start(Site::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("f.db");
    let mut spec = books(&fast, 0..10);
    let slow_book = slow.url("/book/0.html");
    spec.seeds.insert(0, slow_book.clone());
    let state = SqliteState::open(&db).unwrap();
    let run = state.open_run("books", "test", Epoch::Next, false, WINDOW).unwrap();
    let shutdown = CancellationToken::new();
    let task = Task::compile(spec.clone()).unwrap();
    let (first, writer) =
        resume_stored(cfg.clone(), task, run, &db, (10, Duration::from_millis(50)), &shutdown);
    let statuses = || -> HashMap<String, u8> {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn.prepare("SELECT url, status FROM crawler_frontier").unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u8>(1)?))).unwrap();
        rows.map(Result::unwrap).collect()
    };
    let in_flight = PageStatus::InFlight as u8;
    // Marked once sent (after its host's robots.txt), with the next commit.
    crawler_fixture::wait::until("the slow request marked in flight", Duration::from_secs(10), || async {
        statuses().get(&slow_book) == Some(&in_flight)
    })
    .await;
    crawler_fixture::wait::until("the slow request at its site", Duration::from_secs(10), || async {
        slow.count("/book/0.html") == 1
    })
    .await;
    let now = statuses();
    assert_eq!(now.values().filter(|s| **s == in_flight).count(), 1, "{now:?}");
    assert_eq!(now.values().filter(|s| **s == PageStatus::Done as u8).count(), 10, "{now:?}");
    // Stopped while it is in flight (the site has it, its answer not sent yet): it stays marked
    // so, and the resumed run fetches it again.
    shutdown.cancel();
    first.join().await;
    drop(first);
    writer.close().await.unwrap();
    assert_eq!(statuses().get(&slow_book), Some(&in_flight));
    let resumed = state.open_run("books", "test", Epoch::Next, false, WINDOW).unwrap();
    assert_eq!((resumed.resumed, resumed.waiting, resumed.handled), (true, 1, 10));
    drop(resumed);
    let stats = crawl(cfg, spec, &db).await;
    assert_eq!((stats.pages, stats.items), (1, 1));
    assert_eq!(slow.count("/book/0.html"), 2);
    assert_eq!(statuses().get(&slow_book), Some(&(PageStatus::Done as u8)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_host_never_holds_the_slots_of_the_others() {
    // One slow host (1 s a page) on 127.0.1.1, five fast ones on 127.0.1.2-6.
    let slow_site = Site { books: 6, tags: 1, per_page: 6, latency: Duration::from_secs(1) };
    let listener = tokio::net::TcpListener::bind("127.0.1.1:0").await.unwrap();
    let slow = Fixture::start_on(slow_site, listener).await.unwrap();
    let mut fast = Vec::new();
    for i in 2..7 {
        let listener = tokio::net::TcpListener::bind(format!("127.0.1.{i}:0")).await.unwrap();
        fast.push(
            Fixture::start_on(Site { books: 30, tags: 2, per_page: 10, ..Site::default() }, listener)
                .await
                .unwrap(),
        );
    }
    let mut spec = task(&fast[0]);
    // The slow host's pages come first in the queue: with one request per host, a dispatcher
    // that took them in order would fill every slot with requests waiting for that host.
    spec.seeds = (0..6).map(|i| slow.url(&format!("/book/{i}.html"))).collect();
    spec.seeds.extend(fast.iter().map(|f| f.url("/index.html")));
    spec.rules[0].follow.retain(|f| f.select == "a.tag");
    let cfg = EngineConfig {
        concurrency: 4,
        per_host: 1,
        obey_robots: false,
        timeout: HumanDuration(Duration::from_secs(5)),
        ..engine()
    };
    let dir = tempfile::tempdir().unwrap();
    let stats = crawl(cfg, spec, &dir.path().join("m.db")).await;
    assert_eq!(stats.items, 5 * 30);
    let slow_log = slow.requests();
    assert_eq!(slow_log.len(), 6);
    assert!(slow.max_in_flight() <= 1);
    // Every fast host was crawled to the end while the slow one served its first pages.
    let third_slow = slow_log[2].at;
    for f in &fast {
        assert!(f.max_in_flight() <= 1);
        let last = f.requests().iter().map(|r| r.at).max().unwrap();
        assert!(
            last < third_slow,
            "a fast host waited for the slow one ({:?} after its 3rd page)",
            last - third_slow
        );
    }
}

/// A fixture on `ip` (a loopback address) with some paths scripted.
async fn scripted_on(ip: &str, site: Site, script: Vec<(&str, Vec<Page>)>) -> Fixture {
    start_scripted(site, tokio::net::TcpListener::bind(format!("{ip}:0")).await.unwrap(), script).await
}

/// A 429 asking to wait `secs`.
fn too_many(secs: u32) -> Page {
    Page { headers: vec![("retry-after", secs.to_string())], ..Page::status(429, "slow down") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_that_make_their_requests_wait_hold_no_slot_of_the_others() {
    // 127.0.1.7 answers its page with a 429 asking for 2 s, once; 127.0.1.8's robots.txt is
    // unavailable once (read again after 2 s); 127.0.1.9 serves 30 books. Two slots: the first
    // two requests are the waiting hosts'.
    let book = Page::html(Site::default().page("/book/0.html").body.iter().map(|b| *b as char).collect());
    let throttling =
        scripted_on("127.0.1.7", Site::default(), vec![("/slow.html", vec![too_many(2), book])]).await;
    let down = Page::status(503, "down");
    let unreadable = scripted_on(
        "127.0.1.8",
        Site::default(),
        // Three tries (the fetcher retries a 5xx twice), then read again later.
        vec![("/robots.txt", vec![down.clone(), down.clone(), down, Page::status(404, "none")])],
    )
    .await;
    let fast = Fixture::start_on(
        Site { books: 30, tags: 2, per_page: 10, ..Site::default() },
        tokio::net::TcpListener::bind("127.0.1.9:0").await.unwrap(),
    )
    .await
    .unwrap();
    let mut spec = task(&fast);
    spec.seeds = vec![throttling.url("/slow.html"), unreadable.url("/book/0.html"), fast.url("/index.html")];
    spec.rules[0].follow.retain(|f| f.select == "a.tag");
    let cfg = EngineConfig {
        concurrency: 2,
        per_host: 1,
        robots_retry: HumanDuration(Duration::from_secs(2)),
        ..engine()
    };
    let dir = tempfile::tempdir().unwrap();
    let stats = crawl(cfg, spec, &dir.path().join("w.db")).await;
    assert_eq!(stats.items, 30);
    let at = |fx: &Fixture, path: &str| -> Vec<std::time::Instant> {
        fx.requests().iter().filter(|r| r.path == path).map(|r| r.at).collect()
    };
    let (slow, robots) = (at(&throttling, "/slow.html"), at(&unreadable, "/robots.txt"));
    assert_eq!((slow.len(), robots.len()), (2, 4));
    assert!(slow[1] >= slow[0] + Duration::from_millis(1990), "retried before Retry-After");
    assert!(robots[3] >= robots[2] + Duration::from_millis(1990), "robots.txt read again too soon");
    // The fast host was crawled to the end while the other two made their requests wait.
    let last = fast.requests().iter().map(|r| r.at).max().unwrap();
    assert!(last < slow[1] && last < robots[3], "the fast host waited for the slots of the others");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_their_crawl_delay_turn_hold_no_slot_of_other_hosts() {
    // 127.0.1.10 asks for a second between requests and has four pages queued; 127.0.1.11
    // serves 30 books at 100 ms a page. Four slots: all four of the first host's requests are
    // taken at once (its pace is known only once its robots.txt is read).
    let delayed = scripted_on(
        "127.0.1.10",
        Site::default(),
        vec![("/robots.txt", vec![robots("User-agent: *\nCrawl-delay: 1\n")])],
    )
    .await;
    let busy = Fixture::start_on(
        Site { books: 30, tags: 2, per_page: 10, latency: Duration::from_millis(100) },
        tokio::net::TcpListener::bind("127.0.1.11:0").await.unwrap(),
    )
    .await
    .unwrap();
    let mut spec = task(&busy);
    spec.seeds = (0..4).map(|i| delayed.url(&format!("/book/{i}.html"))).collect();
    spec.seeds.push(busy.url("/index.html"));
    spec.rules[0].follow.retain(|f| f.select == "a.tag");
    let cfg = EngineConfig { concurrency: 4, per_host: 4, ..engine() };
    let dir = tempfile::tempdir().unwrap();
    let stats = crawl(cfg, spec, &dir.path().join("d.db")).await;
    assert_eq!(stats.items, 30);
    let turns: Vec<_> =
        delayed.requests().iter().filter(|r| r.path.starts_with("/book/")).map(|r| r.at).collect();
    assert_eq!(turns.len(), 4);
    assert!(turns.windows(2).all(|w| w[1] >= w[0] + Duration::from_millis(990)), "Crawl-delay kept");
    // The busy host was crawled on the free slots while the other's requests waited their
    // turns (on one slot, it took about 3.5 s).
    let last = busy.requests().iter().map(|r| r.at).max().unwrap();
    assert!(
        last < turns[2],
        "the busy host waited for the delayed host's turns ({:?} after its 3rd)",
        last - turns[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_holds_back_requests_already_taken_for_the_host() {
    // One request a third of a second (Crawl-delay): the first answers a 429 asking for 2 s
    // while three more of the host's requests are already taken, waiting their turns.
    let fx = scripted(|_| {
        vec![
            ("/robots.txt", vec![robots("User-agent: *\nCrawl-delay: 0.3\n")]),
            ("/slow.html", vec![too_many(2), Page::html("<p>fine</p>".into())]),
        ]
    })
    .await;
    let mut spec = task(&fx);
    spec.seeds = std::iter::once(fx.url("/slow.html"))
        .chain((0..3).map(|i| fx.url(&format!("/book/{i}.html"))))
        .collect();
    let cfg = EngineConfig { concurrency: 4, per_host: 4, ..engine() };
    let dir = tempfile::tempdir().unwrap();
    crawl(cfg, spec, &dir.path().join("h.db")).await;
    let log = fx.requests();
    let throttled = log.iter().find(|r| r.path == "/slow.html").unwrap().at;
    let during: Vec<_> = log
        .iter()
        .filter(|r| {
            r.path != "/robots.txt"
                && r.at > throttled + Duration::from_millis(50)
                && r.at < throttled + Duration::from_millis(1990)
        })
        .map(|r| r.path.as_str())
        .collect();
    // Before, the requests whose turn came went out during the Retry-After.
    assert!(during.is_empty(), "sent while the host asked to wait: {during:?}");
    assert_eq!(log.iter().filter(|r| r.path.starts_with("/book/")).count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_robots_txt_disallows_spend_no_page_of_max_pages() {
    let fx = scripted(|_| vec![("/robots.txt", vec![robots("User-agent: *\nDisallow: /private/\n")])]).await;
    let mut spec = task(&fx);
    // Ten disallowed pages first, then ten books; a budget of ten pages.
    spec.seeds = (0..10)
        .map(|i| fx.url(&format!("/private/p{i}.html")))
        .chain((0..10).map(|i| fx.url(&format!("/book/{i}.html"))))
        .collect();
    spec.max_pages = 10;
    let cfg = EngineConfig { concurrency: 1, per_host: 1, ..engine() };
    let dir = tempfile::tempdir().unwrap();
    let stats = crawl(cfg, spec, &dir.path().join("m.db")).await;
    // Before, the disallowed pages spent the budget and no book was fetched.
    assert_eq!(fx.requests().iter().filter(|r| r.path.starts_with("/private/")).count(), 0);
    assert_eq!(fx.requests().iter().filter(|r| r.path.starts_with("/book/")).count(), 10);
    assert_eq!(stats.robots_blocked, 10);
    // Stored as blocked, so a resumed run does not count them as sent either.
    let conn = rusqlite::Connection::open(dir.path().join("m.db")).unwrap();
    let blocked: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM crawler_frontier WHERE url LIKE '%/private/%' AND status = ?1",
            [PageStatus::Blocked as u8],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(blocked, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_robots_txt_disallows_take_no_turn_under_the_limits_nor_the_pace() {
    // Books and disallowed pages alternate. Each disallowed one took a full interval of the
    // host's Crawl-delay, or of the task's limit, with nothing sent: half the links blocked,
    // half the speed.
    let fx = scripted(|_| {
        vec![("/robots.txt", vec![robots("User-agent: *\nCrawl-delay: 0.5\nDisallow: /private/\n")])]
    })
    .await;
    let alternate = |fx: &Fixture| -> Vec<String> {
        (0..5)
            .flat_map(|i| [fx.url(&format!("/book/{i}.html")), fx.url(&format!("/private/{i}.html"))])
            .collect()
    };
    let cfg = EngineConfig { concurrency: 1, per_host: 1, ..engine() };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = task(&fx);
    spec.seeds = alternate(&fx);
    crawl(cfg.clone(), spec, &dir.path().join("a.db")).await;
    let books = starts(&fx, "/book/");
    assert_eq!(books.len(), 5);
    // Four turns of 0.5 s between five books; nine before (the blocked ones' too).
    let span = books[4].duration_since(books[0]);
    assert!(span < Duration::from_millis(3300), "five books over {span:?}");

    // The same under a limit of 2 a second, without a Crawl-delay.
    let fx = scripted(|_| vec![("/robots.txt", vec![robots("User-agent: *\nDisallow: /private/\n")])]).await;
    let mut spec = task(&fx);
    spec.seeds = alternate(&fx);
    spec.limits = serde_json::from_str(r#"[{"events":2,"per":"1s"}]"#).unwrap();
    crawl(cfg, spec, &dir.path().join("b.db")).await;
    let books = starts(&fx, "/book/");
    assert_eq!(books.len(), 5);
    let span = books[4].duration_since(books[0]);
    assert!(span < Duration::from_millis(3300), "five books over {span:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_the_last_try_still_holds_back_the_host() {
    // No retries: the 429 ends its request, and the host's other requests wait out its
    // Retry-After all the same.
    let fx = scripted(|_| vec![("/slow.html", vec![too_many(1)])]).await;
    let mut spec = task(&fx);
    spec.seeds = std::iter::once(fx.url("/slow.html"))
        .chain((0..5).map(|i| fx.url(&format!("/book/{i}.html"))))
        .collect();
    let cfg = EngineConfig { concurrency: 1, per_host: 1, retries: 0, obey_robots: false, ..engine() };
    let dir = tempfile::tempdir().unwrap();
    let stats = crawl(cfg, spec, &dir.path().join("l.db")).await;
    assert_eq!(stats.errors, 1);
    let log = fx.requests();
    assert_eq!(log.len(), 6);
    let throttled = log.iter().find(|r| r.path == "/slow.html").unwrap().at;
    let next = log.iter().filter(|r| r.path.starts_with("/book/")).map(|r| r.at).min().unwrap();
    assert!(
        next >= throttled + Duration::from_millis(990),
        "sent {:?} after a 429 asking for 1 s",
        next - throttled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_before_its_seeds_were_stored_starts_from_them() {
    // Two copies of the site (it answers some paths differently the second time).
    let (fx, first) =
        (Fixture::start(Site::default()).await.unwrap(), Fixture::start(Site::default()).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (whole, db) = (dir.path().join("whole.db"), dir.path().join("k.db"));
    let uninterrupted = crawl(engine(), task(&first), &whole).await;
    // The run opened, then the process died before the writer stored the seeds' commit.
    let opened =
        SqliteState::open(&db).unwrap().open_run("books", "test", Epoch::Next, false, WINDOW).unwrap();
    assert!(!opened.resumed);
    let again = crawl(engine(), task(&fx), &db).await;
    assert!(uninterrupted.items > 0);
    assert_eq!((again.pages, again.items), (uninterrupted.pages, uninterrupted.items));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_whose_run_is_taken_over_stops_and_commits_nothing_more() {
    // Slow enough (about 4 s for the crawl) that the takeover comes long before its end, even
    // when opening the run waits for the writer on a loaded machine.
    let site = Site { books: 400, tags: 2, per_page: 20, latency: Duration::from_millis(40) };
    let fx = Fixture::start(site).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("f.db");
    let mut spec = task(&fx);
    spec.max_depth = 1000;
    spec.rules[0].follow.retain(|f| f.select == "a.tag");
    let state = SqliteState::open(&db).unwrap();
    let writer =
        SinkWriter::spawn(vec![Box::new(SqliteSink::open(&db).unwrap())], 5, Duration::from_millis(20));
    let old_run = state.open_run("books", "test", Epoch::Next, false, WINDOW).unwrap();
    let fetcher = Arc::new(Fetcher::new(engine()).unwrap());
    let old = Crawl::resume(
        Task::compile(spec.clone()).unwrap(),
        old_run,
        fetcher,
        writer.sender(),
        &CancellationToken::new(),
    );
    crawler_fixture::wait::until("50 items", Duration::from_secs(60), || async { old.stats().items >= 50 })
        .await;
    // Another owner opens the run (a newer epoch): the old crawl's next commit is refused.
    let new_run = state.open_run("books", "test", Epoch::Next, false, WINDOW).unwrap();
    assert!(new_run.resumed);
    let stopped =
        tokio::time::timeout(Duration::from_secs(5), old.join()).await.expect("the fenced crawl stops");
    assert!(old.is_fenced());
    assert!(stopped.items < 400);
    let rows_then = rows(&db).len();
    drop(old);
    writer.close().await.unwrap();
    // Nothing the old owner handled after the takeover was stored.
    assert_eq!(rows(&db).len(), rows_then);
    // The new owner finishes the task.
    crawl(engine(), spec, &db).await;
    assert_eq!(rows(&db).len(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_holds_back_the_whole_host() {
    let site = Site { books: 40, tags: 1, per_page: 40, latency: Duration::from_millis(20) };
    let fx = Fixture::start(site).await.unwrap();
    let mut spec = task(&fx);
    // The 429 page first, then forty books, all seeds of one host.
    spec.seeds = std::iter::once(fx.url("/busy.html"))
        .chain((0..40).map(|i| fx.url(&format!("/book/{i}.html"))))
        .collect();
    let cfg = EngineConfig { concurrency: 4, per_host: 4, obey_robots: false, ..engine() };
    let dir = tempfile::tempdir().unwrap();
    let stats = crawl(cfg, spec, &dir.path().join("r.db")).await;
    assert_eq!(stats.errors, 0);
    let log = fx.requests();
    let busy: Vec<_> = log.iter().filter(|r| r.path == "/busy.html").map(|r| r.at).collect();
    assert_eq!(busy.len(), 2);
    // Requests already on their way when the 429 came may land just after it; then nothing
    // until the host's Retry-After (1 s) has passed.
    let during: Vec<_> = log
        .iter()
        .filter(|r| {
            r.at > busy[0] + Duration::from_millis(300) && r.at < busy[0] + Duration::from_millis(990)
        })
        .map(|r| r.path.as_str())
        .collect();
    assert!(during.is_empty(), "sent while the host asked us to wait: {during:?}");
    assert!(busy[1] >= busy[0] + Duration::from_millis(990), "retried before Retry-After");
    assert_eq!(log.len(), 41 + 1);
}

#[tokio::test]
async fn requests_go_through_the_proxies_round_robin() {
    // Two fixture servers stand in for HTTP proxies: a proxy receives the absolute URL and
    // answers it; the origin itself is never contacted.
    let (a, b) =
        (Fixture::start(Site::default()).await.unwrap(), Fixture::start(Site::default()).await.unwrap());
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut spec: TaskSpec = serde_json::from_str(&format!(
        r#"{{"name":"p","seeds":["http://{origin}/tag/0/page-1.html"],"rule":[{{"name":"tag","follow":[{{"select":"a.book","rule":"book"}}]}},
           {{"name":"book","table":"book","fields":{{"title":"h1.title"}}}}]}}"#
    ))
    .unwrap();
    spec.max_depth = 1;
    let cfg =
        EngineConfig { proxies: vec![a.url(""), b.url("")], obey_robots: false, concurrency: 1, ..engine() };
    let stats = crawl(cfg, spec, &dir.path().join("c.db")).await;
    assert_eq!(stats.errors, 0);
    assert_eq!(stats.items, 5);
    let (na, nb) = (a.requests().len(), b.requests().len());
    assert_eq!(na + nb, 6);
    assert!(na == 3 && nb == 3, "round robin: {na} and {nb}");
    assert!(a.requests().iter().chain(&b.requests()).all(|r| r.host == origin.to_string()));
}

// --- The real web: robots.txt by the RFC, sitemaps, noscript, entities, hostile pages. ---

/// Serves the site with some paths scripted; `script` gets the server's base URL.
async fn scripted(script: impl FnOnce(&str) -> Vec<(&'static str, Vec<Page>)>) -> Fixture {
    scripted_site(Site::default(), script).await
}

async fn scripted_site(site: Site, script: impl FnOnce(&str) -> Vec<(&'static str, Vec<Page>)>) -> Fixture {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    start_scripted(site, listener, script(&base)).await
}

/// The fixture on `listener` with the paths of `script` scripted.
async fn start_scripted(
    site: Site,
    listener: tokio::net::TcpListener,
    script: Vec<(&str, Vec<Page>)>,
) -> Fixture {
    let script: Script = script.into_iter().map(|(p, pages)| (p.to_owned(), pages)).collect();
    Fixture::start_scripted(site, listener, script).await.unwrap()
}

/// A task named `name` of one rule that follows every link from `seed`; `keys`: more of the
/// task's JSON keys.
fn every_link(name: &str, seed: &str, keys: &str) -> TaskSpec {
    serde_json::from_str(&format!(
        r#"{{"name":"{name}","seeds":["{seed}"],{keys},"rule":[{{"name":"page","follow":[{{"select":"a","rule":"page"}}]}}]}}"#
    ))
    .unwrap()
}

/// Scripted pages `{prefix}0.html` to `{prefix}{n-1}.html`, each answering after `delay`.
fn numbered(prefix: &str, n: usize, delay: Duration) -> Vec<(&'static str, Vec<Page>)> {
    (0..n)
        .map(|i| {
            // The script lives as long as the test's server.
            let path: &'static str = Box::leak(format!("{prefix}{i}.html").into_boxed_str());
            (path, vec![Page { delay, ..Page::html("page".into()) }])
        })
        .collect()
}

fn robots(body: &str) -> Page {
    Page::body("text/plain", body)
}

#[tokio::test]
async fn a_robots_txt_longer_than_is_read_has_its_cut_line_dropped() {
    // The first 500 KiB (what is parsed) end inside `Disallow: /private/`, cut to
    // `Disallow: /`: taken for a rule before (the whole host disallowed, no book fetched), as
    // the fetch stopped at exactly the bytes parsed and the parser could not know of the cut.
    const PARSED: usize = 500 * 1024;
    let mut txt = String::from("User-agent: *\n");
    txt.push_str(&"\n".repeat(PARSED - "Disallow: /".len() - txt.len()));
    txt.push_str("Disallow: /private/\n");
    txt.push_str(&"\n".repeat(1000));
    let fx = scripted(|_| vec![("/robots.txt", vec![robots(&txt)])]).await;
    let dir = tempfile::tempdir().unwrap();
    let stats = crawl(engine(), books(&fx, 0..4), &dir.path().join("c.db")).await;
    assert_eq!((stats.items, stats.robots_blocked), (4, 0));
}

/// A task of book pages given as seeds, under the book rule, and nothing else.
fn books(fx: &Fixture, ids: std::ops::Range<u32>) -> TaskSpec {
    let mut spec = task(fx);
    seeds_under(&mut spec, "book", ids.map(|i| fx.url(&format!("/book/{i}.html"))).collect());
    spec.max_depth = 0;
    spec
}

fn starts(fx: &Fixture, prefix: &str) -> Vec<std::time::Instant> {
    fx.requests().into_iter().filter(|r| r.path.starts_with(prefix)).map(|r| r.at).collect()
}

#[tokio::test]
async fn a_seed_redirected_out_of_scope_is_the_crawls_first_problem() {
    // `http://example.com/` moving to `https://www.example.com/` left a crawl of one answer and
    // a debug line: it now names the host to allow.
    let fx = scripted(|base| {
        let port = base.rsplit(':').next().unwrap().to_owned();
        vec![("/start", vec![Page::redirect(301, &format!("http://localhost:{port}/index.html"))])]
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let mut spec = task(&fx);
    spec.seeds = vec![fx.url("/start")];
    let task = Task::compile(spec).unwrap();
    let run = SqliteState::open(&db).unwrap().open_run(task.name(), "test", Epoch::Next, false, 100).unwrap();
    let (crawl, writer) =
        resume_stored(engine(), task, run, &db, (10, Duration::from_millis(50)), &CancellationToken::new());
    let stats = crawl.join().await;
    let problem = crawl.first_problem().unwrap_or_default();
    drop(crawl);
    writer.close().await.unwrap();
    assert_eq!((stats.pages, stats.items), (1, 0));
    assert!(problem.contains("not in allow_hosts") && problem.contains("\"localhost\""), "{problem}");
    assert_eq!(fx.count("/index.html"), 0);
}

#[tokio::test]
async fn a_sitemap_redirected_out_of_scope_is_an_error_naming_the_host() {
    // A crawl of sitemaps alone whose sitemap moved to another host ended with nothing, no
    // error and no word of why.
    let fx = scripted(|base| {
        let port = base.rsplit(':').next().unwrap().to_owned();
        vec![(
            "/maps/index.xml",
            vec![Page::redirect(301, &format!("http://localhost:{port}/maps/index.xml"))],
        )]
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let mut spec = task(&fx);
    spec.seeds = Vec::new();
    spec.sitemaps = vec![fx.url("/maps/index.xml")];
    let task = Task::compile(spec).unwrap();
    let run = SqliteState::open(&db).unwrap().open_run(task.name(), "test", Epoch::Next, false, 100).unwrap();
    let (crawl, writer) =
        resume_stored(engine(), task, run, &db, (10, Duration::from_millis(50)), &CancellationToken::new());
    let stats = crawl.join().await;
    let problem = crawl.first_problem().unwrap_or_default();
    drop(crawl);
    writer.close().await.unwrap();
    assert_eq!((stats.pages, stats.items, stats.errors), (1, 0, 1));
    assert!(problem.contains("not in allow_hosts") && problem.contains("\"localhost\""), "{problem}");
}

#[tokio::test]
async fn sitemaps_from_an_index_through_gzip_and_from_robots_txt() {
    let fx = scripted(|base| {
        let urls: String = (0..10)
            .map(|i| format!("<url><loc>{base}/book/{i}.html</loc><image:image><image:loc>{base}/pic{i}.png</image:loc></image:image></url>"))
            .collect();
        let urlset = format!(
            "<?xml version=\"1.0\"?><urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\" \
             xmlns:image=\"http://www.google.com/schemas/sitemap-image/1.1\">{urls}\
             <url><loc>http://elsewhere.invalid/x.html</loc></url></urlset>"
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, urlset.as_bytes()).unwrap();
        let index = format!(
            "<sitemapindex><sitemap><loc>{base}/maps/books.xml.gz</loc></sitemap>\
             <sitemap><loc>{base}/maps/missing.xml</loc></sitemap>\
             <sitemap><loc>{base}/maps/more.txt</loc></sitemap></sitemapindex>"
        );
        // The protocol's text form: one URL per line.
        let text = format!("{base}/book/10.html\n\n{base}/book/11.html\n");
        vec![
            ("/robots.txt", vec![robots("User-agent: *\nDisallow: /private/\nSitemap: /maps/index.xml\n")]),
            ("/maps/index.xml", vec![Page::body("application/xml", index)]),
            ("/maps/books.xml.gz", vec![Page::body("application/octet-stream", gz.finish().unwrap())]),
            ("/maps/more.txt", vec![Page::body("text/plain", text)]),
        ]
    })
    .await;
    let dir = tempfile::tempdir().unwrap();

    // Sitemaps only, under a named rule: the twelve books and nothing else.
    let mut spec = task(&fx);
    spec.seeds.clear();
    spec.sitemaps = vec![fx.url("/maps/index.xml")];
    spec.sitemap_rule = Some("book".into());
    spec.max_depth = 0;
    let stats = crawl(engine(), spec, &dir.path().join("a.db")).await;
    let rows = rows(&dir.path().join("a.db"));
    assert_eq!(rows.len(), 12, "{:?}", rows.keys().collect::<Vec<_>>());
    for i in 0..12 {
        assert_eq!(rows[&fx.url(&format!("/book/{i}.html"))].1, Some(book_title(i)));
        assert_eq!(fx.count(&format!("/book/{i}.html")), 1);
    }
    assert_eq!(fx.count("/maps/index.xml"), 1);
    assert_eq!(fx.count("/maps/books.xml.gz"), 1);
    assert_eq!(fx.count("/pic0.png"), 0);
    // The missing sitemap is the one error.
    assert_eq!(stats.errors, 1);

    // From the seed's robots.txt, under the first rule (the index rule: no items, but fetched).
    let mut spec = task(&fx);
    spec.name = "from_robots".into();
    spec.sitemaps_from_robots = true;
    spec.max_depth = 0;
    let before = fx.count("/book/3.html");
    crawl(engine(), spec, &dir.path().join("b.db")).await;
    assert_eq!(fx.count("/book/3.html"), before + 1);
    assert_eq!(fx.count("/maps/index.xml"), 2);
}

#[tokio::test]
async fn crawl_delay_spaces_the_requests_to_a_host_and_is_capped() {
    // Pages take 100 ms: without a delay per_host (4) of them would be in flight at once.
    let slow = Site { latency: Duration::from_millis(100), ..Site::default() };
    let delayed = |secs: &str| {
        let body = format!("User-agent: *\nCrawl-delay: {secs}\n");
        move |_: &str| vec![("/robots.txt", vec![robots(&body)])]
    };
    let fx = scripted_site(slow, delayed("0.3")).await;
    let dir = tempfile::tempdir().unwrap();
    crawl(engine(), books(&fx, 0..6), &dir.path().join("a.db")).await;
    let at = starts(&fx, "/book/");
    assert_eq!(at.len(), 6);
    for pair in at.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(gap >= Duration::from_millis(290), "requests {gap:?} apart under Crawl-delay: 0.3");
    }
    assert_eq!(fx.max_in_flight(), 1);

    // Switched off: several at once.
    let fx = scripted_site(slow, delayed("0.3")).await;
    let cfg = EngineConfig { obey_crawl_delay: false, ..engine() };
    crawl(cfg, books(&fx, 0..6), &dir.path().join("b.db")).await;
    assert!(fx.max_in_flight() > 1, "obey_crawl_delay = false still paced the host");

    // Capped: a Crawl-delay of an hour waits max_crawl_delay.
    let fx = scripted(delayed("3600")).await;
    let cfg = EngineConfig { max_crawl_delay: HumanDuration(Duration::from_millis(200)), ..engine() };
    tokio::time::timeout(Duration::from_secs(60), crawl(cfg, books(&fx, 0..4), &dir.path().join("c.db")))
        .await
        .expect("a Crawl-delay of an hour was not cut to max_crawl_delay");
    let at = starts(&fx, "/book/");
    for pair in at.windows(2) {
        assert!(pair[1].duration_since(pair[0]) >= Duration::from_millis(190));
    }
}

#[tokio::test]
async fn an_unavailable_robots_txt_holds_the_host_and_is_read_again() {
    // 503 twice, then readable: the host waits, nothing is lost, the rules apply.
    let fx = scripted(|_| {
        let unavailable = Page::status(503, "down");
        vec![(
            "/robots.txt",
            vec![unavailable.clone(), unavailable, robots("User-agent: *\nDisallow: /book/3.html\n")],
        )]
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig { retries: 0, ..engine() };
    let stats = crawl(cfg.clone(), books(&fx, 0..5), &dir.path().join("a.db")).await;
    assert_eq!(fx.count("/robots.txt"), 3);
    let robots_at = starts(&fx, "/robots.txt");
    let first_book = starts(&fx, "/book/")[0];
    assert!(first_book > robots_at[2], "a page was fetched before robots.txt could be read");
    assert!(robots_at[2].duration_since(robots_at[0]) >= Duration::from_millis(390));
    assert_eq!((stats.items, stats.robots_blocked), (4, 1));
    assert_eq!(fx.count("/book/3.html"), 0);

    // Missing (4xx): everything allowed, read once.
    let fx = scripted(|_| vec![("/robots.txt", vec![Page::status(404, "none")])]).await;
    let stats = crawl(cfg.clone(), books(&fx, 0..5), &dir.path().join("c.db")).await;
    assert_eq!(fx.count("/robots.txt"), 1);
    assert_eq!((stats.items, stats.robots_blocked), (5, 0));

    // Never readable: after three reads the host is disallowed and its URLs skipped.
    let fx = scripted(|_| vec![("/robots.txt", vec![Page::status(500, "broken")])]).await;
    let stats = crawl(cfg, books(&fx, 0..5), &dir.path().join("b.db")).await;
    assert_eq!(fx.count("/robots.txt"), 3);
    assert_eq!(starts(&fx, "/book/").len(), 0);
    assert_eq!((stats.items, stats.robots_blocked), (0, 5));
}

#[tokio::test]
async fn robots_txt_redirects_are_followed_and_a_huge_one_is_read_in_part() {
    let fx = scripted(|_| {
        let mut big = "User-agent: *\nDisallow: /book/1.html\n".to_owned();
        while big.len() < 2 << 20 {
            big.push_str("# a very long robots.txt, longer than max_body, read up to 500 KiB\n");
        }
        big.push_str("Disallow: /book/2.html\n");
        vec![
            // Five redirects, as many as RFC 9309 asks a crawler to follow.
            ("/robots.txt", vec![Page::redirect(301, "/r1")]),
            ("/r1", vec![Page::redirect(302, "/r2")]),
            ("/r2", vec![Page::redirect(307, "/r3")]),
            ("/r3", vec![Page::redirect(308, "/r4")]),
            ("/r4", vec![Page::redirect(301, "/r5")]),
            ("/r5", vec![robots(&big)]),
        ]
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let stats = crawl(engine(), books(&fx, 0..4), &dir.path().join("a.db")).await;
    assert_eq!(fx.count("/book/1.html"), 0);
    assert_eq!(fx.count("/book/2.html"), 1, "a rule past 500 KiB applied");
    assert_eq!((stats.items, stats.robots_blocked, stats.errors), (3, 1, 0));
}

#[tokio::test]
async fn noscript_markup_and_entities_are_read_and_a_deep_page_is_cut() {
    let fx = scripted(|_| {
        let chapter = |n: u32| {
            Page::html(format!("<html><h1 class=\"title\">Chapter {n} &aring;&mu;&oelig;&#150;</h1></html>"))
        };
        vec![
            (
                "/book.html",
                vec![Page::html(
                    "<html><head><script>document.write('<a href=\"/js.html\">js</a>')</script></head>\
                 <body><h1 class=\"title\">Book</h1><noscript><iframe src=\"toc.html\"></iframe></noscript>\
                 <a href=\"deep.html\">deep</a></body></html>"
                        .into(),
                )],
            ),
            (
                "/toc.html",
                vec![Page::html(
                    "<ol><li><a href=\"ch1.html\">1</a></li><li><a href=\"ch2.html\">2</a></li></ol>".into(),
                )],
            ),
            ("/ch1.html", vec![chapter(1)]),
            ("/ch2.html", vec![chapter(2)]),
            (
                "/deep.html",
                vec![Page::html(format!(
                    "<a href=\"ch1.html\">again</a>{}<a href=\"/never.html\">too deep</a>",
                    "<div>".repeat(100_000)
                ))],
            ),
        ]
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let spec: TaskSpec = serde_json::from_str(&format!(
        r#"{{"name":"docs","seeds":["{}"],"rule":[{{"name":"page","table":"book",
             "fields":{{"title":"h1.title","author":"span.author","price":"span.price","rating":"span.rating"}},
             "follow":[{{"select":"a","rule":"page"}},{{"select":"iframe","attr":"src","rule":"page"}}]}}]}}"#,
        fx.url("/book.html")
    ))
    .unwrap();
    let stats = crawl(engine(), spec, &dir.path().join("a.db")).await;
    let rows = rows(&dir.path().join("a.db"));
    assert_eq!(rows[&fx.url("/ch1.html")].1.as_deref(), Some("Chapter 1 åμœ–"));
    assert_eq!(rows[&fx.url("/ch2.html")].1.as_deref(), Some("Chapter 2 åμœ–"));
    for (path, n) in [("/toc.html", 1), ("/deep.html", 1), ("/js.html", 0), ("/never.html", 0)] {
        assert_eq!(fx.count(path), n, "{path}");
    }
    assert_eq!(stats.errors, 0);
}

#[tokio::test]
async fn a_spilled_page_found_again_closer_to_a_seed_is_fetched_at_that_depth() {
    // /c queues /c2 and 20 slow fillers at depth 2 (most spilled: the window is 8); /c2 finds
    // /x at depth 3 (spilled behind them). /slow (depth 1) answers later and links /x too: at
    // depth 2, where /x's link to /y (depth 3) is within max_depth. The fillers keep /x from
    // being fetched before /slow answers.
    let fx = scripted(|_| {
        let fillers: String = (0..20).map(|i| format!("<a href=\"/f{i}.html\">f</a>")).collect();
        let mut script = vec![
            ("/s.html", vec![Page::html("<a href=\"/slow.html\">s</a><a href=\"/c.html\">c</a>".into())]),
            (
                "/slow.html",
                vec![Page {
                    delay: Duration::from_millis(500),
                    ..Page::html("<a href=\"/x.html\">x</a>".into())
                }],
            ),
            ("/c.html", vec![Page::html(format!("<a href=\"/c2.html\">c2</a>{fillers}"))]),
            ("/c2.html", vec![Page::html("<a href=\"/x.html\">x</a>".into())]),
            ("/x.html", vec![Page::html("<a href=\"/y.html\">y</a>".into())]),
            ("/y.html", vec![Page::html("y".into())]),
        ];
        script.extend(numbered("/f", 20, Duration::from_millis(300)));
        script
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let spec = every_link("near", &fx.url("/s.html"), r#""max_depth":3"#);
    let stats = crawl(engine(), spec, &db).await;
    assert_eq!(stats.errors, 0);
    assert_eq!((fx.count("/x.html"), fx.count("/y.html")), (1, 1), "y is within reach through /slow");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let x: Vec<(u32, u8)> = conn
        .prepare("SELECT depth, status FROM crawler_frontier WHERE url LIKE '%/x.html' ORDER BY depth")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(x, [(2, PageStatus::Done as u8), (3, PageStatus::Superseded as u8)]);
    let waiting: u32 = conn
        .query_row("SELECT COUNT(*) FROM crawler_frontier WHERE status IN (0, 5, 6)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(waiting, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_answers_429_is_paced_to_its_rate() {
    // 4 requests a second allowed, 4 in flight per host: unpaced, most requests would meet a
    // full window and be answered 429.
    let site = Site { books: 24, tags: 1, per_page: 24, latency: Duration::from_millis(10) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fx = Fixture::start_rate_limited(site, listener, 4).await.unwrap();
    let cfg = EngineConfig { concurrency: 8, per_host: 4, obey_robots: false, retries: 5, ..engine() };
    let dir = tempfile::tempdir().unwrap();
    let stats = crawl(cfg, books(&fx, 0..24), &dir.path().join("p.db")).await;
    assert_eq!((stats.items, stats.errors), (24, 0));
    let log = fx.requests();
    let throttled = log.len() - 24;
    println!("429s: {throttled} for 24 pages");
    // The first window's extra requests, and a few more while the pace is learned.
    assert!(throttled <= 8, "{throttled} requests answered 429");
    // Paced: no second of the crawl saw more than the allowed 4 starts after the learning.
    let first_ok = log.iter().position(|r| r.at > log[0].at + Duration::from_secs(3)).unwrap_or(log.len());
    for (i, r) in log.iter().enumerate().skip(first_ok) {
        let in_second = log[i..].iter().take_while(|x| x.at < r.at + Duration::from_secs(1)).count();
        assert!(in_second <= 5, "{in_second} requests within a second after the pace was learned");
    }
}

#[tokio::test]
async fn a_drain_does_not_wait_for_a_robots_txt_read_again_later() {
    // robots.txt is unavailable (three tries), to be read again 30 s later.
    let down = Page::status(503, "down");
    let fx = scripted(|_| {
        vec![("/robots.txt", vec![down.clone(), down.clone(), down, Page::status(404, "none")])]
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let cfg = EngineConfig { robots_retry: HumanDuration(Duration::from_secs(30)), ..engine() };
    let spec = every_link("r", &fx.url("/index.html"), r#""max_depth":0"#);
    let run = SqliteState::open(&db).unwrap().open_run("r", "test", Epoch::Next, false, WINDOW).unwrap();
    let task = Task::compile(spec).unwrap();
    let (crawl, writer) =
        resume_stored(cfg, task, run, &db, (10, Duration::from_millis(20)), &CancellationToken::new());
    crawler_fixture::wait::until("robots.txt unavailable", Duration::from_secs(10), || async {
        fx.count("/robots.txt") == 3
    })
    .await;
    let drained = std::time::Instant::now();
    crawl.drain();
    crawl.join().await;
    println!("drained in {:?}", drained.elapsed());
    // It waited the whole 30 s before (the worker's stop gives up after 5 s and abandons all).
    assert!(drained.elapsed() < Duration::from_secs(5), "the drain waited for robots.txt");
    drop(crawl);
    writer.close().await.unwrap();
    assert_eq!(fx.count("/index.html"), 0);
}

#[tokio::test]
async fn a_draining_crawl_leaves_a_retry_to_the_next_run() {
    // The seed answers 503 with `Retry-After: 3` once, then the page.
    let mut busy = Page::status(503, "busy");
    busy.headers.push(("retry-after", "3".into()));
    let fx = scripted(|_| vec![("/flaky.html", vec![busy, Page::html("<p>fine</p>".into())])]).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let cfg = EngineConfig { obey_robots: false, ..engine() };
    let spec = every_link("flaky", &fx.url("/flaky.html"), r#""max_depth":0"#);
    let state = SqliteState::open(&db).unwrap();
    let run = state.open_run("flaky", "test", Epoch::Next, false, WINDOW).unwrap();
    let task = Task::compile(spec.clone()).unwrap();
    let (first, writer) = resume_stored(
        cfg.clone(),
        task,
        run,
        &db,
        (10, Duration::from_millis(20)),
        &CancellationToken::new(),
    );
    crawler_fixture::wait::until("the 503", Duration::from_secs(10), || async {
        fx.count("/flaky.html") == 1
    })
    .await;
    // Drained while the retry waits out the `Retry-After`: the drain ends without it.
    let drained = std::time::Instant::now();
    first.drain();
    first.join().await;
    let took = drained.elapsed();
    drop(first);
    writer.close().await.unwrap();
    println!("drained in {took:?}");
    assert!(took < Duration::from_secs(2), "the drain waited for the retry: {took:?}");
    assert_eq!(fx.count("/flaky.html"), 1, "no retry sent while draining");
    // The request still waits: the next run fetches it and ends.
    let next = state.open_run("flaky", "test", Epoch::Next, false, WINDOW).unwrap();
    assert!(next.resumed);
    assert_eq!(next.waiting, 1);
    let stats = crawl(cfg, spec, &db).await;
    assert_eq!((stats.pages, stats.errors), (1, 0));
    assert_eq!(fx.count("/flaky.html"), 2);
}
