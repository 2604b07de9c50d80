//! Certificates made at test time with rcgen: certificate authorities, server certificates
//! and client certificates, written as PEM files into a per-test directory (removed on
//! drop). Nothing is checked in: certificates expire, so every run makes its own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A directory for one test's files.
pub struct TempDir(
    /// The directory.
    pub PathBuf,
);

impl TempDir {
    /// A new empty directory named after `name`, the process and a counter.
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let unique = format!("tether-{name}-{}-{n}", std::process::id());
        let path = std::env::temp_dir().join(unique);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// A path inside.
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// Writes `contents` to `file` and returns its path.
    pub fn write(&self, file: &str, contents: &str) -> PathBuf {
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
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM, and where they were written.
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
    /// The certificate's file.
    pub cert: PathBuf,
    /// The key's file.
    pub key: PathBuf,
}

/// How long a certificate is valid around now.
#[derive(Clone, Copy)]
pub enum Validity {
    /// From an hour ago for a day.
    Current,
    /// Expired an hour ago.
    Expired,
}

fn validity(params: &mut CertificateParams, validity: Validity) {
    let now = OffsetDateTime::now_utc();
    match validity {
        Validity::Current => {
            params.not_before = now - Duration::hours(1);
            params.not_after = now + Duration::days(1);
        }
        Validity::Expired => {
            params.not_before = now - Duration::days(2);
            params.not_after = now - Duration::hours(1);
        }
    }
}

impl Ca {
    /// A self-signed CA called `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, Validity::Current);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// The CA certificate as PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `dir/file`.
    pub fn write(&self, dir: &TempDir, file: &str) -> PathBuf {
        dir.write(file, &self.pem())
    }

    fn sign(
        &self,
        dir: &TempDir,
        file: &str,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        valid: Validity,
    ) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, valid);
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

    /// A server certificate for `names`: each an IP address (an IP SAN) or a DNS name.
    pub fn server(&self, dir: &TempDir, file: &str, names: &[&str], valid: Validity) -> Leaf {
        let sans = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().unwrap()),
            })
            .collect();
        let usage = ExtendedKeyUsagePurpose::ServerAuth;
        let common_name = names.first().copied().unwrap_or("server");
        self.sign(dir, file, common_name, sans, usage, valid)
    }

    /// A client certificate with subject CN `common_name` and the DNS SANs `sans`.
    pub fn client(
        &self,
        dir: &TempDir,
        file: &str,
        common_name: &str,
        sans: &[&str],
        valid: Validity,
    ) -> Leaf {
        let sans = sans
            .iter()
            .map(|n| SanType::DnsName((*n).try_into().unwrap()))
            .collect();
        let usage = ExtendedKeyUsagePurpose::ClientAuth;
        self.sign(dir, file, common_name, sans, usage, valid)
    }
}

/// `path` as YAML text (quoted).
pub fn yaml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}
