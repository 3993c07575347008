//! `crawler crawl` (and `crawler worker --cluster=false`): run tasks in this process until
//! their frontiers are exhausted, store items, and report a summary. Each task's run lives in
//! the storage database, so a killed or interrupted crawl resumes where it stopped.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crawler_engine::{
    Crawl, CrawlStats, Epoch, Fetcher, JsonlSink, MysqlSink, MysqlState, OpenedRun, Sink, SinkError,
    SinkWriter, SqliteSink, SqliteState, StateStore, StoredRun, Task, STANDALONE,
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
    /// Whether any task continued an unfinished run found in the database.
    pub resumed: bool,
    /// Requests skipped because robots.txt disallows them.
    pub robots_blocked: u64,
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

/// Opens the sinks the config and `--output` ask for; the JSON-lines file is appended to when
/// a run resumes.
pub fn open_sinks(
    config: &Config,
    output: Option<&Path>,
    append: bool,
) -> Result<Vec<Box<dyn Sink>>, RunError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    match config.storage()? {
        Storage::Sqlite(path) => sinks.push(Box::new(SqliteSink::open(&path)?)),
        Storage::Mysql(url) => {
            sinks.push(Box::new(MysqlSink::open(&url)?.waiting_for(config.storage.outage.0)))
        }
    }
    if let Some(path) = output {
        sinks.push(Box::new(JsonlSink::open(path, append)?));
    }
    Ok(sinks)
}

/// Opens the run bookkeeping of the configured storage database.
pub fn open_state(config: &Config) -> Result<Arc<dyn StateStore>, RunError> {
    Ok(match config.storage()? {
        Storage::Sqlite(path) => Arc::new(SqliteState::open(&path)?),
        Storage::Mysql(url) => Arc::new(MysqlState::open(&url)?),
    })
}

/// Opens (or resumes) the standalone run of every task, saying on stderr which ones resume.
pub async fn open_runs(
    state: Arc<dyn StateStore>,
    tasks: &[Task],
    fresh: bool,
    window: usize,
) -> Result<Vec<OpenedRun>, RunError> {
    let names: Vec<(String, usize)> =
        tasks.iter().map(|t| (t.name().to_owned(), t.queue_window(window))).collect();
    let runs = tokio::task::spawn_blocking(move || {
        // The same command run again after an interrupt: a task that finished during the
        // interrupted crawl (after the earliest unfinished run started) is not crawled again.
        let newest = match fresh {
            true => vec![None; names.len()],
            false => {
                names.iter().map(|(n, _)| state.newest_run(n, STANDALONE)).collect::<Result<Vec<_>, _>>()?
            }
        };
        let since = newest.iter().flatten().filter(|r| r.is_running()).map(|r| r.started_at.clone()).min();
        let done_since = |r: &StoredRun| {
            r.is_finished() && since.as_ref().is_some_and(|s| r.finished_at.as_ref().is_some_and(|f| f >= s))
        };
        names
            .iter()
            .zip(newest)
            .map(|((n, window), newest)| match newest {
                Some(r) if done_since(&r) => Ok(OpenedRun { id: r.id, over: true, ..OpenedRun::default() }),
                _ => state.open_run(n, STANDALONE, Epoch::Next, fresh, *window),
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| SinkError { sink: "state", message: e.to_string() })??;
    for (task, run) in tasks.iter().zip(&runs) {
        if run.over {
            eprintln!(
                "{0}: finished in the interrupted crawl; not crawled again (`--task {0}` crawls it anew)",
                task.name()
            );
        } else if run.resumed {
            eprintln!(
                "resuming {}: {} done, {} queued",
                task.name(),
                thousands(run.handled),
                thousands(run.waiting)
            );
        }
    }
    Ok(runs)
}

/// `8123` as `8,123`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What a standalone run did: its summary, and for each task that fetched nothing at all (not
/// one seed could be fetched), its name and why.
pub struct Outcome {
    /// The summary line.
    pub summary: Summary,
    /// Tasks that fetched nothing, with the first reason.
    pub fetched_nothing: Vec<(String, String)>,
    /// Tasks that stopped before their end without being interrupted, with the reason (their
    /// run taken over by another crawl, their state unreadable).
    pub stopped: Vec<(String, String)>,
}

/// Runs the tasks to the end (or until `shutdown`) from their stored runs, then flushes the
/// sinks.
pub async fn run(
    config: &Config,
    tasks: Vec<Task>,
    output: Option<&Path>,
    fresh: bool,
    shutdown: CancellationToken,
    progress: bool,
) -> Result<Outcome, RunError> {
    let started = Instant::now();
    if let Some(path) = output {
        // A path that cannot be written is found before any run is opened (or, with
        // `--fresh`, deleted); the file is created here if it is missing.
        std::fs::OpenOptions::new().append(true).create(true).open(path).map_err(|e| ConfigError::Key {
            key: "--output".into(),
            problem: format!("{}: {e}", path.display()),
        })?;
    }
    let fetcher = Arc::new(Fetcher::new(config.engine.clone()).map_err(|e| RunError::Client(e.to_string()))?);
    let runs = open_runs(open_state(config)?, &tasks, fresh, config.engine.queue_window).await?;
    let resumed = runs.iter().any(|r| r.resumed);
    let fresh_runs: Vec<bool> = runs.iter().map(|r| !r.resumed && !r.over).collect();
    let sinks = open_sinks(config, output, resumed)?;
    let writer = SinkWriter::spawn(sinks, config.storage.batch, Duration::from_millis(250));
    let crawls: Vec<Crawl> = tasks
        .into_iter()
        .zip(runs)
        .map(|(t, run)| Crawl::resume(t, run, fetcher.clone(), writer.sender(), &shutdown))
        .collect();
    let ticker = progress.then(|| Progress::spawn(crawls.clone()));
    let mut total = CrawlStats::default();
    let mut fetched_nothing = Vec::new();
    let mut stopped = Vec::new();
    for (crawl, fresh) in crawls.iter().zip(fresh_runs) {
        let s = crawl.join().await;
        if !crawl.completed() && !shutdown.is_cancelled() {
            let why = crawl.stop_reason().unwrap_or_else(|| "stopped before its end".into());
            stopped.push((crawl.task().name().to_owned(), why));
        }
        if fresh && s.pages == 0 && !shutdown.is_cancelled() {
            let why = crawl.first_problem().unwrap_or_else(|| "no request was made".into());
            fetched_nothing.push((crawl.task().name().to_owned(), why));
        }
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
        total.robots_blocked += s.robots_blocked;
    }
    if let Some(t) = ticker {
        t.finish().await;
    }
    drop(crawls);
    let written = writer.close().await?;
    let summary = Summary {
        pages: total.pages,
        items: written,
        errors: total.errors,
        elapsed_ms: started.elapsed().as_millis() as u64,
        resumed,
        robots_blocked: total.robots_blocked,
    };
    Ok(Outcome { summary, fetched_nothing, stopped })
}
