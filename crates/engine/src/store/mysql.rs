//! MySQL/MariaDB, the shared store of a cluster: items (one table per rule table, one row per
//! `(task, url)` upserted, so a task that moves between workers never duplicates rows) and the
//! crawl state, written together in one transaction per batch. Each batch locks the rows of its
//! runs (`SELECT ... FOR UPDATE`) and checks their epochs, so a worker that lost a run can never
//! commit for it, even while the new owner is opening it.
//!
//! A run split across workers keeps one row per partition in `crawler_parts` (owner, epoch,
//! released); each owner's batches lock only its own partitions' rows and check their epochs.
//! URLs found for another owner's partition go to `crawler_inbox`, one row per URL (`INSERT
//! IGNORE` on `(run, part, url_key)`), and leave it in the same transaction that stores them in
//! the frontier of the partition's owner.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, Transaction, TxOpts, Value};

use super::{
    key_col, part_of_seq, Commit, Epoch, OpenedRun, PageStatus, PartsOpen, Polled, QueuedUrl, RunHandle,
    RunLoader, Sink, SinkError, StateStore, StoredRun,
};
use super::{pages_to_grant, Taken, FINISHED, RUNNING};
use crate::item::{rfc3339, Item};

fn err(e: impl std::fmt::Display) -> SinkError {
    SinkError { sink: "mysql", message: e.to_string() }
}

/// The columns [`stored_request`] reads, in its order.
const REQUEST_COLUMNS: &str = "seq, url_key, url, depth, rule, priority";
type RequestRow = (u64, i64, String, u32, u32, i32);

/// A `crawler_frontier` row selected as [`REQUEST_COLUMNS`].
fn stored_request(row: RequestRow, host: Arc<str>, held: bool) -> QueuedUrl {
    let (seq, key, url, depth, rule, priority) = row;
    QueuedUrl {
        seq,
        key: key as u64,
        url: url.into(),
        host,
        part: part_of_seq(seq),
        depth,
        rule,
        priority,
        replaces: None,
        held,
        sent: false,
    }
}

/// `(a, b, c)`: an SQL list of partitions (numbers, so nothing to escape).
fn part_list(parts: &[(u32, i64)]) -> String {
    let list: Vec<String> = parts.iter().map(|(p, _)| p.to_string()).collect();
    format!("({})", list.join(", "))
}

/// The collation of item keys: exact, as SQLite compares (ASCII's default ignores case, so
/// `/Go` and `/GO` were one row). URLs are ASCII once normalized; ASCII keys keep the primary
/// key within InnoDB's limit.
const EXACT_ASCII: &str = "ascii_bin";
const TASK_COLUMN: &str = "task VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL";
const URL_COLUMN: &str = "url VARCHAR(3000) CHARACTER SET ascii COLLATE ascii_bin NOT NULL";

const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS crawler_runs (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
     task VARCHAR(255) COLLATE utf8mb4_bin NOT NULL, label VARCHAR(255) COLLATE utf8mb4_bin NOT NULL, \
     state VARCHAR(16) NOT NULL, \
     epoch BIGINT NOT NULL, started_at VARCHAR(32) NOT NULL, finished_at VARCHAR(32) NULL, \
     pages_taken BIGINT NOT NULL DEFAULT 0, \
     KEY crawler_runs_by_task (task, label, state)) DEFAULT CHARSET = utf8mb4",
    "CREATE TABLE IF NOT EXISTS crawler_frontier (run BIGINT NOT NULL, seq BIGINT NOT NULL, \
     url_key BIGINT NOT NULL, url TEXT NOT NULL, host VARCHAR(255) NOT NULL, depth INT NOT NULL, \
     rule INT NOT NULL, priority INT NOT NULL, status TINYINT NOT NULL, attempts INT NOT NULL DEFAULT 0, \
     part INT NOT NULL DEFAULT 0, PRIMARY KEY (run, seq), KEY crawler_frontier_spilled (run, host, status, depth, seq), \
     KEY crawler_frontier_parts (run, part, status)) DEFAULT CHARSET = utf8mb4",
    "CREATE TABLE IF NOT EXISTS crawler_parts (run BIGINT NOT NULL, part INT NOT NULL, \
     owner VARCHAR(255) NOT NULL, epoch BIGINT NOT NULL, released TINYINT NOT NULL DEFAULT 0, \
     PRIMARY KEY (run, part)) DEFAULT CHARSET = utf8mb4",
    "CREATE TABLE IF NOT EXISTS crawler_inbox (run BIGINT NOT NULL, part INT NOT NULL, url_key BIGINT NOT NULL, \
     url TEXT NOT NULL, host VARCHAR(255) NOT NULL, depth INT NOT NULL, rule INT NOT NULL, priority INT NOT NULL, \
     PRIMARY KEY (run, part, url_key)) DEFAULT CHARSET = utf8mb4",
];

/// Brings the state tables of an earlier version up to date (error 1060: the column is
/// there, 1061: the key is).
const UPGRADE: [&str; 3] = [
    "ALTER TABLE crawler_frontier ADD COLUMN part INT NOT NULL DEFAULT 0",
    "ALTER TABLE crawler_frontier ADD KEY crawler_frontier_parts (run, part, status)",
    ADD_PAGES_TAKEN,
];

const ADD_PAGES_TAKEN: &str = "ALTER TABLE crawler_runs ADD COLUMN pages_taken BIGINT NOT NULL DEFAULT 0";

/// Once `pages_taken` is added to runs under way: what they handled so far counts as taken.
const COUNT_PAGES_TAKEN: &str =
    "UPDATE crawler_runs r SET pages_taken = (SELECT COUNT(*) FROM crawler_frontier f \
     WHERE f.run = r.id AND f.status IN (1, 2, 3)) WHERE r.state = 'running'";

/// A database URL's options, with the TCP timeouts it does not set itself: a connect gives up
/// after 10 s; a server that stops answering while a statement runs (a host gone, a network cut,
/// where no reset ever arrives) is probed after 10 s of silence, and the connection fails once
/// data or probes have gone unacknowledged for 30 s (`TCP_USER_TIMEOUT`, which then decides
/// over the probe count). Without them such a call waits for the kernel's retransmissions
/// (about 15 minutes) or, waiting for an answer, for ever, and with it the writer and every
/// crawl of the process. A statement that takes long on a live server is not cut: its probes
/// are answered.
fn opts(url: &str) -> Result<Opts, SinkError> {
    let opts = Opts::from_url(url).map_err(err)?;
    let mut b = mysql::OptsBuilder::from_opts(opts.clone())
        .tcp_keepalive_time_ms(opts.get_tcp_keepalive_time_ms().or(Some(10_000)))
        .tcp_keepalive_probe_interval_secs(opts.get_tcp_keepalive_probe_interval_secs().or(Some(5)))
        .tcp_keepalive_probe_count(opts.get_tcp_keepalive_probe_count().or(Some(3)))
        .tcp_connect_timeout(opts.get_tcp_connect_timeout().or(Some(std::time::Duration::from_secs(10))))
        // The state's transactions rely on REPEATABLE READ's gap locks (two workers opening a
        // task's run at once: one creates it, the other waits and finds it); a server whose
        // default is READ COMMITTED (a common choice) let both create one.
        .init(
            opts.get_init()
                .into_iter()
                .chain(["SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ".to_owned()])
                .collect(),
        );
    #[cfg(target_os = "linux")]
    {
        b = b.tcp_user_timeout_ms(opts.get_tcp_user_timeout_ms().or(Some(30_000)));
    }
    Ok(b.into())
}

fn connect(opts: &Opts) -> Result<Conn, SinkError> {
    connect_or_why(opts).map_err(err)
}

fn connect_or_why(opts: &Opts) -> Result<Conn, mysql::Error> {
    let mut conn = Conn::new(opts.clone())?;
    for ddl in SCHEMA {
        conn.query_drop(ddl)?;
    }
    for ddl in UPGRADE {
        match conn.query_drop(ddl) {
            Err(mysql::Error::MySqlError(e)) if e.code == 1060 || e.code == 1061 => {}
            Ok(()) if ddl == ADD_PAGES_TAKEN => conn.query_drop(COUNT_PAGES_TAKEN)?,
            r => r?,
        }
    }
    let runs_key: Option<Option<String>> = conn.query_first(
        "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME = 'crawler_runs' AND COLUMN_NAME = 'task'",
    )?;
    if runs_key.flatten().as_deref() != Some("utf8mb4_bin") {
        conn.query_drop(EXACT_RUN_KEYS)?;
    }
    Ok(conn)
}

/// A connection's server session: its id, and when the server instance it is on started
/// (Unix seconds), which tells one instance from the next (ids start again at a restart).
#[derive(Clone, Copy, Debug)]
struct Session {
    id: u64,
    server_started: i64,
}

impl Session {
    /// `None` when the server would not say (the old session is then left alone).
    fn of(conn: &mut Conn) -> Option<Session> {
        let row: Option<(u64, i64)> = conn
            .query_first(
                "SELECT CONNECTION_ID(), UNIX_TIMESTAMP() - CAST(VARIABLE_VALUE AS SIGNED)                  FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME'",
            )
            .ok()
            .flatten();
        row.map(|(id, server_started)| Session { id, server_started })
    }
}

/// Task names and labels compared exactly, in runs of earlier versions (whose collation
/// ignored case: task `Books` took the run of `books` over).
const EXACT_RUN_KEYS: &str =
    "ALTER TABLE crawler_runs MODIFY task VARCHAR(255) COLLATE utf8mb4_bin NOT NULL, \
     MODIFY label VARCHAR(255) COLLATE utf8mb4_bin NOT NULL";

/// How long a failed write waits for its server to come back (a restart, a failover) before
/// the writer gives up, unless [`MysqlSink::waiting_for`] says otherwise. Meanwhile the crawls
/// wait for the writer; nothing they handed it is lost.
pub const DEFAULT_OUTAGE: std::time::Duration = std::time::Duration::from_secs(120);

/// Whether a failure says that the server could not be reached, or is starting, stopping or
/// full of connections, rather than that it refused what was asked (or that the URL is wrong).
fn unreachable(e: &mysql::Error) -> bool {
    use mysql::DriverError::{ConnectTimeout, CouldNotConnect};
    match e {
        // A socket's failure, also while the packets of the handshake are read or written.
        mysql::Error::IoError(_) | mysql::Error::CodecError(_) => true,
        mysql::Error::DriverError(d) => matches!(d, CouldNotConnect(_) | ConnectTimeout),
        // Too many connections, unknown command (a Galera node not ready), shutdown in
        // progress, connection killed.
        mysql::Error::MySqlError(e) => matches!(e.code, 1040 | 1047 | 1053 | 1927),
        _ => false,
    }
}

/// [`connect`], waiting up to `within` for a server that cannot be reached: tries 250 ms
/// apart at first, doubling up to 4 s.
fn connect_waiting(opts: &Opts, within: std::time::Duration) -> Result<Conn, SinkError> {
    let deadline = std::time::Instant::now() + within;
    let mut pause = std::time::Duration::from_millis(250);
    loop {
        match connect_or_why(opts) {
            Ok(conn) => return Ok(conn),
            Err(e) if unreachable(&e) && std::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, "mysql server unreachable; waiting for it");
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_secs(4));
            }
            Err(e) => return Err(err(e)),
        }
    }
}

/// Items and crawl state in MySQL/MariaDB over one connection (reconnected once per batch on
/// failure).
pub struct MysqlSink {
    opts: Opts,
    conn: Conn,
    /// The server session of `conn` (see [`Session`]).
    session: Option<Session>,
    columns: HashMap<Arc<str>, HashSet<String>>,
    /// How long a failed write waits for a server that cannot be reached.
    outage: std::time::Duration,
}

/// Why a `mysql://` URL cannot be used (an unknown parameter, a bad port, ...), found without
/// connecting; `None` when it can.
pub fn mysql_url_problem(url: &str) -> Option<String> {
    Opts::from_url(url).err().map(|e| e.to_string())
}

impl MysqlSink {
    /// Connects to `mysql://user:pass@host:port/db` and creates the state tables.
    pub fn open(url: &str) -> Result<MysqlSink, SinkError> {
        let opts = opts(url)?;
        let mut conn = connect(&opts)?;
        let session = Session::of(&mut conn);
        Ok(MysqlSink { opts, conn, session, columns: HashMap::new(), outage: DEFAULT_OUTAGE })
    }

    /// Goes on over `conn`, a new connection, and ends the server session of the one it
    /// replaces. A connection lost mid-transaction (a network cut, a proxy gone) can leave its
    /// session on the server, idle in its transaction and holding the row locks it took (the
    /// run's row among them) until the server notices, which may take hours: the retried
    /// write then waited for its own locks and failed.
    fn replace_conn(&mut self, mut conn: Conn) {
        let session = Session::of(&mut conn);
        if let (Some(old), Some(new)) = (self.session, session) {
            // Only on the server instance the old session was on: after a restart, ids start
            // again and the old one may be another client's.
            if (old.server_started - new.server_started).abs() <= 2 {
                match conn.query_drop(format!("KILL {}", old.id)) {
                    Ok(()) => tracing::debug!(id = old.id, "ended the server session of a lost connection"),
                    // Gone already (1094, unknown thread id), or not ours to end.
                    Err(e) => tracing::debug!(id = old.id, error = %e, "old server session not ended"),
                }
            }
        }
        self.conn = conn;
        self.session = session;
        self.columns.clear();
    }

    /// How long a failed write waits for a server that cannot be reached (a restart, a
    /// failover) before it fails (two minutes unless set).
    pub fn waiting_for(mut self, outage: std::time::Duration) -> MysqlSink {
        self.outage = outage;
        self
    }

    fn ensure_table(&mut self, item: &Item) -> Result<(), SinkError> {
        if let Some(cols) = self.columns.get(&item.table) {
            if item.fields.iter().all(|(f, _)| cols.contains(&**f)) {
                return Ok(());
            }
        }
        let table = &item.table;
        self.conn
            .query_drop(format!(
                "CREATE TABLE IF NOT EXISTS `{table}` ({TASK_COLUMN}, {URL_COLUMN}, \
                 crawled_at VARCHAR(32) NOT NULL, PRIMARY KEY (task, url)) DEFAULT CHARSET = utf8mb4"
            ))
            .map_err(err)?;
        let existing: Vec<(String, String, Option<String>)> = self
            .conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLLATION_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (&**table,),
            )
            .map_err(err)?;
        // Field columns hold up to the 1 MiB a field may have: MEDIUMTEXT (16 MiB). Columns
        // made TEXT (64 KiB) by earlier versions are widened once, or a longer field would
        // be refused for ever (strict mode), and with it the batch and the writer.
        let narrow: Vec<&str> = existing
            .iter()
            .filter(|(column, kind, _)| {
                kind.eq_ignore_ascii_case("text")
                    && item.fields.iter().any(|(f, _)| f.eq_ignore_ascii_case(column))
            })
            .map(|(column, _, _)| column.as_str())
            .collect();
        // Keys made by earlier versions ignore case (ASCII's default collation): they are made
        // exact once.
        let loose_keys = existing.iter().any(|(column, _, collation)| {
            (column == "task" || column == "url") && collation.as_deref() != Some(EXACT_ASCII)
        });
        if !narrow.is_empty() || loose_keys {
            self.upgrade(table, &narrow)?;
        }
        let mut existing: HashSet<String> = existing.into_iter().map(|(c, _, _)| c).collect();
        for (f, _) in &item.fields {
            if existing.contains(&**f) {
                continue;
            }
            match self.conn.query_drop(format!("ALTER TABLE `{table}` ADD COLUMN `{f}` MEDIUMTEXT")) {
                Ok(()) => {}
                // Another worker added it first.
                Err(mysql::Error::MySqlError(e)) if e.code == 1060 => {}
                Err(e) => return Err(err(e)),
            }
            existing.insert(f.to_string());
        }
        self.columns.insert(table.clone(), existing);
        Ok(())
    }

    /// Widens a table's field columns `fields` that are TEXT to MEDIUMTEXT, and makes its keys
    /// exact where they ignore case, in one `ALTER` (a table rebuild), under a named lock (the
    /// session's: a dropped connection lets it go) so that of the workers finding the table
    /// old, one changes it and the others then find it changed.
    fn upgrade(&mut self, table: &str, fields: &[&str]) -> Result<(), SinkError> {
        // Lock names are at most 64 characters, and a table's name may be as long.
        let lock = format!("crawler_widen_{:016x}", crate::scope::stable_hash(table));
        let got: Option<Option<i64>> =
            self.conn.exec_first("SELECT GET_LOCK(?, 120)", (&lock,)).map_err(err)?;
        if got.flatten() != Some(1) {
            return Err(SinkError {
                sink: "mysql",
                message: format!("another worker is still changing the columns of {table}"),
            });
        }
        let changed = (|| -> Result<(), mysql::Error> {
            let columns: Vec<(String, String, Option<String>)> = self.conn.exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLLATION_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (table,),
            )?;
            let mut changes = Vec::new();
            for (column, kind, collation) in &columns {
                let exact = collation.as_deref() == Some(EXACT_ASCII);
                match column.as_str() {
                    "task" if !exact => changes.push(format!("MODIFY COLUMN {TASK_COLUMN}")),
                    "url" if !exact => changes.push(format!("MODIFY COLUMN {URL_COLUMN}")),
                    c if kind == "text" && fields.contains(&c) => {
                        changes.push(format!("MODIFY COLUMN `{c}` MEDIUMTEXT"))
                    }
                    _ => {}
                }
            }
            if changes.is_empty() {
                return Ok(());
            }
            tracing::info!(table, changes = ?changes, "bringing an item table up to date");
            self.conn.query_drop(format!("ALTER TABLE `{table}` {}", changes.join(", ")))
        })();
        self.conn.exec_drop("SELECT RELEASE_LOCK(?)", (&lock,)).map_err(err)?;
        changed.map_err(err)
    }

    fn write_once(&mut self, batch: &[Commit]) -> Result<(), SinkError> {
        // DDL commits implicitly in MySQL: tables first, then the transaction.
        for item in batch.iter().filter_map(|c| c.item.as_ref()) {
            self.ensure_table(item)?;
        }
        let mut tx = self.conn.start_transaction(TxOpts::default()).map_err(err)?;
        // A split share that ends the run or gives pages back updates the run's row: it is
        // locked before the share's partition rows, the order open_parts takes them in (the
        // other order could deadlock with a new owner opening the partitions).
        let mut ending: Vec<i64> = batch
            .iter()
            .filter_map(|c| c.run.as_ref().filter(|r| r.is_split() && (c.finished || c.unused_pages > 0)))
            .map(|r| r.id)
            .collect();
        ending.sort_unstable();
        ending.dedup();
        for id in ending {
            tx.exec_drop("SELECT id FROM crawler_runs WHERE id = ? FOR UPDATE", (id,)).map_err(err)?;
        }
        // Checked once per handle (two handles of one run, e.g. an old and a new owner, are
        // checked each on its own).
        let mut holds: HashMap<*const RunHandle, bool> = HashMap::new();
        let mut fenced = Vec::new();
        let mut accepted = Vec::with_capacity(batch.len());
        for c in batch {
            if let Some(run) = &c.run {
                let held = match holds.get(&Arc::as_ptr(run)) {
                    Some(h) => *h,
                    None => {
                        let h = holds_run(&mut tx, run)?;
                        holds.insert(Arc::as_ptr(run), h);
                        h
                    }
                };
                if !held {
                    fenced.push(run.clone());
                    continue;
                }
            }
            accepted.push(c);
        }
        write_batch(&mut tx, &accepted)?;
        tx.commit().map_err(err)?;
        for run in fenced {
            run.fence();
        }
        Ok(())
    }
}

/// Rows per multi-row statement (well within MySQL's placeholder and packet limits).
const ROWS_PER_STATEMENT: usize = 500;

/// Bytes of row values per statement, far under MySQL's smallest usual `max_allowed_packet`
/// (16 MiB in MariaDB; fields are capped at 1 MiB each).
const BYTES_PER_STATEMENT: usize = 4 << 20;

/// `rows` cut into runs of at most [`ROWS_PER_STATEMENT`] rows and, beyond a first row,
/// [`BYTES_PER_STATEMENT`] bytes.
fn by_size<T>(rows: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let n = size(row);
        if i > start && (i - start >= ROWS_PER_STATEMENT || bytes + n > BYTES_PER_STATEMENT) {
            out.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// `(?, ?, ...), (?, ?, ...)`: `rows` groups of `cols` placeholders.
fn marks(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(", "));
    vec![one; rows].join(", ")
}

/// Writes the accepted commits of a batch with a few multi-row statements instead of several
/// per page (each statement is a round trip): items per table, then the frontier and inbox
/// rows, then superseded rows, inbox rows taken, handled pages, and runs finished or released.
/// The final rows are those the commits would give one by one: inserts come before the
/// updates of the same rows, and a later item of a URL replaces an earlier one.
fn write_batch(tx: &mut Transaction, commits: &[&Commit]) -> Result<(), SinkError> {
    // Items, grouped by table and field set (in order, so the last of a URL wins).
    let mut groups: Vec<(String, Vec<&Item>)> = Vec::new();
    for item in commits.iter().filter_map(|c| c.item.as_ref()) {
        let fields: Vec<&str> = item.fields.iter().map(|(f, _)| &**f).collect();
        let key = format!("{}\u{0}{}", item.table, fields.join("\u{0}"));
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(item),
            None => groups.push((key, vec![item])),
        }
    }
    for (_, list) in &groups {
        let first = list[0];
        let mut cols = String::from("task, url, crawled_at");
        let mut set = String::from("crawled_at = VALUES(crawled_at)");
        for (f, _) in &first.fields {
            cols.push_str(&format!(", `{f}`"));
            set.push_str(&format!(", `{f}` = VALUES(`{f}`)"));
        }
        insert_rows(
            tx,
            (&format!("INSERT INTO `{}` ({cols})", first.table), &format!("ON DUPLICATE KEY UPDATE {set}")),
            list,
            |i| i.url.len() + i.fields.iter().map(|(_, v)| v.as_ref().map_or(0, |v| v.len())).sum::<usize>(),
            |item, params| {
                params.extend([
                    (*item.task).into(),
                    item.url.as_str().into(),
                    item.crawled_at.as_str().into(),
                ]);
                params.extend(item.fields.iter().map(|(_, v)| v.as_deref().map_or(Value::NULL, Value::from)));
            },
        )
        .map_err(err)?;
    }
    let state: Vec<(&RunHandle, &Commit)> =
        commits.iter().filter_map(|c| c.run.as_deref().map(|r| (r, *c))).collect();
    // Frontier rows and inbox rows.
    let queued: Vec<(i64, &QueuedUrl)> =
        state.iter().flat_map(|(r, c)| c.queued.iter().map(move |q| (r.id, q))).collect();
    let row_size = |r: &&(i64, &QueuedUrl)| r.1.url.len() + r.1.host.len();
    let rows: Vec<&(i64, &QueuedUrl)> = queued.iter().filter(|(_, q)| !q.sent).collect();
    insert_rows(
        tx,
        (&format!("INSERT IGNORE INTO crawler_frontier ({URL_COLUMNS}, seq, status)"), ""),
        &rows,
        row_size,
        |(run, q), params| {
            let status = if q.held { PageStatus::Held } else { PageStatus::Queued } as u8;
            url_values(*run, q, params);
            params.extend([q.seq.into(), status.into()]);
        },
    )
    .map_err(err)?;
    let sent: Vec<&(i64, &QueuedUrl)> = queued.iter().filter(|(_, q)| q.sent).collect();
    insert_rows(
        tx,
        (
            &format!("INSERT INTO crawler_inbox ({URL_COLUMNS})"),
            // One row per URL; a URL sent again closer to a seed takes the smaller depth (and
            // its rule), so its owner fetches it within `max_depth` of it.
            "ON DUPLICATE KEY UPDATE rule = IF(VALUES(depth) < depth, VALUES(rule), rule), \
             priority = IF(VALUES(depth) < depth, VALUES(priority), priority), depth = LEAST(depth, VALUES(depth))",
        ),
        &sent,
        row_size,
        |(run, q), params| url_values(*run, q, params),
    )
    .map_err(err)?;
    // Rows replaced by a closer find (only while still waiting).
    let replaced: Vec<(i64, u64)> =
        queued.iter().filter_map(|(run, q)| q.replaces.map(|s| (*run, s))).collect();
    for ((run, _), seqs) in grouped(&replaced, |(run, _)| (*run, 0), |(_, seq)| *seq) {
        let head = format!(
            "UPDATE crawler_frontier SET status = {} WHERE run = ? AND status IN (0, 5) AND seq",
            PageStatus::Superseded as u8
        );
        update_in(tx, &head, &[run.into()], &seqs, ROWS_PER_STATEMENT, Value::from).map_err(err)?;
    }
    // Inbox rows taken in, unless sent again closer since they were read.
    let taken: Vec<(i64, u64, u64)> = state
        .iter()
        .flat_map(|(r, c)| {
            c.taken.iter().map(move |(p, k, d)| (r.id, (u64::from(*p) << 32) | u64::from(*d), *k))
        })
        .collect();
    for ((run, part_depth), keys) in grouped(&taken, |(run, pd, _)| (*run, *pd), |(_, _, k)| *k) {
        let (part, depth) = (part_depth >> 32, part_depth & 0xffff_ffff);
        let head = "DELETE FROM crawler_inbox WHERE run = ? AND part = ? AND depth >= ? AND url_key";
        update_in(tx, head, &[run.into(), part.into(), depth.into()], &keys, ROWS_PER_STATEMENT, |k| {
            key_col(k).into()
        })
        .map_err(err)?;
    }
    // Requests sent, unless handled in this batch.
    let handled: HashSet<(i64, u64)> =
        state.iter().filter_map(|(r, c)| c.page.map(|(seq, _)| (r.id, seq))).collect();
    let sent: Vec<(i64, u64)> = state
        .iter()
        .flat_map(|(r, c)| c.sent.iter().map(move |s| (r.id, *s)))
        .filter(|k| !handled.contains(k))
        .collect();
    for ((run, _), seqs) in grouped(&sent, |(run, _)| (*run, 0), |(_, seq)| *seq) {
        let head = format!(
            "UPDATE crawler_frontier SET status = {} WHERE run = ? AND status = {} AND seq",
            PageStatus::InFlight as u8,
            PageStatus::Held as u8
        );
        update_in(tx, &head, &[run.into()], &seqs, ROWS_PER_STATEMENT, Value::from).map_err(err)?;
    }
    // Handled pages, by run and status.
    let pages: Vec<(i64, u8, u64)> =
        state.iter().filter_map(|(r, c)| c.page.map(|(seq, st)| (r.id, st as u8, seq))).collect();
    for ((run, status), seqs) in grouped(&pages, |(run, st, _)| (*run, u64::from(*st)), |(_, _, seq)| *seq) {
        let head = "UPDATE crawler_frontier SET status = ?, attempts = attempts + 1 WHERE run = ? AND seq";
        update_in(tx, head, &[status.into(), run.into()], &seqs, ROWS_PER_STATEMENT, Value::from)
            .map_err(err)?;
    }
    for (handle, c) in state.iter().filter(|(_, c)| c.finished || c.release) {
        end_of_share(tx, handle, c)?;
    }
    Ok(())
}

/// Loads the rows of run `id` (those `filter`, a condition after `WHERE run = ?`, keeps) into
/// `loader`: every row's status, then the waiting rows by host and order; the waiting rows it
/// keeps in memory are marked held, the stale ones superseded.
fn load_rows(
    tx: &mut Transaction,
    id: i64,
    filter: &str,
    loader: &mut RunLoader,
) -> Result<(), mysql::Error> {
    let statuses = tx.exec_iter(
        format!("SELECT url_key, seq, status FROM crawler_frontier WHERE run = ? {filter}"),
        (id,),
    )?;
    for row in statuses {
        let (key, seq, status): (i64, u64, u8) = mysql::from_row_opt(row?)?;
        loader.status(key as u64, seq, status);
    }
    let waiting = tx.exec_iter(
        format!(
            "SELECT {REQUEST_COLUMNS}, host FROM crawler_frontier \
                 WHERE run = ? {filter} AND status = 0 ORDER BY host, depth, seq"
        ),
        (id,),
    )?;
    let mut held = Vec::new();
    for row in waiting {
        let (seq, key, url, depth, rule, priority, host): (u64, i64, String, u32, u32, i32, String) =
            mysql::from_row_opt(row?)?;
        let q = stored_request((seq, key, url, depth, rule, priority), host.into(), false);
        if loader.waiting(q) {
            held.push(seq);
        }
    }
    set_status(tx, id, PageStatus::Held as u8, &held)?;
    set_status(tx, id, PageStatus::Superseded as u8, &loader.take_stale())
}

/// Sets the status of rows `seqs` of `run`, many rows per statement (one statement per row
/// made opening a run with tens of thousands of waiting rows take seconds).
fn set_status(tx: &mut Transaction, run: i64, status: u8, seqs: &[u64]) -> Result<(), mysql::Error> {
    let head = format!("UPDATE crawler_frontier SET status = {status} WHERE run = ? AND seq");
    update_in(tx, &head, &[run.into()], seqs, 1000, Value::from)
}

/// The columns a queued URL's frontier and inbox rows share, in [`url_values`]' order.
const URL_COLUMNS: &str = "run, part, url_key, url, host, depth, rule, priority";

/// A queued URL's values for [`URL_COLUMNS`].
fn url_values(run: i64, q: &QueuedUrl, params: &mut Vec<Value>) {
    params.extend([
        run.into(),
        q.part.into(),
        key_col(q.key).into(),
        (*q.url).into(),
        (*q.host).into(),
        q.depth.into(),
        q.rule.into(),
        q.priority.into(),
    ]);
}

/// Inserts `rows` with multi-row statements cut [`by_size`]: `head VALUES (...), (...) tail`,
/// each row giving its values (as many for every row) through `values`.
fn insert_rows<T>(
    tx: &mut Transaction,
    (head, tail): (&str, &str),
    rows: &[T],
    size: impl Fn(&T) -> usize,
    values: impl Fn(&T, &mut Vec<Value>),
) -> Result<(), mysql::Error> {
    for chunk in by_size(rows, size) {
        let mut params: Vec<Value> = Vec::new();
        for row in chunk {
            values(row, &mut params);
        }
        let sql = format!("{head} VALUES {} {tail}", marks(chunk.len(), params.len() / chunk.len()));
        tx.exec_drop(sql, params)?;
    }
    Ok(())
}

/// Runs `head IN (?, ...)` over `keys`, `per` at a time, the statement's other parameters
/// (`fixed`) first.
fn update_in<K: Copy>(
    tx: &mut Transaction,
    head: &str,
    fixed: &[Value],
    keys: &[K],
    per: usize,
    value: impl Fn(K) -> Value,
) -> Result<(), mysql::Error> {
    for chunk in keys.chunks(per) {
        let sql = format!("{head} IN ({})", vec!["?"; chunk.len()].join(", "));
        let mut params: Vec<Value> = fixed.to_vec();
        params.extend(chunk.iter().map(|k| value(*k)));
        tx.exec_drop(sql, params)?;
    }
    Ok(())
}

/// Values grouped by a key, groups in first-seen order.
fn grouped<T>(
    items: &[T],
    key: impl Fn(&T) -> (i64, u64),
    value: impl Fn(&T) -> u64,
) -> Vec<((i64, u64), Vec<u64>)> {
    let mut out: Vec<((i64, u64), Vec<u64>)> = Vec::new();
    for t in items {
        let k = key(t);
        match out.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(value(t)),
            None => out.push((k, vec![value(t)])),
        }
    }
    out
}

/// A run finished, or a split run's share releasing its partitions.
fn end_of_share(tx: &mut Transaction, handle: &RunHandle, c: &Commit) -> Result<(), SinkError> {
    let run = handle.id;
    if c.finished {
        tx.exec_drop(
            "UPDATE crawler_runs SET state = ?, finished_at = ? WHERE id = ? AND state = ?",
            (FINISHED, rfc3339(std::time::SystemTime::now()), run, RUNNING),
        )
        .map_err(err)?;
    }
    if c.release && handle.is_split() {
        let mut released = 0;
        for (p, e) in &handle.parts {
            tx.exec_drop(
                "UPDATE crawler_parts SET released = 1 WHERE run = ? AND part = ? AND epoch = ? AND released = 0",
                (run, *p, *e),
            )
            .map_err(err)?;
            released += tx.affected_rows();
        }
        // Given back once: a release written again (its first commit's answer lost) finds its
        // partitions released already.
        if c.unused_pages > 0 && released > 0 {
            tx.exec_drop(
                "UPDATE crawler_runs SET pages_taken = GREATEST(pages_taken - ?, 0) WHERE id = ?",
                (c.unused_pages as i64, run),
            )
            .map_err(err)?;
        }
        let parts = part_list(&handle.parts);
        tx.exec_drop(
            format!(
                "UPDATE crawler_frontier SET status = 0 WHERE run = ? AND part IN {parts} AND status IN (5, 6)"
            ),
            (run,),
        )
        .map_err(err)?;
    }
    Ok(())
}

/// How often a transaction the server rolled back may be tried again: a deadlock (1213) at
/// once, several times (owners of a split run deadlock on each other's inbox rows now and
/// then); a lock wait timeout (1205) once (each took the server's whole wait).
fn retries_for(e: &SinkError) -> u32 {
    if e.message.contains("ERROR 1213 (") {
        8
    } else if e.message.contains("ERROR 1205 (") {
        1
    } else {
        0
    }
}

impl MysqlSink {
    /// Runs `op` again after a lock conflict, and once more on a fresh connection after any
    /// other failure when `reconnect` (a server restart or an idle timeout must not lose a
    /// batch or stop the crawl; a server that cannot be reached is waited for, up to its
    /// `outage`). Not for what must not run twice after a lost answer.
    fn with_retries<T>(
        &mut self,
        what: &str,
        reconnect: bool,
        mut op: impl FnMut(&mut Self) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        let mut conflicts = 0;
        let mut reconnected = false;
        loop {
            match op(self) {
                Ok(v) => return Ok(v),
                Err(e) if conflicts < retries_for(&e) => {
                    conflicts += 1;
                    tracing::debug!(error = %e, what, "mysql lock conflict; trying again");
                    std::thread::sleep(std::time::Duration::from_millis(5 * u64::from(conflicts)));
                }
                Err(e) if reconnect && !reconnected => {
                    tracing::warn!(error = %e, what, "mysql call failed; reconnecting once");
                    reconnected = true;
                    let conn = connect_waiting(&self.opts, self.outage)?;
                    self.replace_conn(conn);
                }
                Err(e) => {
                    // The next call starts on a fresh connection.
                    if let Ok(conn) = connect(&self.opts) {
                        self.replace_conn(conn);
                    }
                    return Err(e);
                }
            }
        }
    }
}

impl Sink for MysqlSink {
    fn write(&mut self, batch: &[Commit]) -> Result<(), SinkError> {
        self.with_retries("write", true, |s| s.write_once(batch))
    }

    fn refill(
        &mut self,
        run: &RunHandle,
        host: &str,
        limit: usize,
    ) -> Option<Result<Vec<QueuedUrl>, SinkError>> {
        // Not tried again on a fresh connection: if the first try committed and only its
        // answer was lost, a second would read other rows and the first ones would stay held
        // with nobody holding them. The crawl stops instead and its run is reopened. So a
        // connection the server closed while it was idle (`wait_timeout`, a proxy: refills
        // may come far apart) is found out first, with a ping.
        if self.conn.ping().is_err() {
            tracing::debug!("mysql connection lost while idle; reconnecting before a refill");
            match connect_waiting(&self.opts, self.outage) {
                Ok(conn) => self.replace_conn(conn),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(self.with_retries("refill", false, |s| s.refill_once(run, host, limit)))
    }

    fn poll(
        &mut self,
        run: &RunHandle,
        limit: usize,
        census: Option<u32>,
    ) -> Option<Result<Polled, SinkError>> {
        Some(self.with_retries("poll", true, |s| s.poll_once(run, limit, census)))
    }

    fn take_pages(
        &mut self,
        run: &RunHandle,
        want: u64,
        max: u64,
        share: u32,
    ) -> Option<Result<Taken, SinkError>> {
        // Tried again on a fresh connection: a take whose commit went through and whose answer
        // was lost is counted twice, which only leaves pages unused.
        Some(self.with_retries("take pages", true, |s| s.take_once(run, want, max, share)))
    }
}

impl MysqlSink {
    fn take_once(&mut self, run: &RunHandle, want: u64, max: u64, share: u32) -> Result<Taken, SinkError> {
        let mut tx = self.conn.start_transaction(TxOpts::default()).map_err(err)?;
        let row: Option<(i64, String)> = tx
            .exec_first("SELECT pages_taken, state FROM crawler_runs WHERE id = ? FOR UPDATE", (run.id,))
            .map_err(err)?;
        let Some((taken, _)) = row.filter(|(_, state)| state == RUNNING) else {
            return Ok(Taken { over: true, ..Taken::default() });
        };
        let taken = taken.max(0) as u64;
        let granted = pages_to_grant(want, max, taken, share);
        if granted > 0 {
            tx.exec_drop(
                "UPDATE crawler_runs SET pages_taken = pages_taken + ? WHERE id = ?",
                (granted as i64, run.id),
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(Taken { granted, left: max.saturating_sub(taken + granted), over: false })
    }

    fn poll_once(&mut self, run: &RunHandle, limit: usize, census: Option<u32>) -> Result<Polled, SinkError> {
        let mut tx = self.conn.start_transaction(TxOpts::default()).map_err(err)?;
        let state: Option<String> =
            tx.exec_first("SELECT state FROM crawler_runs WHERE id = ?", (run.id,)).map_err(err)?;
        if state.as_deref() != Some(RUNNING) {
            return Ok(Polled { over: true, ..Polled::default() });
        }
        if !holds_run(&mut tx, run)? {
            drop(tx);
            run.fence();
            return Ok(Polled::default());
        }
        let rows = tx
            .exec_map(
                format!(
                    "SELECT 0, url_key, url, depth, rule, priority, host, part FROM crawler_inbox \
                     WHERE run = ? AND part IN {} LIMIT ?",
                    part_list(&run.parts)
                ),
                (run.id, limit as u64),
                |(seq, key, url, depth, rule, priority, host, part): (
                    u64,
                    i64,
                    String,
                    u32,
                    u32,
                    i32,
                    String,
                    u32,
                )| {
                    let q = stored_request((seq, key, url, depth, rule, priority), host.into(), false);
                    QueuedUrl { part, ..q }
                },
            )
            .map_err(err)?;
        // Every partition listed, so the check is a few index lookups on (run, part, status),
        // not a scan of the run's handled rows.
        let waiting_elsewhere = match census {
            None => true,
            Some(count) => {
                let all: Vec<String> = (0..count).map(|p| p.to_string()).collect();
                let waiting: Option<(i64, i64)> = tx
                    .exec_first(
                        format!(
                            "SELECT EXISTS(SELECT 1 FROM crawler_frontier WHERE run = ? AND part IN ({}) \
                             AND status IN (0, 5, 6)), EXISTS(SELECT 1 FROM crawler_inbox WHERE run = ?)",
                            all.join(", ")
                        ),
                        (run.id, run.id),
                    )
                    .map_err(err)?;
                waiting.is_none_or(|(a, b)| a != 0 || b != 0)
            }
        };
        tx.commit().map_err(err)?;
        Ok(Polled { rows, waiting_elsewhere, over: false })
    }

    fn refill_once(
        &mut self,
        run: &RunHandle,
        host: &str,
        limit: usize,
    ) -> Result<Vec<QueuedUrl>, SinkError> {
        let mut tx = self.conn.start_transaction(TxOpts::default()).map_err(err)?;
        if !holds_run(&mut tx, run)? {
            drop(tx);
            run.fence();
            return Ok(Vec::new());
        }
        let name: Arc<str> = host.into();
        let rows = tx
            .exec_map(
                format!(
                    "SELECT {REQUEST_COLUMNS} FROM crawler_frontier \
                     WHERE run = ? AND host = ? AND status = 0 ORDER BY depth, seq LIMIT ?"
                ),
                (run.id, host, limit as u64),
                |row: RequestRow| stored_request(row, name.clone(), true),
            )
            .map_err(err)?;
        let seqs: Vec<u64> = rows.iter().map(|q| q.seq).collect();
        set_status(&mut tx, run.id, PageStatus::Held as u8, &seqs).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(rows)
    }
}

/// Whether the run's owner still holds it, locking the run's row until the transaction ends
/// (so a new owner's open waits for it). In a split run: whether the run is running and each
/// of the owner's partitions is still at its epoch, locking those partitions' rows only (so the
/// owners of other partitions never wait for each other).
fn holds_run(tx: &mut Transaction, run: &RunHandle) -> Result<bool, SinkError> {
    if run.is_split() {
        let state: Option<String> =
            tx.exec_first("SELECT state FROM crawler_runs WHERE id = ?", (run.id,)).map_err(err)?;
        if state.as_deref() != Some(RUNNING) {
            return Ok(false);
        }
        let rows: Vec<(u32, i64, String)> = tx
            .exec(
                format!(
                    "SELECT part, epoch, owner FROM crawler_parts WHERE run = ? AND part IN {} FOR UPDATE",
                    part_list(&run.parts)
                ),
                (run.id,),
            )
            .map_err(err)?;
        // Each partition still at this owner's epoch, and still this owner's: one that took
        // it over at the same epoch (a restarted process of the same worker) holds it now.
        let held: HashMap<u32, (i64, String)> = rows.into_iter().map(|(p, e, o)| (p, (e, o))).collect();
        return Ok(run.parts.iter().all(|(p, e)| {
            held.get(p)
                .is_some_and(|(epoch, owner)| epoch == e && run.owner.as_ref().is_none_or(|o| o == owner))
        }));
    }
    let current: Option<(i64, String)> = tx
        .exec_first("SELECT epoch, state FROM crawler_runs WHERE id = ? FOR UPDATE", (run.id,))
        .map_err(err)?;
    Ok(current.is_some_and(|(e, s)| e == run.epoch && s == RUNNING))
}

/// Why opening partitions failed: a database error (a deadlock is tried again) or a refusal.
enum OpenError {
    Sql(mysql::Error),
    Sink(SinkError),
}

impl From<mysql::Error> for OpenError {
    fn from(e: mysql::Error) -> OpenError {
        OpenError::Sql(e)
    }
}

impl MysqlState {
    #[allow(clippy::too_many_arguments)]
    fn open_parts_once(
        &self,
        task: &str,
        label: &str,
        owner: &str,
        parts: &[(u32, i64)],
        gone: &dyn Fn(&str) -> bool,
        force: bool,
        window: usize,
    ) -> Result<PartsOpen, OpenError> {
        let mut conn = Conn::new(self.opts.clone())?;
        let mut tx = conn.start_transaction(TxOpts::default())?;
        // A shared lock: owners opening their partitions at once do not wait for each other's
        // loads (an exclusive one queued every open behind the others', up to the lock wait
        // timeout on a large run); a finish or a budget take, which lock the row exclusively,
        // wait for the opens. Two owners creating the run at once deadlock: one tries again.
        let found: Option<(i64, String)> = tx.exec_first(
            "SELECT id, state FROM crawler_runs WHERE task = ? AND label = ? ORDER BY id DESC LIMIT 1 LOCK IN SHARE MODE",
            (task, label),
        )?;
        let id = match found {
            Some((_, state)) if state != RUNNING => return Ok(PartsOpen::Over),
            Some((id, _)) => id,
            None => {
                tx.exec_drop(
                    "INSERT INTO crawler_runs (task, label, state, epoch, started_at) VALUES (?, ?, ?, 0, ?)",
                    (task, label, RUNNING, rfc3339(std::time::SystemTime::now())),
                )?;
                tx.last_insert_id().unwrap_or_default() as i64
            }
        };
        for &(part, epoch) in parts {
            let row: Option<(String, i64, u8)> = tx.exec_first(
                "SELECT owner, epoch, released FROM crawler_parts WHERE run = ? AND part = ? FOR UPDATE",
                (id, part),
            )?;
            match row {
                None => tx.exec_drop(
                    "INSERT INTO crawler_parts (run, part, owner, epoch, released) VALUES (?, ?, ?, ?, 0)",
                    (id, part, owner, epoch),
                )?,
                Some((_, current, _)) if current > epoch => {
                    return Err(OpenError::Sink(SinkError {
                        sink: "mysql",
                        message: format!(
                            "partition {part} of {task:?} is held at epoch {current}, newer than {epoch}"
                        ),
                    }))
                }
                Some((held_by, _, released)) => {
                    if !(force || released != 0 || held_by == owner || gone(&held_by)) {
                        return Ok(PartsOpen::Busy { part, owner: held_by });
                    }
                    tx.exec_drop(
                        "UPDATE crawler_parts SET owner = ?, epoch = ?, released = 0 WHERE run = ? AND part = ?",
                        (owner, epoch, id, part),
                    )?;
                }
            }
        }
        let list = part_list(parts);
        tx.exec_drop(
            format!("UPDATE crawler_frontier SET status = 0 WHERE run = ? AND part IN {list} AND status IN (5, 6)"),
            (id,),
        )?;
        let any: Option<(i64, i64)> = tx.exec_first(
            "SELECT EXISTS(SELECT 1 FROM crawler_frontier WHERE run = ?), EXISTS(SELECT 1 FROM crawler_inbox WHERE run = ?)",
            (id, id),
        )?;
        let mut loader = RunLoader::new(id, 0, window);
        load_rows(&mut tx, id, &format!("AND part IN {list}"), &mut loader)?;
        tx.commit()?;
        let mut run = loader.finish();
        // Resumed when anything of the run is stored (whoever stored it): the seeds are queued
        // once, by the first owner of the seeds' partition that finds the run empty.
        run.resumed = any.is_some_and(|(a, b)| a != 0 || b != 0);
        run.owner = Some(owner.to_owned());
        Ok(PartsOpen::Opened(run))
    }
}

/// The run bookkeeping of a MySQL/MariaDB database (a connection per call).
pub struct MysqlState {
    opts: Opts,
}

impl MysqlState {
    /// Checks the URL, connects once and creates the state tables.
    pub fn open(url: &str) -> Result<MysqlState, SinkError> {
        let opts = opts(url)?;
        connect(&opts)?;
        Ok(MysqlState { opts })
    }

    /// [`StateStore::open_run`], once.
    fn open_run_once(
        &self,
        task: &str,
        label: &str,
        epoch: Epoch,
        fresh: bool,
        window: usize,
    ) -> Result<OpenedRun, SinkError> {
        let mut conn = Conn::new(self.opts.clone()).map_err(err)?;
        let mut tx = conn.start_transaction(TxOpts::default()).map_err(err)?;
        if fresh {
            let ids: Vec<i64> = tx
                .exec("SELECT id FROM crawler_runs WHERE task = ? AND label = ? FOR UPDATE", (task, label))
                .map_err(err)?;
            for id in ids {
                tx.exec_drop("DELETE FROM crawler_frontier WHERE run = ?", (id,)).map_err(err)?;
                tx.exec_drop("DELETE FROM crawler_runs WHERE id = ?", (id,)).map_err(err)?;
            }
        }
        let found: Option<(i64, i64)> = tx
            .exec_first(
                "SELECT id, epoch FROM crawler_runs WHERE task = ? AND label = ? AND state = ? ORDER BY id DESC LIMIT 1 FOR UPDATE",
                (task, label, RUNNING),
            )
            .map_err(err)?;
        let Some((id, current)) = found else {
            if let Epoch::At(_) = epoch {
                let finished: Option<i64> = tx
                    .exec_first(
                        "SELECT id FROM crawler_runs WHERE task = ? AND label = ? AND state = ? ORDER BY id DESC LIMIT 1",
                        (task, label, FINISHED),
                    )
                    .map_err(err)?;
                if let Some(id) = finished {
                    tx.commit().map_err(err)?;
                    return Ok(OpenedRun { id, over: true, ..OpenedRun::default() });
                }
            }
            let done: Vec<i64> = tx
                .exec("SELECT id FROM crawler_runs WHERE task = ? AND label = ?", (task, label))
                .map_err(err)?;
            for id in done {
                tx.exec_drop("DELETE FROM crawler_frontier WHERE run = ?", (id,)).map_err(err)?;
            }
            let epoch = epoch.first();
            tx.exec_drop(
                "INSERT INTO crawler_runs (task, label, state, epoch, started_at) VALUES (?, ?, ?, ?, ?)",
                (task, label, RUNNING, epoch, rfc3339(std::time::SystemTime::now())),
            )
            .map_err(err)?;
            let id = tx.last_insert_id().unwrap_or_default() as i64;
            tx.commit().map_err(err)?;
            return Ok(OpenedRun { id, epoch, ..OpenedRun::default() });
        };
        let taken_over = matches!(epoch, Epoch::At(_));
        let epoch = epoch.after(current).ok_or_else(|| SinkError {
            sink: "mysql",
            message: format!("run of {task:?} is held at epoch {current}, newer than {epoch:?}"),
        })?;
        tx.exec_drop("UPDATE crawler_runs SET epoch = ? WHERE id = ?", (epoch, id)).map_err(err)?;
        tx.exec_drop("UPDATE crawler_frontier SET status = 0 WHERE run = ? AND status IN (5, 6)", (id,))
            .map_err(err)?;
        let mut loader = RunLoader::new(id, epoch, window);
        load_rows(&mut tx, id, "", &mut loader).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(OpenedRun { taken_over, ..loader.finish() })
    }
}

impl StateStore for MysqlState {
    fn open_run(
        &self,
        task: &str,
        label: &str,
        epoch: Epoch,
        fresh: bool,
        window: usize,
    ) -> Result<OpenedRun, SinkError> {
        // Two processes creating the run at once: one of them deadlocks (1213) and tries again.
        let mut tries = 0;
        loop {
            match self.open_run_once(task, label, epoch, fresh, window) {
                Err(e) if e.message.contains("ERROR 1213 (") && tries < 5 => tries += 1,
                r => return r,
            }
        }
    }

    fn open_parts(
        &self,
        task: &str,
        label: &str,
        owner: &str,
        parts: &[(u32, i64)],
        gone: &dyn Fn(&str) -> bool,
        force: bool,
        window: usize,
    ) -> Result<PartsOpen, SinkError> {
        // Two workers creating the run at once: one of them deadlocks (1213) and tries again.
        // (A lock wait that timed out is left to the worker's next reconcile, which tries again
        // after a backoff, rather than doubling the wait here.)
        let mut tries = 0;
        loop {
            match self.open_parts_once(task, label, owner, parts, gone, force, window) {
                Err(OpenError::Sql(mysql::Error::MySqlError(e))) if e.code == 1213 && tries < 5 => tries += 1,
                Err(OpenError::Sql(e)) => return Err(err(e)),
                Err(OpenError::Sink(e)) => return Err(e),
                Ok(r) => return Ok(r),
            }
        }
    }

    fn end_run(&self, id: i64) -> Result<(), SinkError> {
        let mut conn = Conn::new(self.opts.clone()).map_err(err)?;
        let mut tx = conn.start_transaction(TxOpts::default()).map_err(err)?;
        tx.exec_drop(
            "UPDATE crawler_runs SET state = 'ended', finished_at = ? WHERE id = ?",
            (rfc3339(std::time::SystemTime::now()), id),
        )
        .map_err(err)?;
        tx.exec_drop("DELETE FROM crawler_frontier WHERE run = ?", (id,)).map_err(err)?;
        tx.exec_drop("DELETE FROM crawler_inbox WHERE run = ?", (id,)).map_err(err)?;
        tx.exec_drop("DELETE FROM crawler_parts WHERE run = ?", (id,)).map_err(err)?;
        tx.commit().map_err(err)
    }

    fn adopt_label(
        &self,
        task: &str,
        legacy: &str,
        label: &str,
        not_before: &str,
    ) -> Result<bool, SinkError> {
        let mut conn = Conn::new(self.opts.clone()).map_err(err)?;
        // A plain read first, which locks nothing: nearly always there is nothing to take up
        // (the label has its run), and every share start and retry asks.
        let candidate = |conn: &mut Conn| -> Result<Option<i64>, mysql::Error> {
            let taken: Option<i64> = conn.exec_first(
                "SELECT id FROM crawler_runs WHERE task = ? AND label = ? LIMIT 1",
                (task, label),
            )?;
            if taken.is_some() {
                return Ok(None);
            }
            conn.exec_first(
                "SELECT id FROM crawler_runs WHERE task = ? AND label = ? AND state <> 'ended' AND started_at >= ? \
                 ORDER BY id DESC LIMIT 1",
                (task, legacy, not_before),
            )
        };
        if candidate(&mut conn).map_err(err)?.is_none() {
            return Ok(false);
        }
        // Taken up under locks; two owners doing it at once deadlock, and one tries again.
        for tries in 0.. {
            let attempt = (|| -> Result<bool, mysql::Error> {
                let mut tx = conn.start_transaction(TxOpts::default())?;
                let taken: Option<i64> = tx.exec_first(
                    "SELECT id FROM crawler_runs WHERE task = ? AND label = ? LIMIT 1 FOR UPDATE",
                    (task, label),
                )?;
                let old: Option<i64> = match taken {
                    Some(_) => None,
                    None => tx.exec_first(
                        "SELECT id FROM crawler_runs WHERE task = ? AND label = ? AND state <> 'ended' \
                         AND started_at >= ? ORDER BY id DESC LIMIT 1 FOR UPDATE",
                        (task, legacy, not_before),
                    )?,
                };
                if let Some(id) = old {
                    tx.exec_drop("UPDATE crawler_runs SET label = ? WHERE id = ?", (label, id))?;
                }
                tx.commit()?;
                Ok(old.is_some())
            })();
            match attempt {
                Err(mysql::Error::MySqlError(e)) if e.code == 1213 && tries < 5 => continue,
                other => return other.map_err(err),
            }
        }
        unreachable!("the loop returns")
    }

    fn newest_run(&self, task: &str, label: &str) -> Result<Option<StoredRun>, SinkError> {
        let mut conn = Conn::new(self.opts.clone()).map_err(err)?;
        let row: Option<(i64, String, String, Option<String>)> = conn
            .exec_first(
                "SELECT id, state, started_at, finished_at FROM crawler_runs \
                 WHERE task = ? AND label = ? ORDER BY id DESC LIMIT 1",
                (task, label),
            )
            .map_err(err)?;
        Ok(row.map(|(id, state, started_at, finished_at)| StoredRun { id, state, started_at, finished_at }))
    }

    fn running_runs(&self) -> Result<Vec<(i64, String, String)>, SinkError> {
        let mut conn = Conn::new(self.opts.clone()).map_err(err)?;
        conn.exec("SELECT id, task, label FROM crawler_runs WHERE state = ? ORDER BY id", (RUNNING,))
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::by_size;

    #[test]
    fn statements_stay_under_the_row_and_byte_limits() {
        let mib = 1usize << 20;
        let rows = vec![mib; 10];
        let chunks = by_size(&rows, |n| *n);
        assert!(chunks.iter().all(|c| c.iter().sum::<usize>() <= 4 * mib), "{:?}", chunks);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
        let small = vec![1usize; 1200];
        assert_eq!(by_size(&small, |n| *n).iter().map(|c| c.len()).collect::<Vec<_>>(), [500, 500, 200]);
        // A row over the byte limit goes alone.
        assert_eq!(by_size(&[10 * mib, 1], |n| *n).len(), 2);
        assert!(by_size(&Vec::<usize>::new(), |n| *n).is_empty());
    }
}
