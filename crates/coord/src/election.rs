//! Leader election under `/crawler/election`, in the layout of etcd's election API (each
//! candidate a key `<prefix>/<lease hex>` under its session's lease; the oldest key leads), run
//! from the client: a candidate creates its key once per session and then waits, by watching
//! the key just older than its own, so its seniority survives any number of dropped calls (the
//! server-side Campaign call deletes the key whenever the call is cut off, which a request
//! timeout does every few seconds). A [`Leadership`] carries the fence (the leader key and its
//! creation revision) that every leader-only write is conditioned on, and a token that fires
//! when the session ends.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchOptions,
};
use tokio_util::sync::CancellationToken;

use crate::client::{CoordError, Etcd};
use crate::keys::ELECTION;
use crate::retry::Backoff;
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
    fence: Fence,
    token: CancellationToken,
}

impl Leadership {
    /// Campaigns until this session leads; `None` if the session ends or `stop` fires first.
    /// The candidacy (one key per session) is created once and kept while waiting.
    pub async fn campaign(
        etcd: &Etcd,
        session: &Session,
        id: &str,
        stop: &CancellationToken,
    ) -> Result<Option<Leadership>, CoordError> {
        let done = session.done();
        let key = format!("{ELECTION}/{:x}", session.lease());
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let revision = candidacy(etcd, &key, id, session.lease()).await?;
            loop {
                if done.is_cancelled() || stop.is_cancelled() {
                    return Ok(None);
                }
                let (ours, older, at) = candidates(etcd, &key, revision).await?;
                if !ours {
                    // Our key was deleted (by an operator) while the session lives: stand again.
                    tracing::warn!(%key, "our candidacy disappeared; campaigning again");
                    break;
                }
                let Some(older) = older else {
                    let fence = Fence { key: key.clone().into_bytes(), revision };
                    return Ok(Some(Leadership { fence, token: done.child_token() }));
                };
                tokio::select! {
                    _ = done.cancelled() => return Ok(None),
                    _ = stop.cancelled() => return Ok(None),
                    watched = deleted(etcd, &older, at) => {
                        if watched {
                            backoff.reset();
                        } else {
                            // The watch broke: look again after a pause.
                            etcd.rotate();
                            backoff.wait().await;
                        }
                    }
                }
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
        let key = self.fence.key.clone();
        let revision = self.fence.revision;
        let r = etcd
            .call("resign", |mut c| {
                let key = key.clone();
                // Only our own candidacy: the key as we created it.
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, revision)])
                    .and_then([TxnOp::delete(key, None)]);
                async move { c.txn(txn).await }
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "resign failed; the lease will expire");
        }
    }
}

/// Creates our candidacy under the lease, or finds it from an earlier try; returns its
/// creation revision.
async fn candidacy(etcd: &Etcd, key: &str, id: &str, lease: i64) -> Result<i64, CoordError> {
    let resp = etcd
        .call("campaign", |mut c| {
            let txn = Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, id, Some(PutOptions::new().with_lease(lease)))])
                .or_else([TxnOp::get(key, None)]);
            async move { c.txn(txn).await }
        })
        .await?;
    if resp.succeeded() {
        return Ok(resp.header().map_or(0, |h| h.revision()));
    }
    let found = resp.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.create_revision()),
        _ => None,
    });
    found.ok_or_else(|| CoordError::Etcd("campaign: candidacy neither created nor found".into()))
}

/// Whether our key is there, the key just older than ours (if any), and the revision read at.
async fn candidates(
    etcd: &Etcd,
    key: &str,
    revision: i64,
) -> Result<(bool, Option<String>, i64), CoordError> {
    let resp = etcd
        .call("candidates", |mut c| async move {
            let options = GetOptions::new()
                .with_prefix()
                .with_keys_only()
                .with_sort(SortTarget::Create, SortOrder::Ascend);
            c.get(format!("{ELECTION}/"), Some(options)).await
        })
        .await?;
    let at = resp.header().map_or(0, |h| h.revision());
    let ours = resp.kvs().iter().any(|kv| kv.key() == key.as_bytes() && kv.create_revision() == revision);
    let older = resp
        .kvs()
        .iter()
        .filter(|kv| kv.create_revision() < revision)
        .max_by_key(|kv| kv.create_revision())
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned());
    Ok((ours, older, at))
}

/// Returns `true` once `key` is deleted after revision `at` (or the watch was cancelled by
/// etcd), `false` when the watch could not be opened or broke; the caller looks again.
async fn deleted(etcd: &Etcd, key: &str, at: i64) -> bool {
    let mut client = etcd.client();
    let options = WatchOptions::new().with_start_revision(at + 1);
    let Ok(mut stream) = client.watch(key, Some(options)).await else { return false };
    loop {
        match stream.message().await {
            Ok(Some(resp)) => {
                if resp.canceled() || resp.events().iter().any(|e| e.event_type() == EventType::Delete) {
                    return true;
                }
            }
            Ok(None) | Err(_) => return false,
        }
    }
}
