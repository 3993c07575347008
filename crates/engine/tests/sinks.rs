//! One conformance suite for every store: SQLite (a temp file) and MariaDB (a real server on
//! 127.0.0.1). Items and crawl state are read back with each store's own client.

use std::sync::Arc;

use crawler_engine::{
    Commit, Epoch, Item, MysqlSink, MysqlState, PageStatus, QueuedUrl, RunHandle, Sink, SqliteSink,
    SqliteState, StateStore,
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
    assert_eq!(
        rows(),
        [
            "t|http://h/1|One again|£1",
            "t|http://h/2|Twö — ünïcode|NULL",
            "t|http://h/3|NULL|NULL",
            "u|http://h/1|Other task, same url|NULL",
        ]
    );
}

fn queued(key: u64, depth: u32) -> QueuedUrl {
    QueuedUrl { key, url: format!("http://h{}.example/p{key}", key % 3), depth, rule: 1, priority: 0 }
}

fn handle(run: &crawler_engine::OpenedRun) -> Arc<RunHandle> {
    Arc::new(RunHandle::new(run.id, run.epoch, CancellationToken::new()))
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// Runs: open, commit, resume, fence, finish, start fresh. `count_items(task)` counts the
/// task's rows in the `book` table.
fn state_conformance(sink: &mut dyn Sink, state: &dyn StateStore, count_items: &dyn Fn(&str) -> u64) {
    // A new run, its seeds, two pages handled (one with an item, one failed), one still queued.
    let run = state.open_run("s", "standalone", Epoch::Next, false).unwrap();
    assert!(!run.resumed);
    let h = handle(&run);
    sink.write(&[
        Commit { run: Some(h.clone()), queued: vec![queued(1, 0)], ..Commit::default() },
        Commit {
            run: Some(h.clone()),
            page: Some((1, PageStatus::Done)),
            item: Some(item("s", "http://h1.example/p1", &[("title", Some("one"))])),
            queued: vec![queued(2, 3), queued(3, 1), queued(4, 1)],
            ..Commit::default()
        },
        // Found again closer to a seed while waiting: moves up; found deeper: stays.
        Commit { run: Some(h.clone()), queued: vec![queued(2, 1), queued(3, 2)], ..Commit::default() },
        Commit { run: Some(h.clone()), page: Some((4, PageStatus::Failed)), ..Commit::default() },
    ])
    .unwrap();
    assert!(!h.is_fenced());

    // Resumed: what was handled is known, what waits comes back at its best depth.
    let again = state.open_run("s", "standalone", Epoch::Next, false).unwrap();
    assert!(again.resumed);
    assert_eq!(again.id, run.id);
    assert_eq!(again.epoch, run.epoch + 1);
    assert_eq!(sorted(again.handled.clone()), [1, 4]);
    let mut waiting: Vec<(u64, u32)> = again.queued.iter().map(|q| (q.key, q.depth)).collect();
    waiting.sort_unstable();
    assert_eq!(waiting, [(2, 1), (3, 1)]);
    assert_eq!(
        again.queued[0].url,
        format!("http://h{}.example/p{}", again.queued[0].key % 3, again.queued[0].key)
    );

    // The first owner lost the run: its commit (item and state) is refused as a whole.
    sink.write(&[Commit {
        run: Some(h.clone()),
        page: Some((2, PageStatus::Done)),
        item: Some(item("s", "http://h2.example/p2", &[("title", Some("stale"))])),
        ..Commit::default()
    }])
    .unwrap();
    assert!(h.is_fenced());
    assert_eq!(count_items("s"), 1);
    let h2 = handle(&again);
    sink.write(&[
        Commit {
            run: Some(h2.clone()),
            page: Some((2, PageStatus::Done)),
            item: Some(item("s", "http://h2.example/p2", &[("title", Some("two"))])),
            ..Commit::default()
        },
        Commit { run: Some(h2.clone()), page: Some((3, PageStatus::Skipped)), ..Commit::default() },
        Commit { run: Some(h2.clone()), finished: true, ..Commit::default() },
    ])
    .unwrap();
    assert!(!h2.is_fenced());
    assert_eq!(count_items("s"), 2);

    // A finished run is not resumed: the next open starts a new one.
    let next = state.open_run("s", "standalone", Epoch::Next, false).unwrap();
    assert!(!next.resumed);
    assert_ne!(next.id, run.id);
    assert!(next.handled.is_empty() && next.queued.is_empty());

    // Cluster epochs: a newer assignment takes over, an older one is refused.
    let w1 = state.open_run("c", "res-1", Epoch::At(10), false).unwrap();
    let hw1 = handle(&w1);
    sink.write(&[Commit { run: Some(hw1.clone()), queued: vec![queued(7, 0)], ..Commit::default() }])
        .unwrap();
    let w2 = state.open_run("c", "res-1", Epoch::At(20), false).unwrap();
    assert!(w2.resumed);
    assert_eq!(w2.epoch, 20);
    assert!(state.open_run("c", "res-1", Epoch::At(10), false).is_err(), "a stale owner took the run back");
    // Another label (a re-added resource) is another run.
    assert!(!state.open_run("c", "res-2", Epoch::At(30), false).unwrap().resumed);
    // Ended (the resource was deleted): nothing to resume.
    state.end_run(w2.id).unwrap();
    assert!(!state.open_run("c", "res-1", Epoch::At(40), false).unwrap().resumed);

    // --fresh: the unfinished run is discarded.
    let fresh = state.open_run("c", "res-2", Epoch::At(50), true).unwrap();
    assert!(!fresh.resumed);
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
fn mysql_store_conforms() {
    let db = MariaDb::start();
    let mut sink = MysqlSink::open(&db.url).unwrap();
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
}
