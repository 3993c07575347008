//! Forwarding a write from a follower to the leader over gRPC: one attempt per call, with a
//! deadline. Retrying while leadership moves, and handling the call locally when leadership
//! comes here meanwhile, are the service layer's (`Master::add`, `Master::delete`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crawler_coord::MasterRecord;
use crawler_proto::crawler_master_client::CrawlerMasterClient;
use crawler_proto::ResourceSpec;
use tonic::transport::{Channel, Endpoint};

use crate::error::ApiError;
use crate::request::{AddRequest, NodeSpec};

/// Metadata key marking a call already forwarded once (never forwarded again): its value is
/// the forwarding master's etcd lease (hex), which the receiver finds among the masters'
/// records, so a client cannot pass for a master (and past the rate limit).
pub const FORWARDED: &str = "x-crawler-forwarded";
/// Deadline of one forwarded call.
const ATTEMPT: Duration = Duration::from_secs(3);

/// Channels to leaders, by gRPC address.
#[derive(Default)]
pub struct Forwarder {
    channels: Mutex<HashMap<String, Channel>>,
    /// This master's lease, the mark of its forwarded calls.
    lease: AtomicI64,
}

impl Forwarder {
    /// Notes the lease this master registered under.
    pub fn set_lease(&self, lease: i64) {
        self.lease.store(lease, Relaxed);
    }

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

    fn request(&self, spec: ResourceSpec, bearer: Option<&str>) -> tonic::Request<ResourceSpec> {
        let mut r = tonic::Request::new(spec);
        if let Ok(mark) = format!("{:x}", self.lease.load(Relaxed)).parse() {
            r.metadata_mut().insert(FORWARDED, mark);
        }
        if let Some(b) = bearer.and_then(|b| format!("Bearer {b}").parse().ok()) {
            r.metadata_mut().insert("authorization", b);
        }
        r.set_timeout(ATTEMPT);
        r
    }

    /// Sends an add to `leader`. `Unavailable` means "try again" (the leader is moving or
    /// unreachable); every other error is the leader's answer.
    pub async fn add(
        &self,
        leader: &MasterRecord,
        req: &AddRequest,
        bearer: Option<&str>,
    ) -> Result<NodeSpec, ApiError> {
        let mut client = CrawlerMasterClient::new(self.channel(&leader.grpc)?);
        let node = client.add_resource(self.request(req.to_spec(), bearer)).await.map_err(answer)?;
        let node = node.into_inner();
        Ok(NodeSpec { id: node.id, address: node.address })
    }

    /// Sends a delete to `leader`; errors as for [`Forwarder::add`].
    pub async fn delete(
        &self,
        leader: &MasterRecord,
        name: &str,
        bearer: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut client = CrawlerMasterClient::new(self.channel(&leader.grpc)?);
        let spec = ResourceSpec { name: name.to_owned(), ..ResourceSpec::default() };
        client.delete_resource(self.request(spec, bearer)).await.map(|_| ()).map_err(answer)
    }
}

/// The error a forwarded call's status stands for. A leader never answers `Unknown`: that is
/// tonic's transport failure (connection refused or reset by a dead leader), so it is
/// `Unavailable` like any other moment without a reachable leader.
fn answer(status: tonic::Status) -> ApiError {
    match status.code() {
        tonic::Code::Unknown => ApiError::Unavailable(status.message().to_owned()),
        _ => ApiError::from_status(&status),
    }
}
