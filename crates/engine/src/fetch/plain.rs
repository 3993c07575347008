//! Plain `http://` without a proxy, the common case of a crawl: HTTP/1.1 over hyper's connection
//! API with a keep-alive pool of our own, per host and port. Everything else (TLS, HTTP/2,
//! proxies, credentials in the URL) goes through reqwest.
//!
//! It does what the general client would for these requests, with less in the way: no URL
//! re-parsed into a URI, no middleware layers, a pool keyed by the host and port it is given.
//! Compressed bodies are decoded in small steps ([`super::decode`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, COOKIE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use url::{Host, Position, Url};

use super::decode::{Decode, ACCEPT_ENCODINGS};
use super::{innermost, FetchError};

/// How long an idle connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(90);

/// A connection attempt to a host's next address starts when the last one has not connected
/// within this long (or at once when it failed).
const NEXT_ADDRESS_AFTER: Duration = Duration::from_millis(250);

/// Idle connections are swept of closed and expired ones this often (so a fetcher that has
/// stopped fetching lets its connections go too); a checkout skips them anyway.
const REAP_EVERY: Duration = Duration::from_secs(30);

type Sender = SendRequest<Empty<Bytes>>;

/// The plain HTTP/1.1 client: its pool and the headers every request carries.
pub(super) struct Plain {
    pool: Arc<Pool>,
    user_agent: HeaderValue,
}

/// Idle connections by host and port.
struct Pool {
    idle: Mutex<Idle>,
    max_idle: usize,
    /// [`IDLE_FOR`] and [`REAP_EVERY`] (shorter in tests).
    idle_for: Duration,
    reap_every: Duration,
    /// A task sweeps the pool every [`REAP_EVERY`] while the pool lives (started with the first
    /// request, on its runtime).
    reaping: std::sync::Once,
}

#[derive(Default)]
struct Idle {
    hosts: HashMap<String, Vec<(Sender, Instant)>>,
}

impl Idle {
    /// Drops closed connections and those idle for `idle_for` (closing them).
    fn sweep(&mut self, idle_for: Duration) {
        let now = Instant::now();
        self.hosts.retain(|_, idle| {
            idle.retain(|(s, since)| usable(s, *since, now, idle_for));
            !idle.is_empty()
        });
    }
}

/// A response being read. Its connection goes back to the pool once the body has been read to
/// its end; dropped before that, the connection is closed.
pub(super) struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Incoming,
    decode: Option<Box<Decode>>,
    /// The connection and its pool key, until the body ends.
    conn: Option<(Sender, String)>,
    pool: Arc<Pool>,
    deadline: tokio::time::Instant,
}

impl Plain {
    pub(super) fn new(user_agent: &str, max_idle: usize) -> Result<Plain, String> {
        Self::with_timing(user_agent, max_idle, IDLE_FOR, REAP_EVERY)
    }

    fn with_timing(
        user_agent: &str,
        max_idle: usize,
        idle_for: Duration,
        reap_every: Duration,
    ) -> Result<Plain, String> {
        let user_agent = HeaderValue::from_str(user_agent).map_err(|e| e.to_string())?;
        let pool = Arc::new(Pool {
            idle: Mutex::new(Idle::default()),
            max_idle: max_idle.max(1),
            idle_for,
            reap_every,
            reaping: std::sync::Once::new(),
        });
        Ok(Plain { pool, user_agent })
    }

    /// Sends a GET for `url` (an `http` URL; `key`: its host and port, which pool its
    /// connections), within `timeout` from now for the whole exchange (connection, response
    /// and body).
    pub(super) async fn get(
        &self,
        url: &Url,
        key: &str,
        cookie: Option<&HeaderValue>,
        timeout: Duration,
    ) -> Result<Response, FetchError> {
        self.pool.reaping.call_once(|| {
            let (pool, every) = (Arc::downgrade(&self.pool), self.pool.reap_every);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(pool) = pool.upgrade() else { return };
                    pool.idle.lock().unwrap_or_else(|p| p.into_inner()).sweep(pool.idle_for);
                }
            });
        });
        let deadline = tokio::time::Instant::now() + timeout;
        let (resp, sender) = match tokio::time::timeout_at(deadline, self.send(url, key, cookie)).await {
            Ok(sent) => sent?,
            Err(_) => return Err(FetchError::Timeout),
        };
        let (head, body) = resp.into_parts();
        let decode = head.headers.get(CONTENT_ENCODING).and_then(Decode::for_encoding);
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body,
            decode,
            conn: Some((sender, key.to_owned())),
            pool: self.pool.clone(),
            deadline,
        })
    }

    /// Sends the request on a pooled connection of `key` or a new one: the response's head and
    /// the connection.
    async fn send(
        &self,
        url: &Url,
        key: &str,
        cookie: Option<&HeaderValue>,
    ) -> Result<(http::Response<Incoming>, Sender), FetchError> {
        let host = url.host().ok_or_else(|| FetchError::Network("URL without a host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        // Both as the URL spells them (a default port is already left out).
        let authority = &url[Position::BeforeHost..Position::AfterPort];
        let target: http::Uri = url[Position::BeforePath..Position::AfterQuery]
            .parse()
            .map_err(|e: http::uri::InvalidUri| FetchError::Network(e.to_string()))?;
        // A pooled connection the server closed while it sat idle fails with no answer: the
        // request (a GET) is sent again on a new connection, once.
        let mut pooled = true;
        loop {
            let checked_out = if pooled { self.pool.checkout(key).await } else { None };
            let mut sender = match checked_out {
                Some(s) => s,
                None => {
                    pooled = false;
                    connect(&host, port).await?
                }
            };
            let mut req = Request::get(target.clone())
                .header(HOST, authority)
                .header(USER_AGENT, self.user_agent.clone())
                .header(ACCEPT, HeaderValue::from_static("*/*"))
                .header(ACCEPT_ENCODING, HeaderValue::from_static(ACCEPT_ENCODINGS));
            if let Some(c) = cookie {
                req = req.header(COOKIE, c.clone());
            }
            let req = req.body(Empty::new()).map_err(|e| FetchError::Network(e.to_string()))?;
            match sender.send_request(req).await {
                Ok(resp) => return Ok((resp, sender)),
                Err(e) if pooled && stale(&e) => pooled = false,
                Err(e) => return Err(network(&e)),
            }
        }
    }
}

impl Pool {
    /// A live idle connection to `key`, ready for a request.
    async fn checkout(&self, key: &str) -> Option<Sender> {
        loop {
            let found = {
                let mut pool = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let idle = pool.hosts.get_mut(key)?;
                let now = Instant::now();
                std::iter::from_fn(|| idle.pop()).find(|(s, since)| usable(s, *since, now, self.idle_for))
            };
            let (mut sender, _) = found?;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn put_back(&self, sender: Sender, key: String) {
        let mut pool = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let idle = pool.hosts.entry(key).or_default();
        if idle.len() < self.max_idle {
            idle.push((sender, Instant::now()));
        }
    }
}

/// Whether an idle connection may still be used: open, and idle for less than `idle_for`.
fn usable(sender: &Sender, since: Instant, now: Instant, idle_for: Duration) -> bool {
    !sender.is_closed() && now.duration_since(since) < idle_for
}

async fn connect(host: &Host<&str>, port: u16) -> Result<Sender, FetchError> {
    let addrs = match host {
        Host::Domain(d) => tokio::net::lookup_host((*d, port)).await.map(Iterator::collect),
        Host::Ipv4(ip) => Ok(vec![SocketAddr::from((*ip, port))]),
        Host::Ipv6(ip) => Ok(vec![SocketAddr::from((*ip, port))]),
    };
    let stream = match addrs {
        Ok(addrs) => connect_any(interleaved(addrs)).await,
        Err(e) => Err(e),
    }
    .map_err(|e| network(&e))?;
    stream.set_nodelay(true).map_err(|e| network(&e))?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| network(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::trace!(error = %e, "connection ended");
        }
    });
    Ok(sender)
}

/// The addresses in the resolver's order of preference, alternating between IPv6 and IPv4 from
/// the first one's family on.
fn interleaved(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let mut out = Vec::with_capacity(addrs.len());
    let (same, other): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let (mut same, mut other) = (same.into_iter(), other.into_iter());
    loop {
        match (same.next(), other.next()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// Connects to the first of `addrs` that answers: the next address is tried when the attempts
/// so far have all failed or none connected within [`NEXT_ADDRESS_AFTER`], with the earlier
/// attempts still going (so an address that drops packets costs a quarter second, not the
/// timeout).
async fn connect_any(addrs: Vec<SocketAddr>) -> std::io::Result<TcpStream> {
    let mut next = addrs.into_iter();
    let mut attempts = tokio::task::JoinSet::new();
    let mut last_error = None;
    loop {
        if let Some(addr) = next.next() {
            attempts.spawn(TcpStream::connect(addr));
        } else if attempts.is_empty() {
            return Err(last_error.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address")
            }));
        }
        let more = next.len() > 0;
        tokio::select! {
            done = attempts.join_next(), if !attempts.is_empty() => match done {
                Some(Ok(Ok(stream))) => return Ok(stream),
                Some(Ok(Err(e))) => last_error = Some(e),
                Some(Err(e)) => last_error = Some(std::io::Error::other(e)),
                None => {}
            },
            _ = tokio::time::sleep(NEXT_ADDRESS_AFTER), if more => {}
        }
    }
}

/// The innermost cause of an error, which says the most ("connection reset by peer").
fn network(e: &(dyn std::error::Error + 'static)) -> FetchError {
    let cause = innermost(e);
    match cause.downcast_ref::<std::io::Error>() {
        Some(io) if io.kind() == std::io::ErrorKind::TimedOut => FetchError::Timeout,
        _ => FetchError::Network(cause.to_string()),
    }
}

/// Whether a request that failed on a pooled connection is sent again on a new one: the
/// connection was found closed (before or while the request went out, or with no complete
/// answer), not a bad answer or a slow one.
fn stale(e: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    e.is_canceled()
        || e.is_incomplete_message()
        || innermost(e)
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.kind(), ConnectionReset | BrokenPipe | ConnectionAborted))
}

impl Response {
    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    pub(super) fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body's length, when it is sent as is and says so.
    pub(super) fn content_length(&self) -> Option<u64> {
        if self.decode.is_some() {
            return None;
        }
        self.sent_length()
    }

    /// The length of the body as sent (compressed or not), when the response says it (hyper's
    /// reading of the head: what is left of it, so asked before any of it is read).
    pub(super) fn sent_length(&self) -> Option<u64> {
        self.body.size_hint().exact()
    }

    /// Reads the rest of the body as sent, without decoding it, so that its connection goes
    /// back to the pool at its end; after more than `limit` bytes (or a broken body) it stops,
    /// and the connection is closed with the response.
    pub(super) async fn skip(&mut self, limit: u64) {
        let mut read = 0;
        loop {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if read > limit {
                        return;
                    }
                }
                Some(Err(_)) => return,
                None => {
                    if let Some((sender, key)) = self.conn.take() {
                        self.pool.put_back(sender, key);
                    }
                    return;
                }
            }
        }
    }

    /// The next piece of the (decoded) body; `None` at its end, when the connection goes back
    /// to the pool.
    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        loop {
            if let Some(g) = &mut self.decode {
                if let Some(out) = g.step()? {
                    return Ok(Some(out));
                }
                if g.done() {
                    return Ok(None);
                }
            }
            let frame = match tokio::time::timeout_at(self.deadline, self.body.frame()).await {
                Err(_) => return Err(FetchError::Timeout),
                Ok(None) => None,
                Ok(Some(Ok(frame))) => Some(frame),
                Ok(Some(Err(e))) => return Err(network(&e)),
            };
            let data = match frame {
                Some(frame) => match frame.into_data() {
                    Ok(data) => Some(data),
                    Err(_) => continue,
                },
                None => {
                    if let Some((sender, key)) = self.conn.take() {
                        self.pool.put_back(sender, key);
                    }
                    None
                }
            };
            match (&mut self.decode, data) {
                // Bytes after the compressed stream: the body ends here, and its connection, whose
                // rest is not read, is not used again.
                (Some(g), data) => {
                    let more = g.frame(data);
                    if !matches!(more, Ok(true)) {
                        self.conn = None;
                    }
                    more?;
                }
                (None, Some(data)) if data.is_empty() => {}
                (None, data) => return Ok(data),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::sync::CancellationToken;

    use super::super::decode::tests::{brotli, brotli_large_window};
    use super::super::{FetchError, Fetched, Fetcher, Want};
    use crate::config::EngineConfig;
    use crate::units::{ByteSize, HumanDuration};

    /// What the test server does with one request (given its number on its connection, from
    /// 0, and its head): the bytes it writes, then whether it closes the connection (without
    /// saying so in a header).
    type Answer = (Vec<u8>, bool);

    /// A raw HTTP/1.1 server on 127.0.0.1: it counts connections and keeps each request head.
    struct Server {
        addr: std::net::SocketAddr,
        accepts: Arc<AtomicUsize>,
        /// Connections the client closed.
        closed: Arc<AtomicUsize>,
        heads: Arc<std::sync::Mutex<Vec<String>>>,
    }

    async fn server(answer: impl Fn(usize, &str) -> Answer + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let (a, h, c) = (accepts.clone(), heads.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                a.fetch_add(1, SeqCst);
                let (answer, heads, closed) = (answer.clone(), h.clone(), c.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut served = 0;
                    loop {
                        let mut chunk = [0u8; 4096];
                        let Ok(n) = sock.read(&mut chunk).await else { return };
                        if n == 0 {
                            closed.fetch_add(1, SeqCst);
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            heads.lock().unwrap().push(head.clone());
                            let (bytes, close) = answer(served, &head);
                            served += 1;
                            if sock.write_all(&bytes).await.is_err() || close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Server { addr, accepts, closed, heads }
    }

    fn html(body: &[u8], extra: &str) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn fetcher(cfg: EngineConfig) -> Fetcher {
        Fetcher::new(EngineConfig { retries: 0, ..cfg }).unwrap()
    }

    async fn get(f: &Fetcher, url: &str) -> (Result<Fetched, FetchError>, u32) {
        let report = f.fetch(&url.parse().unwrap(), None, Want::Html, &CancellationToken::new()).await;
        (report.result, report.tries)
    }

    fn body_of(r: Result<Fetched, FetchError>) -> Vec<u8> {
        match r {
            Ok(Fetched::Body { body, .. }) => body.to_vec(),
            other => panic!("expected a body, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn one_keep_alive_connection_serves_a_host_with_the_usual_headers() {
        let s = server(|_, _| (html(b"<p>hi</p>", ""), false)).await;
        let f = fetcher(EngineConfig { user_agent: "tester/1".into(), ..EngineConfig::default() });
        for i in 0..20 {
            let (r, _) = get(&f, &format!("http://{}/a/b?i={i}#frag", s.addr)).await;
            assert_eq!(body_of(r), b"<p>hi</p>");
        }
        assert_eq!(s.accepts.load(SeqCst), 1, "every request on the one connection");
        let heads = s.heads.lock().unwrap().clone();
        let first = heads[0].to_ascii_lowercase();
        assert!(first.starts_with("get /a/b?i=0 http/1.1\r\n"), "{first}");
        for header in
            [format!("host: {}", s.addr), "user-agent: tester/1".into(), "accept-encoding: gzip, br".into()]
        {
            assert!(first.contains(&header), "{header} missing from {first}");
        }
    }

    #[tokio::test]
    async fn a_location_of_raw_utf8_bytes_is_followed_as_browsers_read_it() {
        let s = server(|_, _| {
            let mut out = b"HTTP/1.1 301 Moved\r\nlocation: /caf".to_vec();
            out.extend_from_slice("é".as_bytes());
            out.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
            (out, false)
        })
        .await;
        let (r, _) = get(&fetcher(EngineConfig::default()), &format!("http://{}/old", s.addr)).await;
        match r {
            Ok(Fetched::Redirect { status, location }) => {
                assert_eq!((status, location.as_str()), (301, "/caf%C3%A9"));
                // The link it resolves to is the one `/café` resolves to.
                let base = url::Url::parse("http://h/old").unwrap();
                assert_eq!(base.join(&location).unwrap(), base.join("/café").unwrap());
            }
            other => panic!("expected a redirect, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn credentials_in_the_url_are_sent_as_basic_auth() {
        let s = server(|_, _| (html(b"ok", ""), false)).await;
        let (r, _) = get(&fetcher(EngineConfig::default()), &format!("http://user:pw@{}/", s.addr)).await;
        assert_eq!(body_of(r), b"ok");
        let head = s.heads.lock().unwrap()[0].to_ascii_lowercase();
        assert!(head.contains("authorization: basic dxnlcjpwdw=="), "{head}");
    }

    /// The general client (reqwest, here for a URL with credentials) asks for and decodes the
    /// same encodings through the same decoder.
    #[tokio::test]
    async fn the_general_client_decodes_gzip_and_brotli_with_the_same_limits() {
        let page = b"<html><body>".repeat(10_000);
        let (gz, br) = (gzip(&page), brotli(&page));
        let bomb = brotli(&vec![0u8; 8 << 20]);
        let truncated = br[..br.len() / 2].to_vec();
        let large_window = brotli_large_window(&page);
        let s = server(move |_, head| match head.split_whitespace().nth(1) {
            Some("/gzip") => (html(&gz, "content-encoding: gzip\r\n"), false),
            Some("/large-window") => (html(&large_window, "content-encoding: br\r\n"), false),
            Some("/br") => (html(&br, "content-encoding: br\r\n"), false),
            Some("/bomb") => (html(&bomb, "content-encoding: br\r\n"), false),
            _ => (html(&truncated, "content-encoding: br\r\n"), false),
        })
        .await;
        let f = fetcher(EngineConfig { max_body: ByteSize(1 << 20), ..EngineConfig::default() });
        let url = |path: &str| format!("http://user:pw@{}{path}", s.addr);
        assert_eq!(body_of(get(&f, &url("/gzip")).await.0), page);
        assert_eq!(body_of(get(&f, &url("/br")).await.0), page);
        assert_eq!(get(&f, &url("/bomb")).await.0.unwrap_err(), FetchError::TooLarge(1 << 20));
        for bad in ["/truncated", "/large-window"] {
            match get(&f, &url(bad)).await.0 {
                Err(FetchError::Network(m)) => assert!(m.starts_with("brotli: "), "{bad}: {m}"),
                other => panic!("{bad}: expected a brotli error, got {:?}", other.map(|_| "a body")),
            }
        }
        let head = s.heads.lock().unwrap()[0].to_ascii_lowercase();
        assert!(head.contains("authorization: basic"), "not the general client: {head}");
        assert!(head.contains("accept-encoding: gzip, br"), "{head}");
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_its_time_even_with_no_more_requests() {
        let s = server(|_, _| (html(b"ok", ""), false)).await;
        let idle = std::time::Duration::from_millis(200);
        let plain = super::Plain::with_timing("t", 4, idle, std::time::Duration::from_millis(50)).unwrap();
        let url: url::Url = format!("http://{}/", s.addr).parse().unwrap();
        let key = super::super::host_key(&url);
        let mut resp = plain.get(&url, &key, None, std::time::Duration::from_secs(5)).await.unwrap();
        while resp.chunk().await.unwrap().is_some() {}
        drop(resp);
        // Pooled, then let go by the reaper once idle too long: the server sees it closed.
        let started = std::time::Instant::now();
        while s.closed.load(SeqCst) == 0 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "the idle connection was never closed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(started.elapsed() >= idle - std::time::Duration::from_millis(50), "{:?}", started.elapsed());
        assert_eq!(s.accepts.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_by_the_server_while_idle_is_replaced_without_a_retry() {
        // Each connection answers its first request and keeps open, then closes on the second
        // without an answer: the client finds it dead only once it has sent on it.
        let s = server(|n, _| if n == 0 { (html(b"ok", ""), false) } else { (Vec::new(), true) }).await;
        let f = fetcher(EngineConfig::default());
        for _ in 0..5 {
            let (r, tries) = get(&f, &format!("http://{}/", s.addr)).await;
            assert_eq!(body_of(r), b"ok");
            assert_eq!(tries, 1, "not counted as a retry");
        }
        assert_eq!(s.accepts.load(SeqCst), 5);
        assert_eq!(s.heads.lock().unwrap().len(), 9, "four requests sent on a dead connection first");
    }

    #[tokio::test]
    async fn gzip_is_decoded_and_a_bomb_stops_at_the_size_limit() {
        let page = b"<html><body>".repeat(1000);
        let small = gzip(&page);
        let bomb = gzip(&vec![0u8; 50 << 20]);
        let s = server(move |_, head| match head.split_whitespace().nth(1) {
            Some("/page") => (html(&small, "content-encoding: gzip\r\n"), false),
            Some("/bomb") => (html(&bomb, "content-encoding: gzip\r\n"), false),
            Some("/x-gzip") => (html(&small, "content-encoding: X-Gzip\r\n"), false),
            _ => (html(b"\x1f\x8bnot gzip at all", "content-encoding: gzip\r\n"), false),
        })
        .await;
        let f = fetcher(EngineConfig { max_body: ByteSize(1 << 20), ..EngineConfig::default() });
        let (r, _) = get(&f, &format!("http://{}/page", s.addr)).await;
        assert_eq!(body_of(r), page);
        let (r, _) = get(&f, &format!("http://{}/x-gzip", s.addr)).await;
        assert_eq!(body_of(r), page);
        let (r, _) = get(&f, &format!("http://{}/bomb", s.addr)).await;
        assert_eq!(r.unwrap_err(), FetchError::TooLarge(1 << 20));
        match get(&f, &format!("http://{}/broken", s.addr)).await.0 {
            Err(FetchError::Network(m)) => assert!(m.starts_with("gzip: "), "{m}"),
            other => panic!("expected a gzip error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn brotli_is_decoded_in_steps_and_a_bomb_stops_at_the_size_limit() {
        let page = b"<html><body>".repeat(10_000);
        let small = brotli(&page);
        let bomb = brotli(&vec![0u8; 8 << 20]);
        let mut trailing = brotli(b"<p>one stream</p>");
        trailing.extend_from_slice(b"garbage");
        let truncated = small[..small.len() / 2].to_vec();
        let large_window = brotli_large_window(&page);
        let s = server(move |_, head| match head.split_whitespace().nth(1) {
            Some("/page") => (html(&small, "content-encoding: BR\r\n"), false),
            Some("/bomb") => (html(&bomb, "content-encoding: br\r\n"), false),
            Some("/empty") => (html(b"", "content-encoding: br\r\n"), false),
            Some("/trailing") => (html(&trailing, "content-encoding: br\r\n"), false),
            Some("/large-window") => (html(&large_window, "content-encoding: br\r\n"), false),
            // The stream in 7-byte chunks, then bytes after it in a chunk of their own.
            Some("/chunked") => {
                let mut out =
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-encoding: br\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                for piece in small.chunks(7).chain([&b"garbage"[..]]) {
                    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                (out, false)
            }
            _ => (html(&truncated, "content-encoding: br\r\n"), false),
        })
        .await;
        let f = fetcher(EngineConfig { max_body: ByteSize(1 << 20), ..EngineConfig::default() });
        let url = |path: &str| format!("http://{}{path}", s.addr);
        assert_eq!(body_of(get(&f, &url("/page")).await.0), page);
        assert_eq!(get(&f, &url("/bomb")).await.0.unwrap_err(), FetchError::TooLarge(1 << 20));
        assert_eq!(body_of(get(&f, &url("/empty")).await.0), b"");
        assert_eq!(body_of(get(&f, &url("/trailing")).await.0), b"<p>one stream</p>");
        for bad in ["/truncated", "/large-window"] {
            match get(&f, &url(bad)).await.0 {
                Err(FetchError::Network(m)) => assert!(m.starts_with("brotli: "), "{bad}: {m}"),
                other => panic!("{bad}: expected a brotli error, got {:?}", other.map(|_| "a body")),
            }
        }
        // Fed a few bytes at a time; the bytes after the stream came in a frame of their own,
        // so the connection (its body not read to the end) is not used again.
        // (The errors above closed their connections: one more is pooled first.)
        assert_eq!(body_of(get(&f, &url("/page")).await.0), page);
        let before = s.accepts.load(SeqCst);
        assert_eq!(body_of(get(&f, &url("/chunked")).await.0), page);
        assert_eq!(body_of(get(&f, &url("/page")).await.0), page);
        assert_eq!(s.accepts.load(SeqCst), before + 1);
        assert!(s.heads.lock().unwrap()[0].contains("accept-encoding: gzip, br"));
    }

    #[tokio::test]
    async fn an_empty_gzip_body_is_empty_and_bytes_after_the_stream_are_dropped() {
        let page = b"<p>one member</p>".to_vec();
        let mut trailing = gzip(&page);
        trailing.extend_from_slice(&gzip(b"<p>a second member, not read</p>"));
        trailing.extend_from_slice(b"garbage");
        let s = server(move |_, head| match head.split_whitespace().nth(1) {
            Some("/empty") => (html(b"", "content-encoding: gzip\r\n"), false),
            _ => (html(&trailing, "content-encoding: gzip\r\n"), false),
        })
        .await;
        let f = fetcher(EngineConfig::default());
        assert_eq!(body_of(get(&f, &format!("http://{}/empty", s.addr)).await.0), b"");
        assert_eq!(body_of(get(&f, &format!("http://{}/more", s.addr)).await.0), page);
        assert_eq!(body_of(get(&f, &format!("http://{}/empty", s.addr)).await.0), b"");
        // Here the bytes after the stream came with it, so the body was read to its end and the
        // connection kept (later ones would end the body and close it).
        assert_eq!(s.accepts.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn a_bad_answer_on_a_pooled_connection_is_not_sent_again() {
        let s =
            server(
                |n, _| {
                    if n == 0 {
                        (html(b"ok", ""), false)
                    } else {
                        (b"HTTP/1.1 abc\r\n\r\n".to_vec(), true)
                    }
                },
            )
            .await;
        let f = fetcher(EngineConfig::default());
        assert_eq!(body_of(get(&f, &format!("http://{}/", s.addr)).await.0), b"ok");
        assert!(matches!(get(&f, &format!("http://{}/", s.addr)).await.0, Err(FetchError::Network(_))));
        assert_eq!(s.heads.lock().unwrap().len(), 2, "the bad answer's request was sent once");
    }

    #[tokio::test]
    async fn a_body_that_stalls_times_out() {
        let s = server(|_, _| {
            // Says 100 bytes, sends 10, then nothing (the connection stays open).
            (
                b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 100\r\n\r\n0123456789"
                    .to_vec(),
                false,
            )
        })
        .await;
        let timeout = HumanDuration(std::time::Duration::from_millis(300));
        let f = fetcher(EngineConfig { timeout, ..EngineConfig::default() });
        let started = std::time::Instant::now();
        let (r, _) = get(&f, &format!("http://{}/", s.addr)).await;
        assert_eq!(r.unwrap_err(), FetchError::Timeout);
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
    }

    #[tokio::test]
    async fn redirects_and_errors_with_short_bodies_keep_their_connection() {
        let chunked_gzip = {
            let body = gzip(b"not found here");
            let mut out = format!(
                "HTTP/1.1 404 Not Found\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(&body);
            out.extend_from_slice(b"\r\n0\r\n\r\n");
            out
        };
        let s = server(move |_, head| match head.split_whitespace().nth(1) {
            Some("/chunked") => (chunked_gzip.clone(), false),
            Some("/moved") => {
                (b"HTTP/1.1 301 Moved\r\nlocation: /\r\ncontent-length: 5\r\n\r\nmoved".to_vec(), false)
            }
            Some("/gone") => (b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\ngone".to_vec(), false),
            // Said to be gzip, but is not: it is read as sent (never decoded), so its connection
            // is kept all the same.
            Some("/garbled") => (
                b"HTTP/1.1 500 Oops\r\ncontent-encoding: gzip\r\ncontent-length: 21\r\n\r\nthis is not gzip, no!".to_vec(),
                false,
            ),
            _ => (html(b"ok", ""), false),
        })
        .await;
        let f = fetcher(EngineConfig::default());
        for _ in 0..3 {
            match get(&f, &format!("http://{}/moved", s.addr)).await.0 {
                Ok(Fetched::Redirect { status: 301, location }) => assert_eq!(location, "/"),
                other => panic!("expected a redirect, got {other:?}"),
            }
            assert_eq!(
                get(&f, &format!("http://{}/gone", s.addr)).await.0.unwrap_err(),
                FetchError::Status(404)
            );
            assert_eq!(
                get(&f, &format!("http://{}/chunked", s.addr)).await.0.unwrap_err(),
                FetchError::Status(404)
            );
            assert_eq!(body_of(get(&f, &format!("http://{}/", s.addr)).await.0), b"ok");
        }
        let f = Fetcher::new(EngineConfig {
            retries: 2,
            backoff: HumanDuration(std::time::Duration::from_millis(1)),
            ..EngineConfig::default()
        })
        .unwrap();
        let before = s.accepts.load(SeqCst);
        let (result, tries) = get(&f, &format!("http://{}/garbled", s.addr)).await;
        assert_eq!((result.unwrap_err(), tries), (FetchError::Status(500), 3), "retried as a server error");
        assert_eq!(s.accepts.load(SeqCst), before + 1, "three answers on one connection");
        assert_eq!(s.accepts.load(SeqCst), 2, "twelve requests on one connection, three on another");
    }

    #[test]
    fn addresses_alternate_between_families() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let got = super::interleaved(vec![a("[::1]:1"), a("[::2]:1"), a("[::3]:1"), a("10.0.0.1:1")]);
        assert_eq!(got, [a("[::1]:1"), a("10.0.0.1:1"), a("[::2]:1"), a("[::3]:1")]);
        let got = super::interleaved(vec![a("10.0.0.1:1"), a("10.0.0.2:1"), a("[::1]:1")]);
        assert_eq!(got, [a("10.0.0.1:1"), a("[::1]:1"), a("10.0.0.2:1")]);
    }

    #[tokio::test]
    async fn an_address_that_drops_connections_costs_a_quarter_second_not_the_timeout() {
        // A listener whose backlog is full: the kernel drops further handshakes, so a connect
        // to it hangs, as to an address whose packets are lost.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let stalled = socket.listen(1).unwrap();
        let stalled_addr = stalled.local_addr().unwrap();
        let mut fillers = Vec::new();
        let filled = std::time::Instant::now();
        loop {
            // Each connect that completes fills the backlog further; one that hangs means full.
            match tokio::time::timeout(
                std::time::Duration::from_millis(200),
                TcpStream::connect(stalled_addr),
            )
            .await
            {
                Ok(Ok(s)) => fillers.push(s),
                Ok(Err(e)) => panic!("filling the backlog: {e}"),
                Err(_) => break,
            }
            assert!(filled.elapsed() < std::time::Duration::from_secs(10), "the backlog never filled");
        }
        let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good_addr = good.local_addr().unwrap();
        let started = std::time::Instant::now();
        let stream = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            super::connect_any(vec![stalled_addr, good_addr]),
        )
        .await
        .expect("connected before the test's bound")
        .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), good_addr);
        println!("connected to the second address after {:?}", started.elapsed());
        // No address at all, and only refused ones: errors, at once.
        assert!(super::connect_any(Vec::new()).await.is_err());
        drop(good);
        assert!(super::connect_any(vec![good_addr]).await.is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_network_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        match get(&fetcher(EngineConfig::default()), &format!("http://{addr}/")).await.0 {
            Err(FetchError::Network(m)) => assert!(m.to_lowercase().contains("refused"), "{m}"),
            other => panic!("expected a network error, got {other:?}"),
        }
    }
}
