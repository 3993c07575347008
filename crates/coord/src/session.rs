//! A session: an etcd lease kept alive in the background. Its `done` token fires the moment
//! the lease is known to be lost (expired, revoked, or not renewed within its TTL), so work
//! bound to the session (leadership, registrations) stops at once.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{CoordError, Etcd};
use crate::retry::Backoff;

/// A lease with keep-alive. Close it with [`Session::close`] to revoke the lease at once.
pub struct Session {
    etcd: Etcd,
    lease: i64,
    ttl: Duration,
    done: CancellationToken,
    keeper: JoinHandle<()>,
}

impl Session {
    /// Grants a lease of `ttl` (whole seconds, at least 1) and keeps it alive.
    pub async fn start(etcd: &Etcd, ttl: Duration) -> Result<Session, CoordError> {
        let secs = ttl.as_secs().max(1) as i64;
        let lease =
            etcd.call("lease grant", |mut c| async move { c.lease_grant(secs, None).await }).await?.id();
        let done = CancellationToken::new();
        let keeper =
            tokio::spawn(keep_alive(etcd.clone(), lease, Duration::from_secs(secs as u64), done.clone()));
        tracing::debug!(lease, ttl_s = secs, "session started");
        Ok(Session { etcd: etcd.clone(), lease, ttl: Duration::from_secs(secs as u64), done, keeper })
    }

    /// The lease id.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Fires when the session is lost (or closed).
    pub fn done(&self) -> CancellationToken {
        self.done.clone()
    }

    /// Whether the session is still alive as far as this process knows.
    pub fn is_alive(&self) -> bool {
        !self.done.is_cancelled()
    }

    /// Stops the keep-alive and revokes the lease, deleting every key attached to it.
    pub async fn close(self) {
        self.done.cancel();
        self.keeper.abort();
        if let Err(e) = revoke_lease(&self.etcd, self.lease).await {
            tracing::warn!(lease = self.lease, error = %e, "could not revoke the lease; it will expire");
        }
    }
}

/// Revokes `lease`, deleting every key attached to it (also the lease of a session already
/// dropped, which may live on in etcd).
pub async fn revoke_lease(etcd: &Etcd, lease: i64) -> Result<(), CoordError> {
    etcd.call("lease revoke", |mut c| async move { c.lease_revoke(lease).await }).await.map(|_| ())
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
        self.done.cancel();
    }
}

/// Keeps the lease alive until `done` fires or the lease is lost, and fires `done` then. The
/// deadline (the last renewal's send time plus the TTL etcd granted, so never later than etcd's
/// own) is watched beside the renewals: a renewal or a reconnect that hangs does not make the
/// loss noticed late (up to a third of the TTL late before, while etcd had already deleted the
/// session's keys).
async fn keep_alive(etcd: Etcd, lease: i64, ttl: Duration, done: CancellationToken) {
    let (renewed, mut deadline) = tokio::sync::watch::channel(Instant::now() + ttl);
    let renewing = renew(etcd, lease, ttl, done.clone(), renewed);
    tokio::pin!(renewing);
    loop {
        let expires = *deadline.borrow_and_update();
        tokio::select! {
            biased;
            () = &mut renewing => return,
            _ = done.cancelled() => return,
            Ok(()) = deadline.changed() => {}
            _ = tokio::time::sleep_until(expires.into()) => {
                tracing::warn!(lease, "session lost: lease not renewed within its ttl");
                done.cancel();
                return;
            }
        }
    }
}

/// The renewals: each success sends the new deadline. Returns when etcd says the lease is gone
/// (or `done` fires).
async fn renew(
    etcd: Etcd,
    lease: i64,
    ttl: Duration,
    done: CancellationToken,
    renewed: tokio::sync::watch::Sender<Instant>,
) {
    let every = (ttl / 3).max(Duration::from_millis(500));
    let mut backoff = Backoff::new(Duration::from_millis(100), every);
    'reconnect: loop {
        if done.is_cancelled() {
            return;
        }
        let mut client = etcd.client();
        let opened = tokio::time::timeout(every, client.lease_keep_alive(lease)).await;
        let (mut keeper, mut stream) = match opened {
            Ok(Ok(pair)) => pair,
            _ => {
                etcd.rotate();
                backoff.wait().await;
                continue 'reconnect;
            }
        };
        backoff.reset();
        loop {
            let sent = Instant::now();
            let answer = tokio::time::timeout(every, async {
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
            match answer {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                    let _ = renewed.send(sent + Duration::from_secs(resp.ttl() as u64));
                }
                Ok(Ok(Some(_))) => {
                    tracing::warn!(lease, "session lost: lease expired");
                    done.cancel();
                    return;
                }
                _ => {
                    etcd.rotate();
                    continue 'reconnect;
                }
            }
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
