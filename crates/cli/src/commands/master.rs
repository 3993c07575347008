//! `crawler master`: campaign for leadership through etcd and serve the API.

use std::net::SocketAddr;

use crawler_master::MasterConfig;

use crate::cli::MasterArgs;
use crate::config::{parse_rate, Config, ConfigError};

/// Parses a listen address: Go style `:8081` (all interfaces) or `host:port`, the host an IP
/// or a name this machine resolves (`localhost:6060`; its first address).
pub fn parse_listen(flag: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    let v = if value.starts_with(':') { format!("0.0.0.0{value}") } else { value.to_owned() };
    let bad = || ConfigError::Key {
        key: flag.into(),
        problem: format!("{value:?} is not an address like :8081, 127.0.0.1:8081 or localhost:8081"),
    };
    if let Ok(addr) = v.parse() {
        return Ok(addr);
    }
    // IPv4 first, as Go programs take `localhost`.
    let addrs: Vec<SocketAddr> = v.to_socket_addrs().map_err(|_| bad())?.collect();
    addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).copied().ok_or_else(bad)
}

/// Checks an `--advertise` value: `host:port`, as others will dial it (a host, and a port
/// other than 0).
pub fn check_advertise(value: &str) -> Result<(), ConfigError> {
    // An IPv6 host comes in brackets (`[::1]:7101`): a bare one has colons of its own.
    let ok = value.rsplit_once(':').is_some_and(|(host, port)| {
        let bare_v6 = !host.starts_with('[') && host.contains(':');
        !host.trim_matches(['[', ']']).is_empty() && !bare_v6 && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    match ok {
        true => Ok(()),
        false => Err(ConfigError::Key {
            key: "--advertise".into(),
            problem: format!("{value:?} is not an address others can dial, like 10.0.0.5:7101"),
        }),
    }
}

/// The address others should use: the listen address; an unspecified host (`:8081`) is
/// replaced by this machine's address toward the first etcd endpoint (the interface other
/// machines of the cluster reach it on), else 127.0.0.1.
pub fn advertise(addr: SocketAddr, etcd: &[String]) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    let host = route_source(etcd).unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    SocketAddr::new(host, addr.port()).to_string()
}

/// The source address this machine's routes give packets to the first etcd endpoint, found by
/// connecting a UDP socket (which sends nothing).
fn route_source(etcd: &[String]) -> Option<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let endpoint = etcd.first()?;
    let rest = endpoint.split_once("://").map_or(endpoint.as_str(), |(_, r)| r);
    let host_port = rest.split('/').next()?;
    let dest = host_port.to_socket_addrs().ok()?.next()?;
    let socket = std::net::UdpSocket::bind(if dest.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    socket.connect(dest).ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// etcd endpoints from `--etcd` (comma-separated) or the config.
pub fn etcd_endpoints(flag: Option<&str>, config: &Config) -> Result<Vec<String>, ConfigError> {
    // A bad list is named where it came from.
    let key = if flag.is_some() { "--etcd" } else { "cluster.etcd" };
    let list: Vec<String> = match flag {
        Some(f) => f.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
        None => config.cluster.etcd.clone(),
    };
    if list.is_empty() {
        return Err(ConfigError::Key { key: key.into(), problem: "no etcd endpoints".into() });
    }
    for e in &list {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(ConfigError::Key {
                key: key.into(),
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
    let etcd = etcd_endpoints(args.etcd.as_deref(), config)?;
    Ok(MasterConfig {
        id: args.id.clone(),
        http_advertise: advertise(http, &etcd),
        grpc_advertise: advertise(grpc, &etcd),
        etcd,
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
        let local = ["http://127.0.0.1:2379".to_owned()];
        assert_eq!(advertise(parse_listen("--http", ":8081").unwrap(), &local), "127.0.0.1:8081");
        assert_eq!(advertise(parse_listen("--http", "127.0.0.2:9").unwrap(), &local), "127.0.0.2:9");
        // Toward an etcd elsewhere: the address of the interface the route to it leaves by, as
        // the kernel reports it (`ip route get`; a UDP connect sends nothing); 127.0.0.1 without
        // a route. (Where `ip` is missing, only the fallback is checked.)
        let far = ["http://192.0.2.1:2379".to_owned()];
        match std::process::Command::new("ip").args(["-o", "route", "get", "192.0.2.1"]).output() {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                let mut words = text.split_whitespace();
                let src = words.by_ref().find(|w| *w == "src").and(words.next());
                let want = format!("{}:8081", src.filter(|_| o.status.success()).unwrap_or("127.0.0.1"));
                assert_eq!(advertise(parse_listen("--http", ":8081").unwrap(), &far), want);
            }
            Err(e) => println!("no `ip` command ({e}): the route's source is not compared"),
        }
        assert_eq!(advertise(parse_listen("--http", ":8081").unwrap(), &[]), "127.0.0.1:8081");
        assert!(parse_listen("--grpc", "nope").unwrap_err().to_string().starts_with("--grpc:"));
        // A name this machine resolves (from /etc/hosts), as Go programs take it.
        assert!(parse_listen("--pprof", "localhost:6060").unwrap().ip().is_loopback());
        assert!(parse_listen("--pprof", "localhost").is_err(), "a port is needed");
        for good in ["10.0.0.5:7101", "w1.example:7101", "[::1]:7101"] {
            assert!(check_advertise(good).is_ok(), "{good}");
        }
        assert!(parse_listen("--pprof", "localhost:6060").unwrap().is_ipv4());
        for bad in ["", ":7101", "w1.example", "w1.example:0", "w1.example:x", "::1", "::1:7101"] {
            assert!(check_advertise(bad).unwrap_err().to_string().starts_with("--advertise:"), "{bad}");
        }
    }

    #[test]
    fn etcd_flag_overrides_config() {
        let c = Config::default();
        assert_eq!(etcd_endpoints(None, &c).unwrap(), ["http://127.0.0.1:2379"]);
        assert_eq!(etcd_endpoints(Some("http://a:1, http://b:2"), &c).unwrap(), ["http://a:1", "http://b:2"]);
        assert!(etcd_endpoints(Some("a:1"), &c).unwrap_err().to_string().starts_with("--etcd:"));
        assert!(etcd_endpoints(Some(" , "), &c).unwrap_err().to_string().starts_with("--etcd:"));
        let mut c = Config::default();
        c.cluster.etcd = vec![];
        assert!(etcd_endpoints(None, &c).unwrap_err().to_string().starts_with("cluster.etcd:"));
        c.cluster.etcd = vec!["h:1".into()];
        assert!(etcd_endpoints(None, &c).unwrap_err().to_string().starts_with("cluster.etcd:"));
    }
}
