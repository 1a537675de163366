//! The address forms users type: `HOST:PORT` to connect to (a name, an IPv4 address
//! or a bracketed IPv6 address), `[ADDR:]PORT` to listen on, and `HOST:PORT:PATH`
//! for a path on a server (split at the colon after the port, so the path may hold
//! colons and spaces).

use std::fmt;
use std::str::FromStr;

/// Where to connect: a host name, IPv4 address or bracketed IPv6 address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match Remote::from_str(text)? {
            Remote {
                endpoint,
                path: None,
            } => Ok(endpoint),
            Remote { path: Some(_), .. } => Err(format!(
                "expected HOST:PORT, got {text:?} (a path after the port is for a server)"
            )),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// An endpoint and, for a server, a path beneath the user's home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remote {
    pub(crate) endpoint: Endpoint,
    /// What follows the colon after the port (`None`: no colon; `Some("")`: the home).
    pub(crate) path: Option<String>,
}

impl FromStr for Remote {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (host, rest) = if let Some(bracketed) = text.strip_prefix('[') {
            let (host, rest) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("unclosed '[' in {text:?}"))?;
            let rest = rest
                .strip_prefix(':')
                .ok_or_else(|| format!("expected [ADDR]:PORT, got {text:?}"))?;
            (host, rest)
        } else {
            text.split_once(':')
                .ok_or_else(|| format!("expected HOST:PORT, got {text:?}"))?
        };
        // Paths are relative to the home; a leading `/` means the home, as in the
        // shell's prompt (`HOST:PORT:/photos` is `photos`).
        let (port, path) = match rest.split_once(':') {
            Some((port, path)) => (port, Some(path.trim_start_matches('/').to_string())),
            None => (rest, None),
        };
        if host.is_empty() {
            return Err(format!("missing host in {text:?}"));
        }
        let port: u16 = port.parse().map_err(|_| {
            if host.contains(':') || port.is_empty() {
                format!("write an IPv6 address in brackets, [ADDR]:PORT; got {text:?}")
            } else {
                format!("invalid port {port:?} in {text:?}")
            }
        })?;
        if port == 0 {
            return Err(format!("cannot connect to port 0 in {text:?}"));
        }
        Ok(Remote {
            endpoint: Endpoint {
                host: host.to_string(),
                port,
            },
            path,
        })
    }
}

/// Where to listen: a port on all interfaces, or a given address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenAddr {
    AllInterfaces(u16),
    At(Endpoint),
}

impl ListenAddr {
    /// Whether the system picks the port (port 0).
    pub(crate) fn any_port(&self) -> bool {
        match self {
            ListenAddr::AllInterfaces(port) => *port == 0,
            ListenAddr::At(endpoint) => endpoint.port == 0,
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(port) = text.parse::<u16>() {
            return Ok(ListenAddr::AllInterfaces(port));
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("expected PORT or ADDR:PORT, got {text:?}"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port {port:?} in {text:?}"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(format!("missing address in {text:?}"));
        }
        Ok(ListenAddr::At(Endpoint {
            host: host.to_string(),
            port,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_names_ipv4_and_bracketed_ipv6() {
        let parsed: Endpoint = "example.org:9000".parse().unwrap();
        assert_eq!(
            parsed,
            Endpoint {
                host: "example.org".into(),
                port: 9000
            }
        );
        let parsed: Endpoint = "127.0.0.1:1".parse().unwrap();
        assert_eq!(parsed.host, "127.0.0.1");
        let parsed: Endpoint = "[::1]:9000".parse().unwrap();
        assert_eq!(parsed.host, "::1");
        assert_eq!(parsed.to_string(), "[::1]:9000");
        for bad in [
            "host",
            "host:",
            ":9000",
            "host:0",
            "host:65536",
            "::1:9000",
            "[::1:9000",
            "h:x",
            "h:1:path",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn remotes_split_at_the_colon_after_the_port() {
        let remote: Remote = "host:9000:photos/2024: summer trip".parse().unwrap();
        assert_eq!(remote.endpoint.port, 9000);
        assert_eq!(remote.path.as_deref(), Some("photos/2024: summer trip"));
        let remote: Remote = "[::1]:9000:dir".parse().unwrap();
        assert_eq!(remote.endpoint.host, "::1");
        assert_eq!(remote.path.as_deref(), Some("dir"));
        let remote: Remote = "host:9000:".parse().unwrap();
        assert_eq!(remote.path.as_deref(), Some(""));
        let remote: Remote = "host:9000".parse().unwrap();
        assert_eq!(remote.path, None);
        assert!("::1:9000:dir".parse::<Remote>().is_err());
    }

    #[test]
    fn listen_addresses_parse_port_alone_or_with_address() {
        assert_eq!(
            "9000".parse::<ListenAddr>().unwrap(),
            ListenAddr::AllInterfaces(9000)
        );
        assert!("0".parse::<ListenAddr>().unwrap().any_port());
        let ListenAddr::At(at) = "127.0.0.1:0".parse::<ListenAddr>().unwrap() else {
            panic!()
        };
        assert_eq!((at.host.as_str(), at.port), ("127.0.0.1", 0));
        let ListenAddr::At(at) = "[::1]:5".parse::<ListenAddr>().unwrap() else {
            panic!()
        };
        assert_eq!(at.host, "::1");
        for bad in ["", "x", ":1", "1.2.3.4:", "70000"] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
    }
}
