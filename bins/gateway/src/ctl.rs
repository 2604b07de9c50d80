//! `tether-gateway ctl`: a command-line client of a running gateway's control plane
//! (HTTP/1.1 with hyper; https:// with rustls, `--ca` for a private CA, `--cert`/`--key`
//! under mTLS). Answers are printed as pretty JSON (`metrics` as Prometheus
//! text); an error answer prints the server's message and exits non-zero.
//!
//! The token comes from `TETHER_CONTROL_TOKEN` or `--token-file` (never a flag value,
//! which would show in `ps`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tether_tokio::tls::ClientTls;
use tether_tokio::tls::rustls::{self, pki_types::ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// `ctl` and its options.
#[derive(Debug, clap::Args)]
pub struct Ctl {
    /// The control plane's URL.
    #[arg(
        long,
        env = "TETHER_CONTROL_URL",
        default_value = "http://127.0.0.1:30010",
        global = true
    )]
    pub control: String,
    /// A file holding the bearer token [default: the TETHER_CONTROL_TOKEN variable].
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// For an https:// URL: the CA certificate (PEM) that signed the control plane's
    /// certificate [default: the public web roots].
    #[arg(long, global = true, env = "TETHER_CONTROL_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// For an https:// URL under mTLS: this client's certificate and key (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The key of --cert.
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The `ctl` commands.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Connected edges.
    #[command(subcommand)]
    Edges(EdgesCommand),
    /// Connected services.
    #[command(subcommand)]
    Services(ServicesCommand),
    /// Liveness and readiness.
    Health,
    /// The Prometheus metrics.
    Metrics,
}

/// Paging options of the lists.
#[derive(Debug, clap::Args)]
pub struct Paging {
    /// Items per page (1..=1000).
    #[arg(long)]
    pub page_size: Option<u32>,
    /// The page after this token (`next_page_token` of the previous page).
    #[arg(long)]
    pub page_token: Option<String>,
    /// Every page, as one list.
    #[arg(long, conflicts_with = "page_token")]
    pub all: bool,
}

/// `ctl edges ...`.
#[derive(Debug, clap::Subcommand)]
pub enum EdgesCommand {
    /// Lists online edges.
    List {
        /// Only edges whose metadata contains this.
        #[arg(long)]
        meta: Option<String>,
        /// Only edges whose address contains this.
        #[arg(long)]
        addr: Option<String>,
        /// Only edges that registered this method.
        #[arg(long)]
        method: Option<String>,
        /// Paging.
        #[command(flatten)]
        paging: Paging,
    },
    /// Shows one edge.
    Get {
        /// The edge id.
        id: String,
    },
    /// The methods an edge registered.
    Methods {
        /// The edge id.
        id: String,
    },
    /// Closes an edge's connection with KICKED.
    Kick {
        /// The edge id.
        id: String,
    },
}

/// `ctl services ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ServicesCommand {
    /// Lists connected services.
    List {
        /// Only services with this name.
        #[arg(long)]
        name: Option<String>,
        /// Only services that registered this method.
        #[arg(long)]
        method: Option<String>,
        /// Only services that take this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Paging.
        #[command(flatten)]
        paging: Paging,
    },
    /// Shows one service.
    Get {
        /// The service id.
        id: String,
    },
    /// Closes a service's connection with KICKED.
    Kick {
        /// The service id.
        id: String,
    },
    /// The methods services registered, with how many offer each.
    Methods {
        /// Only the services with this name.
        #[arg(long)]
        service: Option<String>,
    },
    /// The topics services take, with how many take each.
    Topics {
        /// Only the services with this name.
        #[arg(long)]
        service: Option<String>,
    },
}

/// Largest answer read, in bytes.
const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// Longest wait for one answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `ctl` to completion (its own single-threaded runtime).
pub fn run(ctl: &Ctl) -> anyhow::Result<()> {
    let token = match &ctl.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("TETHER_CONTROL_TOKEN").ok(),
    };
    let mut client = Client::new(&ctl.control, token.filter(|t| !t.is_empty()))?;
    if client.https {
        let mut tls = ClientTls::new();
        if let Some(ca) = &ctl.ca {
            tls = tls.ca_pem_file(ca);
        }
        if let (Some(cert), Some(key)) = (&ctl.cert, &ctl.key) {
            tls = tls.client_cert_pem_files(cert, key);
        }
        client.tls = Some(tls.build()?);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(command(&client, &ctl.command))
}

fn query(pairs: &[(&str, Option<&str>)]) -> anyhow::Result<String> {
    let set: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    let encoded = serde_urlencoded::to_string(set)?;
    Ok(if encoded.is_empty() {
        encoded
    } else {
        format!("?{encoded}")
    })
}

async fn command(client: &Client, command: &CtlCommand) -> anyhow::Result<()> {
    match command {
        CtlCommand::Edges(EdgesCommand::List {
            meta,
            addr,
            method,
            paging,
        }) => {
            let filters = [
                ("meta", meta.as_deref()),
                ("addr", addr.as_deref()),
                ("method", method.as_deref()),
            ];
            print_json(&client.list("/v1/edges", &filters, paging).await?)
        }
        CtlCommand::Edges(EdgesCommand::Get { id }) => {
            print_json(&client.json(Method::GET, &format!("/v1/edges/{id}")).await?)
        }
        CtlCommand::Edges(EdgesCommand::Methods { id }) => {
            let path = format!("/v1/edges/{id}/methods");
            print_json(&client.json(Method::GET, &path).await?)
        }
        CtlCommand::Edges(EdgesCommand::Kick { id }) => {
            client
                .json(Method::DELETE, &format!("/v1/edges/{id}"))
                .await?;
            println!("edge {id}: kicked (or it was not online)");
            Ok(())
        }
        CtlCommand::Services(ServicesCommand::List {
            name,
            method,
            topic,
            paging,
        }) => {
            let filters = [
                ("name", name.as_deref()),
                ("method", method.as_deref()),
                ("topic", topic.as_deref()),
            ];
            print_json(&client.list("/v1/services", &filters, paging).await?)
        }
        CtlCommand::Services(ServicesCommand::Get { id }) => {
            let path = format!("/v1/services/{id}");
            print_json(&client.json(Method::GET, &path).await?)
        }
        CtlCommand::Services(ServicesCommand::Kick { id }) => {
            client
                .json(Method::DELETE, &format!("/v1/services/{id}"))
                .await?;
            println!("service {id}: kicked (or it was not connected)");
            Ok(())
        }
        CtlCommand::Services(ServicesCommand::Methods { service }) => {
            let path = format!(
                "/v1/services/methods{}",
                query(&[("service", service.as_deref())])?
            );
            print_json(&client.json(Method::GET, &path).await?)
        }
        CtlCommand::Services(ServicesCommand::Topics { service }) => {
            let path = format!(
                "/v1/services/topics{}",
                query(&[("service", service.as_deref())])?
            );
            print_json(&client.json(Method::GET, &path).await?)
        }
        CtlCommand::Health => {
            let health = client.json(Method::GET, "/healthz").await?;
            let ready = client.json(Method::GET, "/readyz").await;
            let ready = ready.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
            print_json(&serde_json::json!({ "healthz": health, "readyz": ready }))
        }
        CtlCommand::Metrics => {
            let (_, body) = client.send(Method::GET, "/metrics").await?;
            print!("{}", String::from_utf8_lossy(&body));
            Ok(())
        }
    }
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Where the control plane is, and the token.
struct Client {
    /// `host:port`.
    authority: String,
    /// The host, for TLS server name checks.
    host: String,
    /// Whether the URL is https://.
    https: bool,
    /// The TLS configuration, for https://.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// A path prefix, without the final `/`.
    prefix: String,
    token: Option<String>,
}

impl Client {
    fn new(url: &str, token: Option<String>) -> anyhow::Result<Client> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("{url:?}: the control URL must be http:// or https://"),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow!("{url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        Ok(Client {
            authority: format!("{}:{port}", authority.host()),
            host,
            https,
            tls: None,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Sends one request; the status and body of a successful answer, the server's error
    /// message otherwise.
    async fn send(&self, method: Method, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        let exchange = async {
            let stream = TcpStream::connect(&self.authority)
                .await
                .with_context(|| format!("cannot connect to {}", self.authority))?;
            match &self.tls {
                None => self.exchange(stream, method, path).await,
                Some(config) => {
                    let name = ServerName::try_from(self.host.clone())
                        .with_context(|| format!("{:?} is not a TLS server name", self.host))?;
                    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                    let stream = connector
                        .connect(name, stream)
                        .await
                        .with_context(|| format!("TLS with {} failed", self.authority))?;
                    self.exchange(stream, method, path).await
                }
            }
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no answer from {} within {TIMEOUT:?}", self.authority))??;
        if status.is_success() {
            return Ok((status, body));
        }
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{status}: {message}")
    }

    /// One request and its answer over an established connection.
    async fn exchange<IO>(
        &self,
        io: IO,
        method: Method,
        path: &str,
    ) -> anyhow::Result<(StatusCode, Bytes)>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, &self.authority);
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let answer = sender
            .send_request(request.body(Empty::<Bytes>::new())?)
            .await?;
        let status = answer.status();
        let body = Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// Sends one request and reads its JSON answer (`null` for an empty one).
    async fn json(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        let (_, body) = self.send(method, path).await?;
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).context("the answer is not JSON")
    }

    /// A list: one page, or with `--all` every page merged into one.
    async fn list(
        &self,
        path: &str,
        filters: &[(&str, Option<&str>)],
        paging: &Paging,
    ) -> anyhow::Result<Value> {
        let size = paging.page_size.map(|s| s.to_string());
        let mut token = paging.page_token.clone();
        let mut items = Vec::new();
        loop {
            let mut pairs = filters.to_vec();
            pairs.push(("page_size", size.as_deref()));
            pairs.push(("page_token", token.as_deref()));
            let page = self
                .json(Method::GET, &format!("{path}{}", query(&pairs)?))
                .await?;
            if !paging.all {
                return Ok(page);
            }
            if let Some(Value::Array(more)) = page.get("items") {
                items.extend(more.iter().cloned());
            }
            token = page
                .get("next_page_token")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if token.is_none() {
                let total = page.get("total").cloned().unwrap_or(Value::Null);
                return Ok(serde_json::json!({ "items": items, "total": total }));
            }
        }
    }
}
