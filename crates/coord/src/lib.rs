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
