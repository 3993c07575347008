//! The crawl engine: declarative tasks, a deduplicating breadth-first frontier, a polite shared
//! fetcher, streaming extraction and batched item sinks.
//!
//! It knows nothing of clusters, etcd or API servers; embed it as a plain library:
//!
//! ```no_run
//! # async fn demo(spec: crawler_engine::TaskSpec) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use crawler_engine::{Crawl, EngineConfig, Fetcher, SinkWriter, SqliteSink, Task};
//!
//! let fetcher = Arc::new(Fetcher::new(EngineConfig::default())?);
//! let writer = SinkWriter::spawn(vec![Box::new(SqliteSink::open("crawl.db".as_ref())?)], 100,
//!                                std::time::Duration::from_secs(1));
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let crawl = Crawl::start(Task::compile(spec)?, fetcher, writer.sender(), &shutdown);
//! let stats = crawl.join().await;
//! drop(crawl);
//! writer.close().await?;
//! println!("{} pages, {} items", stats.pages, stats.items);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod charset;
mod config;
mod crawl;
mod extract;
mod fetch;
mod frontier;
mod item;
mod limiter;
mod nesting;
mod robots;
mod scope;
mod sitemap;
mod spec;
mod store;
mod units;

pub use charset::decode_html;
pub use config::EngineConfig;
pub use crawl::{Crawl, CrawlStats, Recent, RecentError, RecentItem, RobotsRead, Split};
pub use fetch::{FetchError, FetchReport, Fetched, Fetcher, Throttled, Want};
pub use frontier::{
    host_name, partition_of, Admission, Frontier, HostId, Refill, Request, BUDGET_WINDOWS, MIN_HELD,
};
pub use item::{rfc3339, Item};
pub use limiter::RateLimiter;
pub use robots::Robots;
pub use scope::{host_allowed, normalize, resolve_link, url_key};
pub use spec::{FieldSpec, FollowSpec, LimitSpec, RuleSpec, SpecError, Task, TaskSpec};
pub use store::{
    mysql_url_problem, Commit, CommitSender, Epoch, JsonlSink, MysqlSink, MysqlState, OpenedRun, PageStatus,
    PartsOpen, Polled, QueuedUrl, RunHandle, Sink, SinkError, SinkWriter, SqliteSink, SqliteState,
    StateStore, StoredRun, DEFAULT_OUTAGE, STANDALONE,
};
pub use units::{ByteSize, HumanDuration};
