//! The agent's configuration: an optional YAML file, then command-line flags, in increasing
//! order of precedence. [`Cli::resolve`] produces the effective [`EdgeConfig`].
//!
//! ```yaml
//! gateway: gateway.example.net:30012   # or tls://, ws://, wss:// URLs
//! tls:                   # for tls:// and wss:// gateways (optional)
//!   ca: ca.pem           # trust this CA instead of the Mozilla roots
//!   cert: edge.pem       # client certificate for mutual TLS (with key)
//!   key: edge.key
//!   server_name: gw.internal   # check the certificate against this name
//! id: 42                 # the edge id to ask for (optional)
//! metadata: sn-0042      # for the gateway's hooks (optional)
//! token: secret          # for the gateway's auth hook (optional)
//! driver: smol           # smol (default) or mio
//! expose:
//!   - name: ssh
//!     address: 127.0.0.1:22
//!   - name: web
//!     address: localhost:8080
//!     kind: http         # tcp (default) or http; informational for now
//! ```

use std::fmt;
use std::io;
use std::path::PathBuf;

use clap::ValueEnum;
use serde::Deserialize;
use tether_smol::endpoint::{Endpoint, Scheme};

/// Which driver runs the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lower")]
pub(crate) enum Driver {
    /// The async SDK (`tether-smol`) on a single-threaded smol executor.
    #[default]
    Smol,
    /// The raw-mio event loop (`tether-mio`): no async runtime at all.
    Mio,
}

/// What an exposed service speaks. Both are piped as bytes: HTTP requests arrive already
/// framed from the gateway's HTTP ingress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// Any TCP service.
    #[default]
    Tcp,
    /// An HTTP server.
    Http,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Smol => "smol",
            Driver::Mio => "mio",
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Tcp => "tcp",
            Kind::Http => "http",
        })
    }
}

/// One exposed local service.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expose {
    /// The name streams ask for in their open metadata.
    pub(crate) name: String,
    /// The local `HOST:PORT` to connect to.
    pub(crate) address: String,
    /// What the service speaks (informational).
    #[serde(default)]
    pub(crate) kind: Kind,
}

/// TLS settings for `tls://` and `wss://` gateways (file section `tls`, or flags).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TlsOptions {
    /// PEM file of the CA(s) to trust instead of the Mozilla roots.
    pub(crate) ca: Option<PathBuf>,
    /// PEM file of the client certificate chain, for mutual TLS.
    pub(crate) cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub(crate) key: Option<PathBuf>,
    /// The name to check the gateway's certificate against, instead of the URL's host.
    pub(crate) server_name: Option<String>,
}

impl TlsOptions {
    /// Whether any setting is given.
    pub(crate) fn is_set(&self) -> bool {
        *self != TlsOptions::default()
    }
}

/// The YAML file's top level; every key is optional.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    gateway: Option<String>,
    tls: TlsOptions,
    id: Option<u64>,
    metadata: Option<String>,
    token: Option<String>,
    driver: Option<Driver>,
    expose: Vec<Expose>,
}

/// The effective configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EdgeConfig {
    /// The gateway's edge address: `HOST:PORT` or a `tcp://`, `tls://`, `ws://` or `wss://`
    /// URL.
    pub(crate) gateway: Endpoint,
    /// TLS settings (only with a `tls://` or `wss://` gateway).
    pub(crate) tls: TlsOptions,
    /// The edge id to ask for.
    pub(crate) id: Option<u64>,
    /// Metadata for the gateway's hooks.
    pub(crate) metadata: String,
    /// Token for the gateway's auth hook.
    pub(crate) token: String,
    /// The driver.
    pub(crate) driver: Driver,
    /// The exposed services, names unique, in the order given.
    pub(crate) exposes: Vec<Expose>,
}

/// Why the configuration could not be loaded or is unusable; every message names the key or
/// the flag.
#[derive(Debug)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    Read(PathBuf, io::Error),
    /// Malformed YAML, an unknown key or a value of the wrong type.
    Parse(String),
    /// A value that parses but cannot work.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            ConfigError::Parse(message) | ConfigError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses the YAML file's text. Unknown keys and values of the wrong type are errors naming
/// the key (dotted, with list indexes: `expose[1].address`) and the line.
fn parse_file(text: &str) -> Result<FileConfig, ConfigError> {
    let blank = |l: &str| l.is_empty() || l.starts_with('#') || l == "---" || l == "...";
    if text.lines().all(|l| blank(l.trim())) {
        return Ok(FileConfig::default());
    }
    let mut path = None;
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let message = e.without_snippet().to_string();
        match path.filter(|p| !p.is_empty() && p != ".") {
            Some(path) => ConfigError::Parse(format!("{path}: {message}")),
            None => ConfigError::Parse(message),
        }
    })
}

/// Checks that `address` looks like `HOST:PORT` (resolution happens when it is used).
fn check_address(address: &str) -> Result<(), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} is not HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{address:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{address:?} has no valid port (1 to 65535)")),
        Ok(_) => Ok(()),
    }
}

/// Parses `--expose NAME=HOST:PORT`.
fn parse_expose(text: &str) -> Result<Expose, String> {
    let (name, address) = text
        .split_once('=')
        .ok_or_else(|| String::from("expected NAME=HOST:PORT"))?;
    if name.is_empty() {
        return Err(String::from("the name is empty (expected NAME=HOST:PORT)"));
    }
    check_address(address)?;
    Ok(Expose {
        name: name.to_owned(),
        address: address.to_owned(),
        kind: Kind::Tcp,
    })
}

/// Command-line flags (clap derive).
#[derive(Debug, clap::Parser)]
#[command(
    name = "tether-edge",
    version,
    about = "The Tether edge agent: exposes local TCP services to the gateway"
)]
pub(crate) struct Cli {
    /// YAML configuration file (keys: gateway, tls, id, metadata, token, driver, expose).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// The gateway's edge address: HOST:PORT (plain TCP) or a tcp://, tls://,
    /// ws://HOST[:PORT][/PATH] or wss://HOST[:PORT][/PATH] URL.
    #[arg(long, value_name = "URL")]
    pub(crate) gateway: Option<String>,
    /// PEM file of the CA(s) to trust for a tls:// or wss:// gateway [default: the Mozilla
    /// roots].
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// PEM file of a client certificate chain, for mutual TLS (with --key).
    #[arg(long, value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[arg(long, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// Checks the gateway's certificate against NAME (and sends it as SNI) instead of the
    /// URL's host.
    #[arg(long, value_name = "NAME")]
    pub(crate) server_name: Option<String>,
    /// The edge id to ask for [default: the gateway assigns one].
    #[arg(long)]
    pub(crate) id: Option<u64>,
    /// Metadata for the gateway's hooks (a serial number, say).
    #[arg(long, value_name = "TEXT")]
    pub(crate) metadata: Option<String>,
    /// Token for the gateway's auth hook.
    #[arg(long, value_name = "TEXT")]
    pub(crate) token: Option<String>,
    /// Exposes a local TCP service under NAME (repeatable; replaces a file entry of the
    /// same name).
    #[arg(long, value_name = "NAME=HOST:PORT", value_parser = parse_expose)]
    pub(crate) expose: Vec<Expose>,
    /// The driver [default: smol].
    #[arg(long)]
    pub(crate) driver: Option<Driver>,
}

impl Cli {
    /// The effective configuration: the YAML file (if `--config`), then the flags.
    pub(crate) fn resolve(&self) -> Result<EdgeConfig, ConfigError> {
        let file = match &self.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Read(path.clone(), e))?;
                parse_file(&text)
                    .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?
            }
        };
        let invalid =
            |key: &str, problem: String| ConfigError::Invalid(format!("{key}: {problem}"));
        for (i, expose) in file.expose.iter().enumerate() {
            if expose.name.is_empty() {
                return Err(invalid(&format!("expose[{i}].name"), "is empty".into()));
            }
            check_address(&expose.address)
                .map_err(|problem| invalid(&format!("expose[{i}].address"), problem))?;
            if file.expose[..i].iter().any(|e| e.name == expose.name) {
                let problem = format!("duplicate service {:?}", expose.name);
                return Err(invalid(&format!("expose[{i}].name"), problem));
            }
        }
        let mut exposes = file.expose;
        for expose in &self.expose {
            match exposes.iter_mut().find(|e| e.name == expose.name) {
                Some(existing) => *existing = expose.clone(),
                None => exposes.push(expose.clone()),
            }
        }
        if exposes.is_empty() {
            let problem = "nothing to expose (--expose NAME=HOST:PORT or the file's expose list)";
            return Err(invalid("expose", problem.into()));
        }
        let gateway = self.gateway.clone().or(file.gateway).ok_or_else(|| {
            invalid(
                "gateway",
                "required (--gateway URL or the file's gateway key)".into(),
            )
        })?;
        let gateway = Endpoint::parse(&gateway).map_err(|e| invalid("gateway", e.text()))?;
        let tls = TlsOptions {
            ca: self.ca.clone().or(file.tls.ca),
            cert: self.cert.clone().or(file.tls.cert),
            key: self.key.clone().or(file.tls.key),
            server_name: self.server_name.clone().or(file.tls.server_name),
        };
        if tls.cert.is_some() != tls.key.is_some() {
            let problem = "a client certificate needs both cert and key (--cert and --key)";
            return Err(invalid("tls", problem.into()));
        }
        if tls.is_set() && !gateway.uses_tls() {
            let problem = format!(
                "TLS settings given but the gateway {gateway} does not use TLS \
                 (use a tls:// or wss:// URL)"
            );
            return Err(invalid("tls", problem));
        }
        let driver = self.driver.or(file.driver).unwrap_or_default();
        // TLS settings without a TLS scheme were refused above.
        if driver == Driver::Mio && gateway.scheme() != Scheme::Tcp {
            let problem =
                format!("the mio driver speaks plain TCP only; {gateway} needs --driver smol");
            return Err(invalid("driver", problem));
        }
        Ok(EdgeConfig {
            gateway,
            tls,
            id: self.id.or(file.id),
            metadata: self.metadata.clone().or(file.metadata).unwrap_or_default(),
            token: self.token.clone().or(file.token).unwrap_or_default(),
            driver,
            exposes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use std::path::Path;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("tether-edge").chain(args.iter().copied())).unwrap()
    }

    fn file_error(yaml: &str) -> String {
        parse_file(yaml).unwrap_err().to_string()
    }

    #[test]
    fn flags_alone_make_a_configuration() {
        let config = cli(&[
            "--gateway",
            "gw:30012",
            "--id",
            "7",
            "--expose",
            "echo=127.0.0.1:7",
            "--expose",
            "web=localhost:8080",
            "--driver",
            "mio",
        ])
        .resolve()
        .unwrap();
        assert_eq!(config.gateway.to_string(), "tcp://gw:30012");
        assert_eq!(config.id, Some(7));
        assert_eq!(config.driver, Driver::Mio);
        let names: Vec<_> = config.exposes.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["echo", "web"]);
        assert_eq!(config.exposes[1].address, "localhost:8080");
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            "echo",
            "=1.2.3.4:5",
            "echo=1.2.3.4",
            "echo=:5",
            "echo=h:0",
            "echo=h:x",
        ] {
            let parsed = Cli::try_parse_from(["tether-edge", "--gateway", "g:1", "--expose", bad]);
            let e = parsed.unwrap_err().to_string();
            assert!(e.contains("--expose"), "{bad}: {e}");
        }
        let e = cli(&["--expose", "a=h:1"])
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("gateway: required"), "{e}");
        let e = cli(&["--gateway", "g:1"])
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("expose: nothing to expose"), "{e}");
        let e = cli(&["--gateway", "g", "--expose", "a=h:1"])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().starts_with("gateway: "), "{e}");
    }

    #[test]
    fn the_file_holds_the_same_and_flags_override_it() {
        let yaml = "gateway: gw:1\nid: 3\nmetadata: sn-1\ntoken: t\ndriver: mio\nexpose:\n  \
                    - name: ssh\n    address: 127.0.0.1:22\n  - {name: web, address: \
                    'localhost:80', kind: http}\n";
        let file = parse_file(yaml).unwrap();
        assert_eq!(file.gateway.as_deref(), Some("gw:1"));
        assert_eq!(file.expose.len(), 2);
        assert_eq!(file.expose[1].kind, Kind::Http);

        let dir = std::env::temp_dir().join(format!("tether-edge-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("edge.yaml");
        std::fs::write(&path, yaml).unwrap();
        let path = path.to_str().unwrap();
        let config = cli(&["--config", path]).resolve().unwrap();
        assert_eq!(
            (config.id, config.metadata.as_str(), config.token.as_str()),
            (Some(3), "sn-1", "t")
        );
        assert_eq!(config.driver, Driver::Mio);
        let config = cli(&[
            "--config",
            path,
            "--gateway",
            "other:2",
            "--metadata",
            "m",
            "--driver",
            "smol",
            "--expose",
            "ssh=127.0.0.1:2222",
            "--expose",
            "echo=127.0.0.1:7",
        ])
        .resolve()
        .unwrap();
        assert_eq!(config.gateway.to_string(), "tcp://other:2");
        assert_eq!(config.metadata, "m");
        assert_eq!(config.driver, Driver::Smol);
        let exposes: Vec<_> = config
            .exposes
            .iter()
            .map(|e| (e.name.as_str(), e.address.as_str(), e.kind))
            .collect();
        assert_eq!(
            exposes,
            [
                ("ssh", "127.0.0.1:2222", Kind::Tcp),
                ("web", "localhost:80", Kind::Http),
                ("echo", "127.0.0.1:7", Kind::Tcp)
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_errors_name_the_key() {
        for empty in ["", "# nothing\n", "---\n"] {
            assert_eq!(parse_file(empty).unwrap(), FileConfig::default());
        }
        let e = file_error("gateway: g:1\nbogus: 1\n");
        assert!(e.contains("bogus") && e.contains("line 2"), "{e}");
        let e = file_error("expose:\n  - name: a\n    adress: h:1\n");
        assert!(e.starts_with("expose[0]") && e.contains("adress"), "{e}");
        let e = file_error("expose:\n  - name: a\n    address: h:1\n    kind: udp\n");
        assert!(
            e.starts_with("expose[0].kind: ") && e.contains("udp"),
            "{e}"
        );
        let e = file_error("id: x\n");
        assert!(e.starts_with("id: "), "{e}");
        let e = file_error("expose: 5\n");
        assert!(e.starts_with("expose: "), "{e}");
    }

    #[test]
    fn invalid_file_values_name_the_key() {
        let dir = std::env::temp_dir().join(format!("tether-edge-invalid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            (
                "expose:\n  - {name: '', address: 'h:1'}\n",
                "expose[0].name: is empty",
            ),
            (
                "expose:\n  - {name: a, address: h}\n",
                "expose[0].address: ",
            ),
            (
                "expose:\n  - {name: a, address: 'h:1'}\n  - {name: a, address: 'h:2'}\n",
                "expose[1].name: duplicate service \"a\"",
            ),
        ];
        for (i, (yaml, expected)) in cases.iter().enumerate() {
            let path = dir.join(format!("{i}.yaml"));
            std::fs::write(&path, yaml).unwrap();
            let e = cli(&["--gateway", "g:1", "--config", path.to_str().unwrap()]).resolve();
            let e = e.unwrap_err().to_string();
            assert!(e.starts_with(expected), "{yaml:?}: {e}");
        }
        let e = cli(&["--config", "/nonexistent/edge.yaml"])
            .resolve()
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/edge.yaml"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    #[test]
    fn gateway_urls_and_tls_settings() {
        let config = cli(&[
            "--gateway",
            "wss://gw.example.net/edges",
            "--ca",
            "ca.pem",
            "--cert",
            "edge.pem",
            "--key",
            "edge.key",
            "--server-name",
            "gw.internal",
            "--expose",
            "a=h:1",
        ])
        .resolve()
        .unwrap();
        assert_eq!(config.gateway.to_string(), "wss://gw.example.net:443/edges");
        assert_eq!(config.tls.ca.as_deref(), Some(Path::new("ca.pem")));
        assert_eq!(config.tls.cert.as_deref(), Some(Path::new("edge.pem")));
        assert_eq!(config.tls.key.as_deref(), Some(Path::new("edge.key")));
        assert_eq!(config.tls.server_name.as_deref(), Some("gw.internal"));

        let file =
            parse_file("gateway: tls://gw:1\ntls:\n  ca: a.pem\n  server_name: n\n").unwrap();
        assert_eq!(file.tls.ca.as_deref(), Some(Path::new("a.pem")));
        let e = file_error("tls:\n  cafile: x\n");
        assert!(e.starts_with("tls") && e.contains("cafile"), "{e}");

        let dir = std::env::temp_dir().join(format!("tether-edge-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("edge.yaml");
        std::fs::write(
            &path,
            "gateway: tls://gw:1\ntls:\n  ca: a.pem\n  server_name: n\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let config = cli(&["--config", path, "--ca", "b.pem", "--expose", "a=h:1"])
            .resolve()
            .unwrap();
        assert_eq!(config.tls.ca.as_deref(), Some(Path::new("b.pem")));
        assert_eq!(config.tls.server_name.as_deref(), Some("n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unusable_transport_settings_are_refused() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--gateway", "http://gw:80"],
                "gateway: gateway address \"http://gw:80\": unknown scheme",
            ),
            (&["--gateway", "ws://gw/a#b"], "gateway: "),
            (
                &["--gateway", "tls://gw:1", "--cert", "c.pem"],
                "tls: a client certificate needs both",
            ),
            (
                &["--gateway", "gw:1", "--ca", "ca.pem"],
                "tls: TLS settings given but the gateway tcp://gw:1 does not use TLS",
            ),
            (
                &["--gateway", "ws://gw", "--server-name", "n"],
                "tls: TLS settings given",
            ),
            (
                &["--gateway", "wss://gw", "--driver", "mio"],
                "driver: the mio driver speaks plain TCP only",
            ),
            (
                &["--gateway", "ws://gw", "--driver", "mio"],
                "driver: the mio driver speaks plain TCP only",
            ),
        ];
        for (args, expected) in cases {
            let mut args = args.to_vec();
            args.extend(["--expose", "a=h:1"]);
            let e = cli(&args).resolve().unwrap_err().to_string();
            assert!(e.starts_with(expected), "{args:?}: {e}");
        }
        let config = cli(&[
            "--gateway",
            "tcp://gw:1",
            "--driver",
            "mio",
            "--expose",
            "a=h:1",
        ]);
        assert_eq!(config.resolve().unwrap().driver, Driver::Mio);
    }
}
