//! The config file (`crawler.toml`): one typed struct for every section, parsed strictly
//! (unknown keys are errors) and validated into errors that name the key and the problem.

use std::path::{Path, PathBuf};

use crawler_engine::{EngineConfig, HumanDuration, SpecError, Task, TaskSpec};
use serde::{Deserialize, Serialize};

/// The whole config file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[engine]`: fetching.
    #[serde(default)]
    pub engine: EngineConfig,
    /// `[storage]`: where items go.
    #[serde(default)]
    pub storage: StorageConfig,
    /// `[cluster]`: etcd and leases.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// `[api]`: the master API.
    #[serde(default)]
    pub api: ApiConfig,
    /// `[[task]]`: the tasks this process knows.
    #[serde(default, rename = "task")]
    pub tasks: Vec<TaskSpec>,
}

/// `[storage]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH` (embedded default) or `mysql://user:pass@host:port/db`.
    pub url: String,
    /// Rows per insert transaction.
    pub batch: usize,
    /// MySQL: how long a failed write waits for a server that cannot be reached before the
    /// writer gives up (an addition).
    pub outage: HumanDuration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: "sqlite://crawl.db".into(),
            batch: 100,
            outage: HumanDuration(crawler_engine::DEFAULT_OUTAGE),
        }
    }
}

/// `[cluster]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// Lease TTL of workers and masters.
    pub lease_ttl: HumanDuration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            etcd: vec!["http://127.0.0.1:2379".into()],
            lease_ttl: HumanDuration(std::time::Duration::from_secs(5)),
        }
    }
}

/// `[api]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Bearer token for mutating calls; empty disables the check.
    pub token: String,
    /// Requests per second per master, written `"100/s"`.
    pub rate: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { token: String::new(), rate: "100/s".into() }
    }
}

/// Where items are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A MySQL/MariaDB URL.
    Mysql(String),
}

/// A config problem: the key and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {problem}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        problem: String,
    },
    /// A key has a bad value.
    #[error("{key}: {problem}")]
    Key {
        /// Dotted key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

impl From<SpecError> for ConfigError {
    fn from(e: SpecError) -> Self {
        ConfigError::Key { key: e.key, problem: e.problem }
    }
}

impl Config {
    /// Loads `path`, or `crawler.toml` in the working directory when present, or defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from("crawler.toml"), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => {
                return Err(ConfigError::Read { path: path.display().to_string(), problem: e.to_string() })
            }
        };
        Config::parse(&text)
    }

    /// Parses config text (TOML).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // One line: TOML's messages may span several.
            let problem = inner
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            match inner.span() {
                // A syntax error has no key path: name the line instead.
                Some(span) if path == "." || path.is_empty() => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    ConfigError::Key { key: format!("line {line}"), problem }
                }
                _ => ConfigError::Key { key: path, problem },
            }
        })?;
        Ok(config)
    }

    /// Checks every value and compiles the tasks.
    pub fn validate(&self) -> Result<Vec<Task>, ConfigError> {
        self.engine.validate()?;
        self.storage()?;
        if self.storage.batch == 0 || self.storage.batch > 100_000 {
            return Err(key("storage.batch", "must be between 1 and 100000"));
        }
        if self.cluster.lease_ttl.0 < std::time::Duration::from_secs(2) {
            return Err(key("cluster.lease_ttl", "must be at least 2s (etcd's minimum lease)"));
        }
        for (i, e) in self.cluster.etcd.iter().enumerate() {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(key(&format!("cluster.etcd[{i}]"), &format!("{e:?} is not an http(s) URL")));
            }
        }
        parse_rate(&self.api.rate).map_err(|p| key("api.rate", &p))?;
        let mut tasks: Vec<Task> = Vec::with_capacity(self.tasks.len());
        for spec in &self.tasks {
            let task = Task::compile(spec.clone())?;
            if tasks.iter().any(|t| t.name() == task.name()) {
                return Err(key(&format!("task[{}].name", task.name()), "duplicate task name"));
            }
            tasks.push(task);
        }
        Ok(tasks)
    }

    /// The storage the `[storage] url` names.
    pub fn storage(&self) -> Result<Storage, ConfigError> {
        let url = self.storage.url.trim();
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(key("storage.url", "sqlite:// needs a file path"));
            }
            // Each of a crawl's connections (state, items) would get a database of its own.
            if path == ":memory:" || path.starts_with("file:") {
                return Err(key(
                    "storage.url",
                    &format!(
                        "{path:?} is not a file path (the crawl state needs a file its connections share)"
                    ),
                ));
            }
            return Ok(Storage::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("mysql://") {
            // A URL the driver cannot use is a config error, found before anything starts.
            if let Some(problem) = crawler_engine::mysql_url_problem(url) {
                return Err(key("storage.url", &problem));
            }
            return Ok(Storage::Mysql(url.to_owned()));
        }
        Err(key("storage.url", &format!("{url:?} is neither sqlite://PATH nor mysql://...")))
    }
}

fn key(key: &str, problem: &str) -> ConfigError {
    ConfigError::Key { key: key.into(), problem: problem.into() }
}

/// Parses a rate such as `"100/s"` or `"600/m"` into requests per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let (n, unit) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a rate like \"100/s\""))?;
    let n: f64 = n.trim().parse().map_err(|_| format!("{s:?} is not a rate like \"100/s\""))?;
    let per = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        u => return Err(format!("unknown rate unit {u:?} (use s, m or h)")),
    };
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("{s:?} must be above zero"));
    }
    Ok(n / per)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match Config::parse(text).and_then(|c| c.validate().map(|_| ())) {
            Ok(()) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::parse("").unwrap();
        assert!(c.validate().unwrap().is_empty());
        assert_eq!(c.storage().unwrap(), Storage::Sqlite("crawl.db".into()));
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("[engine]\nconcurrency = \"x\"").starts_with("engine.concurrency: invalid type"));
        assert!(err("[engine]\nconcurency = 3").starts_with("engine.concurency: unknown field `concurency`"));
        assert_eq!(err("[engine]\nconcurrency = 0"), "engine.concurrency: must be between 1 and 100000");
        assert!(
            err("[engine]\ntimeout = \"10 parsecs\"").starts_with("engine.timeout: unknown duration unit")
        );
        assert!(err("[storage]\nurl = \"postgres://x\"").starts_with("storage.url:"));
        assert!(err("[storage]\nurl = \"sqlite://:memory:\"")
            .starts_with("storage.url: \":memory:\" is not a file"));
        assert!(err("[api]\nrate = \"fast\"").starts_with("api.rate:"));
        assert!(err("[cluster]\nlease_ttl = \"1s\"").starts_with("cluster.lease_ttl:"));
        // A syntax error at the start of a line names that line (the one before, before).
        let e = err("[engine]\nconcurrency = 1\n]");
        assert!(e.starts_with("line 3:"), "{e}");
        assert!(err("[[task]]\nname = \"t\"\nseeds = [\"http://h/\"]\n[[task.rule]]\nname = \"a\"\nfollow = [{ select = \"a\", rule = \"b\" }]")
            .starts_with("task[t].rule[a].follow[0].rule: no rule named"));
        assert!(err("[[task]]\nname = \"t\"\nmax_depth = -1").starts_with("task[0].max_depth: invalid value"));
        assert!(err("[engine\n").starts_with("line 1:"));
    }

    #[test]
    fn the_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let c = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let tasks = c.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!tasks.is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 3);
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100/s").unwrap(), 100.0);
        assert_eq!(parse_rate("60/m").unwrap(), 1.0);
        assert!(parse_rate("0/s").is_err());
    }
}
