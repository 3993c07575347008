//! SQLite, the embedded default: items (one table per rule table, one row per `(task, url)`)
//! and the crawl state (`crawler_runs`, `crawler_frontier`) in one file, written together in
//! one transaction per batch.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{
    key_col, Commit, Epoch, OpenedRun, PageStatus, QueuedUrl, RunHandle, RunLoader, Sink, SinkError,
    StateStore, StoredRun,
};
use super::{FINISHED, RUNNING};
use crate::item::{rfc3339, Item};

fn sqlite_err(e: rusqlite::Error) -> SinkError {
    SinkError { sink: "sqlite", message: e.to_string() }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS crawler_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL,
    label TEXT NOT NULL,
    state TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS crawler_runs_by_task ON crawler_runs (task, label, state);
CREATE TABLE IF NOT EXISTS crawler_frontier (
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    url_key INTEGER NOT NULL,
    url TEXT NOT NULL,
    host TEXT NOT NULL,
    depth INTEGER NOT NULL,
    rule INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    status INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS crawler_frontier_spilled ON crawler_frontier (run, host, depth, seq) WHERE status = 0;
";

fn connect(path: &Path) -> Result<Connection, SinkError> {
    let conn = Connection::open(path).map_err(sqlite_err)?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000; PRAGMA wal_autocheckpoint=10000;")
        .map_err(sqlite_err)?;
    conn.execute_batch(SCHEMA).map_err(sqlite_err)?;
    Ok(conn)
}

/// The columns [`stored_request`] reads, in its order.
const REQUEST_COLUMNS: &str = "seq, url_key, url, depth, rule, priority";

/// A `crawler_frontier` row selected as [`REQUEST_COLUMNS`].
fn stored_request(r: &rusqlite::Row, host: Arc<str>, held: bool) -> rusqlite::Result<QueuedUrl> {
    Ok(QueuedUrl {
        seq: r.get::<_, i64>(0)? as u64,
        key: r.get::<_, i64>(1)? as u64,
        url: r.get::<_, String>(2)?.into(),
        host,
        depth: r.get(3)?,
        rule: r.get(4)?,
        priority: r.get(5)?,
        replaces: None,
        held,
        part: 0,
        sent: false,
    })
}

/// Items and crawl state in SQLite.
pub struct SqliteSink {
    conn: Connection,
    /// Columns known to exist, per table.
    columns: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// Upsert statements built so far, one per table and field list (a rule's items share
    /// their names, so a lookup mostly compares pointers).
    upserts: Vec<Upsert>,
}

struct Upsert {
    table: Arc<str>,
    fields: Vec<Arc<str>>,
    sql: String,
}

impl Upsert {
    fn fits(&self, item: &Item) -> bool {
        self.table == item.table
            && self.fields.len() == item.fields.len()
            && self.fields.iter().zip(&item.fields).all(|(a, (b, _))| a == b)
    }
}

impl SqliteSink {
    /// Opens (or creates) the database file and its state tables.
    pub fn open(path: &Path) -> Result<SqliteSink, SinkError> {
        Ok(SqliteSink { conn: connect(path)?, columns: HashMap::new(), upserts: Vec::new() })
    }

    /// Creates the table, or adds the columns it lacks.
    fn ensure_table(&mut self, item: &Item) -> Result<(), SinkError> {
        if let Some(cols) = self.columns.get(&item.table) {
            if item.fields.iter().all(|(f, _)| cols.contains(f)) {
                return Ok(());
            }
        }
        let table = &item.table;
        // Under the write lock from the start (see `write`): another process's commit between
        // this connection's read and its write fails the statement at once otherwise.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_err)?;
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS \"{table}\" (task TEXT NOT NULL, url TEXT NOT NULL, \
             crawled_at TEXT NOT NULL, PRIMARY KEY (task, url))"
        ))
        .map_err(sqlite_err)?;
        // Column names are compared as SQLite compares them, ignoring ASCII case: a field
        // `title` goes into a column `Title` (another rule's, or an earlier run's spelling).
        let mut existing = HashSet::new();
        {
            let mut stmt = tx.prepare(&format!("PRAGMA table_info(\"{table}\")")).map_err(sqlite_err)?;
            let names = stmt.query_map([], |r| r.get::<_, String>(1)).map_err(sqlite_err)?;
            for n in names {
                existing.insert(n.map_err(sqlite_err)?.to_ascii_lowercase());
            }
        }
        for (f, _) in &item.fields {
            if existing.insert(f.to_ascii_lowercase()) {
                tx.execute_batch(&format!("ALTER TABLE \"{table}\" ADD COLUMN \"{f}\" TEXT"))
                    .map_err(sqlite_err)?;
            }
        }
        tx.commit().map_err(sqlite_err)?;
        // The spellings items use, which the check above finds without a query.
        self.columns.entry(table.clone()).or_default().extend(item.fields.iter().map(|(f, _)| f.clone()));
        Ok(())
    }

    /// The upsert statement for an item's table and fields, built once for each.
    fn upsert_for(&mut self, item: &Item) -> usize {
        if let Some(i) = self.upserts.iter().position(|u| u.fits(item)) {
            return i;
        }
        self.upserts.push(Upsert {
            table: item.table.clone(),
            fields: item.fields.iter().map(|(f, _)| f.clone()).collect(),
            sql: upsert_sql(item),
        });
        self.upserts.len() - 1
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

fn write_item(tx: &Transaction, sql: &str, item: &Item) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(sql)?;
    let task: &str = &item.task;
    let mut params: Vec<&dyn rusqlite::ToSql> = vec![&task, &item.url, &item.crawled_at];
    for (_, v) in &item.fields {
        params.push(v);
    }
    stmt.execute(params.as_slice())?;
    Ok(())
}

/// Writes a commit's state rows. Rows are appended in request order (so a batch touches the
/// table's last pages, not pages all over it), as held or (spilled) queued; a URL queued again
/// closer to a seed while it still waits gets a new row that supersedes the first.
/// `handled`: the requests (run, number) the batch handles, not marked in flight on the way.
fn write_state(
    tx: &Transaction,
    run: i64,
    c: &Commit,
    handled: &HashSet<(i64, u64)>,
) -> rusqlite::Result<()> {
    if !c.queued.is_empty() {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO crawler_frontier (run, seq, url_key, url, host, depth, rule, priority, status) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for q in &c.queued {
            let url: &str = &q.url;
            stmt.execute(params![
                run,
                q.seq as i64,
                key_col(q.key),
                url,
                &*q.host,
                q.depth,
                q.rule,
                q.priority,
                if q.held { PageStatus::Held } else { PageStatus::Queued } as u8
            ])?;
        }
        for old in c.queued.iter().filter_map(|q| q.replaces) {
            tx.prepare_cached(
                "UPDATE crawler_frontier SET status = ?1 WHERE run = ?2 AND seq = ?3 AND status IN (0, 5)",
            )?
            .execute(params![PageStatus::Superseded as u8, run, old as i64])?;
        }
    }
    for seq in c.sent.iter().filter(|s| !handled.contains(&(run, **s))) {
        tx.prepare_cached(
            "UPDATE crawler_frontier SET status = ?1 WHERE run = ?2 AND seq = ?3 AND status = ?4",
        )?
        .execute(params![PageStatus::InFlight as u8, run, *seq as i64, PageStatus::Held as u8])?;
    }
    if let Some((seq, status)) = c.page {
        tx.prepare_cached(
            "UPDATE crawler_frontier SET status = ?1, attempts = attempts + 1 WHERE run = ?2 AND seq = ?3",
        )?
        .execute(params![status as u8, run, seq as i64])?;
    }
    if c.finished {
        tx.prepare_cached("UPDATE crawler_runs SET state = ?1, finished_at = ?2 WHERE id = ?3")?
            .execute(params![FINISHED, rfc3339(std::time::SystemTime::now()), run])?;
    }
    Ok(())
}

impl Sink for SqliteSink {
    fn write(&mut self, batch: &[Commit]) -> Result<(), SinkError> {
        // Each commit's upsert statement (by index into `self.upserts`), when it has an item.
        let mut upserts = Vec::with_capacity(batch.len());
        for c in batch {
            upserts.push(match &c.item {
                Some(item) => {
                    self.ensure_table(item)?;
                    Some(self.upsert_for(item))
                }
                None => None,
            });
        }
        // Immediate: the write lock is taken (waiting up to the busy timeout) before the run
        // is checked. A deferred transaction that read first and wrote after another process
        // had written failed at once with "database is locked" (a stale read snapshot cannot
        // be upgraded), and the writer with it.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_err)?;
        // Whether each run's owner still holds it, checked once per batch inside the transaction
        // (SQLite has one writer at a time, so no other owner can slip in before the commit).
        // Per handle: an old and a new owner of one run in one batch are checked each.
        let mut holds: HashMap<*const RunHandle, bool> = HashMap::new();
        let handled: HashSet<(i64, u64)> =
            batch.iter().filter_map(|c| Some((c.run.as_ref()?.id, c.page?.0))).collect();
        for (c, upsert) in batch.iter().zip(upserts) {
            if let Some(run) = &c.run {
                let held = match holds.get(&Arc::as_ptr(run)) {
                    Some(h) => *h,
                    None => {
                        let h = holds_run(&tx, run).map_err(sqlite_err)?;
                        holds.insert(Arc::as_ptr(run), h);
                        h
                    }
                };
                if !held {
                    run.fence();
                    continue;
                }
            }
            if let (Some(item), Some(i)) = (&c.item, upsert) {
                write_item(&tx, &self.upserts[i].sql, item).map_err(sqlite_err)?;
            }
            if let Some(run) = &c.run {
                write_state(&tx, run.id, c, &handled).map_err(sqlite_err)?;
            }
        }
        tx.commit().map_err(sqlite_err)
    }

    fn refill(
        &mut self,
        run: &RunHandle,
        host: &str,
        limit: usize,
    ) -> Option<Result<Vec<QueuedUrl>, SinkError>> {
        Some(refill(&mut self.conn, run, host, limit).map_err(sqlite_err))
    }
}

/// Whether the run's owner still holds it: its epoch is the run's and the run goes on.
fn holds_run(tx: &Transaction, run: &RunHandle) -> rusqlite::Result<bool> {
    let current: Option<(i64, String)> = tx
        .prepare_cached("SELECT epoch, state FROM crawler_runs WHERE id = ?1")?
        .query_row([run.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(current.is_some_and(|(e, s)| e == run.epoch && s == RUNNING))
}

fn refill(
    conn: &mut Connection,
    run: &RunHandle,
    host: &str,
    limit: usize,
) -> rusqlite::Result<Vec<QueuedUrl>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !holds_run(&tx, run)? {
        run.fence();
        return Ok(Vec::new());
    }
    let rows = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {REQUEST_COLUMNS} FROM crawler_frontier \
             WHERE run = ?1 AND host = ?2 AND status = 0 ORDER BY depth, seq LIMIT ?3"
        ))?;
        let name: Arc<str> = host.into();
        let rows =
            stmt.query_map(params![run.id, host, limit as i64], |r| stored_request(r, name.clone(), true))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    {
        let mut hold =
            tx.prepare_cached("UPDATE crawler_frontier SET status = ?1 WHERE run = ?2 AND seq = ?3")?;
        for q in &rows {
            hold.execute(params![PageStatus::Held as u8, run.id, q.seq as i64])?;
        }
    }
    tx.commit()?;
    Ok(rows)
}

/// The run bookkeeping of a SQLite file (its own connection, beside the sink's).
pub struct SqliteState {
    path: PathBuf,
}

impl SqliteState {
    /// Opens (or creates) the database file and its state tables.
    pub fn open(path: &Path) -> Result<SqliteState, SinkError> {
        connect(path)?;
        Ok(SqliteState { path: path.to_owned() })
    }
}

impl StateStore for SqliteState {
    fn open_run(
        &self,
        task: &str,
        label: &str,
        epoch: Epoch,
        fresh: bool,
        window: usize,
    ) -> Result<OpenedRun, SinkError> {
        let mut conn = connect(&self.path)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_err)?;
        let run = open_in(&tx, task, label, epoch, fresh, window).map_err(|e| match e {
            OpenError::Db(e) => sqlite_err(e),
            OpenError::Stale { current } => SinkError {
                sink: "sqlite",
                message: format!("run of {task:?} is held at epoch {current}, newer than {epoch:?}"),
            },
        })?;
        tx.commit().map_err(sqlite_err)?;
        Ok(run)
    }

    fn end_run(&self, id: i64) -> Result<(), SinkError> {
        let mut conn = connect(&self.path)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_err)?;
        tx.execute(
            "UPDATE crawler_runs SET state = 'ended', finished_at = ?1 WHERE id = ?2",
            params![rfc3339(std::time::SystemTime::now()), id],
        )
        .map_err(sqlite_err)?;
        tx.execute("DELETE FROM crawler_frontier WHERE run = ?1", [id]).map_err(sqlite_err)?;
        tx.commit().map_err(sqlite_err)
    }

    fn adopt_label(
        &self,
        task: &str,
        legacy: &str,
        label: &str,
        not_before: &str,
    ) -> Result<bool, SinkError> {
        let mut conn = connect(&self.path)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_err)?;
        let adopted = adopt_in(&tx, task, legacy, label, not_before).map_err(sqlite_err)?;
        tx.commit().map_err(sqlite_err)?;
        Ok(adopted)
    }

    fn newest_run(&self, task: &str, label: &str) -> Result<Option<StoredRun>, SinkError> {
        let conn = connect(&self.path)?;
        conn.query_row(STORED_RUN, [task, label], |r| {
            Ok(StoredRun { id: r.get(0)?, state: r.get(1)?, started_at: r.get(2)?, finished_at: r.get(3)? })
        })
        .optional()
        .map_err(sqlite_err)
    }

    fn running_runs(&self) -> Result<Vec<(i64, String, String)>, SinkError> {
        let conn = connect(&self.path)?;
        let mut stmt = conn
            .prepare("SELECT id, task, label FROM crawler_runs WHERE state = ?1 ORDER BY id")
            .map_err(sqlite_err)?;
        let rows =
            stmt.query_map([RUNNING], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(sqlite_err)?;
        rows.collect::<Result<_, _>>().map_err(sqlite_err)
    }
}

/// The columns of a [`StoredRun`], in its order.
const STORED_RUN: &str = "SELECT id, state, started_at, finished_at FROM crawler_runs \
     WHERE task = ?1 AND label = ?2 ORDER BY id DESC LIMIT 1";

fn adopt_in(
    tx: &Transaction,
    task: &str,
    legacy: &str,
    label: &str,
    not_before: &str,
) -> rusqlite::Result<bool> {
    let taken = tx
        .query_row("SELECT 1 FROM crawler_runs WHERE task = ?1 AND label = ?2 LIMIT 1", [task, label], |_| {
            Ok(())
        })
        .optional()?
        .is_some();
    if taken {
        return Ok(false);
    }
    let old: Option<i64> = tx
        .query_row(
            "SELECT id FROM crawler_runs WHERE task = ?1 AND label = ?2 AND state <> 'ended' AND started_at >= ?3 \
             ORDER BY id DESC LIMIT 1",
            [task, legacy, not_before],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = old else { return Ok(false) };
    tx.execute("UPDATE crawler_runs SET label = ?1 WHERE id = ?2", params![label, id])?;
    Ok(true)
}

enum OpenError {
    Db(rusqlite::Error),
    Stale { current: i64 },
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        OpenError::Db(e)
    }
}

fn open_in(
    tx: &Transaction,
    task: &str,
    label: &str,
    epoch: Epoch,
    fresh: bool,
    window: usize,
) -> Result<OpenedRun, OpenError> {
    let old_runs = "SELECT id FROM crawler_runs WHERE task = ?1 AND label = ?2";
    if fresh {
        tx.execute(&format!("DELETE FROM crawler_frontier WHERE run IN ({old_runs})"), [task, label])?;
        tx.execute("DELETE FROM crawler_runs WHERE task = ?1 AND label = ?2", [task, label])?;
    }
    let found: Option<(i64, i64)> = tx
        .query_row(
            "SELECT id, epoch FROM crawler_runs WHERE task = ?1 AND label = ?2 AND state = ?3 ORDER BY id DESC LIMIT 1",
            [task, label, RUNNING],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((id, current)) = found else {
        if let Epoch::At(_) = epoch {
            let finished: Option<i64> = tx
                .query_row(
                    "SELECT id FROM crawler_runs WHERE task = ?1 AND label = ?2 AND state = ?3 ORDER BY id DESC LIMIT 1",
                    [task, label, FINISHED],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = finished {
                return Ok(OpenedRun { id, over: true, ..OpenedRun::default() });
            }
        }
        // A new run; the frontiers of the label's finished runs are of no further use.
        tx.execute(&format!("DELETE FROM crawler_frontier WHERE run IN ({old_runs})"), [task, label])?;
        let epoch = epoch.first();
        tx.execute(
            "INSERT INTO crawler_runs (task, label, state, epoch, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![task, label, RUNNING, epoch, rfc3339(std::time::SystemTime::now())],
        )?;
        return Ok(OpenedRun { id: tx.last_insert_rowid(), epoch, ..OpenedRun::default() });
    };
    let taken_over = matches!(epoch, Epoch::At(_));
    let epoch = epoch.after(current).ok_or(OpenError::Stale { current })?;
    tx.execute("UPDATE crawler_runs SET epoch = ?1 WHERE id = ?2", [epoch, id])?;
    // What the previous owner held is waiting again; the new owner holds its own windows.
    tx.execute("UPDATE crawler_frontier SET status = 0 WHERE run = ?1 AND status IN (5, 6)", [id])?;
    let mut loader = RunLoader::new(id, epoch, window);
    let mut stmt = tx.prepare("SELECT url_key, seq, status FROM crawler_frontier WHERE run = ?1")?;
    let mut rows = stmt.query([id])?;
    while let Some(r) = rows.next()? {
        loader.status(r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get(2)?);
    }
    let mut stmt = tx.prepare(&format!(
        "SELECT {REQUEST_COLUMNS}, host FROM crawler_frontier \
         WHERE run = ?1 AND status = 0 ORDER BY host, depth, seq"
    ))?;
    let mut held = Vec::new();
    let mut rows = stmt.query([id])?;
    while let Some(r) = rows.next()? {
        let q = stored_request(r, r.get::<_, String>(6)?.into(), false)?;
        let seq = q.seq;
        if loader.waiting(q) {
            held.push(seq);
        }
    }
    drop(rows);
    drop(stmt);
    let mut hold = tx.prepare("UPDATE crawler_frontier SET status = 5 WHERE run = ?1 AND seq = ?2")?;
    for seq in held {
        hold.execute(params![id, seq as i64])?;
    }
    let mut supersede = tx.prepare("UPDATE crawler_frontier SET status = 4 WHERE run = ?1 AND seq = ?2")?;
    for seq in loader.take_stale() {
        supersede.execute(params![id, seq as i64])?;
    }
    Ok(OpenedRun { taken_over, ..loader.finish() })
}
