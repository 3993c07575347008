//! What the API's write calls carry, shared by the service layer, the forwarder and the front
//! ends (so none of them imports another for its types).

use crawler_proto::ResourceSpec;
use serde::Serialize;

use crate::error::ApiError;

/// The token of an `Authorization: Bearer T` value; the scheme is matched ignoring case, as
/// RFC 7235 has it (`bearer T` too).
pub fn bearer_token(value: &str) -> Option<String> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start().to_owned())
}

/// An add request.
#[derive(Clone, Debug, Default)]
pub struct AddRequest {
    /// Resource (task) name.
    pub name: String,
    /// Inline task spec (JSON), if any.
    pub task: Option<serde_json::Value>,
    /// Resource id, set by the first master that handled the request (makes retries idempotent).
    pub id: Option<String>,
}

/// Where a resource went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeSpec {
    /// Worker id.
    pub id: String,
    /// Worker address.
    pub address: String,
}

/// A task written as TOML (the keys of one `[[task]]`, rules as `[[rule]]`), as the JSON the API
/// takes; an error says the line and what is wrong, on one line.
pub fn task_from_toml(text: &str) -> Result<serde_json::Value, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map_or(1, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        format!("line {line}: {}", e.message().replace('\n', " "))
    })?;
    serde_json::to_value(table).map_err(|e| e.to_string())
}

impl AddRequest {
    /// An add request from its gRPC form.
    pub fn from_spec(spec: &ResourceSpec) -> Result<AddRequest, ApiError> {
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

    /// Its gRPC form.
    pub fn to_spec(&self) -> ResourceSpec {
        ResourceSpec {
            id: self.id.clone().unwrap_or_default(),
            name: self.name.clone(),
            task_json: self.task.as_ref().map(|t| t.to_string()).unwrap_or_default(),
            ..ResourceSpec::default()
        }
    }
}
