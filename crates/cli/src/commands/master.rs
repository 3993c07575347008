//! `crawler master`: campaign for leadership through etcd and serve the API.

use std::net::SocketAddr;

use crawler_master::MasterConfig;

use crate::cli::MasterArgs;
use crate::config::{parse_rate, Config, ConfigError};

/// Parses a listen address: Go style `:8081` (all interfaces) or `host:port`.
pub fn parse_listen(flag: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let v = if value.starts_with(':') { format!("0.0.0.0{value}") } else { value.to_owned() };
    v.parse().map_err(|_| ConfigError::Key {
        key: flag.into(),
        problem: format!("{value:?} is not an address like :8081 or 127.0.0.1:8081"),
    })
}

/// The address others should use: the listen address, with an unspecified host replaced by
/// 127.0.0.1.
pub fn advertise(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// etcd endpoints from `--etcd` (comma-separated) or the config.
pub fn etcd_endpoints(flag: Option<&str>, config: &Config) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = match flag {
        Some(f) => f.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
        None => config.cluster.etcd.clone(),
    };
    if list.is_empty() {
        return Err(ConfigError::Key { key: "--etcd".into(), problem: "no etcd endpoints".into() });
    }
    for e in &list {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(ConfigError::Key {
                key: "--etcd".into(),
                problem: format!("{e:?} is not an http(s) URL"),
            });
        }
    }
    Ok(list)
}

/// Partitions of a task on a shared MySQL store when its spec does not say.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// Builds the master's settings from flags and config.
pub fn master_config(
    args: &MasterArgs,
    config: &Config,
    http: SocketAddr,
    grpc: SocketAddr,
) -> Result<MasterConfig, ConfigError> {
    if args.id.trim().is_empty() || args.id.contains('/') {
        return Err(ConfigError::Key {
            key: "--id".into(),
            problem: "must be non-empty and without '/'".into(),
        });
    }
    Ok(MasterConfig {
        id: args.id.clone(),
        http_advertise: advertise(http),
        grpc_advertise: advertise(grpc),
        etcd: etcd_endpoints(args.etcd.as_deref(), config)?,
        lease_ttl: config.cluster.lease_ttl.0,
        tasks: config.tasks.clone(),
        token: config.api.token.clone(),
        rate_per_sec: parse_rate(&config.api.rate)
            .map_err(|p| ConfigError::Key { key: "api.rate".into(), problem: p })?,
        // Split tasks need a store every worker shares.
        default_partitions: match config.storage() {
            Ok(crate::config::Storage::Mysql(_)) => DEFAULT_PARTITIONS,
            _ => 1,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_go_style_and_host_port() {
        assert_eq!(parse_listen("--http", ":8081").unwrap().to_string(), "0.0.0.0:8081");
        assert_eq!(advertise(parse_listen("--http", ":8081").unwrap()), "127.0.0.1:8081");
        assert_eq!(advertise(parse_listen("--http", "127.0.0.2:9").unwrap()), "127.0.0.2:9");
        assert!(parse_listen("--grpc", "nope").unwrap_err().to_string().starts_with("--grpc:"));
    }

    #[test]
    fn etcd_flag_overrides_config() {
        let c = Config::default();
        assert_eq!(etcd_endpoints(None, &c).unwrap(), ["http://127.0.0.1:2379"]);
        assert_eq!(etcd_endpoints(Some("http://a:1, http://b:2"), &c).unwrap(), ["http://a:1", "http://b:2"]);
        assert!(etcd_endpoints(Some("a:1"), &c).is_err());
    }
}
