//! Gateway configuration: built-in defaults, then an optional YAML file, then command-line
//! flags and `TETHER_*` environment variables, in increasing order of precedence.
//!
//! [`Cli::resolve`] produces the effective [`GatewayConfig`]; [`GatewayConfig::core_config`]
//! turns it into the [`proto_core::Config`] every connection uses.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use clap::builder::BoolishValueParser;
use proto_core::codec::{HEADER_LEN, MAX_WINDOW};
use proto_core::config::MIN_WINDOW;
use proto_core::{HEAD_CREDIT, Settings};
use serde::{Deserialize, Serialize};

use crate::auth::{AuthConfig, tokens_from_env};
use crate::transport::admission::AdmissionConfig;
use crate::transport::tls::TlsConfig;
use crate::transport::websocket::WebSocketConfig;

/// How edge → service traffic picks among candidate services.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum HashBy {
    /// By edge id: an edge keeps reaching the same service while the set of services holds.
    #[default]
    EdgeId,
    /// By the edge's source IP address: edges behind one address share a service.
    SrcIp,
    /// At random.
    Random,
}

/// Which services get edge online/offline events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum PresenceFanout {
    /// Every service that registered the presence hook.
    #[default]
    All,
    /// One of them, chosen by the edge id.
    One,
}

/// The format of the gateway's log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The whole gateway configuration (the YAML file's top level). Missing keys keep their
/// defaults; [`DEFAULT_CONFIG_YAML`] documents every key.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Where services connect. Default `0.0.0.0:30011`.
    pub service_listen: SocketAddr,
    /// Where edges connect. Default `0.0.0.0:30012`.
    pub edge_listen: SocketAddr,
    /// How edge → service traffic picks among candidate services. Default `edgeid`.
    pub hashby: HashBy,
    /// Whether the gateway allocates edge ids itself when no service provides the
    /// `$edge_id` hook. Default `true`.
    pub edgeid_alloc_when_no_idservice_on: bool,
    /// Which services get edge online/offline events. Default `all`.
    pub presence: PresenceFanout,
    /// How long the gateway waits for a service's `$edge_id` / `$edge_online` hook, in
    /// milliseconds. Default 5000.
    pub hook_timeout_ms: u64,
    /// Graceful shutdown deadline, in milliseconds. Default 30000.
    pub drain_timeout_ms: u64,
    /// Log line format. Default `human`.
    pub log_format: LogFormat,
    /// Protocol limits and timeouts of every connection. An empty `protocol:` section (every
    /// key commented out) keeps the defaults.
    #[serde(deserialize_with = "null_as_default")]
    pub protocol: ProtocolConfig,
    /// Where the HTTP ingress listens (HTTP forwarding to edges and the HTTP → RPC relay).
    /// Default none: no HTTP ingress.
    pub http_ingress: Option<SocketAddr>,
    /// TCP port mappings: each listens and relays every connection to an exposed service
    /// of an edge. Default none.
    #[serde(deserialize_with = "null_as_default")]
    pub tcp_mappings: Vec<TcpMapping>,
    /// TLS on the service listener. Default none: plain TCP.
    pub service_tls: Option<TlsConfig>,
    /// TLS (and mTLS, identity binding) on the edge listener. Default none: plain TCP.
    pub edge_tls: Option<TlsConfig>,
    /// TLS (and mTLS) on the control listener. Default none: plain HTTP.
    pub control_tls: Option<TlsConfig>,
    /// The protocol over WebSocket on the edge (and service) listener.
    #[serde(deserialize_with = "null_as_default")]
    pub websocket: WebSocketConfig,
    /// Static tokens per role.
    #[serde(deserialize_with = "null_as_default")]
    pub auth: AuthConfig,
    /// Deadlines and caps before a peer is admitted.
    #[serde(deserialize_with = "null_as_default")]
    pub admission: AdmissionConfig,
    /// Where the REST control plane and `/metrics` listen. Default `127.0.0.1:30010`.
    /// Without [`control_token`](GatewayConfig::control_token) it only ever binds loopback.
    pub control_listen: SocketAddr,
    /// The bearer token the control plane requires (also `TETHER_CONTROL_TOKEN`; never a
    /// flag, which would show in `ps`). Default none: no authentication, loopback only.
    pub control_token: Option<ControlToken>,
}

/// A control-plane bearer token; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct ControlToken(pub String);

impl std::fmt::Debug for ControlToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlToken(<redacted>)")
    }
}

/// One TCP port mapping (an entry of `tcp_mappings`): connections to `listen` are relayed
/// over a stream to the exposed service `service` of edge `edge`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpMapping {
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// The edge id.
    pub edge: u64,
    /// The name of the service the edge exposes (the stream's open metadata).
    pub service: String,
}

/// Protocol limits and timeouts (the `protocol` section); the defaults are
/// [`proto_core::Config::default`]'s values.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolConfig {
    /// Largest request, response or message body accepted, in bytes. Default 1048576.
    pub max_message_size: u32,
    /// Initial receive window of every stream, in bytes. Default 262144.
    pub initial_stream_window: u32,
    /// Receive window for stream data of a whole connection, in bytes. Default 16777216.
    pub connection_window: u32,
    /// Streams a peer may have open towards the gateway at once. Default 1024.
    pub max_concurrent_streams: u32,
    /// Requests a peer may have in flight towards the gateway at once. Default 1024.
    pub max_inflight_requests: u32,
    /// Acknowledged messages a peer may have awaiting acknowledgement at once. Default 1024.
    pub max_inflight_messages: u32,
    /// Close a connection after this many milliseconds without input (0: never).
    /// Default 60000.
    pub idle_timeout_ms: u32,
    /// Send a PING after this many milliseconds without input (0: no keepalive).
    /// Default 15000.
    pub keepalive_interval_ms: u64,
    /// Close when nothing arrives this many milliseconds after a keepalive PING.
    /// Default 10000.
    pub keepalive_timeout_ms: u64,
    /// A connecting peer must complete its handshake within this many milliseconds.
    /// Default 10000.
    pub handshake_timeout_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            service_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 30011),
            edge_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 30012),
            hashby: HashBy::EdgeId,
            edgeid_alloc_when_no_idservice_on: true,
            presence: PresenceFanout::All,
            hook_timeout_ms: 5000,
            drain_timeout_ms: millis(proto_core::Config::default().drain_timeout),
            log_format: LogFormat::Human,
            protocol: ProtocolConfig::default(),
            http_ingress: None,
            tcp_mappings: Vec::new(),
            service_tls: None,
            edge_tls: None,
            control_tls: None,
            websocket: WebSocketConfig::default(),
            auth: AuthConfig::default(),
            admission: AdmissionConfig::default(),
            control_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 30010),
            control_token: None,
        }
    }
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        let core = proto_core::Config::default();
        let s = core.settings;
        ProtocolConfig {
            max_message_size: s.max_message_size,
            initial_stream_window: s.initial_stream_window,
            connection_window: s.connection_window,
            max_concurrent_streams: s.max_concurrent_streams,
            max_inflight_requests: s.max_inflight_requests,
            max_inflight_messages: s.max_inflight_messages,
            idle_timeout_ms: s.idle_timeout_ms,
            keepalive_interval_ms: millis(core.keepalive_interval),
            keepalive_timeout_ms: millis(core.keepalive_timeout),
            handshake_timeout_ms: millis(core.handshake_timeout),
        }
    }
}

/// Reads a section that may be empty (YAML null) as its default.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why the configuration could not be loaded or is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// Malformed YAML, an unknown key or a value of the wrong type; the message names the
    /// key (dotted: `protocol.max_message_size`) and the line.
    #[error("{0}")]
    Parse(String),
    /// A value that parses but cannot work.
    #[error("{key}: {problem}")]
    Invalid {
        /// The key, dotted for nested sections (`protocol.connection_window`).
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn invalid(key: &str, problem: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem,
    }
}

impl GatewayConfig {
    /// Parses YAML. Missing keys keep their defaults (an empty document is the default
    /// configuration); unknown keys and values of the wrong type are errors naming the key
    /// and the line. Does not [`validate`](GatewayConfig::validate).
    pub fn from_yaml(text: &str) -> Result<GatewayConfig, ConfigError> {
        // serde-saphyr rejects a document that is only `---`.
        let blank = |l: &str| l.is_empty() || l.starts_with('#') || l == "---" || l == "...";
        if text.lines().all(|l| blank(l.trim())) {
            return Ok(GatewayConfig::default());
        }
        serde_saphyr::from_str(text).map_err(|e| {
            // serde-saphyr gives the line and column but, for a bad value, not the key.
            let message = e.without_snippet().to_string();
            let at = e.location();
            match at.and_then(|at| key_path_at(text, at.line(), at.column())) {
                Some(path) => ConfigError::Parse(format!("{path}: {message}")),
                None => ConfigError::Parse(message),
            }
        })
    }

    /// Checks values that parse but make no sense; every error names the key, e.g.
    /// `protocol.initial_stream_window: must be at least 1024`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.service_listen == self.edge_listen && self.service_listen.port() != 0 {
            let problem = format!("must differ from service_listen {}", self.service_listen);
            return Err(invalid("edge_listen", problem));
        }
        self.validate_ingress()?;
        self.validate_security()?;
        let p = &self.protocol;
        if p.keepalive_interval_ms > 0 && p.keepalive_timeout_ms == 0 {
            let problem = "must be at least 1 while protocol.keepalive_interval_ms is not 0";
            return Err(invalid("protocol.keepalive_timeout_ms", problem.into()));
        }
        // The `$edge_id` hook runs while the edge's handshake waits for a decision; a hook
        // allowed to outlast the handshake deadline would be refused by that deadline.
        if self.hook_timeout_ms >= p.handshake_timeout_ms && p.handshake_timeout_ms > 0 {
            let problem = format!(
                "must be less than protocol.handshake_timeout_ms ({})",
                p.handshake_timeout_ms
            );
            return Err(invalid("hook_timeout_ms", problem));
        }
        let max_body = MAX_WINDOW - HEAD_CREDIT;
        let (window, count) = (u64::from(MIN_WINDOW)..=MAX_WINDOW, 1..=u64::from(u32::MAX));
        #[rustfmt::skip]
        let ranges = [
            ("hook_timeout_ms", self.hook_timeout_ms, 1..=u64::MAX),
            ("protocol.max_message_size", p.max_message_size.into(), 1..=max_body),
            ("protocol.initial_stream_window", p.initial_stream_window.into(), window.clone()),
            ("protocol.connection_window", p.connection_window.into(), window),
            ("protocol.max_concurrent_streams", p.max_concurrent_streams.into(), count.clone()),
            ("protocol.max_inflight_requests", p.max_inflight_requests.into(), count.clone()),
            ("protocol.max_inflight_messages", p.max_inflight_messages.into(), count),
            ("protocol.handshake_timeout_ms", p.handshake_timeout_ms, 1..=u64::MAX),
        ];
        for (key, value, range) in ranges {
            if value < *range.start() {
                return Err(invalid(key, format!("must be at least {}", range.start())));
            }
            if value > *range.end() {
                return Err(invalid(key, format!("must be at most {}", range.end())));
            }
        }
        // Whatever the checks above missed but proto-core rejects.
        let core = self.core_config().validate();
        core.map_err(|e| invalid("protocol", e.to_string()))
    }

    /// Ingress checks: no two listeners on one fixed address, mappings with an edge id and
    /// a service name.
    fn validate_ingress(&self) -> Result<(), ConfigError> {
        let mut taken = vec![
            (self.service_listen, String::from("service_listen")),
            (self.edge_listen, String::from("edge_listen")),
        ];
        let mut claim = |addr: SocketAddr, key: String| {
            let clash = taken.iter().find(|(a, _)| *a == addr && addr.port() != 0);
            if let Some((_, other)) = clash {
                return Err(invalid(&key, format!("{addr} is already {other}")));
            }
            taken.push((addr, key));
            Ok(())
        };
        if let Some(addr) = self.http_ingress {
            claim(addr, String::from("http_ingress"))?;
        }
        claim(self.control_listen, String::from("control_listen"))?;
        for (i, m) in self.tcp_mappings.iter().enumerate() {
            claim(m.listen, format!("tcp_mappings[{i}].listen"))?;
            if m.edge == 0 {
                let key = format!("tcp_mappings[{i}].edge");
                return Err(invalid(&key, String::from("must be at least 1")));
            }
            if m.service.is_empty() {
                let key = format!("tcp_mappings[{i}].service");
                return Err(invalid(&key, String::from("must not be empty")));
            }
        }
        Ok(())
    }

    /// TLS, WebSocket and admission checks.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let sections = [
            ("service_tls", &self.service_tls),
            ("edge_tls", &self.edge_tls),
            ("control_tls", &self.control_tls),
        ];
        for (key, tls) in sections {
            let Some(tls) = tls else { continue };
            if let Err(problem) = tls.validate(key) {
                // The problem names its own key (`edge_tls.certs: ...`).
                let (at, what) = problem.split_once(": ").unwrap_or((key, &problem));
                return Err(invalid(at, what.to_owned()));
            }
            if key != "edge_tls" && tls.identity.is_on() {
                let problem = "identity binding is for edges (edge_tls.identity)".into();
                return Err(invalid(&format!("{key}.identity"), problem));
            }
        }
        self.websocket
            .validate()
            .map_err(|p| invalid("websocket", p))?;
        let a = &self.admission;
        #[rustfmt::skip]
        let ranges = [
            ("admission.max_unauthenticated", u64::from(a.max_unauthenticated)),
            ("admission.max_unauthenticated_per_ip", u64::from(a.max_unauthenticated_per_ip)),
            ("admission.transport_handshake_timeout_ms", a.transport_handshake_timeout_ms),
        ];
        for (key, value) in ranges {
            if value == 0 {
                return Err(invalid(key, String::from("must be at least 1")));
            }
        }
        Ok(())
    }

    /// The proto-core configuration for each connection: proto-core's defaults with the
    /// settings and timeouts from `protocol` and the drain timeout from `drain_timeout_ms`.
    ///
    /// Derived limits grow with the configured ones: the message window always holds the
    /// largest message plus its head, the stream window's auto-tuning ceiling is never below
    /// the initial stream window, and the input buffer always holds a whole frame.
    pub fn core_config(&self) -> proto_core::Config {
        let p = &self.protocol;
        let base = proto_core::Config::default();
        let needed = u64::from(p.max_message_size).saturating_add(HEAD_CREDIT);
        let settings = Settings {
            max_message_size: p.max_message_size,
            initial_stream_window: p.initial_stream_window,
            connection_window: p.connection_window,
            message_window: u32::try_from(needed)
                .unwrap_or(u32::MAX)
                .max(base.settings.message_window),
            max_concurrent_streams: p.max_concurrent_streams,
            max_inflight_requests: p.max_inflight_requests,
            max_inflight_messages: p.max_inflight_messages,
            idle_timeout_ms: p.idle_timeout_ms,
            ..base.settings
        };
        let header = HEADER_LEN as u32;
        let frame = settings.max_frame_size.max(base.max_handshake_size);
        proto_core::Config {
            settings,
            max_stream_window: base.max_stream_window.max(p.initial_stream_window),
            max_input_buffer: base.max_input_buffer.max(frame.saturating_add(header)),
            handshake_timeout: Duration::from_millis(p.handshake_timeout_ms),
            keepalive_interval: Duration::from_millis(p.keepalive_interval_ms),
            keepalive_timeout: Duration::from_millis(p.keepalive_timeout_ms),
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            ..base
        }
    }
}

/// The dotted path (`protocol.max_message_size`) of the key at, or the key of the value at, a
/// 1-based line and column of block-style YAML: the key on that line, then each less indented
/// parent key. Best effort: in a flow mapping only the innermost key is found.
fn key_path_at(text: &str, line: u64, column: u64) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let index = usize::try_from(line.checked_sub(1)?).ok()?;
    let current = *lines.get(index)?;
    let column = usize::try_from(column.checked_sub(1)?).ok()?;
    let split = current
        .char_indices()
        .nth(column)
        .map_or(current.len(), |(i, _)| i);
    let (before, at) = current.split_at(split);
    let mut path = Vec::new();
    let mut indent = current.len() - current.trim_start().len();
    match before.trim_end() {
        // At a key, or at a value on its own line under its key.
        "" => path.extend(leading_key(at)),
        flow if flow.ends_with(['{', ',']) => path.extend(leading_key(at)),
        // At a value after `key:`.
        head => path.push(clean_key(
            head.strip_suffix(':')?.rsplit(['{', ',']).next()?,
        )?),
    }
    for parent in lines[..index].iter().rev() {
        if indent == 0 {
            break;
        }
        let trimmed = parent.trim_start();
        let parent_indent = parent.len() - trimmed.len();
        if parent_indent < indent && !trimmed.is_empty() && !trimmed.starts_with('#') {
            path.extend(leading_key(trimmed));
            indent = parent_indent;
        }
    }
    path.reverse();
    (!path.is_empty()).then(|| path.join("."))
}

/// The key of `key: ...`, if the text starts with one.
fn leading_key(text: &str) -> Option<String> {
    clean_key(text.split_once(':')?.0)
}

/// The key without quotes, if it looks like a key (not, say, an address).
fn clean_key(key: &str) -> Option<String> {
    let key = key.trim().trim_matches(['"', '\'']);
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    (!key.is_empty() && key.chars().all(plain)).then(|| key.to_owned())
}

/// The default configuration as commented YAML (every key with a comment saying what it
/// does and its default), printed by `tether-gateway --print-config`.
pub const DEFAULT_CONFIG_YAML: &str = "\
# Tether gateway configuration. Every key is optional: a missing key keeps the default
# shown here. Flags and TETHER_* environment variables override this file.

# Address services connect to (--service-listen, TETHER_SERVICE_LISTEN).
service_listen: 0.0.0.0:30011
# Address edges connect to (--edge-listen, TETHER_EDGE_LISTEN).
edge_listen: 0.0.0.0:30012
# How edge -> service traffic picks among candidate services (--hashby, TETHER_HASHBY):
# edgeid (an edge keeps its service), srcip (by the edge's address) or random.
hashby: edgeid
# Whether the gateway allocates edge ids itself when no service provides the $edge_id
# hook (--edgeid-alloc-when-no-idservice-on, TETHER_EDGEID_ALLOC).
edgeid_alloc_when_no_idservice_on: true
# Which services get edge online/offline events: all, or one chosen by the edge id
# (--presence, TETHER_PRESENCE).
presence: all
# How long to wait for a service's $edge_id / $edge_online hook, in milliseconds. Must be
# less than protocol.handshake_timeout_ms: the edge's handshake waits for the answer.
# (--hook-timeout-ms, TETHER_HOOK_TIMEOUT_MS)
hook_timeout_ms: 5000
# Graceful shutdown deadline in milliseconds (--drain-timeout-ms, TETHER_DRAIN_TIMEOUT_MS).
drain_timeout_ms: 30000
# Log format: human or json (--log-format, TETHER_LOG_FORMAT).
log_format: human

# HTTP ingress address, e.g. 0.0.0.0:8080 (--http-ingress, TETHER_HTTP_INGRESS): forwards
# HTTP to the services edges expose and relays POST /rpc/... to RPC. null: off.
http_ingress: null
# TCP port mappings: each listen address relays its connections to a service an edge
# exposes, e.g. [{listen: 0.0.0.0:2222, edge: 7, service: ssh}]. Empty: none.
tcp_mappings: []

# TLS on the service and edge listeners (rustls). null: plain TCP. For example:
#   edge_tls:
#     certs:                 # one or more pairs, chosen by SNI; the first is the default
#       - {cert: /etc/tether/edge.pem, key: /etc/tether/edge.key}
#     client_ca: [/etc/tether/devices-ca.pem]   # mTLS: CAs of client certificates
#     client_auth: required  # required (default with client_ca) or optional
#     identity: {bind: id}   # off, id or metadata (+ field: name; names: any, cn or san)
#     reload_interval_ms: 10000   # look for changed files (0: only on SIGHUP)
service_tls: null
# TLS on the edge listener (same keys as service_tls, plus identity).
edge_tls: null
# TLS on the control listener (certs, client_ca, client_auth as for service_tls).
control_tls: null

# The protocol in WebSocket binary messages (behind nginx or an HTTP load balancer).
websocket:
  # The edge listener also accepts WebSocket upgrades.
  edge: true
  # The service listener also accepts them.
  service: false
  # The upgrade's request path (other paths get 404).
  path: /tether
  # Proxy IPs whose X-Forwarded-For names the client, e.g. [127.0.0.1].
  trusted_proxies: []
  # Largest WebSocket message accepted, in bytes.
  max_message_size: 1048576

# Static tokens checked in the handshake. Empty: no token needed.
auth:
  # Tokens services may present (TETHER_SERVICE_TOKENS, comma-separated).
  service_tokens: []
  # Tokens edges may present (TETHER_EDGE_TOKENS, comma-separated).
  edge_tokens: []

# Before a peer is admitted: caps on connections still in their handshakes, and deadlines.
admission:
  # Connections in their handshakes, over all listeners (more are closed at accept).
  max_unauthenticated: 4096
  # Connections in their handshakes from one IP address.
  max_unauthenticated_per_ip: 64
  # TLS and the WebSocket upgrade must complete within this many milliseconds.
  transport_handshake_timeout_ms: 10000
# REST control plane, /metrics and /openapi.json (--control-listen, TETHER_CONTROL_LISTEN).
# Without control_token it binds loopback only (a non-loopback address becomes 127.0.0.1).
control_listen: 127.0.0.1:30010
# Bearer token the control plane requires (TETHER_CONTROL_TOKEN; no flag, so it never
# shows in ps). null: no authentication, loopback only. /healthz and /readyz never ask.
control_token: null

# Protocol limits and timeouts of every connection.
protocol:
  # Largest request, response or message body accepted, in bytes.
  max_message_size: 1048576
  # Initial receive window of every stream, in bytes (at least 1024).
  initial_stream_window: 262144
  # Receive window for stream data of a whole connection, in bytes (at least 1024).
  connection_window: 16777216
  # Streams a peer may have open towards the gateway at once.
  max_concurrent_streams: 1024
  # Requests a peer may have in flight towards the gateway at once.
  max_inflight_requests: 1024
  # Acknowledged messages a peer may have awaiting acknowledgement at once.
  max_inflight_messages: 1024
  # Close a connection after this many milliseconds without input (0: never).
  idle_timeout_ms: 60000
  # Send a PING after this many milliseconds without input (0: no keepalive).
  keepalive_interval_ms: 15000
  # Close when nothing arrives this many milliseconds after a keepalive PING.
  keepalive_timeout_ms: 10000
  # A connecting peer must complete its handshake within this many milliseconds.
  handshake_timeout_ms: 10000
";

/// Command-line flags (clap derive). Each flag also reads an environment variable.
#[derive(Debug, clap::Parser)]
#[command(
    name = "tether-gateway",
    version,
    about = "The Tether gateway: routes RPC, messages and streams between services and edges"
)]
pub struct Cli {
    /// YAML configuration file (--print-config shows every key).
    #[arg(long, env = "TETHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address services connect to [default: 0.0.0.0:30011].
    #[arg(long, env = "TETHER_SERVICE_LISTEN")]
    pub service_listen: Option<SocketAddr>,
    /// Address edges connect to [default: 0.0.0.0:30012].
    #[arg(long, env = "TETHER_EDGE_LISTEN")]
    pub edge_listen: Option<SocketAddr>,
    /// How edge -> service traffic picks among candidate services [default: edgeid].
    #[arg(long, env = "TETHER_HASHBY")]
    pub hashby: Option<HashBy>,
    /// Log format [default: human].
    #[arg(long, env = "TETHER_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Allocate edge ids when no service provides the $edge_id hook [default: true].
    #[arg(long, env = "TETHER_EDGEID_ALLOC", value_parser = BoolishValueParser::new())]
    pub edgeid_alloc_when_no_idservice_on: Option<bool>,
    /// Graceful shutdown deadline in milliseconds [default: 30000].
    #[arg(long, env = "TETHER_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Which services get edge online/offline events [default: all].
    #[arg(long, env = "TETHER_PRESENCE")]
    pub presence: Option<PresenceFanout>,
    /// How long to wait for a service's $edge_id / $edge_online hook, in milliseconds
    /// [default: 5000].
    #[arg(long, env = "TETHER_HOOK_TIMEOUT_MS")]
    pub hook_timeout_ms: Option<u64>,
    /// HTTP ingress address (HTTP forwarding to edges, HTTP → RPC relay) [default: off].
    #[arg(long, env = "TETHER_HTTP_INGRESS", value_name = "ADDR")]
    pub http_ingress: Option<SocketAddr>,
    /// Tokens services may present, comma-separated [default: none needed]. An environment
    /// variable only: a flag would show the secret in `ps`.
    #[arg(skip = std::env::var("TETHER_SERVICE_TOKENS").ok())]
    pub service_tokens: Option<String>,
    /// Tokens edges may present, comma-separated (environment variable only).
    #[arg(skip = std::env::var("TETHER_EDGE_TOKENS").ok())]
    pub edge_tokens: Option<String>,
    /// REST control plane and /metrics address [default: 127.0.0.1:30010]. The bearer
    /// token comes from the config file or TETHER_CONTROL_TOKEN only.
    #[arg(long, env = "TETHER_CONTROL_LISTEN", value_name = "ADDR")]
    pub control_listen: Option<SocketAddr>,
    /// Print the default configuration (commented YAML) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Cli {
    /// The effective configuration: defaults, then the YAML file (if `--config`), then
    /// flags/env (flags and env override the file), then [`GatewayConfig::validate`].
    pub fn resolve(&self) -> Result<GatewayConfig, ConfigError> {
        let mut config = match &self.config {
            None => GatewayConfig::default(),
            Some(path) => {
                let read = |source| ConfigError::Read {
                    path: path.clone(),
                    source,
                };
                let text = std::fs::read_to_string(path).map_err(read)?;
                GatewayConfig::from_yaml(&text)
                    .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?
            }
        };
        let c = &mut config;
        c.service_listen = self.service_listen.unwrap_or(c.service_listen);
        c.edge_listen = self.edge_listen.unwrap_or(c.edge_listen);
        c.hashby = self.hashby.unwrap_or(c.hashby);
        c.log_format = self.log_format.unwrap_or(c.log_format);
        let alloc = self.edgeid_alloc_when_no_idservice_on;
        c.edgeid_alloc_when_no_idservice_on = alloc.unwrap_or(c.edgeid_alloc_when_no_idservice_on);
        c.drain_timeout_ms = self.drain_timeout_ms.unwrap_or(c.drain_timeout_ms);
        c.presence = self.presence.unwrap_or(c.presence);
        c.hook_timeout_ms = self.hook_timeout_ms.unwrap_or(c.hook_timeout_ms);
        c.http_ingress = self.http_ingress.or(c.http_ingress);
        if let Some(tokens) = &self.service_tokens {
            c.auth.service_tokens = tokens_from_env(tokens);
        }
        if let Some(tokens) = &self.edge_tokens {
            c.auth.edge_tokens = tokens_from_env(tokens);
        }
        c.control_listen = self.control_listen.unwrap_or(c.control_listen);
        if let Ok(token) = std::env::var("TETHER_CONTROL_TOKEN") {
            c.control_token = Some(ControlToken(token));
        }
        // An empty token would be one anybody can send.
        c.control_token = c.control_token.take().filter(|t| !t.0.is_empty());
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use std::path::Path;

    fn assert_mentions(error: &ConfigError, parts: &[&str]) {
        let message = error.to_string();
        for part in parts {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }

    /// Parses each YAML text, expecting a parse error that contains both strings.
    fn assert_parse_errors(cases: &[(&str, &str, &str)]) {
        for (yaml, key, line) in cases {
            match GatewayConfig::from_yaml(yaml) {
                Err(e @ ConfigError::Parse(_)) => assert_mentions(&e, &[key, line]),
                other => panic!("expected a parse error for {yaml:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn default_yaml_parses_to_default_and_comments_every_key() {
        let parsed = GatewayConfig::from_yaml(DEFAULT_CONFIG_YAML).unwrap();
        assert_eq!(parsed, GatewayConfig::default());
        parsed.validate().unwrap();
        let lines: Vec<&str> = DEFAULT_CONFIG_YAML.lines().collect();
        let keys = (1..lines.len()).filter(|&i| {
            let key = lines[i].contains(':') && !lines[i].trim_start().starts_with('#');
            let commented = lines[i - 1].trim_start().starts_with('#');
            assert!(!key || commented, "no comment above {}", lines[i]);
            key
        });
        assert_eq!(keys.count(), 13 + 3 + 6 + 3 + 4 + 10);
    }

    #[test]
    fn missing_keys_keep_defaults() {
        for empty in ["", "# nothing\n", "---\n", "protocol:\n", "protocol: {}\n"] {
            let parsed = GatewayConfig::from_yaml(empty).unwrap();
            assert_eq!(parsed, GatewayConfig::default(), "{empty:?}");
        }
        let yaml = "hashby: srcip\npresence: one\nlog_format: json\nprotocol: {idle_timeout_ms: 0}";
        let mut expected = GatewayConfig {
            hashby: HashBy::SrcIp,
            presence: PresenceFanout::One,
            log_format: LogFormat::Json,
            ..GatewayConfig::default()
        };
        expected.protocol.idle_timeout_ms = 0;
        assert_eq!(GatewayConfig::from_yaml(yaml).unwrap(), expected);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        #[rustfmt::skip]
        let cases = [
            ("hashby: random\nbogus: 1\n", "bogus: unknown field `bogus`", "line 2"),
            ("protocol:\n  # comment\n\n  max_mesage_size: 1\n", "protocol.max_mesage_size: ", "line 4"),
            ("hook_timeout_ms: 1\nhook_timeout_ms: 2\n", "hook_timeout_ms: duplicate", "line 2"),
        ];
        assert_parse_errors(&cases);
    }

    #[test]
    fn wrong_types_are_errors_naming_the_key() {
        #[rustfmt::skip]
        let cases = [
            ("hashby: sideways\n", "hashby: unknown variant `sideways`", "line 1"),
            ("edge_listen: 0.0.0.0:1\nservice_listen: nope\n", "service_listen: ", "line 2"),
            ("service_listen:\n  \"1.2.3.4:99999\"\n", "service_listen: ", "line 2"),
            ("protocol:\n  max_message_size: -1\n", "protocol.max_message_size: ", "line 2"),
            ("protocol: 5\n", "protocol: ", "line 1"),
            ("presence: one\nlog_format: 2\n", "log_format: ", "line 2"),
            ("protocol: {max_message_size: x}\n", "max_message_size: ", "line 1"),
            ("- 1\n", "", "line 1"),
        ];
        assert_parse_errors(&cases);
    }

    #[test]
    fn validate_names_the_key() {
        #[rustfmt::skip]
        let cases = [
            ("hook_timeout_ms: 0", "hook_timeout_ms: must be at least 1"),
            ("hook_timeout_ms: 10000", "hook_timeout_ms: must be less than protocol.handshake_timeout_ms"),
            ("edge_listen: 0.0.0.0:30011", "edge_listen: must differ from service_listen"),
            ("protocol: {max_message_size: 0}", "protocol.max_message_size: must be at least 1"),
            ("protocol: {max_message_size: 4294967295}", "protocol.max_message_size: must be at most"),
            ("protocol: {initial_stream_window: 1023}", "protocol.initial_stream_window: must be at least 1024"),
            ("protocol: {connection_window: 2147483648}", "protocol.connection_window: must be at most 2147483647"),
            ("protocol: {max_concurrent_streams: 0}", "protocol.max_concurrent_streams: must be at least 1"),
            ("protocol: {max_inflight_requests: 0}", "protocol.max_inflight_requests: must be at least 1"),
            ("protocol: {max_inflight_messages: 0}", "protocol.max_inflight_messages: must be at least 1"),
            ("protocol: {keepalive_timeout_ms: 0}", "protocol.keepalive_timeout_ms: must be at least 1"),
            ("protocol: {handshake_timeout_ms: 0}", "protocol.handshake_timeout_ms: must be at least 1"),
        ];
        for (yaml, expected) in cases {
            let e = GatewayConfig::from_yaml(yaml).unwrap().validate();
            let e = e.unwrap_err();
            assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
            assert_mentions(&e, &[expected]);
        }
        // Keepalive off needs no timeout; port 0 twice means two ephemeral ports.
        let fine = "service_listen: 127.0.0.1:0\nedge_listen: 127.0.0.1:0\nprotocol:\n  \
                    keepalive_interval_ms: 0\n  keepalive_timeout_ms: 0\n";
        GatewayConfig::from_yaml(fine).unwrap().validate().unwrap();
    }

    #[test]
    fn core_config_of_default_is_proto_core_default() {
        let core = GatewayConfig::default().core_config();
        core.validate().unwrap();
        assert_eq!(core, proto_core::Config::default());
    }

    #[test]
    fn core_config_carries_the_set_values() {
        let mut c = GatewayConfig::from_yaml(
            "drain_timeout_ms: 1234\nhook_timeout_ms: 5\nprotocol:\n  max_message_size: 8388608\n  \
             initial_stream_window: 8388608\n  connection_window: 33554432\n  \
             max_concurrent_streams: 7\n  max_inflight_requests: 8\n  \
             max_inflight_messages: 9\n  idle_timeout_ms: 100\n  keepalive_interval_ms: 11\n  \
             keepalive_timeout_ms: 12\n  handshake_timeout_ms: 13\n",
        )
        .unwrap();
        c.validate().unwrap();
        let core = c.core_config();
        core.validate().unwrap();
        let s = core.settings;
        assert_eq!(s.max_message_size, 8 << 20);
        assert!(u64::from(s.message_window) >= (8 << 20) + HEAD_CREDIT);
        assert_eq!(s.initial_stream_window, 8 << 20);
        assert!(core.max_stream_window >= 8 << 20);
        assert_eq!(s.connection_window, 32 << 20);
        assert_eq!(s.max_concurrent_streams, 7);
        assert_eq!(s.max_inflight_requests, 8);
        assert_eq!(s.max_inflight_messages, 9);
        assert_eq!(s.idle_timeout_ms, 100);
        assert_eq!(core.keepalive_interval, Duration::from_millis(11));
        assert_eq!(core.keepalive_timeout, Duration::from_millis(12));
        assert_eq!(core.handshake_timeout, Duration::from_millis(13));
        assert_eq!(core.drain_timeout, Duration::from_millis(1234));
        // The largest message size validate() accepts still makes a valid proto-core config.
        c.protocol.max_message_size = u32::try_from(MAX_WINDOW - HEAD_CREDIT).unwrap();
        c.validate().unwrap();
    }

    /// A file under the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &str) -> TempFile {
            let unique = format!("tether-gateway-config-{}-{name}.yaml", std::process::id());
            let path = std::env::temp_dir().join(unique);
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Parses `flags` (split at spaces) after `--config file`, if any.
    fn cli(file: Option<&Path>, flags: &str) -> Result<Cli, clap::Error> {
        let config = file
            .into_iter()
            .flat_map(|f| ["--config".as_ref(), f.as_os_str()]);
        let args = std::iter::once("tether-gateway".as_ref()).chain(config);
        Cli::try_parse_from(args.chain(flags.split_whitespace().map(|f| f.as_ref())))
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        assert!(cli(None, "--print-config").unwrap().print_config);
        assert!(cli(None, "--hashby edge-id").is_err());
        assert!(cli(None, "--drain-timeout-ms soon").is_err());
    }

    #[test]
    fn resolve_applies_file_then_flags() {
        let file = TempFile::new(
            "resolve",
            "service_listen: 127.0.0.1:4001\nedge_listen: 127.0.0.1:4002\nhashby: srcip\n\
             drain_timeout_ms: 1000\npresence: one\nprotocol:\n  max_concurrent_streams: 5\n",
        );
        let from_file = cli(Some(&file.0), "").unwrap().resolve().unwrap();
        let mut expected = GatewayConfig {
            service_listen: "127.0.0.1:4001".parse().unwrap(),
            edge_listen: "127.0.0.1:4002".parse().unwrap(),
            hashby: HashBy::SrcIp,
            drain_timeout_ms: 1000,
            presence: PresenceFanout::One,
            ..GatewayConfig::default()
        };
        expected.protocol.max_concurrent_streams = 5;
        assert_eq!(from_file, expected);

        let flags = "--edge-listen 127.0.0.1:4003 --hashby random --drain-timeout-ms 2000 \
                     --log-format json --edgeid-alloc-when-no-idservice-on false \
                     --presence all --hook-timeout-ms 700";
        let overridden = cli(Some(&file.0), flags).unwrap().resolve().unwrap();
        let expected = GatewayConfig {
            edge_listen: "127.0.0.1:4003".parse().unwrap(),
            hashby: HashBy::Random,
            drain_timeout_ms: 2000,
            log_format: LogFormat::Json,
            edgeid_alloc_when_no_idservice_on: false,
            presence: PresenceFanout::All,
            hook_timeout_ms: 700,
            ..from_file
        };
        assert_eq!(overridden, expected);

        let no_file = cli(None, "--service-listen 127.0.0.1:5000 --hashby srcip").unwrap();
        let expected = GatewayConfig {
            service_listen: "127.0.0.1:5000".parse().unwrap(),
            hashby: HashBy::SrcIp,
            ..GatewayConfig::default()
        };
        assert_eq!(no_file.resolve().unwrap(), expected);
    }

    #[test]
    fn resolve_reports_file_problems() {
        let missing = std::env::temp_dir().join("tether-gateway-config-does-not-exist.yaml");
        let e = cli(Some(&missing), "").unwrap().resolve();
        assert!(matches!(e, Err(ConfigError::Read { .. })), "{e:?}");

        let bad = TempFile::new("bad", "protocol:\n  window: 1\n");
        let e = cli(Some(&bad.0), "").unwrap().resolve().unwrap_err();
        assert_mentions(
            &e,
            &[&bad.0.display().to_string(), "protocol.window", "line 2"],
        );

        let small = TempFile::new("small", "protocol:\n  connection_window: 10\n");
        let e = cli(Some(&small.0), "").unwrap().resolve().unwrap_err();
        assert_mentions(&e, &["protocol.connection_window: must be at least 1024"]);
        // Values from flags are validated too.
        let e = cli(None, "--service-listen 0.0.0.0:30012")
            .unwrap()
            .resolve()
            .unwrap_err();
        assert_mentions(&e, &["edge_listen: must differ"]);
    }

    #[test]
    fn ingress_keys_parse_validate_and_take_the_flag() {
        let yaml = "http_ingress: 127.0.0.1:8080\ntcp_mappings:\n  - listen: 127.0.0.1:2222\n    \
                    edge: 7\n    service: ssh\n  - {listen: 127.0.0.1:0, edge: 8, service: db}\n";
        let parsed = GatewayConfig::from_yaml(yaml).unwrap();
        parsed.validate().unwrap();
        assert_eq!(parsed.http_ingress, Some("127.0.0.1:8080".parse().unwrap()));
        let first = TcpMapping {
            listen: "127.0.0.1:2222".parse().unwrap(),
            edge: 7,
            service: String::from("ssh"),
        };
        assert_eq!(parsed.tcp_mappings[0], first);
        assert_eq!(parsed.tcp_mappings[1].service, "db");
        for empty in ["tcp_mappings:\n", "tcp_mappings: []\nhttp_ingress: null\n"] {
            let parsed = GatewayConfig::from_yaml(empty).unwrap();
            assert_eq!(parsed, GatewayConfig::default(), "{empty:?}");
        }
        #[rustfmt::skip]
        let bad = [
            ("http_ingress: 0.0.0.0:30011", "http_ingress: 0.0.0.0:30011 is already service_listen"),
            ("tcp_mappings: [{listen: 0.0.0.0:30012, edge: 1, service: a}]", "tcp_mappings[0].listen: 0.0.0.0:30012 is already edge_listen"),
            ("http_ingress: 127.0.0.1:9\ntcp_mappings: [{listen: 127.0.0.1:9, edge: 1, service: a}]", "tcp_mappings[0].listen: 127.0.0.1:9 is already http_ingress"),
            ("tcp_mappings: [{listen: 127.0.0.1:9, edge: 0, service: a}]", "tcp_mappings[0].edge: must be at least 1"),
            ("tcp_mappings: [{listen: 127.0.0.1:9, edge: 1, service: ''}]", "tcp_mappings[0].service: must not be empty"),
        ];
        for (yaml, expected) in bad {
            let e = GatewayConfig::from_yaml(yaml)
                .unwrap()
                .validate()
                .unwrap_err();
            assert_mentions(&e, &[expected]);
        }
        assert_parse_errors(&[(
            "tcp_mappings:\n  - listen: 127.0.0.1:1\n    edge: 1\n    service: a\n    port: 2\n",
            "port: unknown field",
            "line 5",
        )]);
        let file = TempFile::new("ingress", yaml);
        let flag = cli(Some(&file.0), "--http-ingress 127.0.0.1:8081").unwrap();
        let resolved = flag.resolve().unwrap();
        assert_eq!(
            resolved.http_ingress,
            Some("127.0.0.1:8081".parse().unwrap())
        );
        assert_eq!(resolved.tcp_mappings.len(), 2);
    }
}
