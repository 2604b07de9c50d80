//! The driver against a peer that stops reading: writes stall, memory stays bounded by the
//! windows, and after `write_stall_timeout` the connection closes with `WRITE_STALL`.

mod support;

use std::time::Duration;

use bytes::Bytes;
use proto_core::name::Name;
use proto_core::transmit::TransmitBuf;
use proto_core::{
    Call, ClientInfo, Config, ConnectionError, ErrorCode, Event, HandshakeAccept, Role, Timestamp,
};
use support::within;
use tether_tokio::{Connection, DriverConfig, runtime, transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Plays a server by hand over `io` until the client is connected, then returns without
/// ever reading again (the bytes the client sends later pile up in the pipe).
async fn handshake_then_stop_reading(io: &mut DuplexStream) {
    let mut core = proto_core::Connection::server(Config::default(), Timestamp::ZERO).unwrap();
    let (mut buf, mut out) = (vec![0u8; 16 * 1024], TransmitBuf::new());
    loop {
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client hung up during the handshake");
        let _ = core.handle_input(Timestamp::ZERO, &buf[..n]);
        while let Some(event) = core.poll_event() {
            if let Event::HandshakeRequest(_) = event {
                core.accept_handshake(Timestamp::ZERO, HandshakeAccept::default())
                    .unwrap();
            }
        }
        let _ = core.poll_transmit(Timestamp::ZERO, &mut out);
        let mut wire = Vec::new();
        out.drain_into(&mut wire);
        io.write_all(&wire).await.unwrap();
        if core.is_connected() {
            return;
        }
    }
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_cut_off_with_write_stall() {
    // A 64 KiB pipe: the client's writes block as soon as it is full.
    let (near, mut far) = tokio::io::duplex(64 * 1024);
    let peer = tokio::spawn(async move {
        handshake_then_stop_reading(&mut far).await;
        far // kept open, never read
    });
    let driver = DriverConfig {
        write_stall_timeout: Duration::from_millis(300),
        ..DriverConfig::default()
    };
    let client = within(
        "handshake",
        Connection::connect(
            runtime(),
            transport(near),
            Config::default(),
            ClientInfo::new(Role::Edge),
            driver,
        ),
    )
    .await
    .unwrap();
    let _far = peer.await.unwrap();
    // A call whose 200 KB body cannot fit in the 64 KiB pipe: the driver's writes stall.
    let pending = tokio::spawn({
        let client = client.clone();
        async move {
            let mut call = Call::new(
                Name::from_static("x").unwrap(),
                Bytes::from(vec![0u8; 200_000]),
            );
            call.timeout = Some(Duration::from_secs(30));
            client.call(call).await
        }
    });
    let why = within("stall detection", client.closed()).await;
    assert_eq!(why.code(), ErrorCode::WRITE_STALL, "{why:?}");
    assert!(
        matches!(why, ConnectionError::LocallyClosed { .. }),
        "{why:?}"
    );
    // The call in flight fails instead of waiting for its 30 s timeout.
    let failed = within("pending call", pending).await.unwrap().unwrap_err();
    assert_eq!(failed.code(), ErrorCode::WRITE_STALL, "{failed:?}");
}
