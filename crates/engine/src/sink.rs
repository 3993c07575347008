//! Where items go: the [`Sink`] trait, its SQLite and JSON-lines implementations, and the
//! [`SinkWriter`] that batches items from all running crawls into transactions.
//!
//! Sinks are synchronous and run on a blocking thread; crawls never wait on storage I/O except
//! through the bounded channel's backpressure.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::item::Item;

/// A storage failure. Fatal for the run: items are never dropped silently.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {message}")]
pub struct SinkError {
    /// Which sink failed (`sqlite`, `jsonl`).
    pub sink: &'static str,
    /// What went wrong.
    pub message: String,
}

/// A destination for items.
pub trait Sink: Send + 'static {
    /// Writes a batch of items: all of them or, on error, none (where the store allows).
    /// A `(task, url)` already stored in a table is updated, not duplicated.
    fn write(&mut self, items: &[Item]) -> Result<(), SinkError>;
}

fn sqlite_err(e: rusqlite::Error) -> SinkError {
    SinkError { sink: "sqlite", message: e.to_string() }
}

/// Items in SQLite: one table per rule table, one row per `(task, url)`.
pub struct SqliteSink {
    conn: Connection,
    /// Columns known to exist, per table.
    columns: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

impl SqliteSink {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> Result<SqliteSink, SinkError> {
        let conn = Connection::open(path).map_err(sqlite_err)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;")
            .map_err(sqlite_err)?;
        Ok(SqliteSink { conn, columns: HashMap::new() })
    }

    /// Creates the table, or adds the columns it lacks.
    fn ensure_table(&mut self, item: &Item) -> Result<(), SinkError> {
        if let Some(cols) = self.columns.get(&item.table) {
            if item.fields.iter().all(|(f, _)| cols.contains(f)) {
                return Ok(());
            }
        }
        let table = &item.table;
        self.conn
            .execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS \"{table}\" (task TEXT NOT NULL, url TEXT NOT NULL, \
                 crawled_at TEXT NOT NULL, PRIMARY KEY (task, url))"
            ))
            .map_err(sqlite_err)?;
        let mut existing = HashSet::new();
        {
            let mut stmt =
                self.conn.prepare(&format!("PRAGMA table_info(\"{table}\")")).map_err(sqlite_err)?;
            let names = stmt.query_map([], |r| r.get::<_, String>(1)).map_err(sqlite_err)?;
            for n in names {
                existing.insert(Arc::<str>::from(n.map_err(sqlite_err)?.as_str()));
            }
        }
        for (f, _) in &item.fields {
            if !existing.contains(f) {
                self.conn
                    .execute_batch(&format!("ALTER TABLE \"{table}\" ADD COLUMN \"{f}\" TEXT"))
                    .map_err(sqlite_err)?;
                existing.insert(f.clone());
            }
        }
        self.columns.insert(table.clone(), existing);
        Ok(())
    }
}

fn upsert_sql(item: &Item) -> String {
    let mut cols = String::from("task, url, crawled_at");
    let mut vals = String::from("?1, ?2, ?3");
    let mut set = String::from("crawled_at = excluded.crawled_at");
    for (i, (f, _)) in item.fields.iter().enumerate() {
        cols.push_str(&format!(", \"{f}\""));
        vals.push_str(&format!(", ?{}", i + 4));
        set.push_str(&format!(", \"{f}\" = excluded.\"{f}\""));
    }
    format!(
        "INSERT INTO \"{}\" ({cols}) VALUES ({vals}) ON CONFLICT (task, url) DO UPDATE SET {set}",
        item.table
    )
}

impl Sink for SqliteSink {
    fn write(&mut self, items: &[Item]) -> Result<(), SinkError> {
        for item in items {
            self.ensure_table(item)?;
        }
        let tx = self.conn.transaction().map_err(sqlite_err)?;
        {
            for item in items {
                let mut stmt = tx.prepare_cached(&upsert_sql(item)).map_err(sqlite_err)?;
                let task: &str = &item.task;
                let mut params: Vec<&dyn rusqlite::ToSql> = vec![&task, &item.url, &item.crawled_at];
                for (_, v) in &item.fields {
                    params.push(v);
                }
                stmt.execute(params.as_slice()).map_err(sqlite_err)?;
            }
        }
        tx.commit().map_err(sqlite_err)
    }
}

/// Items as JSON lines, one object per item (`{"task","table","url","crawled_at","data"}`).
pub struct JsonlSink {
    out: BufWriter<File>,
}

impl JsonlSink {
    /// Creates (truncates) the output file.
    pub fn create(path: &Path) -> Result<JsonlSink, SinkError> {
        let file = File::create(path)
            .map_err(|e| SinkError { sink: "jsonl", message: format!("{}: {e}", path.display()) })?;
        Ok(JsonlSink { out: BufWriter::with_capacity(64 * 1024, file) })
    }
}

impl Sink for JsonlSink {
    fn write(&mut self, items: &[Item]) -> Result<(), SinkError> {
        let err = |e: std::io::Error| SinkError { sink: "jsonl", message: e.to_string() };
        for item in items {
            serde_json::to_writer(&mut self.out, item).map_err(|e| err(e.into()))?;
            self.out.write_all(b"\n").map_err(err)?;
        }
        self.out.flush().map_err(err)
    }
}

/// A handle crawls use to hand items to the writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ItemSender(mpsc::Sender<Item>);

impl ItemSender {
    /// Queues an item; waits while the writer is behind. Fails once the writer has failed.
    pub async fn send(&self, item: Item) -> Result<(), Item> {
        self.0.send(item).await.map_err(|e| e.0)
    }
}

/// Batches items into the sinks on a background task: a batch is written when it is full, when
/// no item arrived for `linger`, and when every sender is gone.
pub struct SinkWriter {
    tx: Option<mpsc::Sender<Item>>,
    task: JoinHandle<Result<u64, SinkError>>,
}

impl SinkWriter {
    /// Starts the writer. `batch` is the number of items per transaction.
    pub fn spawn(sinks: Vec<Box<dyn Sink>>, batch: usize, linger: Duration) -> SinkWriter {
        let batch = batch.max(1);
        let (tx, rx) = mpsc::channel(batch * 4);
        let task = tokio::spawn(write_loop(sinks, rx, batch, linger));
        SinkWriter { tx: Some(tx), task }
    }

    /// A sender for one crawl.
    pub fn sender(&self) -> ItemSender {
        ItemSender(self.tx.clone().expect("sender taken only by close"))
    }

    /// Waits until every sender is dropped, writes the last partial batch, and returns the
    /// number of items written.
    pub async fn close(mut self) -> Result<u64, SinkError> {
        self.tx = None;
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(SinkError { sink: "writer", message: e.to_string() }),
        }
    }
}

async fn write_loop(
    mut sinks: Vec<Box<dyn Sink>>,
    mut rx: mpsc::Receiver<Item>,
    batch: usize,
    linger: Duration,
) -> Result<u64, SinkError> {
    let mut written = 0u64;
    loop {
        let mut buf: Vec<Item> = Vec::with_capacity(batch);
        // Wait, without a timer, for the first item of the next batch.
        if rx.recv_many(&mut buf, batch).await == 0 {
            return Ok(written);
        }
        // Fill it until it is full, every sender is gone, or `linger` has passed.
        let deadline = tokio::time::Instant::now() + linger;
        let mut closed = false;
        while buf.len() < batch {
            let room = batch - buf.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut buf, room)).await {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let n = buf.len() as u64;
        let (back, result) = tokio::task::spawn_blocking(move || {
            let r = sinks.iter_mut().try_for_each(|s| s.write(&buf));
            (sinks, r)
        })
        .await
        .map_err(|e| SinkError { sink: "writer", message: e.to_string() })?;
        sinks = back;
        if let Err(e) = result {
            tracing::error!(error = %e, "item sink failed; stopping");
            return Err(e);
        }
        written += n;
        if closed {
            return Ok(written);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(url: &str, title: &str) -> Item {
        Item {
            task: "t".into(),
            table: "book".into(),
            url: url.into(),
            crawled_at: "2026-01-01T00:00:00Z".into(),
            fields: vec![("title".into(), Some(title.into()))],
        }
    }

    #[test]
    fn sqlite_upserts_one_row_per_task_and_url_and_adds_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let mut s = SqliteSink::open(&path).unwrap();
        s.write(&[item("http://h/1", "a"), item("http://h/2", "b")]).unwrap();
        s.write(&[item("http://h/1", "a2")]).unwrap();
        let mut wider = item("http://h/3", "c");
        wider.fields.push(("price".into(), None));
        s.write(&[wider]).unwrap();
        let conn = Connection::open(&path).unwrap();
        let rows: Vec<(String, String, Option<String>)> = conn
            .prepare("SELECT url, title, price FROM book ORDER BY url")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows,
            [
                ("http://h/1".into(), "a2".into(), None),
                ("http://h/2".into(), "b".into(), None),
                ("http://h/3".into(), "c".into(), None)
            ]
        );
    }

    #[tokio::test]
    async fn writer_flushes_the_last_partial_batch_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        let writer = SinkWriter::spawn(
            vec![Box::new(JsonlSink::create(&path).unwrap())],
            100,
            Duration::from_secs(60),
        );
        let tx = writer.sender();
        for i in 0..250 {
            tx.send(item(&format!("http://h/{i}"), "t")).await.unwrap();
        }
        drop(tx);
        assert_eq!(writer.close().await.unwrap(), 250);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 250);
    }
}
