use super::*;

fn parsed(text: &str) -> Endpoint {
    Endpoint::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn refused(text: &str) -> String {
    match Endpoint::parse(text) {
        Ok(endpoint) => panic!("{text} parsed as {endpoint}"),
        Err(Error::InvalidArgument(message)) => message,
        Err(other) => panic!("{text}: unexpected error kind {other:?}"),
    }
}

#[test]
fn good_urls_parse() {
    // text, scheme, host, port, path, display
    type Case = (
        &'static str,
        Scheme,
        &'static str,
        u16,
        Option<&'static str>,
        &'static str,
    );
    let cases: &[Case] = &[
        ("gw:30012", Scheme::Tcp, "gw", 30012, None, "tcp://gw:30012"),
        (
            "127.0.0.1:30012",
            Scheme::Tcp,
            "127.0.0.1",
            30012,
            None,
            "tcp://127.0.0.1:30012",
        ),
        ("tcp://gw:1", Scheme::Tcp, "gw", 1, None, "tcp://gw:1"),
        (
            "TLS://gw.example.net:443",
            Scheme::Tls,
            "gw.example.net",
            443,
            None,
            "tls://gw.example.net:443",
        ),
        (
            "[::1]:30012",
            Scheme::Tcp,
            "::1",
            30012,
            None,
            "tcp://[::1]:30012",
        ),
        (
            "tls://[::1]:30012",
            Scheme::Tls,
            "::1",
            30012,
            None,
            "tls://[::1]:30012",
        ),
        (
            "ws://gw",
            Scheme::Ws,
            "gw",
            80,
            Some("/tether"),
            "ws://gw:80/tether",
        ),
        (
            "ws://gw/",
            Scheme::Ws,
            "gw",
            80,
            Some("/tether"),
            "ws://gw:80/tether",
        ),
        (
            "ws://gw:8080/edges",
            Scheme::Ws,
            "gw",
            8080,
            Some("/edges"),
            "ws://gw:8080/edges",
        ),
        (
            "wss://gw",
            Scheme::Wss,
            "gw",
            443,
            Some("/tether"),
            "wss://gw:443/tether",
        ),
        (
            "wss://[2001:db8::1]/a/b?x=1",
            Scheme::Wss,
            "2001:db8::1",
            443,
            Some("/a/b?x=1"),
            "wss://[2001:db8::1]:443/a/b?x=1",
        ),
        (
            "wss://gw?x=1",
            Scheme::Wss,
            "gw",
            443,
            Some("/?x=1"),
            "wss://gw:443/?x=1",
        ),
        (
            "  wss://gw:9443  ",
            Scheme::Wss,
            "gw",
            9443,
            Some("/tether"),
            "wss://gw:9443/tether",
        ),
    ];
    for &(text, scheme, host, port, path, display) in cases {
        let endpoint = parsed(text);
        assert_eq!(endpoint.scheme(), scheme, "{text}");
        assert_eq!(endpoint.host(), host, "{text}");
        assert_eq!(endpoint.port(), port, "{text}");
        assert_eq!(endpoint.path(), path, "{text}");
        assert_eq!(endpoint.to_string(), display, "{text}");
        assert_eq!(
            endpoint.uses_tls(),
            matches!(scheme, Scheme::Tls | Scheme::Wss)
        );
        assert_eq!(
            endpoint.is_websocket(),
            matches!(scheme, Scheme::Ws | Scheme::Wss)
        );
        // The display form parses back to the same endpoint.
        assert_eq!(parsed(&endpoint.to_string()), endpoint, "{text}");
    }
    assert_eq!(parsed("[::1]:1").authority(), "[::1]:1");
    assert_eq!(parsed("ws://h").authority(), "h:80");
    assert_eq!("tls://h:2".parse::<Endpoint>().unwrap().port(), 2);
}

#[test]
fn bad_urls_are_refused_with_a_reason() {
    let cases = [
        ("", "is empty"),
        ("   ", "is empty"),
        ("gw", "has no port"),
        ("tls://gw", "has no port"),
        ("gw:0", "not a valid port"),
        ("gw:65536", "not a valid port"),
        ("gw:http", "not a valid port"),
        ("ws://gw:", "not a valid port"),
        (":30012", "has no host"),
        ("ws://", "has no host"),
        ("http://gw:80", "unknown scheme \"http\""),
        ("quic://gw:1", "unknown scheme"),
        (
            "tcp://gw:1/path",
            "a path is only allowed for ws:// and wss://",
        ),
        ("::1:30012", "more than one ':'"),
        ("[::1:30012", "closing ']'"),
        ("[gw]:1", "is not an IPv6 address"),
        ("[::1]x:1", "unexpected"),
        ("ws://user@gw/", "user information"),
        ("ws://gw/#frag", "fragment"),
        ("g w:1", "whitespace"),
        ("gw!:1", "not a valid host name"),
    ];
    for (text, expected) in cases {
        let message = refused(text);
        assert!(message.contains(expected), "{text:?}: {message}");
        assert!(
            message.starts_with("gateway address"),
            "{text:?}: {message}"
        );
    }
}
