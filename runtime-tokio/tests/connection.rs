//! The low-level `Connection` over an in-memory duplex: handshake, RPC, messages, streams.

use bytes::Bytes;
use proto_core::name::Name;
use proto_core::{Call, ClientInfo, Config, ErrorCode, HandshakeAccept, Publish, Role};
use tether_tokio::{Connection, DriverConfig, Error, runtime, transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn pair() -> (Connection, Connection) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let hs = Connection::accept(
            runtime(),
            transport(b),
            Config::default(),
            DriverConfig::default(),
        )
        .await
        .unwrap();
        hs.accept(HandshakeAccept {
            assigned_id: 7,
            ..Default::default()
        })
        .unwrap()
    });
    let client = Connection::connect(
        runtime(),
        transport(a),
        Config::default(),
        ClientInfo::new(Role::Edge),
        DriverConfig::default(),
    )
    .await
    .unwrap();
    (client, server.await.unwrap())
}

#[tokio::test]
async fn call_respond_publish_and_stream() {
    let (client, server) = pair().await;
    assert_eq!(client.assigned_id(), 7);
    let s2 = server.clone();
    tokio::spawn(async move {
        while let Some(req) = s2.next_request().await {
            let body = req.body().clone();
            if req.method() == "fail" {
                req.respond(Err(Error::application("nope")));
            } else {
                req.respond(Ok(body));
            }
        }
    });
    let answer = client
        .call(Call::new(
            Name::new("echo").unwrap(),
            Bytes::from_static(b"hi"),
        ))
        .await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"hi"));
    let failed = client
        .call(Call::new(Name::new("fail").unwrap(), Bytes::new()))
        .await;
    assert_eq!(failed, Err(Error::Application("nope".into())));

    let s3 = server.clone();
    tokio::spawn(async move {
        while let Some(msg) = s3.next_message().await {
            if msg.body().is_empty() {
                drop(msg)
            } else {
                msg.done()
            }
        }
    });
    client
        .publish(Publish::new(
            Name::new("t").unwrap(),
            Bytes::from_static(b"x"),
        ))
        .await
        .unwrap();
    let dropped = client
        .publish(Publish::new(Name::new("t").unwrap(), Bytes::new()))
        .await;
    assert_eq!(dropped.unwrap_err().code(), ErrorCode::INTERNAL);

    let s4 = server.clone();
    tokio::spawn(async move {
        while let Some(mut stream) = s4.accept_stream().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                stream.read_to_end(&mut buf).await.unwrap();
                stream.write_all(&buf).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
    });
    let (mut stream, _) = client.open_stream(Default::default(), None).await.unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let writer = {
        let data = data.clone();
        async move {
            stream.write_all(&data).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut back = Vec::new();
            stream.read_to_end(&mut back).await.unwrap();
            back
        }
    };
    let back = tokio::time::timeout(std::time::Duration::from_secs(30), writer)
        .await
        .unwrap();
    assert_eq!(back, data);
    client.close(ErrorCode::OK, "bye");
    let why = server.closed().await;
    assert_eq!(why.code(), ErrorCode::OK);
}
