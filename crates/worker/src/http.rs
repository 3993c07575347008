//! The worker's HTTP server: `/healthz`, `/tasks`, `/metrics`.

use std::fmt::Write;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::runner::Runner;

/// The worker's routes.
pub fn router(runner: Runner) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/tasks", get(tasks))
        .route("/tasks/{name}", get(task))
        .route("/metrics", get(metrics))
        .with_state(runner)
}

async fn healthz(State(r): State<Runner>) -> Response {
    if r.registered() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not registered\n").into_response()
    }
}

async fn tasks(State(r): State<Runner>) -> Response {
    Json(r.statuses().await).into_response()
}

async fn task(State(r): State<Runner>, axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match r.detail(&name).await {
        Some(d) => Json(d).into_response(),
        None => {
            (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": "no such task here" }))).into_response()
        }
    }
}

async fn metrics(State(r): State<Runner>) -> Response {
    let mut s = String::new();
    // The worker's own figures, one line each.
    for (name, kind, value) in [
        ("crawler_worker_registered", "gauge", u64::from(r.registered())),
        ("crawler_worker_unknown_tasks_total", "counter", r.unknown_tasks()),
        ("crawler_worker_unreadable_resources", "gauge", r.unreadable_resources() as u64),
        ("crawler_worker_writer_up", "gauge", u64::from(r.writer_up())),
        ("crawler_worker_writer_failures_total", "counter", r.writer_failures()),
    ] {
        let _ = writeln!(s, "# TYPE {name} {kind}\n{name} {value}");
    }
    let statuses = r.statuses().await;
    for (metric, kind) in [
        ("pages", "counter"),
        ("items", "counter"),
        ("errors", "counter"),
        ("queued", "gauge"),
        ("fetch_ms", "gauge"),
    ] {
        let name = match kind {
            "counter" => format!("crawler_task_{metric}_total"),
            _ => format!("crawler_task_{metric}"),
        };
        let _ = writeln!(s, "# TYPE {name} {kind}");
        for t in &statuses {
            let v = match metric {
                "pages" => t.pages as f64,
                "items" => t.items as f64,
                "errors" => t.errors as f64,
                "queued" => t.queued as f64,
                _ => t.fetch_ms,
            };
            let _ = writeln!(s, "{name}{{task=\"{}\"}} {v}", label(&t.name));
        }
    }
    let _ = writeln!(s, "# TYPE crawler_task_partitions gauge");
    for t in &statuses {
        if let Some(parts) = &t.partitions {
            let _ = writeln!(s, "crawler_task_partitions{{task=\"{}\"}} {}", label(&t.name), parts.len());
        }
    }
    let _ = writeln!(s, "# TYPE crawler_task_partition_queued gauge");
    for t in &statuses {
        for p in t.partitions.iter().flatten() {
            let _ = writeln!(
                s,
                "crawler_task_partition_queued{{task=\"{}\",partition=\"{}\"}} {}",
                label(&t.name),
                p.part,
                p.queued
            );
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], s).into_response()
}

/// A label value as the text format writes it: `\`, `"` and newlines escaped (a task named
/// by an `etcdctl put` of an odd key made lines a scraper refuses).
fn label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped_as_the_text_format_asks() {
        assert_eq!(super::label("books"), "books");
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
