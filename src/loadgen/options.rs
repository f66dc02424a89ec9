//! What one run is: the endpoints, how many agents over which transport, their attributes, the
//! intervals, the source subnet and the refresh trigger. Everything is checked here, before a
//! socket is opened: only loopback targets and loopback source addresses are accepted.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Ws,
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Http => "http",
        }
    }
}

/// A server address on loopback: where to connect, and the `Host` and path to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `host[:port]` as given, for the `Host` header.
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    /// Parses `ws://` or `http://` URLs (plain: the load generator speaks no TLS). An empty path
    /// is `default_path`.
    pub fn parse(text: &str, default_path: &str) -> Result<Endpoint, String> {
        let rest = ["ws://", "http://"]
            .iter()
            .find_map(|scheme| text.strip_prefix(scheme))
            .ok_or_else(|| {
                if text.starts_with("wss://") || text.starts_with("https://") {
                    format!("`{text}`: the load generator speaks no TLS; use ws:// or http://")
                } else {
                    format!("`{text}` is not a ws:// or http:// URL")
                }
            })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = if path.is_empty() || path == "/" {
            default_path.to_owned()
        } else {
            path.to_owned()
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("`{text}`: `{port}` is not a port"))?;
                (host, port)
            }
            _ => (authority, 80),
        };
        let ip = match host {
            "localhost" => Ipv4Addr::LOCALHOST,
            _ => match host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
            {
                Ok(IpAddr::V4(ip)) => ip,
                Ok(IpAddr::V6(_)) => {
                    return Err(format!(
                        "`{text}`: IPv6 targets are not supported; use an address in 127.0.0.0/8"
                    ))
                }
                Err(_) => return Err(not_loopback(text)),
            },
        };
        if !ip.is_loopback() {
            return Err(not_loopback(text));
        }
        Ok(Endpoint {
            addr: SocketAddr::new(ip.into(), port),
            authority: authority.to_owned(),
            path,
        })
    }
}

fn not_loopback(text: &str) -> String {
    format!(
        "`{text}`: the load generator only targets loopback (127.0.0.0/8 or localhost), \
         so it can never load a machine it was not meant for"
    )
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.authority, self.path)
    }
}

/// A block of loopback source addresses (`127.1.0.0/16`) the agents bind to, so that no one
/// address runs out of ephemeral ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    base: u32,
    prefix: u8,
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(text: &str) -> Result<Subnet, String> {
        let (ip, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a subnet like 127.1.0.0/16"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("`{text}`: `{ip}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=32).contains(p))
            .ok_or_else(|| format!("`{text}`: the prefix length must be 8 to 32"))?;
        if !ip.is_loopback() {
            return Err(format!(
                "`{text}`: source addresses must be loopback (inside 127.0.0.0/8)"
            ));
        }
        Ok(Subnet {
            base: u32::from(ip) & mask(prefix),
            prefix,
        })
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl Subnet {
    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Usable addresses: all but the network and broadcast addresses, unless the block is
    /// that small.
    pub fn hosts(&self) -> u64 {
        if self.prefix >= 31 {
            self.size()
        } else {
            self.size() - 2
        }
    }

    /// The source address of the `i`-th agent: agents go round the block.
    pub fn host(&self, i: u64) -> Ipv4Addr {
        let first = u64::from(self.base) + u64::from(self.prefix < 31);
        Ipv4Addr::from((first + i % self.hosts()) as u32)
    }

    /// `parts` disjoint blocks inside this one (the smallest power of two at least `parts`,
    /// of which the first `parts`), one per process.
    pub fn split(&self, parts: usize) -> Result<Vec<Subnet>, String> {
        let bits = (parts.max(1) as u64).next_power_of_two().trailing_zeros() as u8;
        let prefix = self.prefix + bits;
        if prefix > 30 {
            return Err(format!(
                "{self} is too small to give {parts} processes a block each; use a larger \
                 --source-subnet such as 127.1.0.0/16"
            ));
        }
        let step = 1u32 << (32 - u32::from(prefix));
        Ok((0..parts as u32)
            .map(|k| Subnet {
                base: self.base + k * step,
                prefix,
            })
            .collect())
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// Identifying attributes spread over given values: with `environment=production,staging`
/// and `region=us-east-1,eu-west-1`, agents 0..4 take the four combinations in turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributeSpread {
    keys: Vec<(String, Vec<String>)>,
}

impl AttributeSpread {
    /// Parses `key=v1,v2` arguments.
    pub fn parse(args: &[String]) -> Result<AttributeSpread, String> {
        let mut keys: Vec<(String, Vec<String>)> = Vec::new();
        for arg in args {
            let (key, values) = arg
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| format!("--attr `{arg}` is not key=value[,value...]"))?;
            let values: Vec<String> = values
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect();
            if values.is_empty() {
                return Err(format!("--attr `{arg}` gives no value"));
            }
            let key = key.trim().to_owned();
            if keys.iter().any(|(k, _)| *k == key) {
                return Err(format!("--attr `{key}` is given twice"));
            }
            keys.push((key, values));
        }
        Ok(AttributeSpread { keys })
    }

    /// The attributes of agent `index`: mixed-radix digits of the index pick each value.
    pub fn for_agent(&self, index: u64) -> Vec<(String, String)> {
        let mut rest = index;
        self.keys
            .iter()
            .map(|(key, values)| {
                let n = values.len() as u64;
                let value = values[(rest % n) as usize].clone();
                rest /= n;
                (key.clone(), value)
            })
            .collect()
    }

    /// Back to `key=v1,v2` arguments, for child processes.
    pub fn to_args(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|(k, v)| format!("{k}={}", v.join(",")))
            .collect()
    }
}

/// The server's refresh endpoint and the admin token to post with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    pub endpoint: Endpoint,
    pub token: Option<String>,
}

/// The first token of a token file (one a line, optionally `name:token`, `#` comments).
pub fn first_token(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| match line.split_once(':') {
            Some((name, secret)) if !name.trim().is_empty() && !secret.trim().is_empty() => {
                secret.trim().to_owned()
            }
            _ => line.to_owned(),
        })
}

#[derive(Debug, Clone)]
pub struct Options {
    pub endpoints: Vec<Endpoint>,
    pub agents: u64,
    pub transport: Transport,
    pub attributes: AttributeSpread,
    pub duration: Duration,
    pub poll_interval: Duration,
    pub heartbeat: Duration,
    pub source: Subnet,
    pub refresh: Option<Refresh>,
    pub json: bool,
    /// The global index of this process's first agent (child processes take a share).
    pub first_agent: u64,
    /// Run as a child of a multi-process run: the parent triggers the refresh.
    pub child: bool,
}

impl Options {
    /// The arguments of a child process that runs `agents` of this run from `first_agent` on,
    /// from the addresses of `source`. The refresh stays with the parent.
    pub fn child_args(&self, agents: u64, first_agent: u64, source: Subnet) -> Vec<String> {
        let mut args = vec!["loadgen".to_owned()];
        for e in &self.endpoints {
            args.push("--endpoint".into());
            args.push(format!("http://{e}"));
        }
        for a in self.attributes.to_args() {
            args.push("--attr".into());
            args.push(a);
        }
        args.extend([
            "--agents".into(),
            agents.to_string(),
            "--transport".into(),
            self.transport.as_str().into(),
            "--duration".into(),
            format!("{}ms", self.duration.as_millis()),
            "--poll-interval".into(),
            format!("{}ms", self.poll_interval.as_millis()),
            "--heartbeat".into(),
            format!("{}ms", self.heartbeat.as_millis()),
            "--source-subnet".into(),
            source.to_string(),
            "--first-agent".into(),
            first_agent.to_string(),
            "--child".into(),
            "--json".into(),
        ]);
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_plain_loopback() {
        let e = Endpoint::parse("ws://127.0.0.1:4320", "/v1/opamp").unwrap();
        assert_eq!(e.addr, "127.0.0.1:4320".parse().unwrap());
        assert_eq!(e.path, "/v1/opamp");
        let e = Endpoint::parse("http://localhost:8080/api/refresh", "/").unwrap();
        assert_eq!(e.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(e.authority, "localhost:8080");
        assert_eq!(e.path, "/api/refresh");
        assert_eq!(
            Endpoint::parse("ws://127.3.2.1", "/x").unwrap().addr.port(),
            80
        );
        for bad in [
            "ws://10.0.0.1:4320",
            "ws://example.com:4320",
            "http://0.0.0.0:4320",
        ] {
            let e = Endpoint::parse(bad, "/").unwrap_err();
            assert!(e.contains("only targets loopback"), "{bad}: {e}");
        }
        assert!(Endpoint::parse("wss://127.0.0.1", "/")
            .unwrap_err()
            .contains("no TLS"));
        assert!(Endpoint::parse("ws://[::1]:4320", "/")
            .unwrap_err()
            .contains("IPv6"));
        assert!(Endpoint::parse("127.0.0.1:4320", "/")
            .unwrap_err()
            .contains("not a ws://"));
    }

    #[test]
    fn subnets_are_loopback_and_split_into_disjoint_blocks() {
        let s: Subnet = "127.1.0.0/16".parse().unwrap();
        assert_eq!(s.hosts(), 65_534);
        assert_eq!(s.host(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(s.host(255), Ipv4Addr::new(127, 1, 1, 0));
        assert_eq!(s.host(65_534), Ipv4Addr::new(127, 1, 0, 1), "wraps around");
        let parts = s.split(3).unwrap();
        assert_eq!(
            parts.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            ["127.1.0.0/18", "127.1.64.0/18", "127.1.128.0/18"]
        );
        assert!("10.0.0.0/8"
            .parse::<Subnet>()
            .unwrap_err()
            .contains("loopback"));
        assert!("127.0.0.0/4".parse::<Subnet>().is_err());
        assert_eq!(
            "127.9.9.9/24".parse::<Subnet>().unwrap().to_string(),
            "127.9.9.0/24"
        );
        let one: Subnet = "127.0.0.1/32".parse().unwrap();
        assert_eq!(one.host(7), Ipv4Addr::new(127, 0, 0, 1));
        assert!(one.split(2).is_err());
    }

    #[test]
    fn attributes_take_every_combination_in_turn() {
        let spread = AttributeSpread::parse(&[
            "environment=production,staging".into(),
            "region=us-east-1, eu-west-1".into(),
        ])
        .unwrap();
        let combos: Vec<_> = (0..4).map(|i| spread.for_agent(i)).collect();
        let pair = |e: &str, r: &str| {
            vec![
                ("environment".to_owned(), e.to_owned()),
                ("region".to_owned(), r.to_owned()),
            ]
        };
        assert_eq!(
            combos,
            [
                pair("production", "us-east-1"),
                pair("staging", "us-east-1"),
                pair("production", "eu-west-1"),
                pair("staging", "eu-west-1"),
            ]
        );
        assert_eq!(spread.for_agent(4), combos[0]);
        assert!(AttributeSpread::parse(&["novalue".into()]).is_err());
        assert!(AttributeSpread::parse(&["a=".into()]).is_err());
        assert!(AttributeSpread::parse(&["a=1".into(), "a=2".into()]).is_err());
    }

    #[test]
    fn the_first_token_of_a_token_file() {
        assert_eq!(
            first_token("# admins\n\nci:s3cret\nother\n").as_deref(),
            Some("s3cret")
        );
        assert_eq!(first_token("plain-token\n").as_deref(), Some("plain-token"));
        assert_eq!(first_token("# nothing\n"), None);
    }
}
