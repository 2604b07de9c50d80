//! TLS client configuration for `tls://` and `wss://` gateways (feature `tls`).
//!
//! [`ClientTls`] builds the [`rustls::ClientConfig`] the runtime crates' dialers take:
//! which certificate authorities to trust (the Mozilla roots of `webpki-roots` unless a CA
//! is given), an optional client certificate for mutual TLS, and ALPN protocols. rustls is
//! built with the `ring` provider only and re-exported here, so applications need no
//! direct dependency on it.
//!
//! ```no_run
//! use tether_sdk::tls::ClientTls;
//!
//! let config = ClientTls::new()
//!     .ca_pem_file("/etc/tether/ca.pem")
//!     .client_cert_pem_files("/etc/tether/edge.pem", "/etc/tether/edge.key")
//!     .build()?;
//! # Ok::<(), tether_sdk::Error>(())
//! ```
//!
//! The name the gateway's certificate is checked against (and sent as SNI) is the URL's
//! host unless [`Endpoint::with_tls_server_name`] overrides it; [`server_name`] computes it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::Error;
use crate::endpoint::Endpoint;

/// PEM text, from a file (read when the configuration is built) or from memory.
#[derive(Clone)]
enum Pem {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Pem {
    /// The text, and how to name it in an error.
    fn load(&self, what: &str) -> Result<(Vec<u8>, String), Error> {
        match self {
            Pem::File(path) => match std::fs::read(path) {
                Ok(bytes) => Ok((bytes, format!("{what} file {}", path.display()))),
                Err(e) => Err(invalid(format!(
                    "cannot read the {what} file {}: {e}",
                    path.display()
                ))),
            },
            Pem::Bytes(bytes) => Ok((bytes.clone(), format!("{what} PEM"))),
        }
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => write!(f, "File({})", path.display()),
            // Never print key material.
            Pem::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
        }
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(format!("tls: {message}"))
}

/// A builder for the client's [`rustls::ClientConfig`].
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    ca: Option<Pem>,
    client_cert: Option<(Pem, Pem)>,
    server_name: Option<String>,
    alpn: Vec<Vec<u8>>,
}

impl ClientTls {
    /// Trusts the Mozilla root certificates (`webpki-roots`), no client certificate, no
    /// ALPN.
    pub fn new() -> ClientTls {
        ClientTls::default()
    }

    /// Trusts the certificate authorities in this PEM file (every `CERTIFICATE` in it)
    /// instead of the default roots.
    pub fn ca_pem_file(mut self, path: impl AsRef<Path>) -> ClientTls {
        self.ca = Some(Pem::File(path.as_ref().to_owned()));
        self
    }

    /// Trusts the certificate authorities in this PEM text instead of the default roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> ClientTls {
        self.ca = Some(Pem::Bytes(pem.into()));
        self
    }

    /// Presents this client certificate chain (leaf first) and private key (PKCS#8, PKCS#1
    /// or SEC1), read from PEM files, for mutual TLS.
    pub fn client_cert_pem_files(
        mut self,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> ClientTls {
        self.client_cert = Some((
            Pem::File(cert_path.as_ref().to_owned()),
            Pem::File(key_path.as_ref().to_owned()),
        ));
        self
    }

    /// Presents this client certificate chain and private key, given as PEM text, for
    /// mutual TLS.
    pub fn client_cert_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> ClientTls {
        self.client_cert = Some((Pem::Bytes(cert.into()), Pem::Bytes(key.into())));
        self
    }

    /// Checks the gateway's certificate against `name` (and sends it as SNI) instead of
    /// the URL's host. [`build`](Self::build) validates it; dialers take it from
    /// [`Endpoint::with_tls_server_name`], which [`apply_server_name`](Self::apply_server_name)
    /// sets from this builder. The runtimes' `ConnectExt::connect_tls` does both.
    pub fn server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }

    /// The name given to [`server_name`](Self::server_name), if any.
    pub fn server_name_override(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// `endpoint` with this builder's server name override, if one was given.
    pub fn apply_server_name(&self, endpoint: Endpoint) -> Endpoint {
        match &self.server_name {
            Some(name) => endpoint.with_tls_server_name(name.clone()),
            None => endpoint,
        }
    }

    /// Offers these ALPN protocols, in order of preference (none by default).
    pub fn alpn<I, P>(mut self, protocols: I) -> ClientTls
    where
        I: IntoIterator<Item = P>,
        P: Into<Vec<u8>>,
    {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Reads the files and builds the configuration. Fails with
    /// [`Error::InvalidArgument`] naming the file and the problem: a file that cannot be
    /// read, no certificate in a CA or certificate file, no or a malformed private key, a
    /// key that does not match the certificate, an invalid server name.
    pub fn build(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        if let Some(name) = &self.server_name {
            ServerName::try_from(name.clone())
                .map_err(|e| invalid(format!("server name {name:?}: {e}")))?;
        }
        let roots = match &self.ca {
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            Some(ca) => {
                let (pem, source) = ca.load("CA")?;
                let mut roots = RootCertStore::empty();
                for cert in certificates(&pem, &source)? {
                    roots
                        .add(cert)
                        .map_err(|e| invalid(format!("{source}: unusable CA certificate: {e}")))?;
                }
                roots
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("protocol versions: {e}")))?
            .with_root_certificates(roots);
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let (cert_pem, cert_source) = cert.load("client certificate")?;
                let chain = certificates(&cert_pem, &cert_source)?;
                let (key_pem, key_source) = key.load("client key")?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| invalid(format!("{key_source}: no usable private key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid(format!("{key_source}: {e}")))?
            }
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

/// The crypto provider: ring, chosen explicitly so a process-wide default (or another
/// crate enabling aws-lc-rs) changes nothing.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every `CERTIFICATE` block in `pem`; at least one.
fn certificates(pem: &[u8], source: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{source}: malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(format!("{source}: no certificate in the PEM text")));
    }
    Ok(certs)
}

/// The name `endpoint`'s certificate is checked against and sent as SNI: `override_name`
/// if given, else the endpoint's [`tls_server_name`](Endpoint::tls_server_name) override,
/// else its host (a DNS name or an IP address).
pub fn server_name(
    endpoint: &Endpoint,
    override_name: Option<&str>,
) -> Result<ServerName<'static>, Error> {
    let name = override_name
        .or(endpoint.tls_server_name())
        .unwrap_or(endpoint.host());
    ServerName::try_from(name.to_owned()).map_err(|e| invalid(format!("server name {name:?}: {e}")))
}

/// A failed TLS handshake with `endpoint` as an I/O error that names the gateway (the
/// certificate problem rustls found, say).
pub fn handshake_error(endpoint: &Endpoint, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!("TLS handshake with {endpoint} failed: {e}"),
    )
}
