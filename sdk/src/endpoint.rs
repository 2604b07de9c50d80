//! Where the gateway is and how to reach it: a parsed gateway URL.
//!
//! | text | scheme | port | path |
//! |---|---|---|---|
//! | `host:port`, `tcp://host:port` | [`Scheme::Tcp`] | required | none |
//! | `tls://host:port` | [`Scheme::Tls`] | required | none |
//! | `ws://host[:port][/path]` | [`Scheme::Ws`] | 80 | `/tether` |
//! | `wss://host[:port][/path]` | [`Scheme::Wss`] | 443 | `/tether` |
//!
//! Hosts are DNS names or IP addresses; IPv6 addresses go in brackets (`[::1]:30012`). The
//! scheme is case-insensitive. Userinfo (`user@host`) and fragments are refused: nothing
//! would use them.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use crate::Error;

/// The path a WebSocket gateway serves on when the URL names none.
pub const DEFAULT_WS_PATH: &str = "/tether";

/// How the byte stream reaches the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain TCP (`tcp://`, or no scheme at all).
    Tcp,
    /// TLS over TCP (`tls://`).
    Tls,
    /// Binary WebSocket messages over plain TCP (`ws://`).
    Ws,
    /// Binary WebSocket messages over TLS (`wss://`).
    Wss,
}

impl Scheme {
    /// The URL prefix without `://`: `tcp`, `tls`, `ws` or `wss`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    /// Whether the stream is encrypted with TLS (`tls`, `wss`).
    pub fn uses_tls(self) -> bool {
        matches!(self, Scheme::Tls | Scheme::Wss)
    }

    /// Whether the stream is carried in WebSocket messages (`ws`, `wss`).
    pub fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }

    fn default_port(self) -> Option<u16> {
        match self {
            Scheme::Tcp | Scheme::Tls => None,
            Scheme::Ws => Some(80),
            Scheme::Wss => Some(443),
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A gateway address: scheme, host, port and (for WebSocket) path.
///
/// ```
/// use tether_sdk::endpoint::{Endpoint, Scheme};
///
/// let plain: Endpoint = "gw.example.net:30012".parse()?;
/// assert_eq!(plain.scheme(), Scheme::Tcp);
///
/// let ws = Endpoint::parse("wss://gw.example.net/edges")?;
/// assert_eq!((ws.port(), ws.path()), (443, Some("/edges")));
/// assert_eq!(ws.to_string(), "wss://gw.example.net:443/edges");
///
/// let v6 = Endpoint::parse("tls://[::1]:30012")?;
/// assert_eq!((v6.host(), v6.authority()), ("::1", String::from("[::1]:30012")));
/// # Ok::<(), tether_sdk::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    scheme: Scheme,
    /// Without brackets for IPv6.
    host: String,
    port: u16,
    /// `Some` exactly for WebSocket schemes; starts with `/`.
    path: Option<String>,
    /// Checked against the gateway's certificate instead of `host`.
    tls_server_name: Option<String>,
}

impl Endpoint {
    /// Parses a gateway URL (see the [module documentation](self) for the forms).
    pub fn parse(text: &str) -> Result<Endpoint, Error> {
        let invalid =
            |problem: &str| Error::InvalidArgument(format!("gateway address {text:?}: {problem}"));
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(invalid("is empty"));
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains whitespace"));
        }
        let (scheme, rest) = match trimmed.split_once("://") {
            None => (Scheme::Tcp, trimmed),
            Some((name, rest)) => {
                let scheme = match name.to_ascii_lowercase().as_str() {
                    "tcp" => Scheme::Tcp,
                    "tls" => Scheme::Tls,
                    "ws" => Scheme::Ws,
                    "wss" => Scheme::Wss,
                    _ => {
                        return Err(invalid(&format!(
                            "unknown scheme {name:?} (expected tcp, tls, ws or wss)"
                        )));
                    }
                };
                (scheme, rest)
            }
        };
        if rest.contains('#') {
            return Err(invalid("a fragment (#...) is not allowed"));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], Some(&rest[at..])),
            None => (rest, None),
        };
        let path = match (scheme.is_websocket(), path) {
            (true, None | Some("/")) => Some(String::from(DEFAULT_WS_PATH)),
            (true, Some(path)) if path.starts_with('?') => Some(format!("/{path}")),
            (true, Some(path)) => Some(path.to_owned()),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(invalid(&format!(
                    "a path is only allowed for ws:// and wss:// (a {scheme}:// address is HOST:PORT)"
                )));
            }
        };
        if authority.contains('@') {
            return Err(invalid("user information (user@host) is not supported"));
        }
        let (host, port) = split_authority(authority).map_err(|problem| invalid(&problem))?;
        let port = match (port, scheme.default_port()) {
            (Some(port), _) => parse_port(port).map_err(|problem| invalid(&problem))?,
            (None, Some(port)) => port,
            (None, None) => return Err(invalid("has no port (expected HOST:PORT)")),
        };
        Ok(Endpoint {
            scheme,
            host: host.to_owned(),
            port,
            path,
            tls_server_name: None,
        })
    }

    /// The same endpoint, with the gateway's certificate checked against `name` (and `name`
    /// sent as SNI) instead of the host: for a gateway reached by IP address or through an
    /// alias its certificate does not name. Not part of the URL.
    pub fn with_tls_server_name(mut self, name: impl Into<String>) -> Endpoint {
        self.tls_server_name = Some(name.into());
        self
    }

    /// The TLS server name override, if one was set.
    pub fn tls_server_name(&self) -> Option<&str> {
        self.tls_server_name.as_deref()
    }

    /// How the stream reaches the gateway.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host: a DNS name or an IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port (given, or the WebSocket scheme's default).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The WebSocket request path with any query (`/tether` unless given); `None` for TCP
    /// and TLS.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// Whether the stream is encrypted with TLS (`tls://`, `wss://`).
    pub fn uses_tls(&self) -> bool {
        self.scheme.uses_tls()
    }

    /// Whether the stream is carried in WebSocket messages (`ws://`, `wss://`).
    pub fn is_websocket(&self) -> bool {
        self.scheme.is_websocket()
    }

    /// `host:port`, with IPv6 hosts in brackets: what a resolver or an HTTP `Host` header
    /// takes.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    /// The normalised URL: scheme, authority with the port, and the WebSocket path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority())?;
        if let Some(path) = &self.path {
            f.write_str(path)?;
        }
        Ok(())
    }
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(text: &str) -> Result<Endpoint, Error> {
        Endpoint::parse(text)
    }
}

impl TryFrom<&str> for Endpoint {
    type Error = Error;

    fn try_from(text: &str) -> Result<Endpoint, Error> {
        Endpoint::parse(text)
    }
}

/// Splits `host[:port]` (IPv6 in brackets) into the host and the port's text.
fn split_authority(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address misses its closing ']'")?;
        if Ipv6Addr::from_str(host).is_err() {
            return Err(format!("{host:?} in brackets is not an IPv6 address"));
        }
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected {after:?} after the IPv6 address")),
            },
        };
    }
    if authority.matches(':').count() > 1 {
        return Err(String::from(
            "has more than one ':' (write IPv6 addresses in brackets: [::1]:30012)",
        ));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(String::from("has no host"));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if !host.chars().all(valid) {
        return Err(format!("{host:?} is not a valid host name"));
    }
    Ok((host, port))
}

fn parse_port(port: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{port:?} is not a valid port (1 to 65535)")),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
mod tests;
