//! Leader election on etcd's election API under `/crawler/election`. A [`Leadership`] carries
//! the fence (the leader key and its creation revision) that every leader-only write is
//! conditioned on, and a token that fires when the session ends.

use std::time::Duration;

use etcd_client::{LeaderKey, ResignOptions};
use tokio_util::sync::CancellationToken;

use crate::client::{transient, CoordError, Etcd};
use crate::keys::ELECTION;
use crate::session::Session;

/// What a leader-only write is conditioned on: the leader key still exists with this
/// creation revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The leader's election key.
    pub key: Vec<u8>,
    /// Its creation revision.
    pub revision: i64,
}

/// Being the leader, for as long as `token` has not fired.
pub struct Leadership {
    key: LeaderKey,
    fence: Fence,
    token: CancellationToken,
}

impl Leadership {
    /// Campaigns until this session leads; `None` if the session ends or `stop` fires first.
    pub async fn campaign(
        etcd: &Etcd,
        session: &Session,
        id: &str,
        stop: &CancellationToken,
    ) -> Result<Option<Leadership>, CoordError> {
        let done = session.done();
        loop {
            let mut election = etcd.client().election_client();
            let attempt = tokio::select! {
                _ = done.cancelled() => return Ok(None),
                _ = stop.cancelled() => return Ok(None),
                r = election.campaign(ELECTION, id, session.lease()) => r,
            };
            match attempt {
                Ok(mut resp) => {
                    let key = resp
                        .take_leader()
                        .ok_or_else(|| CoordError::Etcd("campaign returned no leader key".into()))?;
                    let fence = Fence { key: key.key().to_vec(), revision: key.rev() };
                    return Ok(Some(Leadership { key, fence, token: done.child_token() }));
                }
                Err(e) if transient(&e) => {
                    tracing::debug!(error = %e, "campaign interrupted; retrying");
                    etcd.rotate();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(CoordError::Etcd(format!("campaign: {e}"))),
            }
        }
    }

    /// The fence for leader-only writes.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Fires when leadership is lost (session gone, resigned, or [`Leadership::lose`]).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Marks leadership as lost (e.g. after a fenced write failed its fence).
    pub fn lose(&self) {
        self.token.cancel();
    }

    /// Gives up leadership so another candidate takes over at once.
    pub async fn resign(self, etcd: &Etcd) {
        self.token.cancel();
        let key = self.key.clone();
        let r = etcd
            .call("resign", |c| {
                let key = key.clone();
                async move { c.election_client().resign(Some(ResignOptions::new().with_leader(key))).await }
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "resign failed; the lease will expire");
        }
    }
}
