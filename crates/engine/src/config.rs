//! The `[engine]` settings: how this process fetches (shared by every task it runs).

use serde::{Deserialize, Serialize};

use crate::spec::SpecError;
use crate::units::{ByteSize, HumanDuration};

/// Fetch settings shared by all tasks of one process.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Requests in flight in this process.
    pub concurrency: usize,
    /// Requests in flight per host.
    pub per_host: usize,
    /// Extra tries on network errors, 5xx and 429.
    pub retries: u32,
    /// First retry delay; doubles each try, with jitter.
    pub backoff: HumanDuration,
    /// Whole-request timeout, body included.
    pub timeout: HumanDuration,
    /// The `User-Agent` header, also the token matched in robots.txt.
    pub user_agent: String,
    /// Bodies larger than this are cut off and counted as errors.
    pub max_body: ByteSize,
    /// Whether robots.txt is fetched and obeyed.
    pub obey_robots: bool,
    /// Whether a robots.txt `Crawl-delay` is honoured, as the least time between the starts of
    /// two requests to that host.
    pub obey_crawl_delay: bool,
    /// Longer `Crawl-delay`s are cut to this.
    pub max_crawl_delay: HumanDuration,
    /// A host whose robots.txt could not be read (5xx, unreachable) is held back and its
    /// robots.txt read again after this long; after three failed reads its URLs are skipped.
    pub robots_retry: HumanDuration,
    /// HTTP proxies used round-robin; empty means direct.
    pub proxies: Vec<String>,
    /// Queued requests held in memory per host by a crawl with stored state; the rest wait
    /// in the database and are read back in order.
    pub queue_window: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            concurrency: 16,
            per_host: 8,
            retries: 2,
            backoff: HumanDuration(std::time::Duration::from_millis(500)),
            timeout: HumanDuration(std::time::Duration::from_secs(10)),
            user_agent: "crawler/0.1 (+https://example.invalid/bot)".into(),
            max_body: ByteSize(8 * 1024 * 1024),
            obey_robots: true,
            obey_crawl_delay: true,
            max_crawl_delay: HumanDuration(std::time::Duration::from_secs(30)),
            robots_retry: HumanDuration(std::time::Duration::from_secs(30)),
            proxies: Vec::new(),
            queue_window: 2000,
        }
    }
}

impl EngineConfig {
    /// Checks values serde cannot: ranges and URLs. Keys are named as in the config file.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |key: &str, problem: &str| {
            Err(SpecError { key: format!("engine.{key}"), problem: problem.into() })
        };
        if self.concurrency == 0 || self.concurrency > 100_000 {
            return err("concurrency", "must be between 1 and 100000");
        }
        if self.per_host == 0 {
            return err("per_host", "must be at least 1");
        }
        if self.retries > 20 {
            return err("retries", "must be at most 20");
        }
        if self.timeout.0.is_zero() {
            return err("timeout", "must be above zero");
        }
        if self.queue_window < 2 {
            return err("queue_window", "must be at least 2");
        }
        if self.max_crawl_delay.0 > std::time::Duration::from_secs(3600) {
            return err("max_crawl_delay", "must be at most 1h");
        }
        if self.robots_retry.0.is_zero() || self.robots_retry.0 > std::time::Duration::from_secs(3600) {
            return err("robots_retry", "must be above zero and at most 1h");
        }
        if self.max_body.0 == 0 {
            return err("max_body", "must be above zero");
        }
        if self.user_agent.trim().is_empty()
            || reqwest::header::HeaderValue::from_str(&self.user_agent).is_err()
        {
            return err("user_agent", "must be a non-empty header value");
        }
        for (i, p) in self.proxies.iter().enumerate() {
            if reqwest::Proxy::all(p).is_err() || url::Url::parse(p).is_err() {
                return Err(SpecError {
                    key: format!("engine.proxies[{i}]"),
                    problem: format!("{p:?} is not a proxy URL"),
                });
            }
        }
        Ok(())
    }
}
