//! TLS on a listener: the `*_tls` configuration sections, loading PEM certificate pairs and
//! client CAs into a rustls `ServerConfig` (ring provider), choosing a pair by SNI, and
//! reloading the files without a restart (on SIGHUP or when a file changes). Connections
//! already up keep the configuration they were accepted with.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::identity::IdentityBinding;

/// One certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    /// The certificate chain (leaf first).
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Whether clients must present a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A certificate is asked for and verified when presented; clients without one are let in.
    Optional,
    /// Every client must present a certificate signed by one of `client_ca` (mTLS). The
    /// default when `client_ca` is set.
    #[default]
    Required,
}

/// TLS on one listener (the `service_tls`, `edge_tls` and `control_tls` sections).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate pairs. The pair whose names match the client's SNI is used; the first
    /// one serves clients that send no SNI or an unknown name.
    pub certs: Vec<CertPair>,
    /// CA certificates (PEM files) that sign client certificates. Empty: no client
    /// certificates (plain TLS).
    #[serde(default)]
    pub client_ca: Vec<PathBuf>,
    /// Whether clients must present a certificate when `client_ca` is set. Default `required`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Edge listener under mTLS: bind the edge's id or a metadata field to its certificate.
    #[serde(default)]
    pub identity: IdentityBinding,
    /// How often the files are checked for changes, in milliseconds (0: only on SIGHUP).
    /// Default 10000.
    #[serde(default = "default_reload_interval")]
    pub reload_interval_ms: u64,
}

fn default_reload_interval() -> u64 {
    10_000
}

/// Why a TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{}: {problem}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the combination (a key that does not match its certificate, ...).
    #[error("{0}")]
    Rustls(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, problem: impl fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

/// Reads every certificate of a PEM file (at least one).
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| pem_error(path, format!("no private key: {e}")))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certified key and the names it serves.
#[derive(Debug)]
struct NamedKey {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// Picks the certificate pair by SNI: an exact name, then a `*.` wildcard one label up,
/// else the first pair.
#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, usize>,
    keys: Vec<NamedKey>,
}

impl SniResolver {
    fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let index = sni
            .map(|n| n.to_ascii_lowercase())
            .and_then(|name| {
                let exact = self.by_name.get(&name).copied();
                let wildcard = || {
                    let parent = name.split_once('.')?.1;
                    self.by_name.get(&format!("*.{parent}")).copied()
                };
                exact.or_else(wildcard)
            })
            .unwrap_or(0);
        self.keys.get(index).map(|k| Arc::clone(&k.key))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}

/// The DNS names (SAN, else the subject CN) a certificate is for.
fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let names = super::identity::certificate_names(cert);
    let dns: Vec<String> = names
        .san_dns
        .iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    if dns.is_empty() {
        names.common_name.into_iter().collect()
    } else {
        dns
    }
}

impl TlsConfig {
    /// Every file the configuration reads.
    fn files(&self) -> Vec<&Path> {
        let pairs = self.certs.iter().flat_map(|p| [&*p.cert, &*p.key]);
        pairs.chain(self.client_ca.iter().map(|p| &**p)).collect()
    }

    /// Checks what can be checked without reading files. `key` names the section.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if self.certs.is_empty() {
            return Err(format!("{key}.certs: needs at least one certificate pair"));
        }
        if self.client_ca.is_empty() && self.client_auth == ClientAuth::Optional {
            return Err(format!("{key}.client_auth: optional needs client_ca"));
        }
        if self.identity.is_on() && self.client_ca.is_empty() {
            return Err(format!(
                "{key}.identity: binding identities to certificates needs client_ca (mTLS)"
            ));
        }
        Ok(())
    }

    /// Reads the files and builds the rustls configuration.
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = provider();
        let mut keys = Vec::with_capacity(self.certs.len());
        let mut by_name = HashMap::new();
        for pair in &self.certs {
            let chain = load_certs(&pair.cert)?;
            let key = load_key(&pair.key)?;
            let signer = provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| pem_error(&pair.key, e))?;
            let certified = CertifiedKey::new(chain, signer);
            certified
                .keys_match()
                .map_err(|e| TlsError::Rustls(format!("{}: {e}", pair.key.display())))?;
            let names = certified.end_entity_cert().map(certificate_names);
            let names = names.unwrap_or_default();
            for name in &names {
                by_name.entry(name.clone()).or_insert(keys.len());
            }
            keys.push(NamedKey {
                names,
                key: Arc::new(certified),
            });
        }
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match (self.client_ca.is_empty(), self.client_auth) {
            (true, _) | (false, ClientAuth::None) => builder.with_no_client_auth(),
            (false, auth) => {
                let mut roots = RootCertStore::empty();
                for path in &self.client_ca {
                    for cert in load_certs(path)? {
                        roots.add(cert).map_err(|e| pem_error(path, e))?;
                    }
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match auth {
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsError::Rustls(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let resolver = SniResolver { by_name, keys };
        tracing::debug!(
            pairs = resolver.keys.len(),
            names = ?resolver.keys.iter().map(|k| &k.names).collect::<Vec<_>>(),
            "TLS certificates loaded"
        );
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        // WebSocket clients negotiate http/1.1; Tether clients usually send no ALPN.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A listener's TLS configuration that can be swapped while it runs.
#[derive(Debug)]
pub struct ReloadableTls {
    /// Which listener (for logs).
    role: &'static str,
    source: TlsConfig,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// The modification times the current configuration was loaded with.
    stamps: RwLock<Vec<Option<SystemTime>>>,
}

fn stamps(config: &TlsConfig) -> Vec<Option<SystemTime>> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    config.files().into_iter().map(modified).collect()
}

impl ReloadableTls {
    /// Loads `source` for the listener `role`.
    pub fn load(role: &'static str, source: TlsConfig) -> Result<ReloadableTls, TlsError> {
        let stamps_now = stamps(&source);
        let current = source.load()?;
        Ok(ReloadableTls {
            role,
            source,
            current: RwLock::new(current),
            stamps: RwLock::new(stamps_now),
        })
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&guard)
    }

    /// The identity binding of this listener.
    pub fn identity(&self) -> &IdentityBinding {
        &self.source.identity
    }

    /// How often to look for changed files (None: only on SIGHUP).
    pub fn reload_interval(&self) -> Option<Duration> {
        let ms = self.source.reload_interval_ms;
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// Reloads the files; on failure the previous configuration stays and the error is
    /// returned (and logged by the caller).
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps_now = stamps(&self.source);
        let fresh = self.source.load()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        *self.stamps.write().unwrap_or_else(|e| e.into_inner()) = stamps_now;
        Ok(())
    }

    /// Reloads if a file changed since the last load.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = stamps(&self.source);
        let same = *self.stamps.read().unwrap_or_else(|e| e.into_inner()) == now;
        (!same).then(|| self.reload())
    }

    /// Logs the outcome of a reload.
    pub fn log_reload(&self, outcome: Result<(), TlsError>, why: &str) {
        match outcome {
            Ok(()) => tracing::info!(listener = self.role, why, "TLS certificates reloaded"),
            Err(e) => tracing::error!(
                listener = self.role,
                why,
                error = %e,
                "TLS reload failed; the previous certificates stay in use"
            ),
        }
    }
}

/// The SIGHUP listener, made when the gateway binds so that a signal sent as soon as it
/// listens is already a reload and not the default action (exit).
#[derive(Debug)]
pub struct Hangup(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangup {
    /// Starts listening for SIGHUP.
    pub fn listen() -> Hangup {
        #[cfg(unix)]
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        Hangup(
            #[cfg(unix)]
            signal,
        )
    }

    async fn recv(&mut self) -> Option<()> {
        #[cfg(unix)]
        if let Some(signal) = self.0.as_mut() {
            return signal.recv().await;
        }
        std::future::pending().await
    }
}

/// Reloads every listener's TLS on SIGHUP and when its files change, until `stop` flips.
pub async fn watch(
    tls: Vec<Arc<ReloadableTls>>,
    mut hangup: Hangup,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let period = tls
        .iter()
        .filter_map(|t| t.reload_interval())
        .min()
        .unwrap_or(Duration::from_secs(3600));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for t in tls.iter().filter(|t| t.reload_interval().is_some()) {
                    if let Some(outcome) = t.reload_if_changed() {
                        t.log_reload(outcome, "a file changed");
                    }
                }
            }
            Some(()) = hangup.recv() => {
                if tls.is_empty() {
                    tracing::info!("SIGHUP: no TLS configured, nothing to reload");
                }
                for t in &tls {
                    t.log_reload(t.reload(), "SIGHUP");
                }
            }
            _ = stop.changed() => return,
        }
    }
}
