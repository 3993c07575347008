//! One conformance suite for every item sink: SQLite (a temp file) and MariaDB (a real server
//! on 127.0.0.1). Rows are read back with each store's own client.

use std::sync::Arc;

use crawler_engine::{Item, MysqlSink, Sink, SqliteSink};
use crawler_fixture::mariadb::MariaDb;

fn item(task: &str, url: &str, fields: &[(&str, Option<&str>)]) -> Item {
    Item {
        task: task.into(),
        table: "book".into(),
        url: url.into(),
        crawled_at: "2026-01-01T00:00:00Z".into(),
        fields: fields.iter().map(|(k, v)| (Arc::<str>::from(*k), v.map(str::to_owned))).collect(),
    }
}

/// Rows as `task|url|title|price` lines, sorted; NULL as `NULL`.
fn conformance(sink: &mut dyn Sink, rows: &dyn Fn() -> Vec<String>) {
    sink.write(&[
        item("t", "http://h/1", &[("title", Some("One"))]),
        item("t", "http://h/2", &[("title", Some("Twö — ünïcode"))]),
        item("u", "http://h/1", &[("title", Some("Other task, same url"))]),
    ])
    .unwrap();
    // Re-crawling a URL updates its row; a new field adds a column; a missing value is NULL.
    sink.write(&[
        item("t", "http://h/1", &[("title", Some("One again")), ("price", Some("£1"))]),
        item("t", "http://h/3", &[("title", None)]),
    ])
    .unwrap();
    // The same batch twice (a retried write) changes nothing.
    let again = [item("t", "http://h/2", &[("title", Some("Twö — ünïcode"))])];
    sink.write(&again).unwrap();
    sink.write(&again).unwrap();
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

#[test]
fn sqlite_sink_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut sink = SqliteSink::open(&path).unwrap();
    conformance(&mut sink, &|| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = conn
            .prepare("SELECT task || '|' || url || '|' || COALESCE(title, 'NULL') || '|' || COALESCE(price, 'NULL') FROM book ORDER BY task, url")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.map(Result::unwrap).collect()
    });
}

#[test]
fn mysql_sink_conforms() {
    let db = MariaDb::start();
    let mut sink = MysqlSink::open(&db.url).unwrap();
    conformance(&mut sink, &|| {
        db.query("SELECT CONCAT(task, '|', url, '|', COALESCE(title, 'NULL'), '|', COALESCE(price, 'NULL')) FROM book ORDER BY task, url")
            .lines()
            .map(str::to_owned)
            .collect()
    });
}
