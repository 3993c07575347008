//! `crawler ctl`: the operator's CLI against any master's HTTP API. Human tables by default,
//! `-o json` for scripts (the API's own JSON); one line on stderr for an error; the next master
//! of `--master a,b,c` is tried when one cannot be reached or has no leader.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{CtlArgs, CtlCommand, ListWhat, OutputFormat};

/// Exit code for an API error or no reachable master.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad flags or a bad task file.
pub const EXIT_USAGE: u8 = 2;

/// Why a ctl command failed, and its exit code.
#[derive(Debug)]
pub struct CtlError {
    /// The one line to print.
    pub message: String,
    /// The exit code.
    pub code: u8,
}

fn failed(message: impl Into<String>) -> CtlError {
    CtlError { message: message.into(), code: EXIT_FAILED }
}

fn usage(message: impl Into<String>) -> CtlError {
    CtlError { message: message.into(), code: EXIT_USAGE }
}

/// The masters to try, in order.
struct Masters {
    urls: Vec<String>,
    token: Option<String>,
    client: reqwest::Client,
}

impl Masters {
    fn new(list: &str, token: Option<String>) -> Result<Masters, CtlError> {
        let mut urls = Vec::new();
        for u in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let u = if u.contains("://") { u.to_owned() } else { format!("http://{u}") };
            let parsed = url::Url::parse(&u).map_err(|e| usage(format!("--master: {u:?}: {e}")))?;
            urls.push(parsed.as_str().trim_end_matches('/').to_owned());
        }
        if urls.is_empty() {
            return Err(usage("--master: no master URL"));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .map_err(|e| failed(format!("http client: {e}")))?;
        Ok(Masters { urls, token, client })
    }

    /// Sends a call to the first master that answers it; a master that cannot be reached, or
    /// answers 503 (no leader, or no worker as far as it knows), passes it to the next. The
    /// answer's status and JSON body.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CtlError> {
        let mut last = String::new();
        // A delete sent and not answered may have been carried out.
        let mut maybe_done = false;
        for (i, base) in self.urls.iter().enumerate() {
            let mut req = self.client.request(method.clone(), format!("{base}{path}"));
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b.to_string());
            }
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{base}: {}", innermost(&e));
                    maybe_done |= !e.is_connect();
                    continue;
                }
            };
            let status = resp.status().as_u16();
            if status == 404 && maybe_done && method == reqwest::Method::DELETE {
                return Ok((200, json!({})));
            }
            let text = resp.text().await.map_err(|e| failed(format!("{base}: {e}")))?;
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if status == 503 && i + 1 < self.urls.len() {
                last = format!("{base}: 503 {}", error_text(&value));
                continue;
            }
            return Ok((status, value));
        }
        Err(failed(format!("no master reachable ({last})")))
    }

    /// A call that must answer 200: its body, or the API's error as a [`CtlError`].
    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, CtlError> {
        let (status, value) = self.call(method, path, body).await?;
        if status == 200 {
            Ok(value)
        } else {
            Err(failed(format!("{status} {}", error_text(&value))))
        }
    }
}

fn innermost(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn error_text(v: &Value) -> String {
    match v.get("error").and_then(Value::as_str) {
        Some(e) => e.to_owned(),
        None => v.to_string(),
    }
}

/// Reads a task file: JSON, or TOML (the keys of one `[[task]]` table, rules as `[[rule]]`).
pub fn read_task(path: &Path) -> Result<Value, CtlError> {
    let text = std::fs::read_to_string(path).map_err(|e| usage(format!("--task {}: {e}", path.display())))?;
    let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{');
    let value = if is_json {
        serde_json::from_str(&text).map_err(|e| usage(format!("--task {}: {e}", path.display())))?
    } else {
        crawler_master::request::task_from_toml(&text)
            .map_err(|e| usage(format!("--task {} {e}", path.display())))?
    };
    if !value.is_object() {
        return Err(usage(format!(
            "--task {}: a task is a table (TOML) or an object (JSON)",
            path.display()
        )));
    }
    Ok(value)
}

/// Runs one ctl command; what it prints goes to `out`.
pub async fn run(args: CtlArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let masters = Masters::new(&args.master, args.token.clone())?;
    let json_out = args.output == OutputFormat::Json;
    // Whether the text went out (a reader that went away, `| head`, is no error).
    let print =
        |out: &mut dyn Write, text: String| out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_ok();
    match &args.command {
        CtlCommand::Add { name, task } => {
            // A request id makes the add idempotent: tried again on the next master after a
            // lost answer, it answers the worker chosen the first time, not 409.
            let id = format!("ctl-{:016x}", fastrand::u64(..));
            let mut body = json!({ "name": name, "id": id });
            if let Some(path) = task {
                body["task"] = read_task(path)?;
            }
            let v = masters.ok(reqwest::Method::POST, "/crawler/resource", Some(&body)).await?;
            let text = if json_out {
                format!("{v}\n")
            } else {
                format!("added {name} on {} ({})\n", str_of(&v, "id"), str_of(&v, "address"))
            };
            print(out, text);
        }
        CtlCommand::Delete { name } => {
            let v = masters
                .ok(reqwest::Method::DELETE, "/crawler/resource", Some(&json!({ "name": name })))
                .await?;
            print(out, if json_out { format!("{v}\n") } else { format!("deleted {name}\n") });
        }
        CtlCommand::Ls { what } => {
            let path = match what {
                ListWhat::Resources => "/crawler/resources",
                ListWhat::Workers => "/crawler/workers",
                ListWhat::Masters => "/crawler/masters",
            };
            let v = masters.ok(reqwest::Method::GET, path, None).await?;
            let text = if json_out {
                format!("{v}\n")
            } else {
                let rows = v.as_array().cloned().unwrap_or_default();
                match what {
                    ListWhat::Resources => table(
                        &["NAME", "WORKER", "ID", "CREATED"],
                        rows.iter().map(|r| {
                            vec![
                                str_of(r, "name"),
                                str_of(r, "assigned_node"),
                                str_of(r, "id"),
                                millis(r, "creation_time"),
                            ]
                        }),
                    ),
                    ListWhat::Workers => table(
                        &["ID", "ADDRESS", "LOAD"],
                        rows.iter().map(|r| vec![str_of(r, "id"), str_of(r, "address"), str_of(r, "load")]),
                    ),
                    ListWhat::Masters => table(
                        &["ID", "HTTP", "GRPC", "LEADER"],
                        rows.iter().map(|r| {
                            let leader = if r["leader"].as_bool() == Some(true) { "*" } else { "" };
                            vec![str_of(r, "id"), str_of(r, "http"), str_of(r, "grpc"), leader.to_owned()]
                        }),
                    ),
                }
            };
            print(out, text);
        }
        CtlCommand::Leader => {
            let v = masters.ok(reqwest::Method::GET, "/crawler/leader", None).await?;
            let text = if json_out {
                format!("{v}\n")
            } else {
                table(
                    &["ID", "HTTP", "GRPC"],
                    [vec![str_of(&v, "id"), str_of(&v, "http"), str_of(&v, "grpc")]].into_iter(),
                )
            };
            print(out, text);
        }
        CtlCommand::Stats { name } => {
            let v = stats(&masters, name.as_deref()).await?;
            print(out, if json_out { format!("{v}\n") } else { stats_table(&v) });
        }
        CtlCommand::Watch { count, every_ms } => {
            let tty = std::io::stdout().is_terminal() && !json_out;
            let mut shown = 0u64;
            loop {
                let v = stats(&masters, None).await?;
                let body = if json_out { format!("{v}\n") } else { stats_table(&v) };
                let text = if tty {
                    format!("\x1b[2J\x1b[H{}  (every {every_ms} ms, Ctrl-C to stop)\n\n{body}", now())
                } else if json_out {
                    body
                } else {
                    format!("{}\n{body}\n", now())
                };
                // Nobody reads any more (`ctl watch | head -1`): done.
                if !print(out, text) {
                    break;
                }
                shown += 1;
                if count.is_some_and(|c| shown >= c) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(*every_ms)).await;
            }
        }
    }
    Ok(())
}

async fn stats(masters: &Masters, name: Option<&str>) -> Result<Value, CtlError> {
    let v = masters.ok(reqwest::Method::GET, "/crawler/stats", None).await?;
    let Some(name) = name else { return Ok(v) };
    let one = v.as_array().and_then(|a| a.iter().find(|r| r["name"] == name).cloned());
    one.ok_or_else(|| failed(format!("404 no resource {name:?}")))
}

fn stats_table(v: &Value) -> String {
    let rows: Vec<Value> = match v {
        Value::Array(a) => a.clone(),
        one => vec![one.clone()],
    };
    table(
        &["NAME", "STATE", "WORKER", "PAGES", "ITEMS", "ERRORS", "QUEUED", "STARTED"],
        rows.iter().map(|r| {
            ["name", "state", "worker", "pages", "items", "errors", "queued", "started_at"]
                .iter()
                .map(|k| str_of(r, k))
                .collect()
        }),
    )
}

/// A value of an object as text (strings unquoted; missing: empty).
fn str_of(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Unix milliseconds as an RFC 3339 time.
fn millis(v: &Value, key: &str) -> String {
    match v.get(key).and_then(Value::as_i64) {
        Some(ms) if ms > 0 => {
            crawler_engine::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
        }
        _ => String::new(),
    }
}

fn now() -> String {
    crawler_engine::rfc3339(std::time::SystemTime::now())
}

/// Left-aligned columns, two spaces apart.
fn table(head: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(head.iter().map(|h| (*h).to_owned()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_values_print_plain() {
        let t = table(
            &["NAME", "N"],
            [vec!["books".into(), "1".into()], vec!["a".into(), "22".into()]].into_iter(),
        );
        assert_eq!(t, "NAME   N\nbooks  1\na      22\n");
        let v = json!({"s": "x", "n": 3, "z": null});
        assert_eq!(
            (str_of(&v, "s"), str_of(&v, "n"), str_of(&v, "z"), str_of(&v, "missing")),
            ("x".into(), "3".into(), "".into(), "".into())
        );
    }

    #[test]
    fn task_files_in_toml_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("t.toml");
        std::fs::write(&toml, "seeds = [\"http://127.0.0.1:9/\"]\n[[rule]]\nname = \"a\"\n").unwrap();
        assert_eq!(
            read_task(&toml).unwrap(),
            json!({"seeds": ["http://127.0.0.1:9/"], "rule": [{"name": "a"}]})
        );
        let js = dir.path().join("t.json");
        std::fs::write(&js, r#"{"seeds":[]}"#).unwrap();
        assert_eq!(read_task(&js).unwrap(), json!({"seeds": []}));
        std::fs::write(&js, "[1]").unwrap();
        assert_eq!(read_task(&js).unwrap_err().code, EXIT_USAGE);
        std::fs::write(&toml, "seeds = [").unwrap();
        let e = read_task(&toml).unwrap_err();
        assert_eq!(e.code, EXIT_USAGE);
        assert!(e.message.contains("t.toml"), "{}", e.message);
        assert_eq!(read_task(&dir.path().join("none.toml")).unwrap_err().code, EXIT_USAGE);
    }
}
