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
mod session;
mod watcher;

pub use client::{CoordError, Etcd};
pub use election::{Fence, Leadership};
pub use resources::{CreateOutcome, ResourceRecord};
pub use session::Session;
pub use watcher::{Entry, PrefixWatch, Snapshot};

/// Stores `value` as JSON under `key`, attached to the session's lease (deleted with it).
pub async fn put_leased(
    etcd: &Etcd,
    key: &str,
    value: &impl serde::Serialize,
    session: &Session,
) -> Result<(), CoordError> {
    let value = serde_json::to_string(value)
        .map_err(|e| CoordError::BadValue { key: key.to_owned(), problem: e.to_string() })?;
    let lease = session.lease();
    etcd.call("put leased", |mut c| {
        let (key, value) = (key.to_owned(), value.clone());
        async move { c.put(key, value, Some(etcd_client::PutOptions::new().with_lease(lease))).await }
    })
    .await
    .map(|_| ())
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
