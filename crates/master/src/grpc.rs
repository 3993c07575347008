//! The gRPC front end (`proto/crawler.proto`), a thin translation to the service layer.

use crawler_proto::compat;
use crawler_proto::crawler_master_server::CrawlerMaster;
use crawler_proto::{NodeSpec, ResourceSpec};
use tonic::{Request, Response, Status};

use crate::forward::FORWARDED;
use crate::request::AddRequest;
use crate::service::Master;

/// The `CrawlerMaster` service of one master.
pub struct GrpcApi(pub Master);

fn bearer<T>(req: &Request<T>) -> Option<String> {
    crate::request::bearer_token(req.metadata().get("authorization")?.to_str().ok()?)
}

impl GrpcApi {
    /// Authorization and rate limit; forwarded calls were admitted by the first master.
    fn gate<T>(&self, req: &Request<T>, route: &str) -> Result<(bool, Option<String>), Status> {
        let forwarded = req
            .metadata()
            .get(FORWARDED)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| self.0.marks_a_master(m));
        let token = bearer(req);
        // The rate first, as over HTTP: failed authentications count against it.
        let admitted = if forwarded { Ok(()) } else { self.0.admit() };
        let checked = admitted.and_then(|()| self.0.authorize(token.as_deref()));
        if let Err(e) = checked {
            self.0.metrics().call(route, e.http_status());
            return Err(e.to_status());
        }
        Ok((forwarded, token))
    }
}

#[tonic::async_trait]
impl CrawlerMaster for GrpcApi {
    async fn add_resource(&self, req: Request<ResourceSpec>) -> Result<Response<NodeSpec>, Status> {
        let route = "grpc AddResource";
        let (forwarded, token) = self.gate(&req, route)?;
        let result = match AddRequest::from_spec(req.get_ref()) {
            Ok(add) => self.0.add(add, forwarded, token).await,
            Err(e) => Err(e),
        };
        self.0.metrics().call(route, result.as_ref().map_or_else(|e| e.http_status(), |_| 200));
        result.map(|n| Response::new(NodeSpec { id: n.id, address: n.address })).map_err(|e| e.to_status())
    }

    async fn delete_resource(&self, req: Request<ResourceSpec>) -> Result<Response<()>, Status> {
        let route = "grpc DeleteResource";
        let (forwarded, token) = self.gate(&req, route)?;
        let result = self.0.delete(&req.get_ref().name, forwarded, token).await;
        self.0.metrics().call(route, result.as_ref().map_or_else(|e| e.http_status(), |_| 200));
        result.map(Response::new).map_err(|e| e.to_status())
    }
}

/// The original system's package-less service (`/CrawlerMaster/...`): the same calls, for
/// clients generated from its proto. Its `ResourceSpec` has no inline task.
#[tonic::async_trait]
impl compat::crawler_master_server::CrawlerMaster for GrpcApi {
    async fn add_resource(
        &self,
        req: Request<compat::ResourceSpec>,
    ) -> Result<Response<compat::NodeSpec>, Status> {
        let (metadata, extensions, spec) = req.into_parts();
        let spec = ResourceSpec {
            id: spec.id,
            name: spec.name,
            assigned_node: spec.assigned_node,
            creation_time: spec.creation_time,
            task_json: String::new(),
        };
        let node = CrawlerMaster::add_resource(self, Request::from_parts(metadata, extensions, spec)).await?;
        let node = node.into_inner();
        Ok(Response::new(compat::NodeSpec { id: node.id, address: node.address }))
    }

    async fn delete_resource(&self, req: Request<compat::ResourceSpec>) -> Result<Response<()>, Status> {
        let (metadata, extensions, spec) = req.into_parts();
        let spec = ResourceSpec { id: spec.id, name: spec.name, ..ResourceSpec::default() };
        CrawlerMaster::delete_resource(self, Request::from_parts(metadata, extensions, spec)).await
    }
}
