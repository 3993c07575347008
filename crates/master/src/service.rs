//! The service layer behind both APIs: validation, authorization, rate limiting, the
//! leader's resource writes, and forwarding to the leader on followers. The HTTP and gRPC
//! front ends only translate to and from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crawler_coord::assign::{first_partitions, pick_worker};
use crawler_coord::resources::{self, CreateOutcome, ResourceRecord};
use crawler_coord::{
    Backoff, CoordError, Etcd, Fence, MasterRecord, Partitions, PrefixWatch, Snapshot, WorkerRecord,
};
use crawler_engine::{Task, TaskSpec};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::request::{task_from_toml, AddRequest, NodeSpec};
use crate::stats::{Assigned, Stats, TaskFigures};

/// Settings of one master.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// Master id.
    pub id: String,
    /// HTTP address other masters and clients reach this one at.
    pub http_advertise: String,
    /// gRPC address followers forward to.
    pub grpc_advertise: String,
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// Session lease TTL.
    pub lease_ttl: Duration,
    /// Tasks that may be added by name.
    pub tasks: Vec<TaskSpec>,
    /// Bearer token for mutating calls; empty: no check.
    pub token: String,
    /// API calls per second this master accepts.
    pub rate_per_sec: f64,
    /// Partitions a task is split into when its spec does not say (1: whole tasks).
    pub default_partitions: u32,
}

/// A resource as the API lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResourceView {
    /// Resource id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Worker it runs on.
    pub assigned_node: String,
    /// Creation time, Unix milliseconds.
    pub creation_time: i64,
    /// A split task: how many of its partitions each worker holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<BTreeMap<String, usize>>,
}

/// Partitions per worker of a split task.
pub(crate) fn partitions_per_worker(p: &Partitions) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for o in &p.owners {
        *out.entry(o.clone()).or_default() += 1;
    }
    out
}

/// A master as the API lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MasterView {
    /// Master id.
    pub id: String,
    /// HTTP API address.
    pub http: String,
    /// gRPC API address.
    pub grpc: String,
    /// Whether it leads now.
    pub leader: bool,
}

/// A worker as the API lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkerView {
    /// Worker id.
    pub id: String,
    /// Address.
    pub address: String,
    /// Resources assigned to it.
    pub load: usize,
}

/// What the leader loop publishes while this master leads.
#[derive(Clone)]
pub struct LeaderState {
    /// The fence for writes.
    pub fence: Fence,
    /// Fires when leadership is lost.
    pub token: CancellationToken,
}

/// The views a master keeps of etcd.
#[derive(Clone)]
pub struct Views {
    /// `/crawler/workers/`.
    pub workers: PrefixWatch,
    /// `/resources/`.
    pub resources: PrefixWatch,
    /// `/crawler/masters/`.
    pub masters: PrefixWatch,
    /// `/crawler/election/`.
    pub election: PrefixWatch,
}

/// One master's service. Cheap to clone.
#[derive(Clone)]
pub struct Master(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub cfg: MasterConfig,
    pub tasks: HashMap<String, TaskSpec>,
    pub etcd: Etcd,
    pub views: Views,
    pub leadership: watch::Receiver<Option<LeaderState>>,
    /// Serializes assignment decisions and the writes that carry them out.
    pub assign: tokio::sync::Mutex<()>,
    pub forwarder: Forwarder,
    pub metrics: Metrics,
    pub stats: Stats,
    limiter: Mutex<(f64, Instant)>,
}

impl Master {
    pub(crate) fn new(
        cfg: MasterConfig,
        etcd: Etcd,
        views: Views,
        leadership: watch::Receiver<Option<LeaderState>>,
    ) -> Master {
        let tasks = cfg.tasks.iter().map(|t| (t.name.clone(), t.clone())).collect();
        let burst = cfg.rate_per_sec.max(1.0);
        Master(Arc::new(Inner {
            cfg,
            tasks,
            etcd,
            views,
            leadership,
            assign: tokio::sync::Mutex::new(()),
            forwarder: Forwarder::default(),
            stats: Stats::default(),
            metrics: Metrics::default(),
            limiter: Mutex::new((burst, Instant::now())),
        }))
    }

    /// This master's id.
    pub fn id(&self) -> &str {
        &self.0.cfg.id
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Checks the bearer token of a mutating call.
    pub fn authorize(&self, bearer: Option<&str>) -> Result<(), ApiError> {
        let want = &self.0.cfg.token;
        if want.is_empty() || bearer == Some(want.as_str()) {
            return Ok(());
        }
        Err(ApiError::Unauthenticated(if bearer.is_none() {
            "missing bearer token".into()
        } else {
            "wrong bearer token".into()
        }))
    }

    /// Takes one token from the master's rate limiter.
    pub fn admit(&self) -> Result<(), ApiError> {
        let rate = self.0.cfg.rate_per_sec;
        let mut b = self.0.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.0 = (b.0 + (now - b.1).as_secs_f64() * rate).min(rate.max(1.0));
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            Ok(())
        } else {
            Err(ApiError::ResourceExhausted(format!("rate limit of {rate}/s exceeded; retry later")))
        }
    }

    /// The leadership state, while this master leads.
    pub fn leader_state(&self) -> Option<LeaderState> {
        self.0.leadership.borrow().clone().filter(|l| !l.token.is_cancelled())
    }

    /// Whether this master leads now.
    pub fn is_leader(&self) -> bool {
        self.leader_state().is_some()
    }

    /// The current leader's record, from the election and the master records.
    pub fn leader(&self) -> Option<MasterRecord> {
        let election = self.0.views.election.current()?;
        let (_, first) = election.entries.iter().min_by_key(|(_, e)| e.create_revision)?;
        let id = String::from_utf8_lossy(&first.value).into_owned();
        let masters = self.0.views.masters.current()?;
        let entry = masters.entries.get(&id)?;
        serde_json::from_slice(&entry.value).ok()
    }

    /// Live workers with their loads.
    pub fn workers(&self) -> Vec<WorkerView> {
        let loads = loads(self.0.views.resources.current().as_deref());
        live_workers(self.0.views.workers.current().as_deref())
            .into_values()
            .map(|w| WorkerView {
                load: loads.get(&w.id).copied().unwrap_or(0),
                id: w.id,
                address: w.address,
            })
            .collect()
    }

    /// Every master's record, and whether it is the leader.
    pub fn masters(&self) -> Vec<MasterView> {
        let leader = self.leader().map(|l| l.id);
        let Some(snap) = self.0.views.masters.current() else { return Vec::new() };
        snap.entries
            .values()
            .filter_map(|e| serde_json::from_slice::<MasterRecord>(&e.value).ok())
            .map(|m| MasterView {
                leader: leader.as_deref() == Some(m.id.as_str()),
                id: m.id,
                http: m.http,
                grpc: m.grpc,
            })
            .collect()
    }

    /// Every resource with the figures of its crawl, pulled from the workers (see `stats`).
    pub async fn stats(&self) -> Vec<TaskFigures> {
        let resources = self
            .resources()
            .into_iter()
            .map(|r| Assigned {
                name: r.name,
                worker: r.assigned_node,
                shares: r.partitions.map(|p| p.into_keys().collect()).unwrap_or_default(),
                creation_time: r.creation_time,
            })
            .collect();
        let workers = live_workers(self.0.views.workers.current().as_deref())
            .into_iter()
            .map(|(id, w)| (id, w.address))
            .collect();
        self.0.stats.figures(resources, workers).await
    }

    /// One resource: its figures, its task spec, and its crawl's recent failures and items
    /// (pulled from its worker; `null` while it has none).
    pub async fn task_detail(&self, name: &str) -> Result<serde_json::Value, ApiError> {
        let figures = self.stats().await.into_iter().find(|f| f.name == name);
        let figures = figures.ok_or_else(|| ApiError::NotFound(format!("no resource {:?}", cut(name))))?;
        let stored = self.0.views.resources.current().and_then(|snap| {
            let e = snap.entries.get(name)?;
            ResourceRecord::decode(name, &e.value).ok()
        });
        let spec = match stored.and_then(|r| r.task) {
            Some(task) => task,
            None => self.0.tasks.get(name).and_then(|t| serde_json::to_value(t).ok()).unwrap_or_default(),
        };
        let recent = match figures.address.as_str() {
            "" => serde_json::Value::Null,
            address => {
                self.0.stats.pull_detail(address, name).await.map(|d| d["recent"].clone()).unwrap_or_default()
            }
        };
        let mut v = serde_json::to_value(figures).map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut spec = spec;
        // The cookie is a credential: readers of the API see that there is one, not what it is.
        if let Some(c) = spec.get_mut("cookie").filter(|c| c.as_str().is_some_and(|c| !c.is_empty())) {
            *c = serde_json::Value::String("(set)".into());
        }
        v["spec"] = spec;
        v["recent"] = recent;
        Ok(v)
    }

    /// Stored resources.
    pub fn resources(&self) -> Vec<ResourceView> {
        let Some(snap) = self.0.views.resources.current() else { return Vec::new() };
        snap.entries
            .iter()
            .filter_map(|(k, e)| ResourceRecord::decode(k, &e.value).ok())
            .map(|r| ResourceView {
                id: r.id,
                name: r.name,
                assigned_node: r.assigned_node,
                creation_time: r.creation_time,
                partitions: r.partitions.as_ref().map(partitions_per_worker),
            })
            .collect()
    }

    /// Adds a resource: locally on the leader, else forwarded to it. `forwarded` calls that
    /// reach a non-leader fail with `Unavailable` instead of being forwarded again.
    pub async fn add(
        &self,
        mut req: AddRequest,
        forwarded: bool,
        bearer: Option<String>,
    ) -> Result<NodeSpec, ApiError> {
        validate_name(&req.name)?;
        if let Some(id) = &req.id {
            validate_id(id)?;
        }
        req.id.get_or_insert_with(new_id);
        if self.is_leader() {
            return self.add_local(req).await;
        }
        if forwarded {
            return Err(ApiError::Unavailable("not the leader".into()));
        }
        // Reject what is certainly bad here rather than after a round trip: an inline spec. A
        // task named alone is the leader's to know (masters' configs may differ for a while,
        // as in a rolling change of them).
        if req.task.is_some() {
            self.task_for(&req)?;
        }
        let node = self.via_leader(Write::Add(&req), bearer.as_deref()).await?;
        node.ok_or_else(|| ApiError::Internal("leader answered an add with nothing".into()))
    }

    /// Deletes a resource: locally on the leader, else forwarded to it.
    pub async fn delete(&self, name: &str, forwarded: bool, bearer: Option<String>) -> Result<(), ApiError> {
        validate_name(name)?;
        if self.is_leader() {
            return self.delete_local(name).await;
        }
        if forwarded {
            return Err(ApiError::Unavailable("not the leader".into()));
        }
        self.via_leader(Write::Delete(name), bearer.as_deref()).await.map(|_| ())
    }

    /// On a follower: sends a write to the leader, again while leadership moves (the
    /// forwarder answers `Unavailable`), until [`FORWARD_DEADLINE`]; handles it here if
    /// leadership comes here meanwhile. Every other answer of the leader is final.
    async fn via_leader(&self, write: Write<'_>, bearer: Option<&str>) -> Result<Option<NodeSpec>, ApiError> {
        let mut backoff =
            Backoff::new(Duration::from_millis(25), Duration::from_millis(400)).within(FORWARD_DEADLINE);
        let mut last = "no leader".to_owned();
        // A forwarded delete that failed may still have been carried out (its answer lost).
        let mut maybe_done = false;
        loop {
            if self.is_leader() {
                return match write {
                    Write::Add(req) => self.add_local(req.clone()).await.map(Some),
                    Write::Delete(name) => self.delete_local(name).await.map(|()| None),
                };
            }
            if let Some(leader) = self.leader().filter(|l| l.id != self.id()) {
                let started = Instant::now();
                let forwarder = &self.0.forwarder;
                let answer = match write {
                    Write::Add(req) => forwarder.add(&leader, req, bearer).await.map(Some),
                    Write::Delete(name) => forwarder.delete(&leader, name, bearer).await.map(|()| None),
                };
                self.metrics().forwarded(started.elapsed());
                match answer {
                    Err(ApiError::Unavailable(m)) => {
                        tracing::debug!(leader = %leader.id, error = %m, "forward failed; retrying");
                        last = m;
                        maybe_done = true;
                    }
                    // The earlier try's answer was lost: the resource is gone, as asked.
                    Err(ApiError::NotFound(_)) if maybe_done && matches!(write, Write::Delete(_)) => {
                        return Ok(None)
                    }
                    answer => return answer,
                }
            }
            if !backoff.wait().await {
                return Err(ApiError::Unavailable(format!("no leader reachable: {last}")));
            }
        }
    }

    /// The task JSON to store for a request: the inline spec (validated), or `None` for a
    /// task of the config.
    fn task_for(&self, req: &AddRequest) -> Result<Option<serde_json::Value>, ApiError> {
        match &req.task {
            Some(v) => {
                // A task given as a string is a TOML document (the keys of one [[task]]).
                let mut v = match v {
                    serde_json::Value::String(text) => task_from_toml(text)
                        .map_err(|e| ApiError::InvalidArgument(format!("task (TOML) {e}")))?,
                    v => v.clone(),
                };
                if let Some(obj) = v.as_object_mut() {
                    obj.entry("name").or_insert_with(|| serde_json::Value::String(req.name.clone()));
                }
                let spec: TaskSpec = serde_json::from_value(v.clone())
                    .map_err(|e| ApiError::InvalidArgument(format!("task: {e}")))?;
                if spec.name != req.name {
                    return Err(ApiError::InvalidArgument(format!(
                        "task.name {} differs from name {}",
                        cut(&spec.name),
                        cut(&req.name)
                    )));
                }
                Task::compile(spec).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
                Ok(Some(v))
            }
            // Stored with the master's spec: every worker runs the same task (the one its
            // partitions were planned on), whatever its own config holds.
            None => match self.0.tasks.get(&req.name) {
                Some(spec) => Ok(stored_spec(spec)),
                None => Err(ApiError::InvalidArgument(format!(
                    "unknown task {:?} and no inline task spec",
                    req.name
                ))),
            },
        }
    }

    pub(crate) async fn add_local(&self, req: AddRequest) -> Result<NodeSpec, ApiError> {
        let task = self.task_for(&req)?;
        let lead =
            self.leader_state().ok_or_else(|| ApiError::Unavailable("leadership changing; retry".into()))?;
        let _assigning = self.0.assign.lock().await;
        let resources =
            self.0.views.resources.current().ok_or_else(|| ApiError::Unavailable("starting".into()))?;
        let workers = live_workers(self.0.views.workers.current().as_deref());
        if let Some(e) = resources.entries.get(&req.name) {
            let same =
                ResourceRecord::decode(&req.name, &e.value).ok().filter(|r| Some(&r.id) == req.id.as_ref());
            // A retry of an add that succeeded: answer what is stored, not a new choice.
            return match same {
                Some(r) => {
                    let address =
                        workers.get(&r.assigned_node).map(|w| w.address.clone()).unwrap_or_default();
                    Ok(NodeSpec { id: r.assigned_node, address })
                }
                None => Err(ApiError::AlreadyExists(format!("resource {:?} exists", req.name))),
            };
        }
        let live: BTreeSet<String> = workers.keys().cloned().collect();
        let Some(mut worker) = pick_worker(&live, &loads(Some(&resources))).cloned() else {
            return Err(ApiError::NoWorker("no live worker".into()));
        };
        let spec = match &task {
            Some(v) => serde_json::from_value::<TaskSpec>(v.clone()).ok(),
            None => self.0.tasks.get(&req.name).cloned(),
        };
        let count = spec.as_ref().and_then(|s| s.partitions).unwrap_or(self.0.cfg.default_partitions).max(1);
        let partitions = match spec.map(Task::compile) {
            Some(Ok(compiled)) if count > 1 => {
                // Every partition to a live worker, evenly, least-loaded first; the answer names
                // the owner of the seeds' partition.
                let owners = first_partitions(count as usize, &live, &shares(Some(&resources)));
                let home = compiled.home_partition(count);
                worker = owners[home as usize].clone();
                Some(Partitions { home, owners, epochs: vec![1; count as usize] })
            }
            _ => None,
        };
        let rec = ResourceRecord {
            id: req.id.clone().unwrap_or_else(new_id),
            name: req.name.clone(),
            assigned_node: worker.clone(),
            creation_time: now_ms(),
            task,
            partitions,
            create_revision: 0,
        };
        match resources::create(&self.0.etcd, &lead.fence, &rec).await {
            Ok(CreateOutcome::Created(rev, stored)) => {
                // Keep the lock until our own view has the write, so the next decision sees it.
                let mut view = self.0.views.resources.clone();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), view.wait_for(|s| s.revision >= rev)).await;
                // An earlier try of this add stored it: its worker stands, not this try's choice.
                let worker = stored.map_or(worker, |r| r.assigned_node);
                tracing::info!(resource = %rec.name, worker = %worker, "resource added");
                let address = workers.get(&worker).map(|w| w.address.clone()).unwrap_or_default();
                Ok(NodeSpec { address, id: worker })
            }
            Ok(CreateOutcome::Exists(_)) => {
                Err(ApiError::AlreadyExists(format!("resource {:?} exists", req.name)))
            }
            Err(e) => Err(self.store_error(&lead, e)),
        }
    }

    pub(crate) async fn delete_local(&self, name: &str) -> Result<(), ApiError> {
        let lead =
            self.leader_state().ok_or_else(|| ApiError::Unavailable("leadership changing; retry".into()))?;
        let _assigning = self.0.assign.lock().await;
        match resources::delete(&self.0.etcd, &lead.fence, name).await {
            Ok(Some(deleted)) => {
                // Keep the lock until our own view no longer has the deleted record, so an add
                // right after it is decided without it (it answered the deleted record, or
                // 409, before). By its creating revision: a delete done by an earlier try
                // shows no event of its own.
                let mut view = self.0.views.resources.clone();
                let gone = |s: &crawler_coord::Snapshot| {
                    s.revision >= deleted.created
                        && s.entries.get(name).is_none_or(|e| e.create_revision != deleted.created)
                };
                let _ = tokio::time::timeout(Duration::from_secs(2), view.wait_for(gone)).await;
                tracing::info!(resource = %name, "resource deleted");
                Ok(())
            }
            Ok(None) => Err(ApiError::NotFound(format!("no resource {name:?}"))),
            Err(e) => Err(self.store_error(&lead, e)),
        }
    }

    /// Whether a forwarded call's mark (see [`crate::forward::FORWARDED`]) is the lease of a
    /// registered master.
    pub(crate) fn marks_a_master(&self, mark: &str) -> bool {
        let Ok(lease) = i64::from_str_radix(mark, 16) else { return false };
        lease != 0
            && self.0.views.masters.current().is_some_and(|s| s.entries.values().any(|e| e.lease == lease))
    }

    pub(crate) fn store_error(&self, lead: &LeaderState, e: CoordError) -> ApiError {
        match e {
            CoordError::NotLeader => {
                tracing::warn!("a fenced write failed: leadership lost");
                lead.token.cancel();
                ApiError::Unavailable("leadership lost; retry".into())
            }
            CoordError::Unavailable(m) => ApiError::Unavailable(m),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

/// The largest task spec stored in a resource record (etcd takes requests up to 1.5 MiB): a
/// larger one (thousands of seeds) is stored by name only, as before, and workers read it from
/// their config.
const MAX_STORED_SPEC: usize = 256 << 10;

/// The spec of a task added by name, as its record stores it (`None`: by name only).
fn stored_spec(spec: &TaskSpec) -> Option<serde_json::Value> {
    let value = serde_json::to_value(spec).expect("a task spec serializes");
    (value.to_string().len() <= MAX_STORED_SPEC).then_some(value)
}

/// A write a follower sends to the leader.
#[derive(Clone, Copy)]
enum Write<'a> {
    Add(&'a AddRequest),
    Delete(&'a str),
}

/// How long a follower keeps trying to reach a leader for one call.
const FORWARD_DEADLINE: Duration = Duration::from_secs(5);

/// Worker records by id, from the registry snapshot.
pub(crate) fn live_workers(snap: Option<&Snapshot>) -> BTreeMap<String, WorkerRecord> {
    let Some(snap) = snap else { return BTreeMap::new() };
    snap.entries
        .iter()
        .map(|(id, e)| {
            let rec = serde_json::from_slice(&e.value)
                .unwrap_or(WorkerRecord { id: id.clone(), address: String::new() });
            (id.clone(), rec)
        })
        .collect()
}

/// The work each worker holds, in tasks: 1 per whole resource, and its fraction of the
/// partitions of each split one.
pub(crate) fn shares(snap: Option<&Snapshot>) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for (k, e) in snap.map(|s| s.entries.iter()).into_iter().flatten() {
        match ResourceRecord::decode(k, &e.value) {
            Ok(ResourceRecord { partitions: Some(p), .. }) => {
                for o in &p.owners {
                    *out.entry(o.clone()).or_default() += 1.0 / f64::from(p.count().max(1));
                }
            }
            Ok(r) => *out.entry(r.assigned_node).or_default() += 1.0,
            Err(_) => {}
        }
    }
    out
}

/// Resources per worker, from the resources snapshot.
pub(crate) fn loads(snap: Option<&Snapshot>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (k, e) in snap.map(|s| s.entries.iter()).into_iter().flatten() {
        if let Ok(r) = ResourceRecord::decode(k, &e.value) {
            *out.entry(r.assigned_node).or_default() += 1;
        }
    }
    out
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!("name {} must be 1-64 letters, digits, '_' or '-'", cut(name))))
    }
}

/// Longest request id (the client's idempotency key) accepted.
const MAX_ID: usize = 128;

fn validate_id(id: &str) -> Result<(), ApiError> {
    if id.len() > MAX_ID || id.chars().any(char::is_control) {
        return Err(ApiError::InvalidArgument(format!(
            "id {} must be at most {MAX_ID} bytes without control characters",
            cut(id)
        )));
    }
    Ok(())
}

/// A client's value quoted in an error message, cut to 64 bytes so an error never echoes a
/// huge input.
pub(crate) fn cut(value: &str) -> String {
    if value.len() <= 64 {
        return format!("{value:?}");
    }
    let mut end = 64;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &value[..end], value.len())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A new resource id: time and randomness, unique enough across masters.
pub(crate) fn new_id() -> String {
    format!("{:x}-{:08x}", now_ms(), fastrand::u32(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_spec_is_stored_by_name_only() {
        let spec = |seeds: usize| -> TaskSpec {
            let seeds: Vec<String> = (0..seeds).map(|i| format!("http://127.0.0.1:9/page/{i:06}")).collect();
            serde_json::from_value(serde_json::json!({"name": "t", "seeds": seeds, "rule": [{"name": "a"}]}))
                .unwrap()
        };
        let small = stored_spec(&spec(10)).expect("a small spec is stored");
        assert_eq!(serde_json::from_value::<TaskSpec>(small).unwrap(), spec(10));
        assert!(stored_spec(&spec(20_000)).is_none(), "about 700 KiB of seeds");
    }
}
