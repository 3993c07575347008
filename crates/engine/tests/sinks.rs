//! One conformance suite for every store: SQLite (a temp file) and MariaDB (a real server on
//! 127.0.0.1). Items and crawl state are read back with each store's own client.

use std::sync::Arc;

use crawler_engine::{
    Commit, Epoch, Item, MysqlSink, MysqlState, PageStatus, QueuedUrl, RunHandle, Sink, SqliteSink,
    SqliteState, StateStore, BUDGET_WINDOWS, MIN_HELD,
};
use crawler_fixture::mariadb::MariaDb;
use tokio_util::sync::CancellationToken;

fn item(task: &str, url: &str, fields: &[(&str, Option<&str>)]) -> Item {
    Item {
        task: task.into(),
        table: "book".into(),
        url: url.into(),
        crawled_at: "2026-01-01T00:00:00Z".into(),
        fields: fields.iter().map(|(k, v)| (Arc::<str>::from(*k), v.map(str::to_owned))).collect(),
    }
}

fn items(list: Vec<Item>) -> Vec<Commit> {
    list.into_iter().map(|i| Commit { item: Some(i), ..Commit::default() }).collect()
}

/// Rows as `task|url|title|price` lines, sorted; NULL as `NULL`.
fn item_conformance(sink: &mut dyn Sink, rows: &dyn Fn() -> Vec<String>) {
    sink.write(&items(vec![
        item("t", "http://h/1", &[("title", Some("One"))]),
        item("t", "http://h/2", &[("title", Some("Twö — ünïcode"))]),
        item("u", "http://h/1", &[("title", Some("Other task, same url"))]),
    ]))
    .unwrap();
    // Re-crawling a URL updates its row; a new field adds a column; a missing value is NULL.
    sink.write(&items(vec![
        item("t", "http://h/1", &[("title", Some("One again")), ("price", Some("£1"))]),
        item("t", "http://h/3", &[("title", None)]),
    ]))
    .unwrap();
    // The same batch twice (a retried write) changes nothing.
    let again = || items(vec![item("t", "http://h/2", &[("title", Some("Twö — ünïcode"))])]);
    sink.write(&again()).unwrap();
    sink.write(&again()).unwrap();
    // A field spelled in another case (another rule's, a renamed field) is the same column, as
    // the databases compare names (SQLite failed every write with "duplicate column name").
    sink.write(&items(vec![item("t", "http://h/4", &[("Title", Some("Four")), ("PRICE", Some("£4"))])]))
        .unwrap();
    // Keys are compared exactly: URLs (and tasks) that differ only in case are rows of their
    // own (MySQL's ASCII collation ignored case: the second replaced the first).
    sink.write(&items(vec![
        item("t", "http://h/Go", &[("title", Some("upper"))]),
        item("t", "http://h/go", &[("title", Some("lower"))]),
        item("T", "http://h/1", &[("title", Some("Task in capitals"))]),
    ]))
    .unwrap();
    assert_eq!(
        rows(),
        [
            "T|http://h/1|Task in capitals|NULL",
            "t|http://h/1|One again|£1",
            "t|http://h/2|Twö — ünïcode|NULL",
            "t|http://h/3|NULL|NULL",
            "t|http://h/4|Four|£4",
            "t|http://h/Go|upper|NULL",
            "t|http://h/go|lower|NULL",
            "u|http://h/1|Other task, same url|NULL",
        ]
    );
}

/// Request number `seq` of a run: URL `key` (on host `h{key % 3}.example`) at `depth`.
fn queued(seq: u64, key: u64, depth: u32) -> QueuedUrl {
    QueuedUrl {
        seq,
        key,
        url: format!("http://h{}.example/p{key}", key % 3).into(),
        host: format!("h{}.example", key % 3).into(),
        depth,
        rule: 1,
        priority: 0,
        replaces: None,
        held: true,
        part: 0,
        sent: false,
    }
}

/// The same, spilled: waiting in the database only.
fn spilled(seq: u64, key: u64, depth: u32) -> QueuedUrl {
    QueuedUrl { held: false, ..queued(seq, key, depth) }
}

fn handle(run: &crawler_engine::OpenedRun) -> Arc<RunHandle> {
    Arc::new(RunHandle::new(run.id, run.epoch, CancellationToken::new()))
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

fn keys(rows: &[QueuedUrl]) -> Vec<(u64, u64, u32)> {
    let mut v: Vec<_> = rows.iter().map(|q| (q.key, q.seq, q.depth)).collect();
    v.sort_unstable();
    v
}

/// Runs: open, commit, resume (whole and windowed), refill, fence, finish, start fresh.
/// `count_items(task)` counts the task's rows in the `book` table.
fn state_conformance(sink: &mut dyn Sink, state: &dyn StateStore, count_items: &dyn Fn(&str) -> u64) {
    // A new run, its seed, two pages handled (one with an item, one failed), four waiting.
    let run = state.open_run("s", "standalone", Epoch::Next, false, 100).unwrap();
    assert!(!run.resumed);
    let h = handle(&run);
    let commit = |page: Option<(u64, PageStatus)>, queued: Vec<QueuedUrl>| Commit {
        run: Some(h.clone()),
        page,
        queued,
        ..Commit::default()
    };
    // URL 2 found again closer to a seed while waiting: a new row replaces its first one. A
    // retried write of the same rows changes nothing.
    let moved = QueuedUrl { replaces: Some(2), ..queued(5, 2, 1) };
    sink.write(&[
        commit(None, vec![queued(1, 1, 0)]),
        Commit {
            item: Some(item("s", "http://h1.example/p1", &[("title", Some("one"))])),
            ..commit(Some((1, PageStatus::Done)), vec![queued(2, 2, 3), queued(3, 3, 1), queued(4, 4, 1)])
        },
        commit(None, vec![moved.clone(), spilled(6, 6, 2), spilled(7, 9, 2)]),
        commit(None, vec![moved]),
        commit(Some((4, PageStatus::Failed)), Vec::new()),
    ])
    .unwrap();
    assert!(!h.is_fenced());

    // Resumed: what was handled is known, what waits comes back once, at its best depth.
    let again = state.open_run("s", "standalone", Epoch::Next, false, 100).unwrap();
    assert!(again.resumed);
    assert_eq!(again.id, run.id);
    assert_eq!(again.epoch, run.epoch + 1);
    assert_eq!((again.handled, again.waiting, again.last_seqs.clone()), (2, 4, vec![7]));
    assert_eq!(sorted(again.seen.clone()), [1, 4]);
    assert_eq!(keys(&again.queued), [(2, 5, 1), (3, 3, 1), (6, 6, 2), (9, 7, 2)]);
    assert!(again.spilled.is_empty());
    let q = again.queued.iter().find(|q| q.key == 3).unwrap();
    assert_eq!(&*q.url, "http://h0.example/p3");

    // With one request per host in memory: host h0 keeps its first and spills two, which are
    // known with their depth (queued again only when found closer) and read back in order
    // after the host's floor.
    let windowed = state.open_run("s", "standalone", Epoch::Next, false, 1).unwrap();
    assert_eq!(keys(&windowed.queued), [(2, 5, 1), (3, 3, 1)]);
    assert_eq!(sorted(windowed.seen.clone()), [1, 4]);
    let mut beyond = windowed.spilled_keys.clone();
    beyond.sort_unstable();
    assert_eq!(beyond, [(6, 2), (9, 2)]);
    assert_eq!(windowed.spilled.len(), 1);
    let (last, count) = &windowed.spilled[0];
    assert_eq!((&**last, *count), ("http://h0.example/p3", 2));
    let host = "h0.example";
    let current = handle(&windowed);
    assert_eq!(keys(&sink.refill(&current, host, 1).unwrap().unwrap()), [(6, 6, 2)]);
    assert_eq!(keys(&sink.refill(&current, host, 10).unwrap().unwrap()), [(9, 7, 2)]);
    // Read back rows are held: not read back again.
    assert!(sink.refill(&current, host, 10).unwrap().unwrap().is_empty());
    assert!(sink.refill(&current, "other.example", 10).unwrap().unwrap().is_empty());
    assert!(!current.is_fenced());

    // The first owner lost the run: its commit (item and state) is refused as a whole.
    sink.write(&[Commit {
        item: Some(item("s", "http://h2.example/p2", &[("title", Some("stale"))])),
        ..commit(Some((5, PageStatus::Done)), Vec::new())
    }])
    .unwrap();
    assert!(h.is_fenced());
    assert_eq!(count_items("s"), 1);
    // ... and so is its refill.
    let stale = handle(&again);
    assert!(sink.refill(&stale, host, 10).unwrap().unwrap().is_empty());
    assert!(stale.is_fenced());
    let h2 = handle(&windowed);
    let commit2 =
        |page: Option<(u64, PageStatus)>| Commit { run: Some(h2.clone()), page, ..Commit::default() };
    sink.write(&[
        Commit {
            item: Some(item("s", "http://h2.example/p2", &[("title", Some("two"))])),
            ..commit2(Some((5, PageStatus::Done)))
        },
        commit2(Some((3, PageStatus::Skipped))),
        commit2(Some((6, PageStatus::Done))),
        commit2(Some((7, PageStatus::Done))),
        Commit { finished: true, ..commit2(None) },
    ])
    .unwrap();
    assert!(!h2.is_fenced());
    assert_eq!(count_items("s"), 2);

    // A finished run is not resumed: the next open starts a new one.
    let next = state.open_run("s", "standalone", Epoch::Next, false, 100).unwrap();
    assert!(!next.resumed);
    assert_ne!(next.id, run.id);
    assert!(next.seen.is_empty() && next.queued.is_empty());

    // Cluster epochs: a newer assignment takes over, an older one is refused.
    let w1 = state.open_run("c", "res-1", Epoch::At(10), false, 100).unwrap();
    let hw1 = handle(&w1);
    sink.write(&[Commit { run: Some(hw1.clone()), queued: vec![queued(1, 7, 0)], ..Commit::default() }])
        .unwrap();
    let w2 = state.open_run("c", "res-1", Epoch::At(20), false, 100).unwrap();
    assert!(w2.resumed);
    assert_eq!(w2.epoch, 20);
    assert_eq!(w2.queued.len(), 1);
    assert!(
        state.open_run("c", "res-1", Epoch::At(10), false, 100).is_err(),
        "a stale owner took the run back"
    );
    // Another label (a re-added resource) is another run.
    assert!(!state.open_run("c", "res-2", Epoch::At(30), false, 100).unwrap().resumed);
    // The runs still running, for the look for deleted resources' runs.
    let running = |task: &str| -> Vec<(i64, String)> {
        let all = state.running_runs().unwrap();
        all.into_iter().filter(|(_, t, _)| t == task).map(|(id, _, label)| (id, label)).collect()
    };
    let res2 = running("c").into_iter().find(|(_, l)| l == "res-2").unwrap().0;
    assert_eq!(running("c"), [(w2.id, "res-1".to_owned()), (res2, "res-2".to_owned())]);
    // Ended (the resource was deleted): nothing to resume.
    state.end_run(w2.id).unwrap();
    assert_eq!(running("c"), [(res2, "res-2".to_owned())]);
    assert!(!state.open_run("c", "res-1", Epoch::At(40), false, 100).unwrap().resumed);

    // --fresh: the unfinished run is discarded.
    let fresh = state.open_run("c", "res-2", Epoch::At(50), true, 100).unwrap();
    assert!(!fresh.resumed);

    // A cluster task whose run finished, moved to another worker: the run stays finished (no
    // new run, nothing to crawl), at any newer epoch.
    let hf = handle(&fresh);
    sink.write(&[Commit { run: Some(hf.clone()), finished: true, ..Commit::default() }]).unwrap();
    assert!(!hf.is_fenced());
    let moved = state.open_run("c", "res-2", Epoch::At(60), false, 100).unwrap();
    assert!(moved.over && !moved.resumed);
    assert_eq!(moved.id, fresh.id);
    assert!(moved.seen.is_empty() && moved.queued.is_empty());
    assert!(state.open_run("c", "res-2", Epoch::At(70), false, 100).unwrap().over);
    // Standalone, the next crawl of a finished run starts a new one (above), and nothing else
    // opens as over.
    assert!(!next.over && !w2.over && !fresh.over);

    // The newest run of a label, as stored.
    let newest = state.newest_run("s", "standalone").unwrap().unwrap();
    assert_eq!(newest.id, next.id);
    assert!(newest.is_running() && newest.finished_at.is_none());
    let done = state.newest_run("c", "res-2").unwrap().unwrap();
    assert!(
        done.is_finished()
            && done.finished_at.is_some()
            && done.started_at <= *done.finished_at.as_ref().unwrap()
    );
    assert!(state.newest_run("none", "standalone").unwrap().is_none());

    // Runs under an earlier label (a cluster run labelled with its resource id alone): taken up
    // under the new one when it has none; an ended one is not.
    let old = state.open_run("u", "res-7", Epoch::At(5), false, 100).unwrap();
    let ho = handle(&old);
    sink.write(&[Commit { run: Some(ho.clone()), queued: vec![queued(1, 41, 0)], ..Commit::default() }])
        .unwrap();
    assert!(state.adopt_label("u", "res-7", "res-7@90", "2000-01-01T00:00:00Z").unwrap());
    let taken = state.open_run("u", "res-7@90", Epoch::At(6), false, 100).unwrap();
    assert!(taken.resumed && taken.id == old.id && taken.queued.len() == 1);
    assert!(
        !state.adopt_label("u", "res-7", "res-7@90", "2000-01-01T00:00:00Z").unwrap(),
        "the new label has its run"
    );
    let finished = state.open_run("u", "res-8", Epoch::At(5), false, 100).unwrap();
    sink.write(&[Commit { run: Some(handle(&finished)), finished: true, ..Commit::default() }]).unwrap();
    assert!(state.adopt_label("u", "res-8", "res-8@91", "2000-01-01T00:00:00Z").unwrap());
    assert!(
        state.open_run("u", "res-8@91", Epoch::At(6), false, 100).unwrap().over,
        "finished stays finished"
    );
    let ended = state.open_run("u", "res-9", Epoch::At(5), false, 100).unwrap();
    state.end_run(ended.id).unwrap();
    assert!(!state.adopt_label("u", "res-9", "res-9@92", "2000-01-01T00:00:00Z").unwrap());
    assert!(!state.open_run("u", "res-9@92", Epoch::At(6), false, 100).unwrap().resumed);
    // A run that started before the resource was added (an earlier add under the same id,
    // never ended) is not taken up.
    let earlier = state.open_run("u", "res-10", Epoch::At(5), false, 100).unwrap();
    assert!(!state.adopt_label("u", "res-10", "res-10@93", "2999-01-01T00:00:00Z").unwrap());
    assert!(!state.open_run("u", "res-10@93", Epoch::At(6), false, 100).unwrap().resumed);
    assert!(state.newest_run("u", "res-10").unwrap().is_some_and(|r| r.id == earlier.id));

    // A request robots.txt blocked is handled (never queued again) but was not sent: a resumed
    // run does not count it against `max_pages` (as skipped, it did).
    let b = state.open_run("b", "standalone", Epoch::Next, false, 100).unwrap();
    let hb = handle(&b);
    let at = |page: Option<(u64, PageStatus)>, queued: Vec<QueuedUrl>| Commit {
        run: Some(hb.clone()),
        page,
        queued,
        ..Commit::default()
    };
    sink.write(&[
        at(None, vec![queued(1, 1, 0), queued(2, 2, 0), queued(3, 3, 0)]),
        at(Some((1, PageStatus::Done)), Vec::new()),
        at(Some((2, PageStatus::Blocked)), Vec::new()),
    ])
    .unwrap();
    let again = state.open_run("b", "standalone", Epoch::Next, false, 100).unwrap();
    assert!(again.resumed);
    assert_eq!((again.handled, again.waiting), (1, 1));
    assert_eq!(sorted(again.seen.clone()), [1, 2]);

    // Tasks and labels are compared exactly: task `B` is not `b`'s unfinished run (MySQL's
    // collation ignored case: `B` took `b`'s run over), and label `RES-2` is not `res-2`.
    let upper = state.open_run("B", "standalone", Epoch::Next, false, 100).unwrap();
    assert!(!upper.resumed);
    assert_ne!(upper.id, again.id);
    let other_label = state.open_run("c", "RES-2", Epoch::At(80), false, 100).unwrap();
    assert!(!other_label.over && other_label.id != moved.id, "res-2's finished run");

    // A resumed run keeps the budget a live frontier keeps: 100 hosts of 30 waiting requests
    // and a window of 20 hold full windows until 50 windows are held, then 16 a host (all 100
    // hosts held a full window before: with 1,000 hosts, 2M rows instead of about 116k).
    let (window, hosts) = (20, 100);
    let many = state.open_run("many", "standalone", Epoch::Next, false, window).unwrap();
    let rows: Vec<QueuedUrl> = (0..30 * hosts as u64)
        .map(|i| {
            let host = format!("m{}.example", i % hosts as u64);
            QueuedUrl {
                url: format!("http://{host}/p{i}").into(),
                host: host.into(),
                held: false,
                ..queued(i + 1, 1_000 + i, 1)
            }
        })
        .collect();
    sink.write(&[Commit { run: Some(handle(&many)), queued: rows, ..Commit::default() }]).unwrap();
    let resumed = state.open_run("many", "standalone", Epoch::Next, false, window).unwrap();
    assert_eq!(resumed.waiting, 30 * hosts as u64);
    let full = BUDGET_WINDOWS; // hosts with a full window
    assert_eq!(resumed.queued.len(), full * window + (hosts - full) * MIN_HELD);
    assert_eq!(resumed.spilled.len(), hosts, "every host has rows to read back");
    let beyond: u64 = resumed.spilled.iter().map(|(_, n)| n).sum();
    assert_eq!(beyond as usize + resumed.queued.len(), 30 * hosts);
}

#[test]
fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut sink = SqliteSink::open(&path).unwrap();
    item_conformance(&mut sink, &|| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = conn
            .prepare("SELECT task || '|' || url || '|' || COALESCE(title, 'NULL') || '|' || COALESCE(price, 'NULL') FROM book ORDER BY task, url")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.map(Result::unwrap).collect()
    });
    let state = SqliteState::open(&path).unwrap();
    state_conformance(&mut sink, &state, &|task| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row("SELECT COUNT(*) FROM book WHERE task = ?1", [task], |r| r.get(0)).unwrap()
    });
}

#[test]
fn two_processes_writing_one_sqlite_file_wait_for_each_other() {
    // Another process on the same file (a second `crawler crawl` of it, a worker sharing it)
    // writes in long transactions meanwhile: every batch of this sink still goes in (a batch
    // that read its run before the other's commit and wrote after it failed at once with
    // "database is locked" before, and the writer with it).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.db");
    let state = SqliteState::open(&path).unwrap();
    let run = state.open_run("a", "standalone", Epoch::Next, false, 100).unwrap();
    let other = state.open_run("b", "standalone", Epoch::Next, false, 100).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (started_tx, started) = std::sync::mpsc::channel();
    let busy = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
            let _ = started_tx.send(());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                conn.execute("UPDATE crawler_runs SET epoch = epoch WHERE id = ?1", [other.id]).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
                conn.execute_batch("COMMIT").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        })
    };
    let mut sink = SqliteSink::open(&path).unwrap();
    let h = handle(&run);
    started.recv().unwrap();
    for i in 0..40u64 {
        // Batches every few milliseconds, in and between the other's transactions.
        std::thread::sleep(std::time::Duration::from_millis(7));
        let commit = Commit {
            run: Some(h.clone()),
            item: Some(item("t", &format!("http://h/{i}"), &[("title", Some("x"))])),
            queued: vec![queued(i + 1, 1_000 + i, 1)],
            ..Commit::default()
        };
        let written = sink.write(&[commit]);
        if written.is_err() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        written.unwrap_or_else(|e| panic!("batch {i}: {e}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    assert!(!h.is_fenced());
}

/// The timers of this machine's established TCP connections to `port` on loopback, from
/// `/proc/net/tcp`: (timer kind, ticks until it fires). Kind 2 is the keepalive timer; an idle
/// connection without keepalive has none (0).
fn client_timers(port: u16) -> Vec<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let remote_port = u16::from_str_radix(f[2].rsplit(':').next()?, 16).ok()?;
            let (kind, when) = f[5].split_once(':')?;
            (remote_port == port && f[3] == "01")
                .then(|| (u8::from_str_radix(kind, 16).unwrap(), u64::from_str_radix(when, 16).unwrap()))
        })
        .collect()
}

#[test]
fn mysql_store_conforms() {
    let db = MariaDb::start();
    // Over TCP, as to a database on another host (the driver would move to the server's unix
    // socket on this one).
    // Runs as an earlier version made them: task and label ignoring case. The sink makes
    // them exact (the state conformance below tells `B` from `b`).
    db.query(
        "CREATE TABLE crawler_runs (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
              task VARCHAR(255) NOT NULL, label VARCHAR(255) NOT NULL, state VARCHAR(16) NOT NULL, \
              epoch BIGINT NOT NULL, started_at VARCHAR(32) NOT NULL, finished_at VARCHAR(32) NULL, \
              pages_taken BIGINT NOT NULL DEFAULT 0, KEY crawler_runs_by_task (task, label, state)) \
              DEFAULT CHARSET = utf8mb4",
    );
    let mut sink = MysqlSink::open(&format!("{}?prefer_socket=false", db.url)).unwrap();
    // The sink's connection probes a silent server (a host gone, a network cut) after 10 s idle
    // rather than wait for it for ever (the default keepalive starts after two hours).
    let port: u16 = db.url.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap();
    let timers = client_timers(port);
    assert!(!timers.is_empty(), "the sink's connection is listed");
    let ticks = 100; // USER_HZ
    assert!(timers.iter().all(|&(kind, when)| kind == 2 && when <= 10 * ticks), "{timers:?}");
    // A URL's own setting is kept.
    let slow =
        MysqlSink::open(&format!("{}?prefer_socket=false&tcp_keepalive_time_ms=60000", db.url)).unwrap();
    assert!(client_timers(port).iter().any(|&(kind, when)| kind == 2 && when > 50 * ticks));
    drop(slow);
    item_conformance(&mut sink, &|| {
        db.query("SELECT CONCAT(task, '|', url, '|', COALESCE(title, 'NULL'), '|', COALESCE(price, 'NULL')) FROM book ORDER BY task, url")
            .lines()
            .map(str::to_owned)
            .collect()
    });
    let state = MysqlState::open(&db.url).unwrap();
    state_conformance(&mut sink, &state, &|task| {
        db.query(&format!("SELECT COUNT(*) FROM book WHERE task = '{task}'")).trim().parse().unwrap()
    });

    // A field over 64 KiB (a whole article) is stored whole, also in a column an earlier
    // version made TEXT (it was refused for ever, and the writer with it).
    db.query("CREATE TABLE article (task VARCHAR(64) CHARACTER SET ascii NOT NULL, url VARCHAR(3000) CHARACTER SET ascii NOT NULL, crawled_at VARCHAR(32) NOT NULL, body TEXT, PRIMARY KEY (task, url)) DEFAULT CHARSET = utf8mb4");
    let long = "x".repeat(100_000);
    let mut article = item("t", "http://h/long", &[("body", Some(&long)), ("lead", Some(&long))]);
    article.table = "article".into();
    let mut fresh = MysqlSink::open(&db.url).unwrap();
    fresh.write(&items(vec![article.clone()])).unwrap();
    assert_eq!(db.query("SELECT LENGTH(body), LENGTH(lead) FROM article").trim(), "100000\t100000");
    // Its keys, which ignored case, are exact now: another row for a URL in capitals.
    article.url = "http://h/LONG".into();
    fresh.write(&items(vec![article])).unwrap();
    assert_eq!(db.query("SELECT url FROM article ORDER BY url").trim(), "http://h/LONG\nhttp://h/long");

    // Four processes opening a new run at once, on a server whose default isolation is READ
    // COMMITTED: one run, which each of them opens (there were several, as nothing held the
    // others back, or under REPEATABLE READ one deadlocked and failed).
    db.query("SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED");
    let state = Arc::new(MysqlState::open(&db.url).unwrap());
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let (state, barrier) = (state.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                state.open_run("race", "res-r", Epoch::At(5), false, 100).map(|r| r.id)
            })
        })
        .collect();
    let ids: Vec<i64> = opens.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(db.query("SELECT COUNT(*) FROM crawler_runs WHERE task = 'race'").trim(), "1");

    // A refill on a connection the server closed while it was idle (`wait_timeout`, a proxy):
    // it reads its rows (it failed, and a refill is not tried again: the crawl stopped).
    let idle = state.open_run("idle", "standalone", Epoch::Next, false, 100).unwrap();
    let hi = handle(&idle);
    fresh
        .write(&[Commit { run: Some(hi.clone()), queued: vec![spilled(1, 3, 0)], ..Commit::default() }])
        .unwrap();
    let idle_ids = db.query(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Sleep' AND ID <> CONNECTION_ID()",
    );
    for id in idle_ids.lines() {
        db.query(&format!("KILL {id}"));
    }
    assert_eq!(keys(&fresh.refill(&hi, "h0.example", 10).unwrap().unwrap()), [(3, 1, 0)]);
}

#[test]
fn a_mysql_write_waits_out_a_server_restart() {
    let mut db = MariaDb::start();
    let mut sink = MysqlSink::open(&db.url).unwrap();
    sink.write(&items(vec![item("t", "http://h/1", &[("title", Some("One"))])])).unwrap();
    // The server crashes and is back 3 s later: more than one reconnect, much less than the
    // two minutes a write waits for it.
    db.stop();
    let restart = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(3));
        db.restart();
        db
    });
    let started = std::time::Instant::now();
    let written = sink.write(&items(vec![item("t", "http://h/2", &[("title", Some("Two"))])]));
    let waited = started.elapsed();
    let db = restart.join().unwrap();
    written.unwrap();
    assert!(waited >= std::time::Duration::from_secs(3), "written while the server was down? {waited:?}");
    assert_eq!(db.query("SELECT url, title FROM book ORDER BY url"), "http://h/1\tOne\nhttp://h/2\tTwo\n");
    // The sink goes on with its new connection.
    sink.write(&items(vec![item("t", "http://h/3", &[("title", Some("Three"))])])).unwrap();
    assert_eq!(db.query("SELECT COUNT(*) FROM book").trim(), "3");
}

/// A TCP proxy to `target` on a free loopback port. Once `armed`, the next chunk a client sends
/// that holds a COMMIT is not forwarded: the client's side is closed there and the server's
/// left open and silent, as in a network cut (the server keeps the session, in its
/// transaction). The server sides cut off are kept in `held`.
struct CutOnCommit {
    addr: std::net::SocketAddr,
    armed: Arc<std::sync::atomic::AtomicBool>,
    held: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl CutOnCommit {
    fn start(target: std::net::SocketAddr) -> CutOnCommit {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = CutOnCommit { addr, armed: Default::default(), held: Default::default() };
        let (armed, held) = (proxy.armed.clone(), proxy.held.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let (Ok(client), Ok(server)) = (client, std::net::TcpStream::connect(target)) else {
                    continue;
                };
                let (mut from_server, mut to_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || std::io::copy(&mut from_server, &mut to_client));
                let (armed, held) = (armed.clone(), held.clone());
                std::thread::spawn(move || {
                    let (mut from_client, mut to_server) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let mut buf = vec![0; 1 << 16];
                    loop {
                        let n = match from_client.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if armed.load(SeqCst) && buf[..n].windows(6).any(|w| w == b"COMMIT") {
                            armed.store(false, SeqCst);
                            held.lock().unwrap().push(server);
                            let _ = client.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        if to_server.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        proxy
    }
}

#[test]
fn a_write_cut_off_before_its_commit_ends_the_session_it_left_behind() {
    use std::sync::atomic::Ordering::SeqCst;
    let db = MariaDb::start();
    // A lock wait gives up after 2 s (50 by default), so that a write stuck behind the stale
    // session fails within the test.
    db.query("SET GLOBAL innodb_lock_wait_timeout = 2");
    let port: u16 = db.url.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap();
    let proxy = CutOnCommit::start(([127, 0, 0, 1], port).into());
    let through_proxy = db.url.replace(&format!(":{port}/"), &format!(":{}/", proxy.addr.port()));
    let state = MysqlState::open(&db.url).unwrap();
    let run = state.open_run("s", "standalone", Epoch::Next, false, 100).unwrap();
    let h = handle(&run);
    let commit = |page: Option<(u64, PageStatus)>, queued: Vec<QueuedUrl>| Commit {
        run: Some(h.clone()),
        page,
        queued,
        ..Commit::default()
    };
    let mut sink = MysqlSink::open(&format!("{through_proxy}?prefer_socket=false")).unwrap();
    sink.write(&[commit(None, vec![queued(1, 1, 0)])]).unwrap();
    // The next write's COMMIT is lost on the way: its session stays on the server, in its
    // transaction, holding the run's row. The write is tried again on a new connection.
    proxy.armed.store(true, SeqCst);
    sink.write(&[Commit {
        item: Some(item("s", "http://h1.example/p1", &[("title", Some("one"))])),
        ..commit(Some((1, PageStatus::Done)), vec![queued(2, 2, 1)])
    }])
    .unwrap(); // waited for its own old session's locks, and failed, before
    assert!(!proxy.armed.load(SeqCst), "the commit was not cut");
    assert_eq!(proxy.held.lock().unwrap().len(), 1);
    assert!(!h.is_fenced());
    assert_eq!(db.query("SELECT url, title FROM book"), "http://h1.example/p1\tone\n");
    let statuses =
        db.query(&format!("SELECT seq, status FROM crawler_frontier WHERE run = {} ORDER BY seq", run.id));
    assert_eq!(statuses, "1\t1\n2\t5\n");
    // The sink goes on.
    sink.write(&[commit(Some((2, PageStatus::Done)), Vec::new())]).unwrap();
}
