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
        params.serial_number = Some(serial_of(subject.iter().map(|(_, v)| *v)));
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("signing");
        (cert.pem(), key.serialize_pem())
    }
}

impl Ca {
    /// A certificate revocation list of this CA, PEM, revoking every certificate it issued
    /// with the common name of one of `revoked` (and no other attribute).
    #[must_use]
    pub fn crl(&self, revoked: &[&str]) -> String {
        let now = rcgen::date_time_ymd(2026, 1, 1);
        let params = rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: rcgen::date_time_ymd(2036, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|cn| rcgen::RevokedCertParams {
                    serial_number: serial_of([*cn]),
                    revocation_time: now,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.cert, &self.key)
            .expect("signing the CRL")
            .pem()
            .expect("PEM")
    }
}

/// The serial number of the certificates of a subject's attribute values: one per subject,
/// so that a CRL can name them (FNV-1a, made positive and non-zero).
fn serial_of<'a>(values: impl IntoIterator<Item = &'a str>) -> rcgen::SerialNumber {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for value in values {
        for b in value.bytes().chain([0]) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    rcgen::SerialNumber::from((hash >> 2) | 1)
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
