//! The SIM profile: the local file that stands in for the SIM's secure storage.
//!
//! A real SIM keeps its key sets inside the secure element, where they cannot be read out; this
//! emulation keeps them in one JSON file with mode 0600, replaced atomically on every change
//! (see `storage`). Per issuer (by IIN) it holds one [`KeySet`]: the SIM id, the CURRENT chain
//! key only (CK_{n-1} while session n is pending, CK_n once its answer has been read), the
//! counter of the last completed session, the next RSN, the bank's certificate, and at most one
//! [`PendingPayment`]. Accounts and merchants are listed beside the key sets.
//!
//! File layout (`format` is [`PROFILE_FORMAT`]):
//!
//! ```json
//! {
//!   "format": "mps-sim-profile/1",
//!   "key_sets": [{ "iin": "400012", "sim_id": "8949012345678901234",
//!                  "transport_key_label": "mps-tk-demo", "chain_key": "<64 hex>",
//!                  "counter": 0, "next_rsn": "<16 hex>", "bank_certificate_pem": "...",
//!                  "pending": { "packet": "<226 hex>", "summary": { ... } } }],
//!   "accounts": [{ "account": "4000120000001234", "iin": "400012", "nickname": "daily" }],
//!   "merchants": [{ "merchant_id": "COFFEE-SHOP-01", "name": "Corner coffee", "url": "http://127.0.0.1:8443/pay" }]
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use mps_protocol::wire::PACKET_LEN;
use mps_protocol::{AesKey, Counter, Iin, PayerPacket, Rsn, SimId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::accounts::AccountEntry;
use crate::error::ProfileError;
use crate::merchants::MerchantEntry;
use crate::payment::PaymentSummary;
use crate::storage::{self, ProfileLock};

/// The format tag of version 1 of the profile file.
pub const PROFILE_FORMAT: &str = "mps-sim-profile/1";
/// Largest profile file read (a profile of a few issuers, accounts and merchants is a few KiB).
pub const PROFILE_BYTES_MAX: u64 = 1 << 20;
/// Most key sets (issuers) one profile holds.
pub const KEY_SETS_MAX: usize = 16;

/// One issuer's keys and session state on this SIM.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySet {
    pub(crate) iin: Iin,
    pub(crate) sim_id: SimId,
    pub(crate) transport_key_label: String,
    /// The current chain key: CK_{counter}.
    #[serde(with = "crate::serde_hex::key")]
    pub(crate) chain_key: AesKey,
    /// The last completed session (0 right after personalisation).
    pub(crate) counter: Counter,
    /// RSN_{counter + 1}: the random sequence number of the next session.
    #[serde(with = "crate::serde_hex::rsn")]
    pub(crate) next_rsn: Rsn,
    pub(crate) bank_certificate_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pending: Option<PendingPayment>,
}

impl KeySet {
    /// The issuer.
    pub fn iin(&self) -> Iin {
        self.iin
    }

    /// The SIM id this issuer knows the SIM by.
    pub fn sim_id(&self) -> &SimId {
        &self.sim_id
    }

    /// Label of the transport key the personalisation record was wrapped under.
    pub fn transport_key_label(&self) -> &str {
        &self.transport_key_label
    }

    /// The last completed session (0 right after personalisation).
    pub fn counter(&self) -> Counter {
        self.counter
    }

    /// The bank's certificate (PEM), as delivered with the personalisation record.
    pub fn bank_certificate_pem(&self) -> &str {
        &self.bank_certificate_pem
    }

    /// The payment waiting for its answer, if any.
    pub fn pending(&self) -> Option<&PendingPayment> {
        self.pending.as_ref()
    }

    fn check(&self) -> Result<(), String> {
        let Some(pending) = &self.pending else { return Ok(()) };
        let iin = self.iin;
        if Some(pending.summary.counter) != self.counter.next() {
            return Err(format!("issuer {iin}: pending payment is not session counter + 1"));
        }
        let packet = PayerPacket::decode(&pending.packet)
            .map_err(|e| format!("issuer {iin}: pending packet does not decode: {e}"))?;
        let fields = &packet.fields;
        let summary = &pending.summary;
        let agrees = fields.iin == iin
            && fields.sim_id == self.sim_id
            && fields.counter == summary.counter
            && summary.iin == iin
            && fields.merchant_id == summary.merchant_id
            && fields.order_no == summary.order_no
            && fields.amount == summary.amount
            && fields.currency == summary.currency;
        if agrees { Ok(()) } else { Err(format!("issuer {iin}: pending packet and its summary disagree")) }
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("iin", &self.iin)
            .field("sim_id", &self.sim_id)
            .field("counter", &self.counter.value())
            .field("chain_key", &self.chain_key)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

/// A packet that has been built and not yet answered: kept byte for byte so `sim resend` can
/// send exactly the same bytes again (the issuer answers a byte-identical retransmission with
/// its stored answer, DESIGN.md section 7 step 6).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingPayment {
    #[serde(with = "crate::serde_hex::bytes")]
    pub(crate) packet: [u8; PACKET_LEN],
    pub(crate) summary: PaymentSummary,
}

impl PendingPayment {
    /// The 113 packet bytes.
    pub fn packet(&self) -> &[u8; PACKET_LEN] {
        &self.packet
    }

    /// What the payer confirmed.
    pub fn summary(&self) -> &PaymentSummary {
        &self.summary
    }
}

impl fmt::Debug for PendingPayment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingPayment").field("summary", &self.summary).finish_non_exhaustive()
    }
}

/// The whole profile in memory. Operations check all their input first and change the profile
/// only when they succeed; [`Profile::save`] then writes it atomically.
#[derive(Default)]
pub struct Profile {
    pub(crate) key_sets: BTreeMap<Iin, KeySet>,
    pub(crate) accounts: Vec<AccountEntry>,
    pub(crate) merchants: Vec<MerchantEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    format: String,
    key_sets: Vec<KeySet>,
    #[serde(default)]
    accounts: Vec<AccountEntry>,
    #[serde(default)]
    merchants: Vec<MerchantEntry>,
}

#[derive(Serialize)]
struct ProfileFileRef<'a> {
    format: &'static str,
    key_sets: Vec<&'a KeySet>,
    accounts: &'a [AccountEntry],
    merchants: &'a [MerchantEntry],
}

impl Profile {
    /// An empty profile: no key sets, accounts or merchants.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the exclusive lock on the profile at `path` (an advisory lock on its directory), so
    /// that two processes never build the same session or lose each other's changes. Hold it from
    /// before [`Profile::load`] until after [`Profile::save`]. Refused at once, not waited for,
    /// while another process holds it.
    pub fn lock(path: &Path) -> Result<ProfileLock, ProfileError> {
        storage::lock_directory_of(path)
    }

    /// Reads and checks the profile at `path`.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let bytes = storage::read_secret_file(path, PROFILE_BYTES_MAX)?;
        Self::from_json(&bytes, path)
    }

    /// Reads the profile at `path`, or starts an empty one when there is no file yet.
    pub fn load_or_new(path: &Path) -> Result<Self, ProfileError> {
        match Self::load(path) {
            Err(ProfileError::NotFound { .. }) => Ok(Self::new()),
            other => other,
        }
    }

    /// Writes the profile to `path` atomically (temporary file, fsync, rename, fsync of the
    /// directory), with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), ProfileError> {
        // Assert the invariants before the write: a profile that cannot be read back is never written.
        self.check().map_err(|reason| ProfileError::Corrupt { path: path.to_owned(), reason })?;
        let bytes = self.to_json().map_err(|source| ProfileError::Json { path: path.to_owned(), source })?;
        storage::write_atomically(path, &bytes)
    }

    /// Parses the profile's JSON (`path` only names the file in errors).
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Self, ProfileError> {
        let file: ProfileFile =
            serde_json::from_slice(bytes).map_err(|source| ProfileError::Json { path: path.to_owned(), source })?;
        let corrupt = |reason: String| ProfileError::Corrupt { path: path.to_owned(), reason };
        if file.format != PROFILE_FORMAT {
            return Err(corrupt(format!("format is {:?}, this build reads {PROFILE_FORMAT:?}", file.format)));
        }
        let mut key_sets = BTreeMap::new();
        for key_set in file.key_sets {
            let iin = key_set.iin;
            if key_sets.insert(iin, key_set).is_some() {
                return Err(corrupt(format!("two key sets for issuer {iin}")));
            }
        }
        let profile = Self { key_sets, accounts: file.accounts, merchants: file.merchants };
        profile.check().map_err(corrupt)?;
        Ok(profile)
    }

    /// The profile's JSON, in a buffer zeroized on drop.
    pub(crate) fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
        let view = ProfileFileRef {
            format: PROFILE_FORMAT,
            key_sets: self.key_sets.values().collect(),
            accounts: &self.accounts,
            merchants: &self.merchants,
        };
        // Reserve generously so the buffer holding key material is never reallocated (a
        // reallocation would leave an unzeroized copy behind).
        let capacity = 16 * 1024
            + self.key_sets.values().map(|k| 2 * k.bank_certificate_pem.len() + 2048).sum::<usize>()
            + 256 * self.accounts.len()
            + 512 * self.merchants.len();
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        serde_json::to_writer_pretty(&mut *bytes, &view)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Every invariant that ties the parts of a profile together.
    fn check(&self) -> Result<(), String> {
        if self.key_sets.len() > KEY_SETS_MAX {
            return Err(format!("more than {KEY_SETS_MAX} key sets"));
        }
        for key_set in self.key_sets.values() {
            key_set.check()?;
        }
        crate::accounts::check(self)?;
        crate::merchants::check(&self.merchants)
    }

    /// The key sets, ordered by issuer.
    pub fn key_sets(&self) -> impl Iterator<Item = &KeySet> {
        self.key_sets.values()
    }

    /// The key set of one issuer.
    pub fn key_set(&self, iin: Iin) -> Option<&KeySet> {
        self.key_sets.get(&iin)
    }

    /// The payment waiting for its answer at this issuer, if any.
    pub fn pending(&self, iin: Iin) -> Option<&PendingPayment> {
        self.key_sets.get(&iin).and_then(|k| k.pending.as_ref())
    }
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("key_sets", &self.key_sets.values().collect::<Vec<_>>())
            .field("accounts", &self.accounts)
            .field("merchants", &self.merchants)
            .finish()
    }
}
