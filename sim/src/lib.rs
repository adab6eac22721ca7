//! The payer's SIM payment application (paper, section 6, Fig. 8): the first step of a payment.
//!
//! The SIM holds one key set per issuer (DESIGN.md section 9), builds the 113-byte secured
//! payment packet of section 4 and reads the issuer's 79-byte answer of section 5, advancing
//! the key ratchet of section 3. On a real SIM the key sets live in the secure element; here
//! they live in a local JSON [`Profile`] file, written atomically with mode 0600.
//!
//! The flow, in module order: [`profile`] (the emulated secure storage and its file),
//! [`personalise`] (import of the bank's personalisation record), [`accounts`] and
//! [`merchants`] (what the payer pays from and whom), amounts parsed exactly by `mps_protocol::money`,
//! [`payment`] (build the packet, keep it pending, open the answer). Every operation checks all
//! its input before it changes anything: a refused operation leaves the profile as it was.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod error;
pub mod merchants;
pub mod payment;
pub mod personalise;
pub mod profile;
mod serde_hex;
mod storage;

pub use accounts::AccountEntry;
pub use error::{ProfileError, SimError};
pub use merchants::MerchantEntry;
pub use mps_protocol::money::{AmountError, parse_major_amount, parse_minor_amount};
pub use payment::{AnswerOutcome, PaymentRequest, PaymentSummary};
pub use profile::{KeySet, PendingPayment, Profile};
pub use storage::ProfileLock;
