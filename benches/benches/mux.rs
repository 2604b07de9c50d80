//! Tether's stream multiplexer next to the raw transport and two yamux implementations.
//!
//! Everything runs in one multi-threaded tokio runtime with two workers, both endpoints in
//! this process. Implementations compared in each group:
//!
//! - `raw`: no multiplexer. Over TCP one 127.0.0.1 connection per stream (for N streams,
//!   N connections: the natural anchor); over `duplex` one `tokio::io::duplex` pipe per
//!   stream;
//! - `tether`: two `tether_tokio::Connection`s (default `Config`, default `DriverConfig`);
//! - `yamux`: libp2p's `yamux` 0.13 with its default `Config` (256 KiB initial stream
//!   window auto-tuned up to a 1 GiB connection budget, 16 KiB frames), bridged to tokio
//!   with `tokio_util::compat`; each side's `Connection` is driven by its own task;
//! - `tokio_yamux`: `tokio-yamux` with its default `Config` (a fixed 256 KiB stream window,
//!   no auto-tuning; keepalive on); each side's `Session` is driven by its own task.
//!
//! TCP sockets get `TCP_NODELAY` in every implementation (`tcp_transport` sets it for
//! Tether). Duplex links are `tokio::io::duplex(DUPLEX_CAPACITY)`.
//!
//! Groups (one per workload, the implementations side by side):
//!
//! - `mux_1_stream_{tcp,duplex}`: one stream carrying `TOTAL` bytes one way, the writer
//!   writing 64 KiB pieces, the reader reading into a 64 KiB buffer;
//! - `mux_{8,64}_streams_{tcp,duplex}`: N concurrent streams each carrying `TOTAL / N`
//!   (aggregate throughput). The spread of each implementation (slowest stream's throughput
//!   over the fastest's, i.e. first finish time over last finish time, every stream
//!   starting at the same instant) is collected over all timed iterations and printed
//!   after its benchmark.
//!
//! Each iteration first sets up its streams, untimed (open, then a one-byte exchange each
//! way so that both ends know the stream: yamux sends its SYN with the first data), then
//! times the transfer from the writers' start to the last reader's end of stream.
//!
//! `TOTAL` is 1 GiB. Each iteration is one transfer; with 10 samples (flat sampling, a
//! 5 s measurement target) the whole file runs in about 4 minutes on a 2-core machine.
//!
//! Finally `mux_idle_memory` (not a criterion benchmark: it measures once and prints) opens
//! `IDLE_STREAMS` streams on one connection, leaves them idle, and prints the heap bytes
//! per stream, both endpoints included (the opener's and the acceptor's state, the
//! application's stream handles), counted by the `stats_alloc` global allocator below.

#![allow(missing_docs)]

use std::alloc::System;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::task::Poll;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use proto_core::{ClientInfo, Config, ErrorCode, HandshakeAccept, OpenStream, Role};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tether_tokio::{Connection, DriverConfig, runtime, tcp_transport, transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes moved per iteration, split evenly over the streams.
const TOTAL: usize = 1024 * 1024 * 1024;
/// Size of every write and of the reader's buffer.
const CHUNK: usize = 64 * 1024;
/// Buffer of each `tokio::io::duplex` pipe.
const DUPLEX_CAPACITY: usize = 256 * 1024;
/// Streams held open for the idle-memory measurement.
const IDLE_STREAMS: usize = 10_000;

static DATA: [u8; CHUNK] = [0x5a; CHUNK];

/// The one runtime everything runs in.
static RT: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
});

/// A stream of any implementation, as tokio I/O.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type BoxIo = Box<dyn Io>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Impl {
    Raw,
    Tether,
    Yamux,
    TokioYamux,
}

const IMPLS: [Impl; 4] = [Impl::Raw, Impl::Tether, Impl::Yamux, Impl::TokioYamux];

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Raw => "raw",
            Impl::Tether => "tether",
            Impl::Yamux => "yamux",
            Impl::TokioYamux => "tokio_yamux",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Tcp,
    Duplex,
}

impl Link {
    fn name(self) -> &'static str {
        match self {
            Link::Tcp => "tcp",
            Link::Duplex => "duplex",
        }
    }
}

/// One end of the link a multiplexer runs over.
enum End {
    Tcp(TcpStream),
    Duplex(DuplexStream),
}

impl End {
    fn boxed(self) -> BoxIo {
        match self {
            End::Tcp(s) => Box::new(s),
            End::Duplex(s) => Box::new(s),
        }
    }
}

/// Two connected ends: (client, server).
async fn link_pair(link: Link) -> (End, End) {
    match link {
        Link::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let (client, (server, _)) = (client.expect("connect"), server.expect("accept"));
            client.set_nodelay(true).expect("nodelay");
            server.set_nodelay(true).expect("nodelay");
            (End::Tcp(client), End::Tcp(server))
        }
        Link::Duplex => {
            let (client, server) = tokio::io::duplex(DUPLEX_CAPACITY);
            (End::Duplex(client), End::Duplex(server))
        }
    }
}

/// How the client side opens a stream.
enum Opener {
    RawTcp(SocketAddr),
    /// Sends the server half of each new pipe to the acceptor.
    RawDuplex(mpsc::UnboundedSender<BoxIo>),
    Tether(Connection),
    /// Asks the task driving the client `yamux::Connection` for a stream.
    Yamux(mpsc::UnboundedSender<oneshot::Sender<yamux::Stream>>),
    TokioYamux(tokio_yamux::Control),
}

/// One implementation set up over one link: open streams with `open`, take the server
/// ends from `accepted` (in opening order).
struct Setup {
    opener: Opener,
    accepted: mpsc::UnboundedReceiver<BoxIo>,
    tasks: Vec<JoinHandle<()>>,
    /// Tether: the server side, kept so it can be closed.
    tether_server: Option<Connection>,
}

/// Tether's configuration: the default, or one that allows `IDLE_STREAMS` streams.
fn tether_config(many_streams: bool) -> Config {
    let mut config = Config::default();
    if many_streams {
        config.settings.max_concurrent_streams = 2 * IDLE_STREAMS as u32;
        config.max_pending_accept = 2 * IDLE_STREAMS as u32;
    }
    config.validate().expect("valid config");
    config
}

/// yamux's configuration: the default, or one that allows `IDLE_STREAMS` streams (which
/// needs the connection receive window uncapped: it must be >= 256 KiB per stream).
fn yamux_config(many_streams: bool) -> yamux::Config {
    let mut config = yamux::Config::default();
    if many_streams {
        config.set_max_connection_receive_window(None);
        config.set_max_num_streams(2 * IDLE_STREAMS);
    }
    config
}

/// Drives one `yamux::Connection`: serves open requests, forwards inbound streams.
async fn drive_yamux<T>(
    mut conn: yamux::Connection<T>,
    mut opens: mpsc::UnboundedReceiver<oneshot::Sender<yamux::Stream>>,
    inbound: mpsc::UnboundedSender<BoxIo>,
) where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let mut waiting: Vec<oneshot::Sender<yamux::Stream>> = Vec::new();
    let mut opens_open = true;
    poll_fn(|cx| {
        loop {
            while opens_open {
                match opens.poll_next_unpin(cx) {
                    Poll::Ready(Some(tx)) => waiting.push(tx),
                    Poll::Ready(None) => opens_open = false,
                    Poll::Pending => break,
                }
            }
            while !waiting.is_empty() {
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(Ok(stream)) => {
                        let _ = waiting.remove(0).send(stream);
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    let _ = inbound.unbounded_send(Box::new(stream.compat()));
                }
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

async fn setup(imp: Impl, link: Link, many_streams: bool) -> Setup {
    let (accepted_tx, accepted) = mpsc::unbounded::<BoxIo>();
    let mut tasks = Vec::new();
    let mut tether_server = None;
    let opener = match (imp, link) {
        (Impl::Raw, Link::Tcp) => {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tasks.push(tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    socket.set_nodelay(true).expect("nodelay");
                    let _ = accepted_tx.unbounded_send(Box::new(socket));
                }
            }));
            Opener::RawTcp(addr)
        }
        (Impl::Raw, Link::Duplex) => Opener::RawDuplex(accepted_tx),
        (Impl::Tether, _) => {
            let (client_end, server_end) = link_pair(link).await;
            let to_transport = |end| match end {
                End::Tcp(s) => tcp_transport(s),
                End::Duplex(s) => transport(s),
            };
            let (client_t, server_t) = (to_transport(client_end), to_transport(server_end));
            let config = tether_config(many_streams);
            let server_config = config.clone();
            let server = tokio::spawn(async move {
                let hs =
                    Connection::accept(runtime(), server_t, server_config, DriverConfig::default())
                        .await
                        .expect("server handshake");
                hs.accept(HandshakeAccept::default()).expect("accept")
            });
            let client = Connection::connect(
                runtime(),
                client_t,
                config,
                ClientInfo::new(Role::Service),
                DriverConfig::default(),
            )
            .await
            .expect("client handshake");
            let server = server.await.expect("server task");
            let acceptor = server.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(stream) = acceptor.accept_stream().await {
                    let _ = accepted_tx.unbounded_send(Box::new(stream));
                }
            }));
            tether_server = Some(server);
            Opener::Tether(client)
        }
        (Impl::Yamux, _) => {
            let (client_end, server_end) = link_pair(link).await;
            let config = yamux_config(many_streams);
            let client = yamux::Connection::new(
                client_end.boxed().compat(),
                config.clone(),
                yamux::Mode::Client,
            );
            let server =
                yamux::Connection::new(server_end.boxed().compat(), config, yamux::Mode::Server);
            let (opens_tx, opens) = mpsc::unbounded();
            // The client never sees inbound streams; the server is never asked to open.
            let (client_inbound, _) = mpsc::unbounded();
            let (_, no_opens) = mpsc::unbounded();
            tasks.push(tokio::spawn(drive_yamux(client, opens, client_inbound)));
            tasks.push(tokio::spawn(drive_yamux(server, no_opens, accepted_tx)));
            Opener::Yamux(opens_tx)
        }
        (Impl::TokioYamux, _) => {
            let (client_end, server_end) = link_pair(link).await;
            let config = tokio_yamux::Config::default();
            let mut client = tokio_yamux::Session::new_client(client_end.boxed(), config);
            let mut server = tokio_yamux::Session::new_server(server_end.boxed(), config);
            let control = client.control();
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(_)) = client.next().await {}
            }));
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(stream)) = server.next().await {
                    let _ = accepted_tx.unbounded_send(Box::new(stream));
                }
            }));
            Opener::TokioYamux(control)
        }
    };
    Setup {
        opener,
        accepted,
        tasks,
        tether_server,
    }
}

impl Setup {
    async fn open(&self) -> BoxIo {
        match &self.opener {
            Opener::RawTcp(addr) => {
                let socket = TcpStream::connect(addr).await.expect("connect");
                socket.set_nodelay(true).expect("nodelay");
                Box::new(socket)
            }
            Opener::RawDuplex(to_server) => {
                let (client, server) = tokio::io::duplex(DUPLEX_CAPACITY);
                to_server
                    .unbounded_send(Box::new(server))
                    .expect("acceptor");
                Box::new(client)
            }
            Opener::Tether(conn) => {
                let (stream, _) = conn
                    .open_stream(OpenStream::default(), None)
                    .await
                    .expect("open");
                Box::new(stream)
            }
            Opener::Yamux(driver) => {
                let (tx, rx) = oneshot::channel();
                driver.unbounded_send(tx).expect("yamux driver");
                Box::new(rx.await.expect("yamux open").compat())
            }
            Opener::TokioYamux(control) => Box::new(
                control
                    .clone()
                    .open_stream()
                    .await
                    .expect("tokio-yamux open"),
            ),
        }
    }

    /// Opens `n` streams one after the other, each confirmed by a one-byte exchange each
    /// way. Returns (client end, server end) pairs.
    async fn streams(&mut self, n: usize) -> Vec<(BoxIo, BoxIo)> {
        let mut pairs = Vec::with_capacity(n);
        let mut byte = [0u8; 1];
        for _ in 0..n {
            let mut client = self.open().await;
            client.write_all(&[1]).await.expect("hello");
            let mut server = self.accepted.next().await.expect("accepted stream");
            server.read_exact(&mut byte).await.expect("hello");
            server.write_all(&[2]).await.expect("hello back");
            client.read_exact(&mut byte).await.expect("hello back");
            pairs.push((client, server));
        }
        pairs
    }

    async fn close(self) {
        if let Opener::Tether(client) = &self.opener {
            client.close(ErrorCode::OK, "done");
            let _ = tokio::time::timeout(Duration::from_secs(2), client.closed()).await;
        }
        if let Some(server) = &self.tether_server {
            server.close(ErrorCode::OK, "done");
        }
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Writes `bytes` in `CHUNK` pieces and sends FIN while reading the other direction to the
/// peer's FIN. The read runs concurrently, not after the writes: a tokio-yamux stream only
/// takes in the window updates its peer sends while it is being read (a stream that only
/// writes stalls once its 256 KiB send window is spent), so the writer keeps a read
/// pending, as that library's users do. Same code for every implementation.
async fn write_side(stream: BoxIo, bytes: usize) -> io::Result<()> {
    let (mut rx, mut tx) = tokio::io::split(stream);
    let write = async move {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK);
            tx.write_all(&DATA[..n]).await?;
            left -= n;
        }
        tx.shutdown().await
    };
    let read = async move {
        let mut rest = Vec::new();
        rx.read_to_end(&mut rest).await
    };
    let (wrote, read) = tokio::join!(write, read);
    wrote?;
    read?;
    Ok(())
}

/// Reads to the end of stream; returns when it got there (from `start`), then sends FIN.
async fn read_side(mut stream: BoxIo, bytes: usize, start: Instant) -> io::Result<Duration> {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let done = start.elapsed();
    assert_eq!(got, bytes, "a stream lost bytes");
    stream.shutdown().await?;
    Ok(done)
}

/// Moves `TOTAL / pairs.len()` over every pair at once. Returns the time until the last
/// reader saw its end of stream, and each reader's finish time.
async fn transfer(pairs: Vec<(BoxIo, BoxIo)>) -> (Duration, Vec<Duration>) {
    let per_stream = TOTAL / pairs.len();
    let start = Instant::now();
    let mut writers = Vec::with_capacity(pairs.len());
    let mut readers = Vec::with_capacity(pairs.len());
    for (client, server) in pairs {
        writers.push(tokio::spawn(write_side(client, per_stream)));
        readers.push(tokio::spawn(read_side(server, per_stream, start)));
    }
    let mut finishes = Vec::with_capacity(readers.len());
    for reader in readers {
        finishes.push(reader.await.expect("reader task").expect("read"));
    }
    let elapsed = start.elapsed();
    for writer in writers {
        writer.await.expect("writer task").expect("write");
    }
    (elapsed, finishes)
}

fn bench_workload(c: &mut Criterion, link: Link, streams: usize) {
    let rt = &*RT;
    let group_name = if streams == 1 {
        format!("mux_1_stream_{}", link.name())
    } else {
        format!("mux_{streams}_streams_{}", link.name())
    };
    let mut group = c.benchmark_group(&group_name);
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes((TOTAL / streams * streams) as u64));
    for imp in IMPLS {
        let setup = RefCell::new(rt.block_on(setup(imp, link, false)));
        let spreads = RefCell::new(Vec::new());
        group.bench_function(imp.name(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let pairs = rt.block_on(setup.borrow_mut().streams(streams));
                    let (elapsed, finishes) = rt.block_on(transfer(pairs));
                    total += elapsed;
                    let first = finishes.iter().min().expect("a stream");
                    let last = finishes.iter().max().expect("a stream");
                    spreads
                        .borrow_mut()
                        .push(first.as_secs_f64() / last.as_secs_f64());
                }
                total
            })
        });
        rt.block_on(setup.into_inner().close());
        // Empty when a filter skipped this benchmark.
        if streams > 1 && !spreads.borrow().is_empty() {
            let mut spreads = spreads.into_inner();
            spreads.sort_by(f64::total_cmp);
            eprintln!(
                "{group_name}/{}: spread (slowest / fastest stream throughput) over {} \
                 transfers: median {:.3}, worst {:.3}",
                imp.name(),
                spreads.len(),
                spreads[spreads.len() / 2],
                spreads[0],
            );
        }
    }
    group.finish();
}

fn one_stream(c: &mut Criterion) {
    bench_workload(c, Link::Tcp, 1);
    bench_workload(c, Link::Duplex, 1);
}

fn many_streams(c: &mut Criterion) {
    bench_workload(c, Link::Tcp, 8);
    bench_workload(c, Link::Tcp, 64);
    bench_workload(c, Link::Duplex, 8);
    bench_workload(c, Link::Duplex, 64);
}

/// Heap bytes (net: allocated + reallocated - freed) since `region` began.
fn net_bytes(region: &Region<'_, System>) -> isize {
    let change = region.change();
    change.bytes_allocated as isize - change.bytes_deallocated as isize + change.bytes_reallocated
}

/// Heap per idle stream with `IDLE_STREAMS` open on one TCP connection, both ends in this
/// process and both counted. Not a criterion benchmark: it measures once and prints.
fn idle_memory(_: &mut Criterion) {
    let rt = &*RT;
    for imp in [Impl::Tether, Impl::Yamux, Impl::TokioYamux] {
        let mut setup = rt.block_on(setup(imp, Link::Tcp, true));
        // One stream opened and dropped first, so that lazily built per-connection state
        // is not counted against the idle streams.
        rt.block_on(async {
            let warm = setup.streams(1).await;
            drop(warm);
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        let region = Region::new(GLOBAL);
        let streams = rt.block_on(async {
            let streams = setup.streams(IDLE_STREAMS).await;
            // Let the drivers write out and process whatever the opens left pending.
            tokio::time::sleep(Duration::from_millis(300)).await;
            streams
        });
        let held = net_bytes(&region);
        drop(streams);
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
        let after_drop = net_bytes(&region);
        eprintln!(
            "mux_idle_memory/{}: {IDLE_STREAMS} idle streams on one TCP connection: {} B per \
             stream (both ends and the application's handles); {} B per stream still held \
             300 ms after dropping them all",
            imp.name(),
            held / IDLE_STREAMS as isize,
            after_drop / IDLE_STREAMS as isize,
        );
        rt.block_on(setup.close());
    }
}

criterion_group!(benches, one_stream, many_streams, idle_memory);
criterion_main!(benches);
