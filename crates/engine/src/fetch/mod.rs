//! The fetcher: shared HTTP clients with the process-wide `concurrency` and per-host `per_host`
//! limits, body size limit, and retries with exponential backoff and jitter on network errors,
//! 5xx and 429 (honouring `Retry-After`). Plain `http://` without a proxy goes through a lean
//! HTTP/1.1 client of our own ([`plain`]); the rest (TLS, HTTP/2, proxies, credentials in the
//! URL) through reqwest, one client (or one per proxy, used round-robin).
//!
//! Redirects are not followed here: they are returned, so the crawl can deduplicate the target
//! like any other link.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::header::{
    HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, COOKIE, LOCATION, RETRY_AFTER,
};
use reqwest::{Client, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::EngineConfig;

mod decode;
mod plain;

/// A successful fetch.
#[derive(Debug)]
pub enum Fetched {
    /// A 2xx response with its body.
    Body {
        /// HTTP status.
        status: u16,
        /// The `Content-Type` header.
        content_type: Option<String>,
        /// The (decompressed) body.
        body: Bytes,
    },
    /// A 2xx response whose content type is not HTML; its body was not read.
    NotHtml {
        /// The `Content-Type` header.
        content_type: String,
    },
    /// A 3xx response with a `Location`.
    Redirect {
        /// HTTP status.
        status: u16,
        /// The `Location` header, unresolved.
        location: String,
    },
}

/// What a fetch reads of a 2xx response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// An HTML page (other content types are not read) of at most `max_body` bytes.
    Html,
    /// Any content type; a body past this many bytes is an error.
    Any(u64),
    /// Any content type; only the first `n` bytes are read (robots.txt).
    Prefix(u64),
}

/// Why a fetch failed after its retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// A non-success status that was not (or no longer) retried.
    #[error("http status {0}")]
    Status(u16),
    /// Connection, TLS or protocol failure.
    #[error("network: {0}")]
    Network(String),
    /// No complete response within the timeout.
    #[error("timed out")]
    Timeout,
    /// The body was larger than `max_body`.
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    /// The crawl was stopped.
    #[error("cancelled")]
    Cancelled,
}

/// How a caller waits before retrying a request the server throttled (a 429, or any answer
/// with `Retry-After`): it may hold the host back and pace the retry with the host's other
/// requests. [`Fetcher::fetch`] just sleeps.
pub trait Throttled: Send + Sync {
    /// Waits before the retry: `retry_after` is the server's `Retry-After` if it sent one,
    /// `backoff` the fetcher's own delay for this try.
    fn wait(
        &self,
        retry_after: Option<Duration>,
        backoff: Duration,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// A try was throttled (a 429, or `Retry-After` on a 5xx) and none is left: the caller
    /// may still hold the host back for the others, as the wait before a retry would. Nothing,
    /// by default.
    fn hold_back(&self, _retry_after: Option<Duration>, _backoff: Duration) {}

    /// Resolves when a request waiting to be tried again is to be left as it is, for whoever
    /// runs the crawl next (the crawl is draining for a handover); never, by default. The
    /// fetch then ends as [`FetchError::Cancelled`].
    fn left_for_later(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::pending())
    }

    /// Asked with the connection slots held, just before each try is sent: `Err((at, by))`
    /// holds it back until `at` (the slots are let go meanwhile). The caller's own limits on
    /// what reaches a site (a task's rate limits, a host's pace, its `Retry-After`), checked as
    /// late as possible.
    fn clear_to_send(&self) -> Result<(), (Instant, HeldBy)> {
        Ok(())
    }

    /// Waits until `at`, when [`Throttled::clear_to_send`] held a try back.
    fn held_until(&self, at: Instant, _by: HeldBy) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep_until(at.into()))
    }
}

/// What held a try back (see [`Throttled::clear_to_send`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldBy {
    /// Its host: its `Retry-After`, its pace.
    Host,
    /// The task's rate limits.
    Limits,
}

/// Sleeps `Retry-After`, else the backoff.
struct Sleep;

impl Throttled for Sleep {
    fn wait(
        &self,
        retry_after: Option<Duration>,
        backoff: Duration,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(retry_after.unwrap_or(backoff)))
    }
}

/// The result of [`Fetcher::fetch`], with how many HTTP responses it took.
#[derive(Debug)]
pub struct FetchReport {
    /// The final outcome.
    pub result: Result<Fetched, FetchError>,
    /// Responses received, retries included.
    pub responses: u32,
    /// Tries made (1 + retries used).
    pub tries: u32,
}

/// Shared fetching machinery. Cheap to share via `Arc`; one per process.
pub struct Fetcher {
    /// Plain `http://` requests, when no proxy is configured.
    plain: Option<plain::Plain>,
    clients: Vec<Client>,
    next: AtomicUsize,
    global: Arc<Semaphore>,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    cfg: EngineConfig,
}

/// The client could not be built from the settings.
#[derive(Debug, thiserror::Error)]
#[error("http client: {0}")]
pub struct ClientError(String);

enum Attempt {
    Done(Fetched),
    Retry(FetchError, Option<Duration>),
    Fail(FetchError),
}

impl Fetcher {
    /// Builds the shared client(s). Call [`EngineConfig::validate`] first.
    pub fn new(cfg: EngineConfig) -> Result<Fetcher, ClientError> {
        let idle = cfg.per_host.min(cfg.concurrency);
        let build = |proxy: Option<&str>| -> Result<Client, ClientError> {
            let mut b = Client::builder()
                .user_agent(cfg.user_agent.clone())
                .timeout(cfg.timeout.0)
                .connect_timeout(cfg.timeout.0)
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(idle)
                .tcp_nodelay(true);
            b = match proxy {
                // The config is the one source of proxies; environment variables are ignored.
                None => b.no_proxy(),
                Some(p) => b.proxy(reqwest::Proxy::all(p).map_err(|e| ClientError(e.to_string()))?),
            };
            b.build().map_err(|e| ClientError(e.to_string()))
        };
        // Plain http goes through the plain client only without proxies.
        let (clients, plain) = if cfg.proxies.is_empty() {
            (vec![build(None)?], Some(plain::Plain::new(&cfg.user_agent, idle).map_err(ClientError)?))
        } else {
            (cfg.proxies.iter().map(|p| build(Some(p))).collect::<Result<_, _>>()?, None)
        };
        Ok(Fetcher {
            plain,
            clients,
            next: AtomicUsize::new(0),
            global: Arc::new(Semaphore::new(cfg.concurrency)),
            hosts: Mutex::new(HashMap::new()),
            cfg,
        })
    }

    /// The settings this fetcher was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Fetches a URL with retries, reading of the response what `want` says.
    pub async fn fetch(
        &self,
        url: &Url,
        cookie: Option<&HeaderValue>,
        want: Want,
        cancel: &CancellationToken,
    ) -> FetchReport {
        self.fetch_paced(url, cookie, want, cancel, &Sleep).await
    }

    /// Like [`Fetcher::fetch`], with the wait before a throttled retry (a 429, or `Retry-After`
    /// on a 5xx) left to `throttled`, so the caller can hold back that host and pace it.
    pub async fn fetch_paced(
        &self,
        url: &Url,
        cookie: Option<&HeaderValue>,
        want: Want,
        cancel: &CancellationToken,
        throttled: &dyn Throttled,
    ) -> FetchReport {
        let mut responses = 0;
        let mut tries = 0;
        loop {
            tries += 1;
            let attempt = tokio::select! {
                biased;
                _ = cancel.cancelled() => Attempt::Fail(FetchError::Cancelled),
                a = self.attempt(url, cookie, want, &mut responses, throttled) => a,
            };
            let (error, retry_after) = match attempt {
                Attempt::Done(f) => return FetchReport { result: Ok(f), responses, tries },
                Attempt::Fail(e) => return FetchReport { result: Err(e), responses, tries },
                Attempt::Retry(e, after) => (e, after),
            };
            let delay = backoff(self.cfg.backoff.0, tries);
            let throttle = retry_after.is_some() || error == FetchError::Status(429);
            if tries > self.cfg.retries {
                if throttle {
                    throttled.hold_back(retry_after, delay);
                }
                return FetchReport { result: Err(error), responses, tries };
            }
            tracing::debug!(url = %url, %error, delay_ms = retry_after.unwrap_or(delay).as_millis() as u64, "retrying");
            let wait = if throttle {
                throttled.wait(retry_after, delay)
            } else {
                Box::pin(tokio::time::sleep(delay))
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    return FetchReport { result: Err(FetchError::Cancelled), responses, tries }
                }
                _ = throttled.left_for_later() => {
                    return FetchReport { result: Err(FetchError::Cancelled), responses, tries }
                }
                _ = wait => {}
            }
        }
    }

    /// The host's and the process's slots; `host` as [`host_key`] gives it.
    async fn permits(&self, host: &str) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        let sem = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            match hosts.get(host) {
                Some(sem) => sem.clone(),
                None => {
                    let sem = Arc::new(Semaphore::new(self.cfg.per_host));
                    hosts.insert(host.to_owned(), sem.clone());
                    sem
                }
            }
        };
        // Host first: a request waiting for its host must not hold a global slot.
        let host = sem.acquire_owned().await.expect("semaphore never closed");
        let global = self.global.clone().acquire_owned().await.expect("semaphore never closed");
        (host, global)
    }

    async fn attempt(
        &self,
        url: &Url,
        cookie: Option<&HeaderValue>,
        want: Want,
        responses: &mut u32,
        throttled: &dyn Throttled,
    ) -> Attempt {
        let host = host_key(url);
        let _permits = loop {
            let permits = self.permits(&host).await;
            match throttled.clear_to_send() {
                Ok(()) => break permits,
                Err((at, by)) => {
                    drop(permits);
                    tokio::select! {
                        _ = throttled.left_for_later() => return Attempt::Fail(FetchError::Cancelled),
                        _ = throttled.held_until(at, by) => {}
                    }
                }
            }
        };
        // Credentials in the URL (sent as Basic auth) are left to reqwest.
        let plain = self
            .plain
            .as_ref()
            .filter(|_| url.scheme() == "http" && url.username().is_empty() && url.password().is_none());
        let mut resp = match plain {
            Some(plain) => match plain.get(url, &host, cookie, self.cfg.timeout.0).await {
                Ok(r) => Response::Plain(r),
                Err(e) => return Attempt::Retry(e, None),
            },
            _ => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
                // Compressed bodies are decoded here (reqwest's own decoders are not built).
                let mut req = self.clients[i]
                    .get(url.as_str())
                    .header(ACCEPT_ENCODING, HeaderValue::from_static(decode::ACCEPT_ENCODINGS));
                if let Some(c) = cookie {
                    req = req.header(COOKIE, c.clone());
                }
                match req.send().await {
                    Ok(r) => {
                        let decode = r.headers().get(CONTENT_ENCODING).and_then(decode::Decode::for_encoding);
                        Response::General(r, decode)
                    }
                    Err(e) => return Attempt::Retry(classify(&e), None),
                }
            }
        };
        *responses += 1;
        let status = resp.status();
        if !status.is_success() {
            // A redirect's or an error's short body is read, so its connection can be used again.
            resp.skip_short_body().await;
        }
        let header =
            |name| resp.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
        if status.is_redirection() {
            // A Location with raw bytes beyond ASCII (some servers send UTF-8 so) keeps them,
            // percent-encoded, as browsers do: UTF-8 resolves as if it had been escaped, other
            // bytes are kept as they are.
            let location = resp.headers().get(LOCATION).map(|v| {
                v.as_bytes().iter().fold(String::new(), |mut out, b| {
                    match b.is_ascii() {
                        true => out.push(*b as char),
                        false => crate::scope::push_escaped(&mut out, *b),
                    }
                    out
                })
            });
            return match location {
                Some(location) => Attempt::Done(Fetched::Redirect { status: status.as_u16(), location }),
                None => Attempt::Fail(FetchError::Status(status.as_u16())),
            };
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let after = header(RETRY_AFTER).and_then(|v| parse_retry_after(&v, SystemTime::now()));
            return Attempt::Retry(FetchError::Status(status.as_u16()), after);
        }
        if !status.is_success() {
            return Attempt::Fail(FetchError::Status(status.as_u16()));
        }
        let content_type = header(CONTENT_TYPE);
        if want == Want::Html && !content_type.as_deref().is_none_or(is_html) {
            return Attempt::Done(Fetched::NotHtml { content_type: content_type.unwrap_or_default() });
        }
        let (max, cut) = match want {
            Want::Html => (self.cfg.max_body.0, false),
            Want::Any(n) => (n, false),
            Want::Prefix(n) => (n, true),
        };
        let length = resp.content_length();
        if !cut && length.is_some_and(|l| l > max) {
            return Attempt::Fail(FetchError::TooLarge(max));
        }
        let mut body = BytesMut::with_capacity(length.unwrap_or(16 * 1024).min(max) as usize);
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > max {
                        if !cut {
                            return Attempt::Fail(FetchError::TooLarge(max));
                        }
                        body.extend_from_slice(&chunk[..max as usize - body.len()]);
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Attempt::Retry(e, None),
            }
        }
        Attempt::Done(Fetched::Body { status: status.as_u16(), content_type, body: body.freeze() })
    }
}

/// The longest body of a redirect or an error that is read to keep its connection.
const SHORT_BODY: u64 = 64 * 1024;

/// A response from either client.
enum Response {
    Plain(plain::Response),
    /// With its decoder when its body is compressed.
    General(reqwest::Response, Option<Box<decode::Decode>>),
}

impl Response {
    fn status(&self) -> StatusCode {
        match self {
            Response::Plain(r) => r.status(),
            Response::General(r, _) => r.status(),
        }
    }

    fn headers(&self) -> &reqwest::header::HeaderMap {
        match self {
            Response::Plain(r) => r.headers(),
            Response::General(r, _) => r.headers(),
        }
    }

    fn content_length(&self) -> Option<u64> {
        match self {
            Response::Plain(r) => r.content_length(),
            Response::General(_, Some(_)) => None,
            Response::General(r, None) => r.content_length(),
        }
    }

    /// Reads and drops a body of at most [`SHORT_BODY`] bytes as sent (not decoded) within half
    /// a second (a plain connection then goes back to the pool); a longer one, or a slow one, is
    /// left (its connection is closed with it).
    async fn skip_short_body(&mut self) {
        let Response::Plain(r) = self else { return };
        if r.sent_length().is_some_and(|n| n > SHORT_BODY) {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), r.skip(SHORT_BODY)).await;
    }

    async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        match self {
            Response::Plain(r) => r.chunk().await,
            Response::General(r, None) => r.chunk().await.map_err(|e| classify(&e)),
            Response::General(r, Some(g)) => loop {
                if let Some(out) = g.step()? {
                    return Ok(Some(out));
                }
                if g.done() {
                    return Ok(None);
                }
                // Bytes after the stream end the body; the response is dropped unread, and its
                // connection with it.
                g.frame(r.chunk().await.map_err(|e| classify(&e))?)?;
            },
        }
    }
}

/// Whether a `Content-Type` is one we parse.
pub fn is_html(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("text/html") || mime.eq_ignore_ascii_case("application/xhtml+xml")
}

fn classify(e: &reqwest::Error) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout;
    }
    FetchError::Network(innermost(e).to_string())
}

/// A URL's host and port (the default one when it names none): the key of its host's slots and
/// of its idle plain connections.
fn host_key(url: &Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0))
}

/// The innermost cause of an error, which says the most ("connection refused"); the outer
/// ones say the least.
fn innermost<'a>(e: &'a (dyn std::error::Error + 'static)) -> &'a (dyn std::error::Error + 'static) {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause
}

/// The delay before try number `tries + 1`: `base * 2^(tries-1)`, jittered to 50-150%, at most 30 s.
pub fn backoff(base: Duration, tries: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << (tries.saturating_sub(1)).min(16));
    exp.mul_f64(0.5 + fastrand::f64()).min(Duration::from_secs(30))
}

/// Parses `Retry-After` (seconds or an HTTP date), capped at 60 s so a server cannot stall a
/// crawl indefinitely.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let d = match value.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value.trim()).ok()?.duration_since(now).unwrap_or_default(),
    };
    Some(d.min(Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let base = Duration::from_millis(100);
        for _ in 0..50 {
            let b1 = backoff(base, 1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(150), "{b1:?}");
            let b3 = backoff(base, 3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(600), "{b3:?}");
            assert!(backoff(base, 40) <= Duration::from_secs(30));
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("9999", now), Some(Duration::from_secs(60)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(5));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn html_content_types() {
        assert!(is_html("text/html; charset=utf-8"));
        assert!(is_html("Application/XHTML+XML"));
        assert!(!is_html("application/octet-stream"));
        assert!(!is_html("image/png"));
    }
}
