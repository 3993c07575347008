//! The etcd key layout (see the contract): one place that spells every key.

/// Election prefix; candidates' keys are `/crawler/election/<lease>`.
pub const ELECTION: &str = "/crawler/election";
/// Prefix of master records.
pub const MASTERS: &str = "/crawler/masters/";
/// Prefix of worker records.
pub const WORKERS: &str = "/crawler/workers/";
/// Prefix of resources.
pub const RESOURCES: &str = "/resources/";

/// `/crawler/masters/<id>`.
pub fn master(id: &str) -> String {
    format!("{MASTERS}{id}")
}

/// `/crawler/workers/<id>`.
pub fn worker(id: &str) -> String {
    format!("{WORKERS}{id}")
}

/// `/resources/<name>`.
pub fn resource(name: &str) -> String {
    format!("{RESOURCES}{name}")
}
