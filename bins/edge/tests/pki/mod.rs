//! Certificates made at test time with rcgen (after `bins/gateway/tests/pki`): certificate
//! authorities, server certificates and client certificates, written as PEM files into a
//! per-test directory (removed on drop).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A directory for one test's files.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// A new empty directory named after `name`, the process and a counter.
    pub(crate) fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "tether-edge-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(unique);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// A path inside.
    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// Writes `contents` to `file` and returns its path.
    pub(crate) fn write(&self, file: &str, contents: &str) -> PathBuf {
        let path = self.path(file);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM, and where they were written.
pub(crate) struct Leaf {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Valid from an hour ago for a day.
fn current(params: &mut CertificateParams) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(1);
}

impl Ca {
    /// A self-signed CA called `name`.
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        current(&mut params);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// The CA certificate as PEM.
    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `dir/file`.
    pub(crate) fn write(&self, dir: &TempDir, file: &str) -> PathBuf {
        dir.write(file, &self.pem())
    }

    fn sign(
        &self,
        dir: &TempDir,
        file: &str,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        current(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        Leaf {
            cert: dir.write(&format!("{file}.crt"), &cert_pem),
            key: dir.write(&format!("{file}.key"), &key_pem),
            cert_pem,
            key_pem,
        }
    }

    /// A server certificate for the DNS names `names` only (no IP address SAN, so a
    /// client dialing 127.0.0.1 must name one of them with `--server-name`).
    pub(crate) fn server(&self, dir: &TempDir, file: &str, names: &[&str]) -> Leaf {
        let sans = names
            .iter()
            .map(|n| SanType::DnsName((*n).try_into().unwrap()))
            .collect();
        let usage = ExtendedKeyUsagePurpose::ServerAuth;
        let common_name = names.first().unwrap_or(&"server");
        self.sign(dir, file, common_name, sans, usage)
    }

    /// A client certificate with subject CN `common_name` and the DNS SANs `sans`.
    pub(crate) fn client(
        &self,
        dir: &TempDir,
        file: &str,
        common_name: &str,
        sans: &[&str],
    ) -> Leaf {
        let sans = sans
            .iter()
            .map(|n| SanType::DnsName((*n).try_into().unwrap()))
            .collect();
        let usage = ExtendedKeyUsagePurpose::ClientAuth;
        self.sign(dir, file, common_name, sans, usage)
    }
}

/// `path` as YAML text (quoted).
pub(crate) fn yaml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}
