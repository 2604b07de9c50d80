//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

/// Load generator for the Tether gateway: runs one scenario against a running gateway
/// (or one it starts with `--gateway-bin`) and prints one JSON object on stdout.
#[derive(Debug, Parser)]
#[command(name = "tether-bench", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Scenario {
    /// Echo RPC (calls/s and latency percentiles).
    Rpc(RpcArgs),
    /// Edge → service acknowledged messages with a window, or fire-and-forget.
    Publish(PublishArgs),
    /// Bulk bytes service → edge on N streams, or stream opens per second (`--opens`).
    Stream(StreamArgs),
    /// N idle edges with keepalive: connect rate, gateway RSS per edge and idle CPU.
    Idle(IdleArgs),
    /// RPC latency with and without a saturating bulk stream on the same edge connection.
    Interference(InterferenceArgs),
}

/// Options every scenario takes.
#[derive(Debug, Args, Clone)]
pub(crate) struct Common {
    /// The gateway's service listener (with `--gateway-bin`: where the started gateway
    /// listens; a free loopback port if not given).
    #[arg(long, required_unless_present = "gateway_bin")]
    pub(crate) service_addr: Option<String>,
    /// The gateway's edge listener (with `--gateway-bin`: as `--service-addr`).
    #[arg(long, required_unless_present = "gateway_bin")]
    pub(crate) edge_addr: Option<String>,
    /// Start this tether-gateway binary for the run (and stop it after) instead of using
    /// a running gateway; needed by every transport but tcp.
    #[arg(long, value_name = "PATH")]
    pub(crate) gateway_bin: Option<PathBuf>,
    /// How the bench's services and edges reach the gateway. tls and wss: tether-bench
    /// makes a throwaway CA and a certificate for `localhost` and starts the gateway
    /// (`--gateway-bin`) with TLS on both listeners; ws and wss: with WebSocket on both.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub(crate) transport: Transport,
    /// Measured seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub(crate) duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub(crate) warmup: u64,
    /// Run the same workload against NATS (rpc and publish) and report the ratio.
    #[arg(long)]
    pub(crate) anchor: bool,
    /// The NATS server for `--anchor`.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub(crate) nats_url: String,
    /// The gateway's process id, to read its memory and CPU time from /proc (idle).
    #[arg(long)]
    pub(crate) gateway_pid: Option<u32>,
}

impl Common {
    pub(crate) fn duration(&self) -> Duration {
        Duration::from_secs(self.duration)
    }

    pub(crate) fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup)
    }

    /// The parameters every report carries.
    pub(crate) fn params(&self, scenario: &str) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("scenario".into(), json!(scenario));
        map.insert("duration_secs".into(), json!(self.duration));
        map.insert("warmup_secs".into(), json!(self.warmup));
        map.insert("transport".into(), json!(self.transport.as_str()));
        let gateway = if self.gateway_bin.is_some() {
            "started"
        } else {
            "external"
        };
        map.insert("gateway".into(), json!(gateway));
        map
    }
}

/// The transport between the bench's clients and the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket over TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl Transport {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    pub(crate) fn uses_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    pub(crate) fn is_websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }
}

/// Who calls whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Direction {
    /// The service calls the edges.
    ServiceToEdge,
    /// The edges call the service.
    EdgeToService,
}

impl Direction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::ServiceToEdge => "service-to-edge",
            Direction::EdgeToService => "edge-to-service",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct RpcArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Who calls whom.
    #[arg(long, value_enum, default_value_t = Direction::EdgeToService)]
    pub(crate) direction: Direction,
    /// Request (and echoed response) body size in bytes.
    #[arg(long, default_value_t = 64)]
    pub(crate) payload: usize,
    /// Calls in flight (one task each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) concurrency: u64,
    /// Edge clients the calls are spread over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub(crate) connections: u64,
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 64)]
    pub(crate) payload: usize,
    /// Messages awaiting their acknowledgement at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) window: u64,
    /// Send without acknowledgements; the rate is what the service received.
    #[arg(long)]
    pub(crate) fire_and_forget: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StreamArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Concurrent streams.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub(crate) streams: u64,
    /// MiB per round, split over the streams; rounds repeat for the duration.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub(crate) payload_mib: u64,
    /// Measure stream opens per second instead (open, write 1 byte, close; 64 at once).
    #[arg(long)]
    pub(crate) opens: bool,
    /// Opens in flight with `--opens`.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub(crate) concurrency: u64,
}

#[derive(Debug, Args)]
pub(crate) struct IdleArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Idle edges to connect.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) edges: u64,
    /// Bound on the connect phase, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub(crate) connect_timeout: u64,
    /// Connection attempts in flight during the connect phase.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub(crate) connect_concurrency: u64,
    /// Client sockets per loopback source address (127.0.0.1, .2, ...).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub(crate) per_source_addr: u64,
}

#[derive(Debug, Args)]
pub(crate) struct InterferenceArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// RPC body size in bytes.
    #[arg(long, default_value_t = 64)]
    pub(crate) payload: usize,
}
