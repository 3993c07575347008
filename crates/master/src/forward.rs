//! Forwarding writes from a follower to the leader over gRPC: leader looked up in the
//! election, a deadline per call, bounded retries while leadership changes, 503 when there
//! is no leader.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crawler_proto::crawler_master_client::CrawlerMasterClient;
use crawler_proto::ResourceSpec;
use tonic::transport::{Channel, Endpoint};

use crate::error::ApiError;
use crate::service::{AddRequest, Master, NodeSpec, NO_WORKER};

/// Metadata key marking a call already forwarded once (never forwarded again).
pub const FORWARDED: &str = "x-crawler-forwarded";
/// How long a follower keeps trying to reach a leader for one call.
const DEADLINE: Duration = Duration::from_secs(5);
/// Per-attempt deadline of a forwarded call.
const ATTEMPT: Duration = Duration::from_secs(3);

/// Channels to leaders, by gRPC address.
#[derive(Default)]
pub struct Forwarder {
    channels: Mutex<HashMap<String, Channel>>,
}

enum Call {
    Add(ResourceSpec),
    Delete(ResourceSpec),
}

impl Forwarder {
    fn channel(&self, addr: &str) -> Result<Channel, ApiError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ApiError::Internal(format!("leader address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .timeout(ATTEMPT)
            .connect_lazy();
        map.insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    /// Forwards an add.
    pub async fn add(
        &self,
        master: &Master,
        req: AddRequest,
        bearer: Option<String>,
    ) -> Result<NodeSpec, ApiError> {
        let spec = ResourceSpec {
            id: req.id.clone().unwrap_or_default(),
            name: req.name.clone(),
            task_json: req.task.as_ref().map(|t| t.to_string()).unwrap_or_default(),
            ..ResourceSpec::default()
        };
        match self.call(master, Call::Add(spec), bearer).await? {
            Some(node) => Ok(node),
            None => Err(ApiError::Internal("leader answered an add with nothing".into())),
        }
    }

    /// Forwards a delete.
    pub async fn delete(&self, master: &Master, name: &str, bearer: Option<String>) -> Result<(), ApiError> {
        let spec = ResourceSpec { name: name.to_owned(), ..ResourceSpec::default() };
        self.call(master, Call::Delete(spec), bearer).await.map(|_| ())
    }

    async fn call(
        &self,
        master: &Master,
        call: Call,
        bearer: Option<String>,
    ) -> Result<Option<NodeSpec>, ApiError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(25);
        let mut last = ApiError::Unavailable("no leader".into());
        while started.elapsed() < DEADLINE {
            if master.is_leader() {
                // Leadership came here while we were retrying: handle it locally.
                return match &call {
                    Call::Add(s) => master.add_local(to_add(s)?).await.map(Some),
                    Call::Delete(s) => master.delete_local(&s.name).await.map(|()| None),
                };
            }
            let leader = master.leader().filter(|l| l.id != master.id());
            let Some(leader) = leader else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(400));
                continue;
            };
            let mut client = CrawlerMasterClient::new(self.channel(&leader.grpc)?);
            let request = |spec: &ResourceSpec| {
                let mut r = tonic::Request::new(spec.clone());
                r.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
                if let Some(b) = bearer.as_deref().and_then(|b| format!("Bearer {b}").parse().ok()) {
                    r.metadata_mut().insert("authorization", b);
                }
                r.set_timeout(ATTEMPT);
                r
            };
            let attempt_started = Instant::now();
            let result = match &call {
                Call::Add(s) => client.add_resource(request(s)).await.map(|r| {
                    let n = r.into_inner();
                    Some(NodeSpec { id: n.id, address: n.address })
                }),
                Call::Delete(s) => client.delete_resource(request(s)).await.map(|_| None),
            };
            master.metrics().forwarded(attempt_started.elapsed());
            match result {
                Ok(v) => return Ok(v),
                Err(status) => {
                    // A leader never answers Unknown: that is tonic's transport failure
                    // (connection refused or reset by a dead leader), so retry it.
                    let e = match status.code() {
                        tonic::Code::Unknown => ApiError::Unavailable(status.message().to_owned()),
                        _ => ApiError::from_status(&status),
                    };
                    // Unavailable means "leadership is moving" (retry), except the leader's
                    // final word that no worker is alive.
                    if !matches!(&e, ApiError::Unavailable(m) if m != NO_WORKER) {
                        return Err(e);
                    }
                    tracing::debug!(leader = %leader.id, error = %status.message(), "forward failed; retrying");
                    last = e;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(400));
                }
            }
        }
        Err(match last {
            ApiError::Unavailable(m) => ApiError::Unavailable(format!("no leader reachable: {m}")),
            e => e,
        })
    }
}

/// An add request from its gRPC form.
pub fn to_add(spec: &ResourceSpec) -> Result<AddRequest, ApiError> {
    let task = if spec.task_json.trim().is_empty() {
        None
    } else {
        Some(
            serde_json::from_str(&spec.task_json)
                .map_err(|e| ApiError::InvalidArgument(format!("task_json: {e}")))?,
        )
    };
    Ok(AddRequest { name: spec.name.clone(), task, id: Some(spec.id.clone()).filter(|i| !i.is_empty()) })
}
