//! Items in MySQL/MariaDB, the shared store of a cluster: one table per rule table, one row
//! per `(task, url)` upserted, so a task that moves between workers never duplicates rows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, TxOpts, Value};

use crate::item::Item;
use crate::sink::{Sink, SinkError};

fn err(e: impl std::fmt::Display) -> SinkError {
    SinkError { sink: "mysql", message: e.to_string() }
}

/// A MySQL/MariaDB sink over one connection (reconnected once per batch on failure).
pub struct MysqlSink {
    opts: Opts,
    conn: Conn,
    columns: HashMap<Arc<str>, HashSet<String>>,
}

impl MysqlSink {
    /// Connects to `mysql://user:pass@host:port/db`.
    pub fn open(url: &str) -> Result<MysqlSink, SinkError> {
        let opts = Opts::from_url(url).map_err(err)?;
        let conn = Conn::new(opts.clone()).map_err(err)?;
        Ok(MysqlSink { opts, conn, columns: HashMap::new() })
    }

    fn ensure_table(&mut self, item: &Item) -> Result<(), SinkError> {
        if let Some(cols) = self.columns.get(&item.table) {
            if item.fields.iter().all(|(f, _)| cols.contains(&**f)) {
                return Ok(());
            }
        }
        let table = &item.table;
        // URLs are ASCII once normalized; ASCII keys keep the primary key within InnoDB's limit.
        self.conn
            .query_drop(format!(
                "CREATE TABLE IF NOT EXISTS `{table}` (task VARCHAR(64) CHARACTER SET ascii NOT NULL, \
                 url VARCHAR(3000) CHARACTER SET ascii NOT NULL, crawled_at VARCHAR(32) NOT NULL, \
                 PRIMARY KEY (task, url)) DEFAULT CHARSET = utf8mb4"
            ))
            .map_err(err)?;
        let existing: Vec<String> = self
            .conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (&**table,),
            )
            .map_err(err)?;
        let mut existing: HashSet<String> = existing.into_iter().collect();
        for (f, _) in &item.fields {
            if existing.contains(&**f) {
                continue;
            }
            match self.conn.query_drop(format!("ALTER TABLE `{table}` ADD COLUMN `{f}` TEXT")) {
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

    fn write_once(&mut self, items: &[Item]) -> Result<(), SinkError> {
        for item in items {
            self.ensure_table(item)?;
        }
        let mut tx = self.conn.start_transaction(TxOpts::default()).map_err(err)?;
        for item in items {
            let mut cols = String::from("task, url, crawled_at");
            let mut marks = String::from("?, ?, ?");
            let mut set = String::from("crawled_at = VALUES(crawled_at)");
            for (f, _) in &item.fields {
                cols.push_str(&format!(", `{f}`"));
                marks.push_str(", ?");
                set.push_str(&format!(", `{f}` = VALUES(`{f}`)"));
            }
            let sql = format!(
                "INSERT INTO `{}` ({cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {set}",
                item.table
            );
            let mut params: Vec<Value> =
                vec![(*item.task).into(), item.url.as_str().into(), item.crawled_at.as_str().into()];
            params.extend(item.fields.iter().map(|(_, v)| v.as_deref().map_or(Value::NULL, Value::from)));
            tx.exec_drop(sql, params).map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

impl Sink for MysqlSink {
    fn write(&mut self, items: &[Item]) -> Result<(), SinkError> {
        match self.write_once(items) {
            Ok(()) => Ok(()),
            Err(first) => {
                // One reconnect: a server restart or an idle timeout must not lose the batch.
                tracing::warn!(error = %first, "mysql write failed; reconnecting once");
                self.conn = Conn::new(self.opts.clone()).map_err(err)?;
                self.columns.clear();
                self.write_once(items)
            }
        }
    }
}
