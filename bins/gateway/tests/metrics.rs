//! `/metrics` of the real gateway process after a scripted workload: the expected series
//! with their values, and no label value that names an edge, a method or an address.

mod support;

use std::collections::BTreeSet;

use bytes::Bytes;
use proto_core::ErrorCode;
use support::*;
use tether_tokio::{ConnectExt, Edge, Error, Service};
use tokio::io::AsyncReadExt;

/// The value of the series `name{labels}` (exact text before the value).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// Every label value in the exposition.
fn label_values(text: &str) -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        let labels = labels.split_once('}').unwrap().0;
        for pair in labels.split(',') {
            let (_, v) = pair.split_once('=').unwrap();
            values.insert(v.trim_matches('"').to_owned());
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_workload_with_bounded_labels() {
    let mut gw = GatewayProcess::start(&[]).await;
    let service = Service::builder("calc")
        .method("add", |req| async move { Ok(req.body) })
        .method("fail", |_| async move {
            Err(Error::Status {
                code: ErrorCode::APPLICATION_ERROR,
                text: String::from("no"),
            })
        })
        .topic("events")
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder().edge_id(31).connect(gw.edge_addr).unwrap();
    let victim = Edge::builder()
        .edge_id(32)
        .reconnect(false)
        .connect(gw.edge_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    within("victim up", victim.wait_connected()).await.unwrap();
    gw.joined(&["calc"], &[31, 32]).await;

    // Calls: 3 ok, 2 application errors, 1 unknown method; one towards an absent edge.
    for _ in 0..3 {
        within("add", edge.call("add", Bytes::from_static(b"1")))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        assert!(
            within("fail", edge.call("fail", Bytes::new()))
                .await
                .is_err()
        );
    }
    assert!(
        within("nope", edge.call("nope", Bytes::new()))
            .await
            .is_err()
    );
    assert!(
        within("absent", service.call(99, "x", Bytes::new()))
            .await
            .is_err()
    );

    // Messages: 2 taken, 1 for a topic nobody takes.
    let consume = async {
        for _ in 0..2 {
            service.receive().await.expect("a message").done();
        }
    };
    let publish = async {
        edge.publish("events", Bytes::from_static(b"e1"))
            .await
            .unwrap();
        edge.publish("events", Bytes::from_static(b"e2"))
            .await
            .unwrap();
    };
    within("messages", async { tokio::join!(consume, publish) }).await;
    assert!(
        within("no topic", edge.publish("ghost", Bytes::new()))
            .await
            .is_err()
    );

    // A stream: 5 bytes to the service, 3 back.
    let service_side = async {
        let mut stream = service.accept_stream().await.expect("a stream");
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        stream
            .write_all_bytes(Bytes::from_static(b"bye"))
            .await
            .unwrap();
        stream.finish().unwrap();
    };
    let edge_side = async {
        let mut stream = edge.open_stream("calc", Bytes::new()).await.unwrap();
        stream
            .write_all_bytes(Bytes::from_static(b"hello"))
            .await
            .unwrap();
        stream.finish().unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
    };
    within("stream", async { tokio::join!(service_side, edge_side) }).await;

    // A kick, and a rejected handshake (an edge on the service port).
    let session = victim.connection().unwrap();
    let kicked = control(gw.control_addr, "DELETE", "/v1/edges/32", None).await;
    assert_eq!(kicked.status, 204);
    within("kicked", session.closed()).await;
    // The kicked session leaves the table once its connection has ended.
    gw.log_line("disconnected role=\"edge\" id=32").await;
    let wrong = Edge::builder()
        .reconnect(false)
        .connect(gw.service_addr)
        .unwrap();
    assert!(within("refused", wrong.wait_connected()).await.is_err());
    gw.log_line("this port is for services").await;

    let answer = control(gw.control_addr, "GET", "/metrics", None).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics")
    );
    let text = answer.body;
    let expect = [
        ("tether_connections{role=\"service\"}", 1.0),
        ("tether_connections{role=\"edge\"}", 1.0),
        (
            "tether_handshakes_total{role=\"service\",result=\"accepted\"}",
            1.0,
        ),
        (
            "tether_handshakes_total{role=\"edge\",result=\"accepted\"}",
            2.0,
        ),
        (
            "tether_handshakes_total{role=\"service\",result=\"rejected\"}",
            1.0,
        ),
        (
            "tether_handshakes_total{role=\"edge\",result=\"timeout\"}",
            0.0,
        ),
        (
            "tether_rpcs_total{direction=\"to_service\",outcome=\"ok\"}",
            3.0,
        ),
        (
            "tether_rpcs_total{direction=\"to_service\",outcome=\"APPLICATION_ERROR\"}",
            2.0,
        ),
        (
            "tether_rpcs_total{direction=\"to_service\",outcome=\"METHOD_NOT_FOUND\"}",
            1.0,
        ),
        (
            "tether_rpcs_total{direction=\"to_edge\",outcome=\"EDGE_NOT_ONLINE\"}",
            1.0,
        ),
        (
            "tether_rpcs_total{direction=\"to_edge\",outcome=\"ok\"}",
            0.0,
        ),
        (
            "tether_rpc_duration_seconds_count{direction=\"to_service\"}",
            6.0,
        ),
        (
            "tether_messages_total{direction=\"to_service\",outcome=\"ok\"}",
            2.0,
        ),
        (
            "tether_messages_total{direction=\"to_service\",outcome=\"TOPIC_NOT_FOUND\"}",
            1.0,
        ),
        (
            "tether_message_duration_seconds_count{direction=\"to_service\"}",
            3.0,
        ),
        ("tether_streams_relayed_total", 1.0),
        ("tether_streams_open", 0.0),
        ("tether_relayed_bytes_total{direction=\"to_service\"}", 5.0),
        ("tether_relayed_bytes_total{direction=\"to_edge\"}", 3.0),
        ("tether_kicks_total{role=\"edge\"}", 1.0),
        ("tether_kicks_total{role=\"service\"}", 0.0),
        ("tether_goaways_sent_total{role=\"edge\"}", 0.0),
    ];
    for (series, wanted) in expect {
        assert_eq!(value(&text, series), wanted, "{series}");
    }
    assert!(text.contains("# TYPE tether_rpc_duration_seconds histogram"));
    assert!(text.ends_with("# EOF\n"));

    // Bounded labels only: never an id, a method, a topic, a service name or an address.
    let values = label_values(&text);
    for forbidden in [
        "31", "32", "99", "add", "fail", "nope", "events", "ghost", "calc",
    ] {
        assert!(
            !values.contains(forbidden),
            "label value {forbidden:?} in\n{text}"
        );
    }
    let codes: Vec<&str> = ErrorCode::ALL.iter().filter_map(|c| c.name()).collect();
    let fixed = [
        "service",
        "edge",
        "to_service",
        "to_edge",
        "ok",
        "UNKNOWN",
        "accepted",
        "rejected",
        "unauthorized",
        "identity_mismatch",
        "tls_failed",
        "timeout",
        "overloaded",
        "protocol_error",
        "abandoned",
        "+Inf",
    ];
    for value in &values {
        let bucket = value.parse::<f64>().is_ok();
        assert!(
            bucket || fixed.contains(&value.as_str()) || codes.contains(&value.as_str()),
            "unexpected label value {value:?}"
        );
    }
}
