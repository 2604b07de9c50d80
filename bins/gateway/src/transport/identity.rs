//! Who a peer is, as far as the transport can tell: its address and, under mTLS, the names
//! in its client certificate; and the binding of an edge's id or a metadata field to those
//! names, so that one device cannot claim another's identity.

use std::net::SocketAddr;

use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The names of a certificate that identities are compared with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertificateNames {
    /// The subject's common name (CN), if any.
    pub common_name: Option<String>,
    /// The DNS names of the subject alternative name extension.
    pub san_dns: Vec<String>,
    /// The URIs of the subject alternative name extension.
    pub san_uri: Vec<String>,
}

/// Reads the names of a DER certificate; an unparsable one has none.
pub fn certificate_names(cert: &CertificateDer<'_>) -> CertificateNames {
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return CertificateNames::default();
    };
    let common_name = parsed
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok().map(str::to_owned));
    let mut names = CertificateNames {
        common_name,
        ..CertificateNames::default()
    };
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.san_dns.push((*dns).to_owned()),
                GeneralName::URI(uri) => names.san_uri.push((*uri).to_owned()),
                _ => {}
            }
        }
    }
    names
}

/// What a connection's transport established about the peer.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The peer's address (for a WebSocket behind a trusted proxy, the forwarded client's).
    pub addr: SocketAddr,
    /// The transport: `tcp`, `tls`, `ws` or `wss` (logs and metrics).
    pub transport: &'static str,
    /// The names of the verified client certificate, under mTLS.
    pub certificate: Option<CertificateNames>,
}

/// Which certificate names an identity is compared with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NameSource {
    /// The subject common name only.
    Cn,
    /// The subject alternative names (DNS and URI) only.
    San,
    /// Either.
    #[default]
    Any,
}

/// What must match the client certificate (the `identity` key of `edge_tls`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityBinding {
    /// `off` (default), `id` (the edge id, in decimal, must be one of the certificate's
    /// names) or `metadata` (a metadata value must be one of them).
    pub bind: BindTo,
    /// With `bind: metadata`: the field of the edge's JSON-object metadata whose string
    /// value must match. Empty: the whole metadata, as UTF-8 text.
    pub field: String,
    /// Which certificate names count. Default `any`.
    pub names: NameSource,
}

/// What an edge identity is bound to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindTo {
    /// Nothing is bound.
    #[default]
    Off,
    /// The edge id.
    Id,
    /// The metadata (or one field of it).
    Metadata,
}

impl IdentityBinding {
    /// Whether any binding is configured.
    pub fn is_on(&self) -> bool {
        self.bind != BindTo::Off
    }

    fn names<'a>(&self, cert: &'a CertificateNames) -> impl Iterator<Item = &'a str> {
        let cn = matches!(self.names, NameSource::Cn | NameSource::Any);
        let san = matches!(self.names, NameSource::San | NameSource::Any);
        let common = cert.common_name.as_deref().filter(|_| cn);
        let alternative = cert
            .san_dns
            .iter()
            .chain(&cert.san_uri)
            .filter(move |_| san);
        common.into_iter().chain(alternative.map(String::as_str))
    }

    fn certificate_has(&self, cert: Option<&CertificateNames>, value: &str) -> bool {
        cert.is_some_and(|cert| self.names(cert).any(|name| name == value))
    }

    /// Checks the edge's metadata against the certificate (with `bind: metadata`); the
    /// error says what did not match.
    pub fn check_metadata(
        &self,
        cert: Option<&CertificateNames>,
        metadata: &[u8],
    ) -> Result<(), String> {
        if self.bind != BindTo::Metadata {
            return Ok(());
        }
        let value = if self.field.is_empty() {
            std::str::from_utf8(metadata)
                .map(str::to_owned)
                .map_err(|_| String::from("the metadata is not UTF-8 text"))?
        } else {
            let object: serde_json::Value = serde_json::from_slice(metadata)
                .map_err(|_| String::from("the metadata is not a JSON object"))?;
            match object.get(&self.field) {
                Some(serde_json::Value::String(s)) => s.clone(),
                _ => return Err(format!("the metadata has no string field {:?}", self.field)),
            }
        };
        if self.certificate_has(cert, &value) {
            Ok(())
        } else {
            Err(format!(
                "metadata {value:?} does not match the client certificate"
            ))
        }
    }

    /// Checks the decided edge id against the certificate (with `bind: id`).
    pub fn check_id(&self, cert: Option<&CertificateNames>, id: u64) -> Result<(), String> {
        if self.bind != BindTo::Id || self.certificate_has(cert, &id.to_string()) {
            return Ok(());
        }
        Err(format!(
            "edge id {id} does not match the client certificate"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> CertificateNames {
        CertificateNames {
            common_name: Some(String::from("1001")),
            san_dns: vec![String::from("sensor-7")],
            san_uri: vec![String::from("urn:device:7")],
        }
    }

    fn binding(bind: BindTo, field: &str, names: NameSource) -> IdentityBinding {
        IdentityBinding {
            bind,
            field: field.to_owned(),
            names,
        }
    }

    #[test]
    fn id_binding_compares_the_decimal_id_with_the_chosen_names() {
        let c = cert();
        let any = binding(BindTo::Id, "", NameSource::Any);
        assert!(any.check_id(Some(&c), 1001).is_ok());
        assert!(any.check_id(Some(&c), 1002).is_err());
        assert!(any.check_id(None, 1001).is_err());
        let san = binding(BindTo::Id, "", NameSource::San);
        assert!(san.check_id(Some(&c), 1001).is_err());
        let off = IdentityBinding::default();
        assert!(off.check_id(None, 5).is_ok());
        assert!(off.check_metadata(None, b"x").is_ok());
    }

    #[test]
    fn metadata_binding_reads_a_json_field_or_the_whole_text() {
        let c = cert();
        let field = binding(BindTo::Metadata, "device", NameSource::San);
        assert!(
            field
                .check_metadata(Some(&c), br#"{"device":"sensor-7"}"#)
                .is_ok()
        );
        assert!(
            field
                .check_metadata(Some(&c), br#"{"device":"sensor-8"}"#)
                .is_err()
        );
        assert!(field.check_metadata(Some(&c), br#"{"device":7}"#).is_err());
        assert!(field.check_metadata(Some(&c), b"not json").is_err());
        let whole = binding(BindTo::Metadata, "", NameSource::Any);
        assert!(whole.check_metadata(Some(&c), b"urn:device:7").is_ok());
        assert!(whole.check_metadata(Some(&c), &[0xff]).is_err());
        let cn = binding(BindTo::Metadata, "", NameSource::Cn);
        assert!(cn.check_metadata(Some(&c), b"sensor-7").is_err());
    }
}
