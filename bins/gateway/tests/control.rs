//! The control plane of the real gateway process: authentication, validation, listing
//! with filters and paging, kicks as the SDK sees them, the loopback rule, the `ctl`
//! subcommand and the committed OpenAPI document.

mod support;

use proto_core::ErrorCode;
use serde_json::{Value, json};
use support::*;
use tether_tokio::{ConnectExt, Edge, Service};

/// Every guarded route, with a method.
const GUARDED: &[(&str, &str)] = &[
    ("GET", "/v1/edges"),
    ("GET", "/v1/edges/1"),
    ("GET", "/v1/edges/1/methods"),
    ("DELETE", "/v1/edges/1"),
    ("GET", "/v1/services"),
    ("GET", "/v1/services/1"),
    ("DELETE", "/v1/services/1"),
    ("GET", "/v1/services/methods"),
    ("GET", "/v1/services/topics"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_route_but_the_probes_needs_it() {
    let env = [("TETHER_CONTROL_TOKEN", "s3cret")];
    let mut gw = GatewayProcess::start_with_env(&[], &env).await;
    gw.log_line("the control plane requires a bearer token")
        .await;
    let addr = gw.control_addr;
    for &(method, path) in GUARDED {
        for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret!")] {
            let answer = control(addr, method, path, token).await;
            assert_eq!(answer.status, 401, "{method} {path} with {token:?}");
            assert_eq!(answer.headers["www-authenticate"], "Bearer");
            assert_eq!(answer.json()["code"], "unauthorized");
        }
        let answer = control(addr, method, path, Some("s3cret")).await;
        assert!(
            [200, 204, 404].contains(&answer.status),
            "{method} {path}: {answer:?}"
        );
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(control(addr, "GET", path, None).await.status, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_routes_answer_and_bad_input_is_400() {
    let mut gw = GatewayProcess::start(&[]).await;
    gw.log_line("the control plane requires no token").await;
    let addr = gw.control_addr;
    for &(method, path) in GUARDED {
        let answer = control(addr, method, path, None).await;
        assert!(
            [200, 204, 404].contains(&answer.status),
            "{method} {path}: {answer:?}"
        );
    }
    assert_eq!(
        control(addr, "GET", "/healthz", None).await.json(),
        json!({"status": "ok"})
    );
    assert_eq!(
        control(addr, "GET", "/readyz", None).await.json(),
        json!({"status": "ready"})
    );
    for id in ["abc", "0", "-1", "1.5", "18446744073709551616"] {
        for (method, path) in [
            ("GET", format!("/v1/edges/{id}")),
            ("GET", format!("/v1/edges/{id}/methods")),
            ("DELETE", format!("/v1/edges/{id}")),
            ("GET", format!("/v1/services/{id}")),
            ("DELETE", format!("/v1/services/{id}")),
        ] {
            let answer = control(addr, method, &path, None).await;
            assert_eq!(answer.status, 400, "{method} {path}");
            assert_eq!(answer.json()["code"], "bad_id", "{method} {path}");
            assert!(answer.json()["error"].as_str().unwrap().contains(id));
        }
    }
    for (query, code) in [
        ("page_size=0", "bad_page_size"),
        ("page_size=1001", "bad_page_size"),
        ("page_size=x", "bad_query"),
        ("page_token=nope", "bad_page_token"),
    ] {
        for list in ["/v1/edges", "/v1/services"] {
            let answer = control(addr, "GET", &format!("{list}?{query}"), None).await;
            assert_eq!(answer.status, 400, "{list}?{query}");
            assert_eq!(answer.json()["code"], code, "{list}?{query}");
        }
    }
    let answer = control(addr, "GET", "/v1/edges?page_size=1000", None).await;
    assert_eq!(answer.status, 200);
    for path in ["/v1/edges/77", "/v1/edges/77/methods", "/v1/services/77"] {
        let answer = control(addr, "GET", path, None).await;
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.json()["code"], "not_found");
    }
}

fn ids(page: &Value) -> Vec<u64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_and_page_with_real_counts() {
    let mut gw = GatewayProcess::start(&[]).await;
    let ok = |req: tether_tokio::CallRequest| async move { Ok(req.body) };
    let alpha1 = Service::builder("alpha")
        .method("m1", ok)
        .topic("t1")
        .connect(gw.service_addr)
        .unwrap();
    let alpha2 = Service::builder("alpha")
        .method("m1", ok)
        .method("m2", ok)
        .connect(gw.service_addr)
        .unwrap();
    let beta = Service::builder("beta")
        .topic("t1")
        .topic("t2")
        .connect(gw.service_addr)
        .unwrap();
    let mut edges = Vec::new();
    for id in 11..=15u64 {
        let rack = if id <= 13 { "rack=a" } else { "rack=b" };
        let mut builder = Edge::builder().edge_id(id).metadata(rack);
        if id <= 12 {
            builder = builder.method("reboot", ok);
        }
        edges.push(builder.connect(gw.edge_addr).unwrap());
    }
    for s in [&alpha1, &alpha2, &beta] {
        within("service up", s.wait_connected()).await.unwrap();
    }
    for e in &edges {
        within("edge up", e.wait_connected()).await.unwrap();
    }
    gw.joined(&["alpha", "alpha", "beta"], &[11, 12, 13, 14, 15])
        .await;
    let addr = gw.control_addr;
    let get = |path: &'static str| async move {
        let answer = control(addr, "GET", path, None).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        answer.json()
    };

    let all = get("/v1/edges").await;
    assert_eq!(
        (ids(&all), &all["total"]),
        (vec![11, 12, 13, 14, 15], &json!(5))
    );
    assert_eq!(all["next_page_token"], Value::Null);
    let rack_a = get("/v1/edges?meta=rack%3Da").await;
    assert_eq!(
        (ids(&rack_a), &rack_a["total"]),
        (vec![11, 12, 13], &json!(3))
    );
    let reboot = get("/v1/edges?method=reboot").await;
    assert_eq!((ids(&reboot), &reboot["total"]), (vec![11, 12], &json!(2)));
    let both = get("/v1/edges?method=reboot&meta=rack%3Db").await;
    assert_eq!(both["total"], 0);
    assert_eq!(get("/v1/edges?addr=127.0.0.1").await["total"], 5);
    assert_eq!(get("/v1/edges?addr=10.99.").await["total"], 0);

    // Paging: real totals on every page, the token of the last id.
    let first = get("/v1/edges?page_size=2").await;
    assert_eq!((ids(&first), &first["total"]), (vec![11, 12], &json!(5)));
    let token = first["next_page_token"].as_str().unwrap().to_owned();
    let path = format!("/v1/edges?page_size=2&page_token={token}");
    let second = control(addr, "GET", &path, None).await.json();
    assert_eq!((ids(&second), &second["total"]), (vec![13, 14], &json!(5)));
    let token = second["next_page_token"].as_str().unwrap().to_owned();
    let path = format!("/v1/edges?page_size=2&page_token={token}");
    let last = control(addr, "GET", &path, None).await.json();
    assert_eq!(ids(&last), vec![15]);
    assert_eq!(last["next_page_token"], Value::Null);

    let edge = get("/v1/edges/11").await;
    assert_eq!(edge["id"], 11);
    assert_eq!(edge["metadata"], "rack=a");
    assert_eq!(edge["metadata_base64"], "cmFjaz1h");
    assert_eq!(edge["methods"], json!(["reboot"]));
    assert!(edge["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(edge["connected_at"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(
        get("/v1/edges/11/methods").await,
        json!({"id": 11, "methods": ["reboot"]})
    );
    assert_eq!(get("/v1/edges/14/methods").await["methods"], json!([]));

    let services = get("/v1/services").await;
    assert_eq!(services["total"], 3);
    let names: Vec<&str> = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.iter().filter(|n| **n == "alpha").count(), 2);
    assert_eq!(get("/v1/services?name=alpha").await["total"], 2);
    assert_eq!(get("/v1/services?method=m2").await["total"], 1);
    assert_eq!(get("/v1/services?topic=t1").await["total"], 2);
    assert_eq!(get("/v1/services?topic=t1&name=beta").await["total"], 1);
    assert_eq!(get("/v1/services?name=gamma").await["total"], 0);
    let one = get("/v1/services?page_size=1").await;
    assert_eq!(
        (one["items"].as_array().unwrap().len(), &one["total"]),
        (1, &json!(3))
    );
    assert!(one["next_page_token"].is_string());
    let id = alpha2.service_id().unwrap();
    let path = format!("/v1/services/{id}");
    let service = control(addr, "GET", &path, None).await.json();
    assert_eq!(service["name"], "alpha");
    assert_eq!(service["methods"], json!(["m1", "m2"]));
    assert_eq!(service["topics"], json!([]));
    assert!(service["addr"].as_str().unwrap().starts_with("127.0.0.1:"));

    assert_eq!(
        get("/v1/services/methods").await,
        json!({"items": [{"name": "m1", "services": 2}, {"name": "m2", "services": 1}], "total": 2})
    );
    assert_eq!(
        get("/v1/services/topics").await,
        json!({"items": [{"name": "t1", "services": 2}, {"name": "t2", "services": 1}], "total": 2})
    );
    assert_eq!(get("/v1/services/methods?service=beta").await["total"], 0);
    assert_eq!(get("/v1/services/topics?service=beta").await["total"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_closes_the_peer_with_kicked_and_is_idempotent() {
    let mut gw = GatewayProcess::start(&[]).await;
    let service = Service::builder("svc")
        .reconnect(false)
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder()
        .edge_id(21)
        .reconnect(false)
        .connect(gw.edge_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    gw.joined(&["svc"], &[21]).await;
    let addr = gw.control_addr;

    let session = edge.connection().expect("connected");
    assert_eq!(
        control(addr, "DELETE", "/v1/edges/21", None).await.status,
        204
    );
    let why = within("the edge sees the kick", session.closed()).await;
    assert_eq!(why.code(), ErrorCode::KICKED, "{why}");
    assert!(why.to_string().contains("kicked by the operator"), "{why}");
    let line = gw.log_line(" kick ").await;
    assert!(
        line.contains("role=\"edge\"") && line.contains("id=21"),
        "{line}"
    );
    assert!(
        line.contains("who=127.0.0.1:") && line.contains("kicked=true"),
        "{line}"
    );
    assert_eq!(control(addr, "GET", "/v1/edges/21", None).await.status, 404);
    // Again, and an id that never was: the same answer.
    assert_eq!(
        control(addr, "DELETE", "/v1/edges/21", None).await.status,
        204
    );
    assert_eq!(
        control(addr, "DELETE", "/v1/edges/999", None).await.status,
        204
    );

    let id = service.service_id().unwrap();
    let session = service.connection().expect("connected");
    let path = format!("/v1/services/{id}");
    assert_eq!(control(addr, "DELETE", &path, None).await.status, 204);
    let why = within("the service sees the kick", session.closed()).await;
    assert_eq!(why.code(), ErrorCode::KICKED, "{why}");
    assert_eq!(control(addr, "GET", &path, None).await.status, 404);
    assert_eq!(control(addr, "DELETE", &path, None).await.status, 204);
    let list = control(addr, "GET", "/v1/services", None).await.json();
    assert_eq!(list["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_a_public_address_becomes_loopback() {
    let mut gw = GatewayProcess::start(&["--control-listen", "0.0.0.0:0"]).await;
    assert!(gw.control_addr.ip().is_loopback(), "{}", gw.control_addr);
    let warning = gw.log_line("listens on loopback only").await;
    assert!(warning.contains("WARN") && warning.contains("TETHER_CONTROL_TOKEN"));
    assert_eq!(
        control(gw.control_addr, "GET", "/healthz", None)
            .await
            .status,
        200
    );
    // With a token, the address is used as configured.
    let env = [("TETHER_CONTROL_TOKEN", "t")];
    let gw = GatewayProcess::start_with_env(&["--control-listen", "0.0.0.0:0"], &env).await;
    assert!(gw.control_addr.ip().is_unspecified(), "{}", gw.control_addr);
}

/// Runs `tether-gateway ctl --control URL args...` with `env`.
async fn ctl(gw: &GatewayProcess, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let url = format!("http://{}", gw.control_addr);
    let mut all = vec!["ctl", "--control", url.as_str()];
    all.extend_from_slice(args);
    run_gateway_to_exit(&all, env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_lists_gets_and_kicks() {
    let env = [("TETHER_CONTROL_TOKEN", "tok")];
    let mut gw = GatewayProcess::start_with_env(&[], &env).await;
    let service = Service::builder("svc")
        .method("m", |req| async move { Ok(req.body) })
        .connect(gw.service_addr)
        .unwrap();
    let edge = Edge::builder()
        .edge_id(5)
        .metadata("sn=1")
        .reconnect(false)
        .connect(gw.edge_addr)
        .unwrap();
    within("service up", service.wait_connected())
        .await
        .unwrap();
    within("edge up", edge.wait_connected()).await.unwrap();
    gw.joined(&["svc"], &[5]).await;

    let out = ctl(&gw, &["edges", "list", "--meta", "sn=1", "--all"], &env).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((ids(&list), &list["total"]), (vec![5], &json!(1)));
    let out = ctl(&gw, &["edges", "get", "5"], &env).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap()["metadata"],
        "sn=1"
    );
    let out = ctl(&gw, &["services", "methods"], &env).await;
    let methods: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(methods["items"], json!([{"name": "m", "services": 1}]));
    let out = ctl(&gw, &["services", "list", "--name", "svc"], &env).await;
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap()["total"],
        1
    );
    let out = ctl(&gw, &["health"], &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = ctl(&gw, &["metrics"], &env).await;
    assert!(
        out.stdout.contains("tether_connections{role=\"edge\"} 1"),
        "{}",
        out.stdout
    );

    // Errors: the server's text, a non-zero exit.
    let out = ctl(&gw, &["edges", "list"], &[]).await;
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("401") && out.stderr.contains("Bearer"),
        "{}",
        out.stderr
    );
    let out = ctl(&gw, &["edges", "get", "abc"], &env).await;
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("not an id"), "{}", out.stderr);
    let out = ctl(&gw, &["edges", "get", "6"], &env).await;
    assert!(
        out.stderr.contains("edge 6 is not online"),
        "{}",
        out.stderr
    );

    // The token from a file works too.
    let file = YamlFile::new("tok\n");
    let session = edge.connection().unwrap();
    let out = ctl(
        &gw,
        &["--token-file", file.arg(), "edges", "kick", "5"],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let why = within("kicked", session.closed()).await;
    assert_eq!(why.code(), ErrorCode::KICKED);
    let out = ctl(&gw, &["edges", "get", "5"], &env).await;
    assert_ne!(out.code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_the_committed_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let printed = run_gateway_to_exit(&["openapi"], &[]).await;
    assert_eq!(printed.code, Some(0), "{}", printed.stderr);
    if std::env::var_os("TETHER_UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &printed.stdout).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if printed.stdout != committed {
        let first = printed
            .stdout
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(
                printed
                    .stdout
                    .lines()
                    .count()
                    .min(committed.lines().count()),
            );
        let show = |text: &str| {
            text.lines()
                .skip(first)
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "docs/openapi.json differs from the code's document from line {}:\n\
             --- committed\n{}\n+++ generated\n{}\n\
             Run with TETHER_UPDATE_OPENAPI=1 to rewrite it.",
            first + 1,
            show(&committed),
            show(&printed.stdout)
        );
    }
    // And the running gateway serves the same document.
    let gw = GatewayProcess::start(&[]).await;
    let served = control(gw.control_addr, "GET", "/openapi.json", None).await;
    assert_eq!(served.headers["content-type"], "application/json");
    assert_eq!(served.body, committed);
}
