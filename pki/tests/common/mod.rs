//! Shared test helpers: a fresh CA in a temporary directory, issuance with file keys, trust
//! stores from the CA's files and the real `openssl verify`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mps_pki::ca::{
    self, CaLevel, CertificateAuthority, HostNames, IssueRequest, Issued, ServerNames, Subject, Validity,
};
use mps_pki::{PkiConfig, Role, TrustStore, pem};
use mps_protocol::{Iin, MerchantId};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// A CA in a temporary directory with file keys.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub authority: CertificateAuthority,
    pub intermediate_key: rcgen::KeyPair,
    pub root_key: rcgen::KeyPair,
}

/// An issued certificate with its key, written to `<dir>/<name>.crt` and `.key`.
pub struct Leaf {
    pub issued: Issued,
    pub key_pem: String,
    pub chain_file: PathBuf,
    pub key_file: PathBuf,
    pub leaf_file: PathBuf,
}

impl Leaf {
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.issued.chain.clone()
    }
}

impl TestCa {
    pub fn new() -> Self {
        Self::with_config(&PkiConfig::default())
    }

    pub fn with_config(config: &PkiConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let authority = CertificateAuthority::init(&dir.path().join("ca"), config, OffsetDateTime::now_utc()).unwrap();
        let intermediate_key = authority.load_file_key(CaLevel::Intermediate).unwrap();
        let root_key = authority.load_file_key(CaLevel::Root).unwrap();
        Self { dir, authority, intermediate_key, root_key }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn root_file(&self) -> PathBuf {
        self.authority.cert_path(CaLevel::Root)
    }

    pub fn intermediate_file(&self) -> PathBuf {
        self.authority.cert_path(CaLevel::Intermediate)
    }

    pub fn crls_file(&self) -> PathBuf {
        self.authority.crls_path()
    }

    pub fn issue(&mut self, name: &str, request: &IssueRequest) -> Leaf {
        let key = ca::generate_key().unwrap();
        let issued = self.authority.issue(request, &key, &self.intermediate_key, OffsetDateTime::now_utc()).unwrap();
        let prefix = self.path().join(name);
        let key_pem = key.serialize_pem();
        ca::write_issued(&prefix, &issued, Some(&key_pem)).unwrap();
        let leaf_file = self.path().join(format!("{name}.leaf.pem"));
        std::fs::write(&leaf_file, pem::encode_certificates(&issued.chain[..1])).unwrap();
        Leaf {
            issued,
            key_pem,
            chain_file: ca::with_suffix(&prefix, "crt"),
            key_file: ca::with_suffix(&prefix, "key"),
            leaf_file,
        }
    }

    pub fn revoke(&mut self, leaf: &Leaf) {
        let level = self.authority.revoke(&leaf.issued.serial_hex, ca::RevocationReason::KeyCompromise, now()).unwrap();
        assert_eq!(level, CaLevel::Intermediate);
        self.authority.write_crl(level, &self.intermediate_key, now()).unwrap();
    }

    pub fn trust_store(&self) -> TrustStore {
        TrustStore::from_pem_files(&[&self.root_file()], &[&self.crls_file()]).unwrap()
    }
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub fn request(role: Role) -> IssueRequest {
    let localhost = || {
        let names = HostNames::new(vec!["localhost".to_owned()], vec!["127.0.0.1".parse().unwrap()]).unwrap();
        ServerNames::new(names).unwrap()
    };
    let subject = match role {
        Role::AuthzServer => Subject::AuthzServer { names: localhost() },
        Role::GatewayServer => Subject::GatewayServer { names: localhost() },
        Role::GatewayClient => Subject::GatewayClient { names: HostNames::default() },
        Role::Merchant => Subject::Merchant { merchant_id: MerchantId::new("SHOP-001").unwrap() },
        Role::BankSigning => Subject::BankSigning { iin: Iin::new("123456").unwrap() },
    };
    IssueRequest::new(subject, &format!("test {role}"))
}

pub fn request_with_window(role: Role, not_before: OffsetDateTime, not_after: OffsetDateTime) -> IssueRequest {
    IssueRequest { validity: Validity::Window { not_before, not_after }, ..request(role) }
}

pub fn days(n: i64) -> Duration {
    Duration::days(n)
}

/// The `-purpose` openssl checks for a role (`any` where no TLS purpose applies).
pub fn openssl_purpose(role: Role) -> &'static str {
    match role {
        Role::AuthzServer | Role::GatewayServer => "sslserver",
        Role::GatewayClient | Role::Merchant => "sslclient",
        Role::BankSigning => "any",
    }
}

/// Runs `openssl verify` with the CA's root as CAfile, the intermediate as untrusted, both CRLs
/// and -crl_check_all; returns (success, combined output).
pub fn openssl_verify(ca: &TestCa, leaf_file: &Path, purpose: &str) -> (bool, String) {
    let output = Command::new("openssl")
        .arg("verify")
        .arg("-x509_strict")
        .arg("-CAfile")
        .arg(ca.root_file())
        .arg("-untrusted")
        .arg(ca.intermediate_file())
        .arg("-CRLfile")
        .arg(ca.crls_file())
        .arg("-crl_check_all")
        .arg("-purpose")
        .arg(purpose)
        .arg(leaf_file)
        .output()
        .expect("openssl must be installed for these tests");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}
