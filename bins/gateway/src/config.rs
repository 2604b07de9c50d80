//! Gateway configuration: built-in defaults, an optional YAML file, then command-line flags
//! and environment variables, in that order of increasing precedence.
//!
//! [`Cli::resolve`] produces the effective [`GatewayConfig`]; [`GatewayConfig::core_config`]
//! turns its `protocol` section into the [`proto_core::Config`] every connection uses.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use proto_core::codec::{HEADER_LEN, MAX_WINDOW};
use proto_core::config::MIN_WINDOW;
use proto_core::{HEAD_CREDIT, Settings};

/// How edge → service traffic picks among candidate services.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum HashBy {
    /// Hash the edge id: an edge always reaches the same service while the set is stable.
    #[default]
    EdgeId,
    /// Hash the edge's source IP address: edges behind one address share a service.
    SrcIp,
    /// Pick a service at random for every call, message or stream.
    Random,
}

/// Which services get edge online/offline events.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum PresenceFanout {
    /// Every service that registered the presence hooks.
    #[default]
    All,
    /// One of them, picked the way [`HashBy`] picks for ordinary traffic.
    One,
}

/// The format of the gateway's log lines.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The whole gateway configuration (the YAML file's top level).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Where services connect. Default `0.0.0.0:30011`.
    pub service_listen: SocketAddr,
    /// Where edges connect. Default `0.0.0.0:30012`.
    pub edge_listen: SocketAddr,
    /// How edge → service traffic picks among candidate services. Default `edgeid`.
    pub hashby: HashBy,
    /// When no service provides the `$edge_id` hook, the gateway allocates edge ids itself
    /// (otherwise such edges are refused). Default `true`.
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
    /// Protocol limits every connection advertises and enforces.
    pub protocol: ProtocolConfig,
}

/// Protocol limits and timeouts (the YAML file's `protocol` section). The defaults are
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
    /// Close a connection after this long without receiving anything, in milliseconds
    /// (0: never). Default 60000.
    pub idle_timeout_ms: u32,
    /// Send a PING after this long without receiving anything, in milliseconds (0: no
    /// keepalive). Default 15000.
    pub keepalive_interval_ms: u64,
    /// Close when nothing arrives this long after a keepalive PING, in milliseconds.
    /// Default 10000.
    pub keepalive_timeout_ms: u64,
    /// A connecting peer must complete its handshake within this time, in milliseconds.
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
            drain_timeout_ms: duration_ms(proto_core::Config::default().drain_timeout),
            log_format: LogFormat::Human,
            protocol: ProtocolConfig::default(),
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
            keepalive_interval_ms: duration_ms(core.keepalive_interval),
            keepalive_timeout_ms: duration_ms(core.keepalive_timeout),
            handshake_timeout_ms: duration_ms(core.handshake_timeout),
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why the configuration could not be loaded or is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The YAML is malformed, has an unknown key or a value of the wrong type. The message
    /// names the key and the line.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value parses but cannot work.
    #[error("invalid configuration: {key}: {problem}")]
    Invalid {
        /// The key, dotted for nested sections (`protocol.connection_window`).
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

impl GatewayConfig {
    /// Parses YAML; errors name the key (serde's deny_unknown_fields and type errors do, make
    /// sure the message includes the path/field and line).
    ///
    /// Missing keys keep their defaults; an empty document (or only comments) is the default
    /// configuration. Does not call [`GatewayConfig::validate`].
    pub fn from_yaml(text: &str) -> Result<GatewayConfig, ConfigError> {
        if is_blank_yaml(text) {
            return Ok(GatewayConfig::default());
        }
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Checks values that parse but make no sense; every error names the key, e.g.
    /// `protocol.initial_stream_window: must be at least 1024`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.service_listen == self.edge_listen && self.service_listen.port() != 0 {
            return Err(invalid(
                "edge_listen",
                format!("must differ from service_listen ({})", self.service_listen),
            ));
        }
        if self.hook_timeout_ms == 0 {
            return Err(invalid("hook_timeout_ms", "must be at least 1"));
        }
        let p = &self.protocol;
        let max_body = MAX_WINDOW - HEAD_CREDIT;
        if p.max_message_size == 0 {
            return Err(invalid("protocol.max_message_size", "must be at least 1"));
        }
        if u64::from(p.max_message_size) > max_body {
            return Err(invalid(
                "protocol.max_message_size",
                format!("must be at most {max_body}"),
            ));
        }
        for (key, value) in [
            ("protocol.initial_stream_window", p.initial_stream_window),
            ("protocol.connection_window", p.connection_window),
        ] {
            if value < MIN_WINDOW {
                return Err(invalid(key, format!("must be at least {MIN_WINDOW}")));
            }
            if u64::from(value) > MAX_WINDOW {
                return Err(invalid(key, format!("must be at most {MAX_WINDOW}")));
            }
        }
        for (key, value) in [
            ("protocol.max_concurrent_streams", p.max_concurrent_streams),
            ("protocol.max_inflight_requests", p.max_inflight_requests),
            ("protocol.max_inflight_messages", p.max_inflight_messages),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if p.keepalive_interval_ms > 0 && p.keepalive_timeout_ms == 0 {
            return Err(invalid(
                "protocol.keepalive_timeout_ms",
                "must be at least 1 while protocol.keepalive_interval_ms is not 0",
            ));
        }
        if p.handshake_timeout_ms == 0 {
            return Err(invalid(
                "protocol.handshake_timeout_ms",
                "must be at least 1",
            ));
        }
        // Anything the checks above missed but proto-core rejects.
        self.core_config()
            .validate()
            .map_err(|e| invalid("protocol", e.to_string()))
    }

    /// The proto-core configuration for each connection: proto-core's defaults with the
    /// settings and timeouts from `protocol` and the drain timeout from `drain_timeout_ms`.
    ///
    /// Derived limits grow with the configured ones: the message window always holds the
    /// largest message plus its head, the stream window auto-tuning ceiling is never below
    /// the initial stream window, and the input buffer always holds a whole frame.
    pub fn core_config(&self) -> proto_core::Config {
        let p = &self.protocol;
        let base = proto_core::Config::default();
        let needed_message_window = u64::from(p.max_message_size) + HEAD_CREDIT;
        let message_window = u32::try_from(needed_message_window)
            .unwrap_or(u32::MAX)
            .max(base.settings.message_window);
        let settings = Settings {
            max_message_size: p.max_message_size,
            initial_stream_window: p.initial_stream_window,
            connection_window: p.connection_window,
            message_window,
            max_concurrent_streams: p.max_concurrent_streams,
            max_inflight_requests: p.max_inflight_requests,
            max_inflight_messages: p.max_inflight_messages,
            idle_timeout_ms: p.idle_timeout_ms,
            ..base.settings
        };
        let min_input = settings
            .max_frame_size
            .saturating_add(HEADER_LEN as u32)
            .max(base.max_handshake_size.saturating_add(HEADER_LEN as u32));
        proto_core::Config {
            settings,
            max_stream_window: base.max_stream_window.max(p.initial_stream_window),
            max_input_buffer: base.max_input_buffer.max(min_input),
            handshake_timeout: Duration::from_millis(p.handshake_timeout_ms),
            keepalive_interval: Duration::from_millis(p.keepalive_interval_ms),
            keepalive_timeout: Duration::from_millis(p.keepalive_timeout_ms),
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            ..base
        }
    }

    /// How long to wait for a service's `$edge_id` / `$edge_online` hook.
    pub fn hook_timeout(&self) -> Duration {
        Duration::from_millis(self.hook_timeout_ms)
    }

    /// The graceful shutdown deadline.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// True when the text holds no YAML content: only blank lines, comments and document markers.
fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

/// The default configuration as commented YAML (every key with a comment saying what it
/// does and its default), printed by `tether-gateway --print-config`.
pub const DEFAULT_CONFIG_YAML: &str = "\
# Tether gateway configuration. Every key is optional; a missing key keeps the default
# shown here. Flags and environment variables override this file.

# Address services connect to (env TETHER_SERVICE_LISTEN). Default 0.0.0.0:30011.
service_listen: 0.0.0.0:30011

# Address edges connect to (env TETHER_EDGE_LISTEN). Default 0.0.0.0:30012.
edge_listen: 0.0.0.0:30012

# How edge -> service traffic picks among the services that registered a name
# (env TETHER_HASHBY): edgeid (the same edge reaches the same service), srcip (by the
# edge's source address) or random. Default edgeid.
hashby: edgeid

# When no service provides the $edge_id hook, the gateway allocates edge ids itself;
# false refuses edges instead (env TETHER_EDGEID_ALLOC). Default true.
edgeid_alloc_when_no_idservice_on: true

# Which services get edge online/offline events: all (every service that registered
# them) or one (picked like hashby). Default all.
presence: all

# How long the gateway waits for a service's $edge_id / $edge_online hook, in
# milliseconds. Default 5000.
hook_timeout_ms: 5000

# Graceful shutdown deadline, in milliseconds: connections still busy then are closed
# (env TETHER_DRAIN_TIMEOUT_MS). Default 30000.
drain_timeout_ms: 30000

# Log format: human or json (env TETHER_LOG_FORMAT). Default human.
log_format: human

# Protocol limits every connection advertises and enforces.
protocol:
  # Largest request, response or message body accepted, in bytes. Default 1048576.
  max_message_size: 1048576
  # Initial receive window of every stream, in bytes (at least 1024). Default 262144.
  initial_stream_window: 262144
  # Receive window for stream data of a whole connection, in bytes (at least 1024).
  # Default 16777216.
  connection_window: 16777216
  # Streams a peer may have open towards the gateway at once. Default 1024.
  max_concurrent_streams: 1024
  # Requests a peer may have in flight towards the gateway at once. Default 1024.
  max_inflight_requests: 1024
  # Acknowledged messages a peer may have awaiting acknowledgement at once. Default 1024.
  max_inflight_messages: 1024
  # Close a connection after this long without receiving anything, in milliseconds
  # (0: never). Default 60000.
  idle_timeout_ms: 60000
  # Send a PING after this long without receiving anything, in milliseconds
  # (0: no keepalive). Default 15000.
  keepalive_interval_ms: 15000
  # Close when nothing arrives this long after a keepalive PING, in milliseconds.
  # Default 10000.
  keepalive_timeout_ms: 10000
  # A connecting peer must complete its handshake within this time, in milliseconds.
  # Default 10000.
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
    /// YAML configuration file (see --print-config for every key and its default).
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
    #[arg(
        long,
        env = "TETHER_EDGEID_ALLOC",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub edgeid_alloc_when_no_idservice_on: Option<bool>,
    /// Graceful shutdown deadline in milliseconds [default: 30000].
    #[arg(long, env = "TETHER_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Print the default configuration (commented YAML) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Cli {
    /// The effective configuration: defaults, then the YAML file (if `--config`), then
    /// flags/env (flags and env override the file), then [`GatewayConfig::validate`].
    pub fn resolve(&self) -> Result<GatewayConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                GatewayConfig::from_yaml(&text).map_err(|e| match e {
                    ConfigError::Parse(msg) => {
                        ConfigError::Parse(format!("{}: {msg}", path.display()))
                    }
                    other => other,
                })?
            }
            None => GatewayConfig::default(),
        };
        if let Some(v) = self.service_listen {
            config.service_listen = v;
        }
        if let Some(v) = self.edge_listen {
            config.edge_listen = v;
        }
        if let Some(v) = self.hashby {
            config.hashby = v;
        }
        if let Some(v) = self.log_format {
            config.log_format = v;
        }
        if let Some(v) = self.edgeid_alloc_when_no_idservice_on {
            config.edgeid_alloc_when_no_idservice_on = v;
        }
        if let Some(v) = self.drain_timeout_ms {
            config.drain_timeout_ms = v;
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe() {
        for y in [
            "bogus: 1\n",
            "protocol:\n  bogus: 1\n",
            "hashby: sideways\n",
            "service_listen: nope\n",
            "protocol:\n  max_message_size: -1\n",
            "protocol:\n  max_message_size: hello\n",
            "hook_timeout_ms: 5000\nhook_timeout_ms: 3\n",
            "edgeid_alloc_when_no_idservice_on: yes\n",
            "protocol: 5\n",
            "- a\n",
            "a: [\n",
            "service_listen: 1.2.3.4\n",
            "hashby: EdgeId\n",
            "protocol: {max_message_size: x}\n",
            "service_listen:\n  \"1.2.3.4:999999\"\n",
            "protocol:\n  max_message_size: 99999999999999\n",
            "hashby: \"éé\"\nprotocol:\n  idle_timeout_ms: [1]\n",
            "protocol:\n\n  # c\n  max_concurrent_streams: 1.5\n",
            "---\nlog_format: json\n---\nlog_format: json\n",
            "hook_timeout_ms: 1_000\n", "", "# x\n", "---\n", "edgeid_alloc_when_no_idservice_on: on\n", "edgeid_alloc_when_no_idservice_on: 1\n",
            "hook_timeout_ms: 0x10\n",
            "hook_timeout_ms: ~\n",
            "protocol:\n",
            "protocol: ~\n",
        ] {
            let r: Result<GatewayConfig, _> = serde_saphyr::from_str(y);
            println!("{y:?} -> ok={}", r.is_ok()); if let Err(e) = r {
                println!(
                    "{y:?} => {:?} {:?}",
                    e.without_snippet().to_string(),
                    e.location().map(|l| (l.line(), l.column()))
                );
            }
        }
    }
}
