//! Certificates made in the test (rcgen): a CA that issues server and client certificates.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};

/// A certificate authority.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
}

/// A certificate and its key, PEM.
pub type Identity = (String, String);

impl Ca {
    #[must_use]
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self {
            cert: params.self_signed(&key).expect("CA"),
            key,
        }
    }

    /// The CA's certificate, PEM.
    #[must_use]
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate with subject `CN=cn` and the subject alternative names `sans` (DNS names
    /// or IP addresses).
    #[must_use]
    pub fn issue(&self, cn: &str, sans: &[&str]) -> Identity {
        self.issue_named(&[(DnType::CommonName, cn)], sans)
    }

    /// A certificate whose subject has the attributes `subject`, in that order (one RDN each).
    #[must_use]
    pub fn issue_named(&self, subject: &[(DnType, &str)], sans: &[&str]) -> Identity {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("signing");
        (cert.pem(), key.serialize_pem())
    }
}

/// The files of an API server in `dir`: `(cert, key, client_ca)` paths, the server's
/// certificate issued by `ca` for the addresses `ips`, clients trusted when `ca` signed them.
#[must_use]
pub fn server_files(ca: &Ca, dir: &Path, ips: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key) = ca.issue("vnfpool", ips);
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("writing a PEM");
        path
    };
    (
        write("server.crt", &cert),
        write("server.key", &key),
        write("clients-ca.crt", &ca.pem()),
    )
}
