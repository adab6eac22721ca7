//! MPS wire protocol and key schedule: the shared language of every party.
//!
//! Pure code, no I/O. [`ids`] holds the typed identifiers of DESIGN.md section 2, [`keys`] the
//! key schedule of section 3 in software, [`wire`] the payer packet (section 4) and the
//! issuer's answer (section 5), [`perso`] the personalisation record (section 9), and [`config`] the
//! TOML-with-environment-overrides overlay every binary reads its configuration with; [`money`]
//! parses amount texts exactly into minor units. The private `codec` module is the cursor
//! reader and writer every wire layout is read and written with.
#![forbid(unsafe_code)]

pub mod closed_pipe;
mod codec;
pub mod config;
pub mod ids;
pub mod keys;
pub mod money;
pub mod perso;
pub mod secret;
pub mod wire;

pub use ids::{
    Account, Amount, Counter, Currency, IdError, Iin, MerchantId, OrderNo, Password, Rsn, SimId, format_minor,
};
pub use keys::{AesKey, CryptoError, SessionKeys};
pub use secret::{PasswordVerificationValue, Secret};
pub use wire::{
    AnswerPlain, AuthCode, ClearFields, PayerAnswer, PayerPacket, PaymentSecret, ResponseCode, TxnId, WireError,
};
