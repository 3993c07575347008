//! Coordination through etcd: a resilient client over several endpoints, sessions (a lease
//! kept alive, with a token that fires when it is lost), leader election, list-then-watch of
//! key prefixes, the records stored under the contract's keys, fenced resource writes, and the
//! pure assignment decisions.
//!
//! It knows nothing of HTTP or gRPC servers; masters and workers build on it.
#![warn(missing_docs)]

pub mod assign;
mod client;
mod election;
pub mod keys;
pub mod resources;
mod retry;
mod session;
mod watcher;

pub use client::{CoordError, Etcd};
pub use election::{Fence, Leadership};
pub use resources::{CreateOutcome, Partitions, ResourceRecord};
pub use retry::Backoff;
pub use session::{revoke_lease, Session};
pub use watcher::{read_prefix, Entry, PrefixWatch, Snapshot};

/// Stores `value` as JSON under `key`, attached to the session's lease (deleted with it).
pub async fn put_leased(
    etcd: &Etcd,
    key: &str,
    value: &impl serde::Serialize,
    session: &Session,
) -> Result<(), CoordError> {
    put_leased_at(etcd, key, value, session).await.map(|_| ())
}

/// [`put_leased`], returning the etcd revision of the write.
pub async fn put_leased_at(
    etcd: &Etcd,
    key: &str,
    value: &impl serde::Serialize,
    session: &Session,
) -> Result<i64, CoordError> {
    let value = serde_json::to_string(value)
        .map_err(|e| CoordError::BadValue { key: key.to_owned(), problem: e.to_string() })?;
    let lease = session.lease();
    etcd.call("put leased", |mut c| {
        let (key, value) = (key.to_owned(), value.clone());
        async move { c.put(key, value, Some(etcd_client::PutOptions::new().with_lease(lease))).await }
    })
    .await
    .map(|r| r.header().map_or(0, |h| h.revision()))
}

/// Keeps the record `value` at `prefix` + `name` under the session's lease while the session
/// lives and `stop` has not fired: whenever `view` (a watch of `prefix`) shows it gone, though
/// the lease lives (an operator's `etcdctl del`), it is put back, within a watch round trip.
/// `present` is told whether the record is known to be there. The caller has put it at
/// revision `put_at`; snapshots older than that are not looked at.
#[allow(clippy::too_many_arguments)]
pub async fn keep_leased(
    etcd: &Etcd,
    mut view: PrefixWatch,
    prefix: &str,
    name: &str,
    value: &(impl serde::Serialize + Sync),
    session: &Session,
    put_at: i64,
    present: &(dyn Fn(bool) + Sync),
    stop: &tokio_util::sync::CancellationToken,
) {
    let key = format!("{prefix}{name}");
    let done = session.done();
    let mut since = put_at;
    let mut backoff = Backoff::new(std::time::Duration::from_millis(100), std::time::Duration::from_secs(2));
    loop {
        let mut failed = false;
        if let Some(snap) = view.current() {
            if snap.revision >= since && !snap.entries.contains_key(name) {
                present(false);
                match put_leased_at(etcd, &key, value, session).await {
                    Ok(rev) => {
                        tracing::warn!(%key, "our record was deleted while our lease lives; put it back");
                        since = rev;
                        present(true);
                        backoff.reset();
                    }
                    Err(e) => {
                        tracing::warn!(%key, error = %e, "cannot put our record back; will retry");
                        failed = true;
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = done.cancelled() => return,
            changed = view.changed(), if !failed => if changed.is_none() { return },
            // A failed put is retried even if nothing else changes.
            _ = backoff.wait(), if failed => {}
        }
    }
}

/// Registers a worker: its record under `/crawler/workers/<id>`, attached to the session.
pub async fn register_worker(
    etcd: &Etcd,
    record: &WorkerRecord,
    session: &Session,
) -> Result<(), CoordError> {
    put_leased(etcd, &keys::worker(&record.id), record, session).await
}

/// Every stored resource, read straight from etcd.
pub async fn list_resources(etcd: &Etcd) -> Result<Vec<ResourceRecord>, CoordError> {
    let resp = etcd
        .call("list resources", |mut c| async move {
            c.get(keys::RESOURCES, Some(etcd_client::GetOptions::new().with_prefix())).await
        })
        .await?;
    resp.kvs()
        .iter()
        .map(|kv| ResourceRecord::decode(&String::from_utf8_lossy(kv.key()), kv.value()))
        .collect()
}

/// A master's record under `/crawler/masters/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MasterRecord {
    /// Master id.
    pub id: String,
    /// HTTP API address.
    pub http: String,
    /// gRPC API address.
    pub grpc: String,
}

/// A worker's record under `/crawler/workers/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerRecord {
    /// Worker id.
    pub id: String,
    /// The worker's advertised HTTP address.
    pub address: String,
}
