//! `--pprof ADDR`: CPU profiles of this process over HTTP, as the original system serves them.
//!
//! - `GET /debug/pprof/profile?seconds=N` (default 30, at most 300): a CPU profile sampled at
//!   99 Hz for N seconds, in the pprof protobuf format (`go tool pprof`, `pprof`).
//! - `GET /debug/pprof/flamegraph?seconds=N`: the same as an SVG flame graph.
//! - `GET /debug/pprof/heap`: 501; the allocator (mimalloc) keeps no heap profile.
//!
//! One profile at a time (the sampler is process-wide): a second request answers 409.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pprof::protos::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Longest profile a request may ask for.
const MAX_SECONDS: u64 = 300;

/// The `seconds` query parameter: absent, or a number (anything else is `Err`).
fn seconds(uri: &Uri) -> Result<Option<u64>, ()> {
    let Some(query) = uri.query() else { return Ok(None) };
    match query.split('&').find_map(|kv| kv.strip_prefix("seconds=")) {
        Some(v) => v.parse().map(Some).map_err(|_| ()),
        None => Ok(None),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Serves the profiling routes on `listener` until `stop` fires.
pub fn serve(listener: TcpListener, stop: CancellationToken) {
    let busy = Arc::new(AtomicBool::new(false));
    let app = Router::new()
        .route("/debug/pprof/profile", get(|s, q| profile(s, q, false)))
        .route("/debug/pprof/flamegraph", get(|s, q| profile(s, q, true)))
        .route(
            "/debug/pprof/heap",
            get(|| async {
                error(StatusCode::NOT_IMPLEMENTED, "no heap profile: the allocator (mimalloc) keeps none")
            }),
        )
        .with_state(busy);
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "pprof server failed");
        }
    });
}

async fn profile(State(busy): State<Arc<AtomicBool>>, uri: Uri, flamegraph: bool) -> Response {
    let seconds = seconds(&uri).map(|s| s.unwrap_or(30)).unwrap_or(0);
    if seconds == 0 || seconds > MAX_SECONDS {
        return error(StatusCode::BAD_REQUEST, &format!("seconds must be between 1 and {MAX_SECONDS}"));
    }
    if busy.swap(true, Ordering::AcqRel) {
        return error(StatusCode::CONFLICT, "a profile is being taken; try again when it is done");
    }
    // Free again when this ends, also when the client goes away mid-profile (the server drops
    // the handler: a reset after the await would never run, and every later profile got 409).
    let _free = Free(&busy);
    let result = sample(seconds, flamegraph).await;
    match result {
        Ok((content_type, body)) => ([("content-type", content_type)], body).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// Clears the profiler's busy flag when dropped.
struct Free<'a>(&'a AtomicBool);

impl Drop for Free<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn sample(seconds: u64, flamegraph: bool) -> Result<(&'static str, Vec<u8>), String> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(99)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| format!("cannot start the profiler: {e}"))?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let report = guard.report().build().map_err(|e| format!("cannot build the report: {e}"))?;
    if flamegraph {
        if report.data.is_empty() {
            // The flame graph library refuses an empty report; say what happened instead of 500.
            return Ok(("image/svg+xml", no_samples_svg(seconds)));
        }
        let mut svg = Vec::new();
        report.flamegraph(&mut svg).map_err(|e| format!("cannot draw the flame graph: {e}"))?;
        return Ok(("image/svg+xml", svg));
    }
    let profile = report.pprof().map_err(|e| format!("cannot encode the profile: {e}"))?;
    Ok(("application/octet-stream", profile.encode_to_vec()))
}

/// The flame graph of a profile without samples: the process used (almost) no CPU time outside
/// libc during the profile.
fn no_samples_svg(seconds: u64) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"600\" height=\"60\" xmlns=\"http://www.w3.org/2000/svg\">\
         <text x=\"10\" y=\"35\" font-family=\"monospace\" font-size=\"14\">\
         no samples in {seconds} s: the process was idle, or busy only in libc</text></svg>\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_or_fail() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(seconds(&uri("/p")), Ok(None));
        assert_eq!(seconds(&uri("/p?seconds=5")), Ok(Some(5)));
        assert_eq!(seconds(&uri("/p?x=1&seconds=2")), Ok(Some(2)));
        assert_eq!(seconds(&uri("/p?seconds=x")), Err(()));
    }

    #[test]
    fn an_empty_profile_still_draws_an_svg() {
        let svg = String::from_utf8(no_samples_svg(3)).unwrap();
        assert!(svg.contains("<svg") && svg.ends_with("</svg>\n"), "{svg}");
        assert!(svg.contains("no samples in 3 s"), "{svg}");
    }
}
