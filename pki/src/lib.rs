//! MPS PKI: the scheme's X.509 material. A root and an intermediate CA issue certificates per
//! [`Role`]; [`TrustStore`] verifies chains with CRLs for the other crates; [`tls`] builds rustls
//! configurations for mTLS; [`jws`] signs and verifies detached JWS (ES256) with x5c chains.
#![forbid(unsafe_code)]

pub mod ca;
pub mod config;
pub mod hsm;
pub mod identity;
pub mod jws;
#[cfg(feature = "server")]
pub mod listener;
pub mod pem;
pub mod role;
pub mod signer;
pub mod tls;
pub mod verify;

pub use ca::{
    CaError, CaLevel, CertificateAuthority, IssueRequest, Issued, KeyLocation, RevocationReason, Subject, SubjectError,
    Validity,
};
pub use config::PkiConfig;
pub use hsm::HsmSigner;
pub use identity::{CertificateInfo, inspect};
pub use role::Role;
pub use signer::{Es256Signer, RemoteEs256Key, SignerError, SoftwareSigner};
pub use verify::{TrustStore, TrustStoreError, VerifiedIdentity, VerifyError};
