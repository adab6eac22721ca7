//! MPS HSM layer: the only crate that talks PKCS#11 (through `cryptoki`), so that the
//! authorization server never touches raw HSM calls.
//!
//! # Use
//!
//! ```no_run
//! # async fn example(packet: mps_protocol::PayerPacket, wrapped: mps_hsm::WrappedChainKey, rsn: mps_protocol::Rsn)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use mps_hsm::{AnswerContent, Hsm, HsmConfig};
//! use mps_protocol::{AuthCode, Currency, ResponseCode, TxnId};
//!
//! let config = HsmConfig::from_toml_str("token_label = \"mps\"")?; // PIN from $MPS_HSM_PIN
//! let hsm = Hsm::connect(config).await?;
//!
//! // Phase 1: verify the packet and decrypt its secret (DESIGN.md section 7, step 7).
//! let opened = hsm.open_session(&wrapped, packet.fields.counter, rsn, &packet).await?;
//! // ... the ledger decides, using opened.account and opened.password_verification_value ...
//! // Phase 2: seal the answer and get the next chain key for the ledger.
//! let answer = AnswerContent {
//!     response_code: ResponseCode::Approved,
//!     auth_code: AuthCode(*b"A1B2C3"),
//!     balance: 10_000,
//!     currency: Currency::EUR,
//!     txn_id: TxnId([0; 16]),
//! };
//! let sealed = hsm.seal_answer(opened.ticket, answer).await?;
//! let _bytes = sealed.answer.encode(); // 79 bytes for the SIM
//! # Ok(()) }
//! ```
//!
//! # Design (docs/HSM.md has the reasons)
//!
//! - [`Hsm`] is a pool of OS threads, each owning one PKCS#11 session with session copies of
//!   the long-lived keys; async callers send jobs through bounded queues and await a oneshot
//!   reply, so tokio threads never block on the HSM.
//! - One authorization creates four session objects (unwrap CK_{n-1}, derive Ki_n, Ks_n,
//!   CK_n), the protocol's minimum, and destroys them on every path.
//! - Key custody ([`custody`]): every issuer key is checked against the key policy when the
//!   pool connects, and a weaker one stops it; chain keys are stored under a versioned KEK
//!   ([`WrappedChainKey`]) so that the KEK can be rotated while serving.
//! - The pool may span several HSMs holding the same keys (`additional` in [`HsmConfig`]):
//!   each is a member with its own workers and supervisor; new work goes to the least loaded
//!   member that is up, a ticket's seal to the member that opened it. Every member must hold
//!   the same keys as the first, checked at connect.
//! - When an HSM is lost its member takes no work while its supervisor re-initialises it with
//!   backoff; when every HSM is lost every operation fails at once with
//!   [`HsmError::Unavailable`] (callers fail closed).
//! - [`Hsm::recycle`] re-initialises on purpose, to free SoftHSM's session-object memory.
//!
//! Binary `mps-hsm`: key ceremony (`keys init`, `keys list`, `keys check`, `keys rotate-kek`,
//! `keys retire-kek`) and the benchmark (`bench`).
//! Feature `testing`: `testing::TestToken` (a throwaway SoftHSM token) and known-answer
//! hooks, for this crate's tests and other crates' dev-dependencies.

mod authorization;
pub mod bench;
pub mod ceremony;
pub mod config;
pub mod custody;
mod error;
mod members;
mod metrics;
mod module;
mod operations;
mod pin_environment;
mod pool;
mod supervisor;
mod templates;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

pub use authorization::{AnswerContent, OpenedSession, SealedSession, SessionTicket};
pub use config::{ConfigError, HsmConfig, HsmMember, KeyLabels, Pin};
pub use custody::{PolicyViolation, WrappedChainKey};
pub use error::{HsmError, Pkcs11Function, RvError, SessionError};
pub use metrics::{MemberMetrics, PoolMetrics};
pub use operations::{RANDOM_BYTES_MAX, SigningKey, SimRegistration};
pub use pin_environment::take_pins_from_environment;
pub use pool::Hsm;
