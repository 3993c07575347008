//! Resources under `/resources/<name>`, written only by the leader: every write is one etcd
//! transaction fenced on the leader's election key, so a deposed leader can never write.

use etcd_client::{Compare, CompareOp, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use crate::client::{CoordError, Etcd};
use crate::election::Fence;
use crate::keys;

/// A resource as stored in etcd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// Unique id of this resource instance.
    pub id: String,
    /// Resource (task) name.
    pub name: String,
    /// Worker the resource runs on.
    pub assigned_node: String,
    /// Creation time, Unix milliseconds.
    pub creation_time: i64,
    /// Inline task spec, when the resource was added with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<serde_json::Value>,
    /// A task split across workers: who owns each host partition (then `assigned_node` is the
    /// owner of the seeds' partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Partitions>,
    /// The etcd revision that created the record (not stored in it: set by whoever reads it
    /// back with its key's metadata; 0 otherwise). Unique to each add, kept by moves.
    #[serde(skip)]
    pub create_revision: i64,
}

/// The partition assignment of a split task: one small record, never per URL. Each partition
/// carries the epoch of its current assignment; it grows whenever the partition moves, and the
/// owner's state writes are fenced on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partitions {
    /// The partition of the seeds' host.
    pub home: u32,
    /// Owner (worker id) of each partition, indexed by partition.
    pub owners: Vec<String>,
    /// Epoch of each partition's assignment.
    pub epochs: Vec<i64>,
}

impl Partitions {
    /// Number of partitions.
    pub fn count(&self) -> u32 {
        self.owners.len() as u32
    }

    /// The partitions `worker` owns, with their epochs.
    pub fn owned_by(&self, worker: &str) -> Vec<(u32, i64)> {
        self.owners
            .iter()
            .zip(&self.epochs)
            .enumerate()
            .filter(|(_, (o, _))| *o == worker)
            .map(|(p, (_, e))| (p as u32, *e))
            .collect()
    }

    /// Distinct owners.
    pub fn workers(&self) -> std::collections::BTreeSet<&str> {
        self.owners.iter().map(String::as_str).collect()
    }

    /// Takes a new assignment: partitions whose owner changes get an epoch above every epoch
    /// so far. Returns whether anything moved.
    pub fn reassign(&mut self, owners: Vec<String>) -> bool {
        let next = self.epochs.iter().copied().max().unwrap_or(0) + 1;
        let mut moved = false;
        for (p, owner) in owners.into_iter().enumerate() {
            if self.owners[p] != owner {
                self.owners[p] = owner;
                self.epochs[p] = next;
                moved = true;
            }
        }
        moved
    }
}

impl ResourceRecord {
    /// This add of the resource: its id and the etcd revision that created it, `ID@REV`
    /// (see [`ResourceRecord::create_revision`]). A re-add is another instance even under the
    /// same id (a client may send its own, as the original's walkthrough does), so its crawl
    /// is another run; a move keeps the instance.
    pub fn instance(&self) -> String {
        format!("{}@{}", self.id, self.create_revision)
    }

    /// Decodes a stored record. A split record whose partitions do not hold together (no
    /// partition, an epoch or the home partition missing) cannot be read: planned on, it
    /// would index past its lists.
    pub fn decode(key: &str, value: &[u8]) -> Result<ResourceRecord, CoordError> {
        let bad = |problem: String| CoordError::BadValue { key: key.to_owned(), problem };
        let rec: ResourceRecord = serde_json::from_slice(value).map_err(|e| bad(e.to_string()))?;
        if let Some(p) = &rec.partitions {
            if p.owners.is_empty() || p.owners.len() != p.epochs.len() || p.home as usize >= p.owners.len() {
                return Err(bad(format!(
                    "partitions: {} owners, {} epochs, home {}: every partition needs an owner and an epoch, and home one of them",
                    p.owners.len(),
                    p.epochs.len(),
                    p.home
                )));
            }
        }
        Ok(rec)
    }

    fn encode(&self) -> String {
        serde_json::to_string(self).expect("records serialize")
    }
}

/// The result of a create.
#[derive(Clone, Debug, PartialEq)]
pub enum CreateOutcome {
    /// Stored, at this etcd revision (by this call, or by an earlier try of the same add: then
    /// the record stored, whose choices stand).
    Created(i64, Option<Box<ResourceRecord>>),
    /// A resource of that name already exists (this one).
    Exists(Box<ResourceRecord>),
}

fn fence_cmp(fence: &Fence) -> Compare {
    Compare::create_revision(fence.key.clone(), CompareOp::Equal, fence.revision)
}

/// Creates `/resources/<name>` if absent, fenced on the leadership. Retried calls that find
/// their own record (same id) report `Created`.
pub async fn create(etcd: &Etcd, fence: &Fence, rec: &ResourceRecord) -> Result<CreateOutcome, CoordError> {
    let key = keys::resource(&rec.name);
    let value = rec.encode();
    let resp = etcd
        .call("create resource", |mut c| {
            let inner = etcd_client::Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), value.clone(), None)])
                .or_else([TxnOp::get(key.clone(), None)]);
            let txn = etcd_client::Txn::new().when([fence_cmp(fence)]).and_then([TxnOp::txn(inner)]);
            async move { c.txn(txn).await }
        })
        .await?;
    if !resp.succeeded() {
        return Err(CoordError::NotLeader);
    }
    let revision = resp.header().map_or(0, |h| h.revision());
    match resp.op_responses().into_iter().next() {
        Some(TxnOpResponse::Txn(inner)) if inner.succeeded() => Ok(CreateOutcome::Created(revision, None)),
        Some(TxnOpResponse::Txn(inner)) => {
            let existing = match inner.op_responses().into_iter().next() {
                Some(TxnOpResponse::Get(g)) => {
                    g.kvs().first().map(|kv| ResourceRecord::decode(&key, kv.value())).transpose()?
                }
                _ => None,
            };
            match existing {
                Some(e) if e.id == rec.id => Ok(CreateOutcome::Created(revision, Some(Box::new(e)))),
                Some(e) => Ok(CreateOutcome::Exists(Box::new(e))),
                None => Err(CoordError::Etcd("create: conflicting key vanished".into())),
            }
        }
        _ => Err(CoordError::Etcd("create: unexpected transaction response".into())),
    }
}

/// Deletes `/resources/<name>`, fenced. Returns whether it existed when the call began; once
/// it did, the answer is `true` however many tries the delete took (see [`delete_created_at`]).
pub async fn delete(etcd: &Etcd, fence: &Fence, name: &str) -> Result<Option<Deleted>, CoordError> {
    let key = keys::resource(name);
    let resp = etcd
        .call("read resource", |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
    let Some(kv) = resp.kvs().first() else { return Ok(None) };
    let created = kv.create_revision();
    let revision = delete_created_at(etcd, fence, name, created).await?;
    Ok(Some(Deleted { created, revision }))
}

/// A resource deleted: the revision that had created it, and one at which it is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// The etcd revision that created the deleted record.
    pub created: i64,
    /// A revision at which it is gone (the delete's, or a later one for a delete already done).
    pub revision: i64,
}

/// Deletes the resource `name` created at revision `created`, fenced: `Ok` (with the etcd
/// revision the resource is gone at, or later) once that resource is gone, whether this try
/// removed it or an earlier one did. A try whose answer was lost
/// (an etcd timeout after the delete applied) is retried, and the retry finds nothing to
/// delete: that is still success, not "no such resource". A resource of the same name created
/// since is a different one and is left alone.
pub async fn delete_created_at(
    etcd: &Etcd,
    fence: &Fence,
    name: &str,
    created: i64,
) -> Result<i64, CoordError> {
    let key = keys::resource(name);
    let resp = etcd
        .call("delete resource", |mut c| {
            let inner = etcd_client::Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, created)])
                .and_then([TxnOp::delete(key.clone(), None)]);
            let txn = etcd_client::Txn::new().when([fence_cmp(fence)]).and_then([TxnOp::txn(inner)]);
            async move { c.txn(txn).await }
        })
        .await?;
    if !resp.succeeded() {
        return Err(CoordError::NotLeader);
    }
    Ok(resp.header().map_or(0, |h| h.revision()))
}

/// Rewrites a resource if it is unchanged since `mod_revision`, fenced. Returns whether it
/// was written (false: it changed or vanished meanwhile).
pub async fn update(
    etcd: &Etcd,
    fence: &Fence,
    rec: &ResourceRecord,
    mod_revision: i64,
) -> Result<bool, CoordError> {
    let key = keys::resource(&rec.name);
    let value = rec.encode();
    let resp = etcd
        .call("update resource", |mut c| {
            let inner = etcd_client::Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, mod_revision)])
                .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
            let txn = etcd_client::Txn::new().when([fence_cmp(fence)]).and_then([TxnOp::txn(inner)]);
            async move { c.txn(txn).await }
        })
        .await?;
    if !resp.succeeded() {
        return Err(CoordError::NotLeader);
    }
    Ok(matches!(resp.op_responses().first(), Some(TxnOpResponse::Txn(t)) if t.succeeded()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_record_whose_partitions_do_not_hold_together_cannot_be_read() {
        let record = |parts: &str| {
            format!(r#"{{"id":"i","name":"x","assigned_node":"w","creation_time":1,"partitions":{parts}}}"#)
        };
        let good = record(r#"{"home":1,"owners":["w","v"],"epochs":[1,1]}"#);
        assert_eq!(ResourceRecord::decode("x", good.as_bytes()).unwrap().partitions.unwrap().count(), 2);
        for bad in [
            r#"{"home":0,"owners":["gone"],"epochs":[]}"#,
            r#"{"home":2,"owners":["w","v"],"epochs":[1,1]}"#,
            r#"{"home":0,"owners":[],"epochs":[]}"#,
        ] {
            assert!(ResourceRecord::decode("x", record(bad).as_bytes()).is_err(), "{bad}");
        }
    }
}
