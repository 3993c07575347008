//! The crawler master: every master serves the HTTP and gRPC API; followers forward writes to
//! the leader; the leader stores resources in etcd (fenced on its leadership), assigns each to
//! the least-loaded live worker, and moves work off dead workers.
#![warn(missing_docs)]

pub mod error;
pub mod forward;
pub mod grpc;
pub mod http;
mod leader;
pub mod metrics;
pub mod request;
pub mod service;
pub mod stats;

use std::time::Duration;

use crawler_coord::{keys, CoordError, Etcd, PrefixWatch};
use crawler_proto::crawler_master_server::CrawlerMasterServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use request::{AddRequest, NodeSpec};
pub use service::{Master, MasterConfig};

/// A master that could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// etcd could not be used.
    #[error(transparent)]
    Coord(#[from] CoordError),
    /// A server failed.
    #[error("server: {0}")]
    Server(String),
}

/// The largest gRPC message taken: the HTTP body limit, and room for the message's framing.
const GRPC_LIMIT: usize = http::BODY_LIMIT + 1024;

/// Runs a master on the given listeners until `shutdown` fires. Shutdown order: stop
/// accepting, resign leadership, revoke the session, stop.
pub async fn run(
    cfg: MasterConfig,
    http: TcpListener,
    grpc: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), MasterError> {
    let etcd = Etcd::connect(&cfg.etcd, Duration::from_secs(5)).await?;
    let watchers = CancellationToken::new();
    let views = service::Views {
        workers: PrefixWatch::spawn(etcd.clone(), keys::WORKERS, watchers.clone()),
        resources: PrefixWatch::spawn(etcd.clone(), keys::RESOURCES, watchers.clone()),
        masters: PrefixWatch::spawn(etcd.clone(), keys::MASTERS, watchers.clone()),
        election: PrefixWatch::spawn(etcd.clone(), &format!("{}/", keys::ELECTION), watchers.clone()),
    };
    let (tx, rx) = watch::channel(None);
    let master = Master::new(cfg, etcd, views, rx);
    tracing::info!(id = %master.id(), http = ?http.local_addr().ok(), grpc = ?grpc.local_addr().ok(), "master serving");

    let coordinator = tokio::spawn(leader::coordinate(master.clone(), tx, shutdown.clone()));
    // Small calls on kept-alive connections: disable Nagle on every accepted socket, or
    // concurrent calls wait for delayed ACKs (40 ms each).
    let http = axum::serve::ListenerExt::tap_io(http, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let http_server = axum::serve(http, http::router(master.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let grpc = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(grpc), |conn| {
        if let Ok(tcp) = &conn {
            let _ = tcp.set_nodelay(true);
        }
        conn
    });
    let grpc_server = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(10))
        // A message over the HTTP body limit is refused as too large (OutOfRange, 413), not
        // passed on to fail at etcd's request limit (1.5 MiB) as an internal error.
        .add_service(
            CrawlerMasterServer::new(grpc::GrpcApi(master.clone())).max_decoding_message_size(GRPC_LIMIT),
        )
        .add_service(
            crawler_proto::compat::crawler_master_server::CrawlerMasterServer::new(grpc::GrpcApi(
                master.clone(),
            ))
            .max_decoding_message_size(GRPC_LIMIT),
        )
        .serve_with_incoming_shutdown(grpc, shutdown.clone().cancelled_owned());
    let (h, g) = tokio::join!(
        async { http_server.await.map_err(|e| MasterError::Server(format!("http: {e}"))) },
        async { grpc_server.await.map_err(|e| MasterError::Server(format!("grpc: {e}"))) }
    );
    let _ = coordinator.await;
    watchers.cancel();
    h?;
    g
}
