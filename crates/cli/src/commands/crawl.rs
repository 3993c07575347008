//! `crawler crawl` (and `crawler worker --cluster=false`): run tasks in this process until
//! their frontiers are exhausted, store items, and report a summary.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crawler_engine::{
    Crawl, CrawlStats, Fetcher, JsonlSink, MysqlSink, Sink, SinkError, SinkWriter, SqliteSink, Task,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, Storage};
use crate::progress::Progress;

/// The summary printed as the last line on stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// HTTP responses received.
    pub pages: u64,
    /// Items stored.
    pub items: u64,
    /// Failed requests and pages.
    pub errors: u64,
    /// Wall time.
    pub elapsed_ms: u64,
}

/// Why a standalone run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad config or flags; nothing was started.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Items could not be stored.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The HTTP client could not be built.
    #[error("{0}")]
    Client(String),
}

/// Picks the tasks to run: all, or those named (each name must exist).
pub fn select_tasks(all: Vec<Task>, names: &[String]) -> Result<Vec<Task>, ConfigError> {
    if all.is_empty() {
        return Err(ConfigError::Key { key: "task".into(), problem: "no tasks configured".into() });
    }
    if names.is_empty() {
        return Ok(all);
    }
    for n in names {
        if !all.iter().any(|t| t.name() == n) {
            return Err(ConfigError::Key {
                key: "--task".into(),
                problem: format!("no task named {n:?} in the config"),
            });
        }
    }
    Ok(all.into_iter().filter(|t| names.iter().any(|n| n == t.name())).collect())
}

/// Opens the sinks the config and `--output` ask for.
pub fn open_sinks(config: &Config, output: Option<&Path>) -> Result<Vec<Box<dyn Sink>>, RunError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    match config.storage()? {
        Storage::Sqlite(path) => sinks.push(Box::new(SqliteSink::open(&path)?)),
        Storage::Mysql(url) => sinks.push(Box::new(MysqlSink::open(&url)?)),
    }
    if let Some(path) = output {
        sinks.push(Box::new(JsonlSink::create(path)?));
    }
    Ok(sinks)
}

/// Runs the tasks to the end (or until `shutdown`), then flushes the sinks.
pub async fn run(
    config: &Config,
    tasks: Vec<Task>,
    sinks: Vec<Box<dyn Sink>>,
    shutdown: CancellationToken,
    progress: bool,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let fetcher = Arc::new(Fetcher::new(config.engine.clone()).map_err(|e| RunError::Client(e.to_string()))?);
    let writer = SinkWriter::spawn(sinks, config.storage.batch, Duration::from_secs(1));
    let crawls: Vec<Crawl> =
        tasks.into_iter().map(|t| Crawl::start(t, fetcher.clone(), writer.sender(), &shutdown)).collect();
    let ticker = progress.then(|| Progress::spawn(crawls.clone()));
    let mut total = CrawlStats::default();
    for crawl in &crawls {
        let s = crawl.join().await;
        tracing::info!(
            task = crawl.task().name(),
            pages = s.pages,
            items = s.items,
            errors = s.errors,
            "task done"
        );
        total.pages += s.pages;
        total.items += s.items;
        total.errors += s.errors;
    }
    if let Some(t) = ticker {
        t.finish().await;
    }
    drop(crawls);
    let written = writer.close().await?;
    debug_assert_eq!(written, total.items);
    Ok(Summary {
        pages: total.pages,
        items: written,
        errors: total.errors,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}
