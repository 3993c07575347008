//! A resilient etcd client: one connection per endpoint, used in turn. A request that fails
//! because an endpoint is down or the cluster is electing is retried on the next endpoint
//! with backoff, until a deadline. (`etcd-client` alone fails requests routed to a dead
//! endpoint of its balanced list.)

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::retry::Backoff;

/// A coordination failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoordError {
    /// etcd could not be reached (every endpoint tried until the deadline).
    #[error("etcd unavailable: {0}")]
    Unavailable(String),
    /// etcd answered with an error that retrying will not fix.
    #[error("etcd: {0}")]
    Etcd(String),
    /// A stored value could not be decoded.
    #[error("bad value at {key}: {problem}")]
    BadValue {
        /// The key.
        key: String,
        /// What was wrong.
        problem: String,
    },
    /// This process is not (or no longer) the leader.
    #[error("not the leader")]
    NotLeader,
    /// The session's lease is gone.
    #[error("session lost")]
    SessionLost,
}

/// Whether an etcd error is worth retrying on another endpoint, by its type and gRPC code
/// (etcd answers "no leader", "leader changed" and its own timeouts with `Unavailable`).
pub(crate) fn transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        E::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown
                | tonic::Code::Aborted
        ),
        _ => false,
    }
}

/// Endpoints and their clients. Cheap to clone.
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    clients: Vec<Client>,
    current: AtomicUsize,
    deadline: Duration,
}

impl Etcd {
    /// Connects (lazily) to every endpoint. `deadline` bounds how long one call keeps retrying.
    pub async fn connect(endpoints: &[String], deadline: Duration) -> Result<Etcd, CoordError> {
        if endpoints.is_empty() {
            return Err(CoordError::Etcd("no etcd endpoints".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            // A member cut off from the others' leader keeps serving its clients' watches, which
            // then go quiet while the cluster moves on (a dead worker's record deleted, a leader's
            // key gone: never seen). Asked for a leader, it ends them and refuses calls with
            // "no leader" (Unavailable), and the client moves to the next endpoint.
            .with_require_leader(true);
        let mut clients = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let c = Client::connect([e.as_str()], Some(options.clone()))
                .await
                .map_err(|err| CoordError::Etcd(format!("{e}: {err}")))?;
            clients.push(c);
        }
        Ok(Etcd {
            inner: Arc::new(Inner {
                endpoints: endpoints.to_vec(),
                clients,
                current: AtomicUsize::new(fastrand::usize(..endpoints.len())),
                deadline,
            }),
        })
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// A client on the endpoint currently preferred.
    pub fn client(&self) -> Client {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.clients.len();
        self.inner.clients[i].clone()
    }

    /// Moves to the next endpoint (after a failure on the current one).
    pub fn rotate(&self) {
        self.inner.current.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `op` with a client, retrying transient failures on the next endpoint with backoff
    /// until the deadline.
    pub async fn call<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, CoordError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut backoff =
            Backoff::new(Duration::from_millis(50), Duration::from_millis(800)).within(self.inner.deadline);
        loop {
            match op(self.client()).await {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) => {
                    tracing::debug!(what, error = %e, "etcd call failed; trying the next endpoint");
                    self.rotate();
                    if !backoff.wait().await {
                        return Err(CoordError::Unavailable(format!("{what}: {e}")));
                    }
                }
                Err(e) => return Err(CoordError::Etcd(format!("{what}: {e}"))),
            }
        }
    }
}
