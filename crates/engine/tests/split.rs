//! One run split across two owners by host partition, against a real MariaDB and twelve sites
//! on 127.0.1.x whose indexes link to each other (one seed reaches them all, so URLs cross
//! from one owner to the other through the shared inbox): every page fetched once, every item
//! stored once, per-host concurrency within the limit at the sites, the run finished by the
//! seeds' owner. Then a handover: a partition released by its owner moves with zero refetch,
//! a partition taken from an owner that did not release it fences that owner's commits. And
//! the run's `max_pages` budget, drawn from by both owners, holds for the two together.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crawler_engine::{
    partition_of, Commit, Crawl, EngineConfig, Fetcher, HumanDuration, MysqlSink, MysqlState, PartsOpen,
    RobotsRead, RunHandle, Sink, SinkWriter, Split, StateStore, Task, TaskSpec,
};
use crawler_fixture::mariadb::MariaDb;
use crawler_fixture::{Fixture, Site};
use tokio_util::sync::CancellationToken;

const HOSTS: u8 = 12;
const PARTS: u32 = 8;
const PER_HOST: usize = 2;

fn engine() -> EngineConfig {
    EngineConfig {
        queue_window: 8,
        concurrency: 8,
        per_host: PER_HOST,
        retries: 1,
        backoff: HumanDuration(Duration::from_millis(20)),
        timeout: HumanDuration(Duration::from_secs(5)),
        ..EngineConfig::default()
    }
}

fn site() -> Site {
    Site { books: 30, tags: 2, per_page: 10, latency: Duration::from_millis(5) }
}

/// The task: one seed, every site in scope.
fn spec(sites: &[Fixture]) -> TaskSpec {
    let seed = sites[0].url("/index.html");
    let hosts: Vec<String> = sites.iter().map(|s| format!("\"{}\"", s.addr().ip())).collect();
    let hosts = hosts.join(",");
    let json = format!(
        r#"{{"name":"books","seeds":["{seed}"],"allow_hosts":[{hosts}],"max_depth":100,"partitions":{PARTS},"rule":[
          {{"name":"index","follow":[{{"select":"a.tag","rule":"tag"}},{{"select":"a.host","rule":"index"}}]}},
          {{"name":"tag","follow":[{{"select":"a.book","rule":"book"}},{{"select":"a.next","rule":"tag"}}]}},
          {{"name":"book","table":"book","fields":{{"title":"h1.title"}},"follow":[{{"select":"a.book","rule":"book"}}]}}]}}"#
    );
    serde_json::from_str(&json).unwrap()
}

/// One owner of a share: its writer and crawl.
struct Share {
    crawl: Crawl,
    writer: SinkWriter,
}

impl Share {
    /// Waits for the writer to store everything (the crawl's handle holds a sender).
    async fn close(self) {
        drop(self.crawl);
        self.writer.close().await.unwrap();
    }
}

/// Opens `parts` (with `epoch`) for `owner` and starts its share; `None` when a partition is
/// busy.
fn open(
    state: &MysqlState,
    owner: &str,
    parts: &[u32],
    epoch: i64,
    gone: bool,
    force: bool,
) -> Option<crawler_engine::OpenedRun> {
    let with: Vec<(u32, i64)> = parts.iter().map(|p| (*p, epoch)).collect();
    match state.open_parts("books", "res-1", owner, &with, &|_| gone, force, 8).unwrap() {
        PartsOpen::Opened(run) => Some(run),
        PartsOpen::Busy { .. } => None,
        PartsOpen::Over => panic!("the run is over"),
    }
}

fn start(db: &MariaDb, task: &Task, run: crawler_engine::OpenedRun, parts: &[u32], epoch: i64) -> Share {
    start_after(db, task, run, parts, epoch, RobotsRead::default())
}

/// The same, with the robots.txt files a previous share here read.
fn start_after(
    db: &MariaDb,
    task: &Task,
    run: crawler_engine::OpenedRun,
    parts: &[u32],
    epoch: i64,
    robots: RobotsRead,
) -> Share {
    let sink: Box<dyn Sink> = Box::new(MysqlSink::open(&db.url).unwrap());
    let writer = SinkWriter::spawn(vec![sink], 50, Duration::from_millis(50));
    let home = task.home_partition(PARTS);
    let split = Split {
        count: PARTS,
        parts: parts.iter().map(|p| (*p, epoch)).collect(),
        home: parts.contains(&home),
        share: 2,
        recent: Vec::new(),
        robots,
    };
    let fetcher = Arc::new(Fetcher::new(engine()).unwrap());
    let crawl =
        Crawl::resume_split(task.clone(), run, split, fetcher, writer.sender(), &CancellationToken::new());
    Share { crawl, writer }
}

/// Fetches per (host, path) over all sites, robots.txt left out.
fn fetches(sites: &[Fixture]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for s in sites {
        for r in s.requests().into_iter().filter(|r| r.path != "/robots.txt") {
            *out.entry(format!("{}{}", s.addr(), r.path)).or_default() += 1;
        }
    }
    out
}

fn books_stored(db: &MariaDb) -> (u64, u64) {
    let out = db.query("SELECT COUNT(*), COUNT(DISTINCT url) FROM book WHERE task = 'books'");
    let mut it = out.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_run_crosses_owners_through_the_database_and_fetches_each_url_once() {
    let db = MariaDb::start();
    let sites = Fixture::start_chain(site(), HOSTS).await.unwrap();
    let task = Task::compile(spec(&sites)).unwrap();
    let hosts: BTreeSet<u32> = sites.iter().map(|s| partition_of(&s.addr().to_string(), PARTS)).collect();
    assert!(hosts.len() > 2, "the sites fall into several partitions: {hosts:?}");
    let state = MysqlState::open(&db.url).unwrap();
    let (a_parts, b_parts): (Vec<u32>, Vec<u32>) = (0..PARTS).partition(|p| p % 2 == 0);
    // Each owner sends the other some of its links: the hosts are spread over both.
    assert!(hosts.iter().any(|p| a_parts.contains(p)) && hosts.iter().any(|p| b_parts.contains(p)));
    let a_run = open(&state, "a", &a_parts, 1, false, false).unwrap();
    let b_run = open(&state, "b", &b_parts, 1, false, false).unwrap();
    let a = start(&db, &task, a_run, &a_parts, 1);
    let b = start(&db, &task, b_run, &b_parts, 1);
    let (sa, sb) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(a.crawl.join(), b.crawl.join()) })
            .await
            .expect("both shares end once the run is finished");
    assert!(!a.crawl.is_fenced() && !b.crawl.is_fenced());
    a.close().await;
    b.close().await;

    let pages_per_site = site().clean_paths().len();
    let fetched = fetches(&sites);
    assert_eq!(fetched.len(), pages_per_site * usize::from(HOSTS), "every page of every site fetched");
    let twice: Vec<_> = fetched.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "fetched more than once: {twice:?}");
    assert!(sa.pages > 0 && sb.pages > 0, "both owners fetched: {} and {}", sa.pages, sb.pages);
    let books = u64::from(site().books) * u64::from(HOSTS);
    assert_eq!(books_stored(&db), (books, books), "every book stored once");
    for s in &sites {
        assert!(s.max_in_flight() <= PER_HOST, "{} saw {} at once", s.addr(), s.max_in_flight());
    }
    assert_eq!(db.query("SELECT state FROM crawler_runs WHERE label = 'res-1'").trim(), "finished");
    assert_eq!(db.query("SELECT COUNT(*) FROM crawler_inbox").trim(), "0");
    // Over: a late owner finds nothing to do.
    assert!(matches!(
        state.open_parts("books", "res-1", "c", &[(0, 2)], &|_| true, false, 8).unwrap(),
        PartsOpen::Over
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_partition_moves_without_refetch_and_an_unreleased_one_fences_its_owner() {
    let db = MariaDb::start();
    let slow = Site { latency: Duration::from_millis(40), ..site() };
    let sites = Fixture::start_chain(slow, HOSTS).await.unwrap();
    let task = Task::compile(spec(&sites)).unwrap();
    let state = MysqlState::open(&db.url).unwrap();
    let all: Vec<u32> = (0..PARTS).collect();
    let a = start(&db, &task, open(&state, "a", &all, 1, false, false).unwrap(), &all, 1);
    crawler_fixture::wait::until("a third of the pages", Duration::from_secs(30), || async {
        fetches(&sites).len() > 100
    })
    .await;
    // What a has sent and not handled as of its last commit is marked in flight.
    crawler_fixture::wait::until("rows marked in flight", Duration::from_secs(10), || async {
        db.query("SELECT COUNT(*) FROM crawler_frontier WHERE status = 6").trim() != "0"
    })
    .await;
    // Half the partitions move to b: b cannot open them while a, alive, holds them.
    let (keep, moved): (Vec<u32>, Vec<u32>) = (0..PARTS).partition(|p| p % 2 == 0);
    assert!(open(&state, "b", &moved, 2, false, false).is_none(), "busy until released");
    // a drains (finishes and commits what is in flight, releases), then reopens its half.
    a.crawl.drain();
    a.crawl.join().await;
    assert!(!a.crawl.is_fenced());
    let read = a.crawl.robots_read();
    a.close().await;
    let b = start(&db, &task, open(&state, "b", &moved, 2, false, false).unwrap(), &moved, 2);
    // a's next share starts with the robots.txt files it read.
    let a = start_after(&db, &task, open(&state, "a", &keep, 2, false, false).unwrap(), &keep, 2, read);
    crawler_fixture::wait::until("two thirds of the pages", Duration::from_secs(30), || async {
        fetches(&sites).len() > 250
    })
    .await;
    let extra = |f: &HashMap<String, usize>| f.values().map(|n| n - 1).sum::<usize>();
    assert_eq!(extra(&fetches(&sites)), 0, "the drained handover fetched nothing again");
    // b's partitions taken by c without a release (b is "stuck", not gone): forced, at a
    // newer epoch. b's commits are refused from then on and it stops.
    let c = start(&db, &task, open(&state, "c", &moved, 3, false, true).unwrap(), &moved, 3);
    tokio::time::timeout(Duration::from_secs(10), b.crawl.join()).await.expect("the fenced owner stops");
    assert!(b.crawl.is_fenced());
    b.close().await;
    tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(a.crawl.join(), c.crawl.join()) })
        .await
        .expect("the run finishes");
    a.close().await;
    c.close().await;

    let fetched = fetches(&sites);
    assert_eq!(fetched.len(), site().clean_paths().len() * usize::from(HOSTS));
    // The forced takeover may refetch what b had in flight or fetched but not committed (its
    // concurrency plus one batch).
    let extra = extra(&fetched);
    assert!(extra <= 8 + 50, "{extra} pages fetched again");
    let books = u64::from(site().books) * u64::from(HOSTS);
    assert_eq!(books_stored(&db), (books, books), "every book stored once");
    // The sites that stayed with a had their robots.txt read once, across a's two shares.
    for s in sites.iter().filter(|s| keep.contains(&partition_of(&s.addr().to_string(), PARTS))) {
        assert_eq!(s.count("/robots.txt"), 1, "{} had its robots.txt read again", s.addr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_runs_page_budget_holds_for_its_owners_together() {
    const MAX: u64 = 150;
    let db = MariaDb::start();
    // Both owners must have work while budget is left: every site's index is a seed (the owner
    // of the seeds' partition queues them and sends the other's to its inbox, polled every
    // 500 ms), and pages are slow enough that the budget outlasts a few polls. With one seed
    // and 5 ms pages, the owner of the seed could spend it all before the chain of sites
    // reached the other (1 run in about 20 under the full suite).
    let sites =
        Fixture::start_chain(Site { latency: Duration::from_millis(150), ..site() }, HOSTS).await.unwrap();
    let mut spec = spec(&sites);
    spec.seeds = sites.iter().map(|s| s.url("/index.html")).collect();
    spec.max_pages = MAX;
    let task = Task::compile(spec).unwrap();
    let state = MysqlState::open(&db.url).unwrap();
    let (a_parts, b_parts): (Vec<u32>, Vec<u32>) = (0..PARTS).partition(|p| p % 2 == 0);
    let a = start(&db, &task, open(&state, "a", &a_parts, 1, false, false).unwrap(), &a_parts, 1);
    let b = start(&db, &task, open(&state, "b", &b_parts, 1, false, false).unwrap(), &b_parts, 1);
    let (sa, sb) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(a.crawl.join(), b.crawl.join()) })
            .await
            .expect("both shares end once the budget is spent");
    a.close().await;
    b.close().await;
    let fetched: usize = fetches(&sites).values().sum();
    println!("budget {MAX}: {fetched} pages fetched, {} and {} by the two owners", sa.pages, sb.pages);
    // Each owner alone would stop at MAX: together they fetched about 2 x MAX before.
    assert!(fetched as u64 <= MAX, "{fetched} pages fetched on a budget of {MAX}");
    // Left unused: what the owner that did not find the budget spent still held (it asks for
    // more at half a chunk, so at most one and a half: 3 x MAX / 32 here) and what it had
    // dispatched but not sent when the run ended (at most its concurrency).
    let unused_bound = 3 * MAX / 32 + engine().concurrency as u64;
    assert!(fetched as u64 + unused_bound >= MAX, "only {fetched} of {MAX} pages fetched");
    assert!(sa.pages > 0 && sb.pages > 0, "both owners fetched: {} and {}", sa.pages, sb.pages);
    let (books, distinct) = books_stored(&db);
    assert_eq!(books, distinct, "every book stored once");
    assert_eq!(db.query("SELECT state FROM crawler_runs WHERE label = 'res-1'").trim(), "finished");
}

#[test]
fn pages_of_a_shared_budget_are_granted_less_as_it_runs_low_and_given_back_on_release() {
    let db = MariaDb::start();
    let state = MysqlState::open(&db.url).unwrap();
    let run = open(&state, "a", &[0, 1], 1, false, false).unwrap();
    let handle = Arc::new(RunHandle::split(run.id, vec![(0, 1), (1, 1)], CancellationToken::new()));
    let mut sink = MysqlSink::open(&db.url).unwrap();
    let mut take = |want| sink.take_pages(&handle, want, 100, 2).unwrap().unwrap().granted;
    // A quarter of what is left at most (2 owners), at least one while any is.
    assert_eq!(take(40), 25);
    assert_eq!(take(40), 19);
    let mut grants = Vec::new();
    loop {
        match take(40) {
            0 => break,
            n => grants.push(n),
        }
    }
    assert_eq!(grants.iter().sum::<u64>(), 100 - 25 - 19);
    assert!(grants.windows(2).all(|w| w[0] >= w[1]), "{grants:?}");
    assert_eq!(
        db.query(&format!("SELECT pages_taken FROM crawler_runs WHERE id = {}", run.id)).trim(),
        "100"
    );
    // Released with 10 unused: they can be taken again.
    let release = Commit { run: Some(handle.clone()), release: true, unused_pages: 10, ..Commit::default() };
    sink.write(&[release]).unwrap();
    assert_eq!(db.query(&format!("SELECT pages_taken FROM crawler_runs WHERE id = {}", run.id)).trim(), "90");
    let again = sink.take_pages(&handle, 40, 100, 2).unwrap().unwrap();
    assert_eq!((again.granted, again.left, again.over), (3, 7, false));
    // A release of partitions released already (a commit written again, its answer lost)
    // gives nothing back.
    let release = Commit { run: Some(handle.clone()), release: true, unused_pages: 3, ..Commit::default() };
    sink.write(&[release]).unwrap();
    assert_eq!(db.query(&format!("SELECT pages_taken FROM crawler_runs WHERE id = {}", run.id)).trim(), "93");
    // Over: nothing granted, and said so.
    db.query(&format!("UPDATE crawler_runs SET state = 'ended' WHERE id = {}", run.id));
    let over = sink.take_pages(&handle, 40, 100, 2).unwrap().unwrap();
    assert_eq!((over.granted, over.over), (0, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_drained_while_a_retry_waits_gives_its_page_back_to_the_budget() {
    let db = MariaDb::start();
    // The only page answers 503 with `Retry-After: 5`: its retry waits when the share drains.
    let mut busy = crawler_fixture::Page::status(503, "busy");
    busy.headers.push(("retry-after", "5".into()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let script: crawler_fixture::Script = [("/flaky.html".to_owned(), vec![busy])].into_iter().collect();
    let fx = Fixture::start_scripted(site(), listener, script).await.unwrap();
    let spec: TaskSpec = serde_json::from_str(&format!(
        r#"{{"name":"flaky","seeds":["{}"],"max_pages":100,"partitions":{PARTS},"rule":[{{"name":"page"}}]}}"#,
        fx.url("/flaky.html")
    ))
    .unwrap();
    let task = Task::compile(spec).unwrap();
    let state = MysqlState::open(&db.url).unwrap();
    let all: Vec<(u32, i64)> = (0..PARTS).map(|p| (p, 1)).collect();
    let run = match state.open_parts("flaky", "res-2", "a", &all, &|_| false, false, 8).unwrap() {
        PartsOpen::Opened(run) => run,
        other => panic!("{other:?}"),
    };
    let id = run.id;
    let sink: Box<dyn Sink> = Box::new(MysqlSink::open(&db.url).unwrap());
    let writer = SinkWriter::spawn(vec![sink], 50, Duration::from_millis(50));
    let split = Split {
        count: PARTS,
        parts: all,
        home: true,
        share: 1,
        recent: Vec::new(),
        robots: RobotsRead::default(),
    };
    let fetcher = Arc::new(Fetcher::new(engine()).unwrap());
    let crawl = Crawl::resume_split(task, run, split, fetcher, writer.sender(), &CancellationToken::new());
    crawler_fixture::wait::until("the 503", Duration::from_secs(20), || async {
        fx.count("/flaky.html") == 1
    })
    .await;
    let taken = db.query(&format!("SELECT pages_taken FROM crawler_runs WHERE id = {id}"));
    assert_ne!(taken.trim(), "0", "the share took pages from the budget");
    crawl.drain();
    crawl.join().await;
    Share { crawl, writer }.close().await;
    assert_eq!(fx.count("/flaky.html"), 1, "no retry while draining");
    // Everything taken came back: the page left to the next owner is not counted as spent.
    assert_eq!(db.query(&format!("SELECT pages_taken FROM crawler_runs WHERE id = {id}")).trim(), "0");
}

#[test]
fn an_owner_whose_partitions_another_process_took_at_the_same_epoch_commits_nothing() {
    let db = MariaDb::start();
    let state = MysqlState::open(&db.url).unwrap();
    // w1's first process opens partition 0; a second process of w1 (another lease) takes it
    // at the same epoch once the first is gone from the registry.
    let first = open(&state, "w1#a", &[0], 3, false, false).unwrap();
    let second = open(&state, "w1#b", &[0], 3, true, false).unwrap();
    let handle = |run: &crawler_engine::OpenedRun| {
        Arc::new(RunHandle::split(run.id, vec![(0, 3)], CancellationToken::new()).owned_by(run.owner.clone()))
    };
    let (old, new) = (handle(&first), handle(&second));
    let mut sink = MysqlSink::open(&db.url).unwrap();
    let queued = |seq: u64, key: u64| crawler_engine::QueuedUrl {
        seq,
        key,
        url: format!("http://h/{key}").into(),
        host: "h".into(),
        depth: 1,
        rule: 0,
        priority: 0,
        replaces: None,
        held: true,
        part: 0,
        sent: false,
    };
    // The first process, resumed, commits: refused, and it stops.
    sink.write(&[Commit { run: Some(old.clone()), queued: vec![queued(1, 11)], ..Commit::default() }])
        .unwrap();
    assert!(old.is_fenced(), "a process that lost its partitions at the same epoch committed");
    sink.write(&[Commit { run: Some(new.clone()), queued: vec![queued(2, 12)], ..Commit::default() }])
        .unwrap();
    assert!(!new.is_fenced());
    let rows = db.query(&format!("SELECT url_key FROM crawler_frontier WHERE run = {}", second.id));
    assert_eq!(rows.trim(), "12");
}

#[test]
fn owners_opening_their_partitions_do_not_wait_for_each_other() {
    let db = MariaDb::start();
    db.query("SET GLOBAL innodb_lock_wait_timeout = 2");
    let state = MysqlState::open(&db.url).unwrap();
    let first = open(&state, "w1#a", &[0], 1, false, false).unwrap();
    // Another owner in the middle of opening its partitions (loading its rows): it holds the
    // run's row as an open does.
    let mut other = mysql::Conn::new(mysql::Opts::from_url(&db.url).unwrap()).unwrap();
    use mysql::prelude::Queryable;
    other.query_drop("START TRANSACTION").unwrap();
    other
        .query_drop(format!("SELECT id FROM crawler_runs WHERE id = {} LOCK IN SHARE MODE", first.id))
        .unwrap();
    // This owner opens its own partition meanwhile, without waiting (it waited out the lock
    // wait timeout and failed before).
    let started = std::time::Instant::now();
    // The look for a run stored under an older label, made before every open, locks nothing
    // when there is none to take up (it waited here too).
    assert!(!state.adopt_label("books", "res-0", "res-1", "2000-01-01T00:00:00Z").unwrap());
    assert!(open(&state, "w2#b", &[1], 1, false, false).is_some());
    println!("opened beside another owner's open in {:?}", started.elapsed());
    other.query_drop("COMMIT").unwrap();
    db.query("SET GLOBAL innodb_lock_wait_timeout = 50");
}
