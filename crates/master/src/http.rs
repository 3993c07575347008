//! The HTTP front end (axum): JSON in and out, errors as `{"error": "..."}`, a thin
//! translation to the service layer.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::request::AddRequest;
use crate::service::Master;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1 << 20;
/// Longest a call may take before it is answered 503.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The master's HTTP routes.
pub fn router(master: Master) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/crawler/resource", post(add).delete(delete))
        .route("/crawler/resources", get(resources))
        .route("/crawler/workers", get(workers))
        .route("/crawler/leader", get(leader))
        .route("/crawler/masters", get(masters))
        .route("/crawler/stats", get(stats))
        .route("/crawler/stats/{name}", get(stat))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(refuse_announced_oversize))
        .with_state(master)
}

/// The body of an add: the name, an inline task, and the original system's `ResourceSpec`
/// fields (`id`, the client's request id, is the idempotency key; the others are ignored).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    name: String,
    #[serde(default)]
    task: Option<Value>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "assigned_node", alias = "assignedNode")]
    _assigned_node: Option<Value>,
    #[serde(default, rename = "creation_time", alias = "creationTime")]
    _creation_time: Option<Value>,
}

/// The body of a delete: the name (the original's other `ResourceSpec` fields are ignored).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    name: String,
    #[serde(default, rename = "id")]
    _id: Option<Value>,
    #[serde(default, rename = "assigned_node", alias = "assignedNode")]
    _assigned_node: Option<Value>,
    #[serde(default, rename = "creation_time", alias = "creationTime")]
    _creation_time: Option<Value>,
}

/// The web dashboard: one page, compiled in, that polls this master's API.
async fn dashboard() -> Response {
    let page = include_str!("dashboard.html");
    ([("content-type", "text/html; charset=utf-8"), ("cache-control", "no-cache")], page).into_response()
}

async fn no_route(method: Method, uri: Uri) -> Response {
    let path = crate::service::cut(uri.path());
    (StatusCode::NOT_FOUND, Json(json!({ "error": format!("no route {method} {path}") }))).into_response()
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    let path = crate::service::cut(uri.path());
    let error = format!("method {method} is not allowed on {path}");
    (StatusCode::METHOD_NOT_ALLOWED, Json(json!({ "error": error }))).into_response()
}

/// A request whose `Content-Length` is over the limit is answered 413 before its body is
/// read: a client may wait for that answer before sending the body (as HTTP/2 clients can),
/// and reading would then never end.
async fn refuse_announced_oversize(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > BODY_LIMIT as u64) {
        let error = ApiError::TooLarge(format!("body larger than {BODY_LIMIT} bytes")).to_string();
        return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({ "error": error }))).into_response();
    }
    next.run(req).await
}

/// The body, or why it could not be read (over the limit: 413).
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!("body larger than {BODY_LIMIT} bytes")),
        _ => ApiError::InvalidArgument(format!("bad body: {}", e.body_text())),
    })
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    crate::request::bearer_token(headers.get("authorization")?.to_str().ok()?)
}

fn reply(master: &Master, route: &str, result: Result<Value, ApiError>) -> Response {
    let (status, body) = match result {
        Ok(v) => (200, v),
        Err(e) => (e.http_status(), json!({ "error": e.to_string() })),
    };
    master.metrics().call(route, status);
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(body)).into_response()
}

/// A JSON object body as `T` (serde would also take a JSON array for a struct).
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let bad = |e: serde_json::Error| ApiError::InvalidArgument(format!("bad body: {e}"));
    let value: Value = serde_json::from_slice(body).map_err(bad)?;
    if !value.is_object() {
        return Err(ApiError::InvalidArgument("bad body: expected a JSON object".into()));
    }
    serde_json::from_value(value).map_err(bad)
}

async fn timed<T>(f: impl std::future::Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(ApiError::Unavailable("timed out".into())))
}

async fn add(State(m): State<Master>, headers: HeaderMap, raw: Result<Bytes, BytesRejection>) -> Response {
    let token = bearer(&headers);
    let result = async {
        // The rate first: failed authentications count against it, so guessing a token is
        // throttled like any other call.
        m.admit()?;
        m.authorize(token.as_deref())?;
        let b: AddBody = parse(&body(raw)?)?;
        let id = b.id.filter(|i| !i.is_empty());
        let node = timed(m.add(AddRequest { name: b.name, task: b.task, id }, false, token)).await?;
        Ok(json!({ "id": node.id, "address": node.address }))
    }
    .await;
    reply(&m, "POST /crawler/resource", result)
}

async fn delete(State(m): State<Master>, headers: HeaderMap, raw: Result<Bytes, BytesRejection>) -> Response {
    let token = bearer(&headers);
    let result = async {
        // The rate first: failed authentications count against it, so guessing a token is
        // throttled like any other call.
        m.admit()?;
        m.authorize(token.as_deref())?;
        let b: DeleteBody = parse(&body(raw)?)?;
        timed(m.delete(&b.name, false, token)).await?;
        Ok(json!({}))
    }
    .await;
    reply(&m, "DELETE /crawler/resource", result)
}

async fn masters(State(m): State<Master>) -> Response {
    let result = m.admit().map(|()| json!(m.masters()));
    reply(&m, "GET /crawler/masters", result)
}

async fn stats(State(m): State<Master>) -> Response {
    let result = match m.admit() {
        Ok(()) => Ok(json!(m.stats().await)),
        Err(e) => Err(e),
    };
    reply(&m, "GET /crawler/stats", result)
}

async fn stat(
    State(m): State<Master>,
    name: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let result = match (m.admit(), name) {
        (Err(e), _) => Err(e),
        // Not UTF-8 once decoded (`%FF`): a JSON error like every other.
        (Ok(()), Err(e)) => Err(ApiError::InvalidArgument(format!("task name: {}", e.body_text()))),
        (Ok(()), Ok(axum::extract::Path(name))) => m.task_detail(&name).await,
    };
    reply(&m, "GET /crawler/stats/{name}", result)
}

async fn resources(State(m): State<Master>) -> Response {
    let result = m.admit().map(|()| json!(m.resources()));
    reply(&m, "GET /crawler/resources", result)
}

async fn workers(State(m): State<Master>) -> Response {
    let result = m.admit().map(|()| json!(m.workers()));
    reply(&m, "GET /crawler/workers", result)
}

async fn leader(State(m): State<Master>) -> Response {
    let result = m.admit().and_then(|()| {
        m.leader()
            .map(|l| json!({ "id": l.id, "http": l.http, "grpc": l.grpc }))
            .ok_or_else(|| ApiError::Unavailable("no leader".into()))
    });
    reply(&m, "GET /crawler/leader", result)
}

async fn metrics(State(m): State<Master>) -> Response {
    let text = m.metrics().render(m.is_leader(), m.resources().len(), m.workers().len());
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}
