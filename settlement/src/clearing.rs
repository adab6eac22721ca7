//! The clearing file (docs/CLEARING.md): one issuer's approvals of one business day, the late
//! reversals of earlier days as negative entries, totals per acquirer and currency, and the
//! SHA-256 of the issuer's previous day's file. The issuer writes it ([`ClearingFile::to_bytes`],
//! the only encoding: the bytes are what the detached JWS signs and what the next day's
//! `previous_sha256` hashes); the settlement center reads it back ([`ClearingFile::from_bytes`],
//! which checks every field and the totals, so a file that parses is consistent in itself).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mps_protocol::{Currency, Iin, MerchantId, OrderNo};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The `format` of every file this module writes and reads.
pub const FORMAT: &str = "mps-clearing/1";
/// A file above this size is refused before it is parsed (a day of a large bank is a few
/// hundred MB; the settlement center sets its own limit below this).
pub const FILE_BYTES_MAX: usize = 1 << 30;
/// The file name of `issuer`'s file of `day`: `clearing-<iin>-<YYYY-MM-DD>.json`; its detached
/// JWS is the same name with `.jws` added.
pub fn file_name(issuer_iin: &str, day: &str) -> String {
    format!("clearing-{issuer_iin}-{day}.json")
}

/// What an entry does to the issuer's debt to the acquirer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// An approval of this day that was not reversed on this day: a positive amount.
    Approval,
    /// The reversal, on this day, of an approval of an earlier day: a negative amount.
    Reversal,
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The approval's transaction id, or the reversal's own id: 32 lowercase hex digits,
    /// unique across every file of every issuer.
    pub txn_id: String,
    /// Approval or reversal.
    pub kind: EntryKind,
    /// A reversal's original approval (in an earlier day's file); null for an approval.
    pub original_txn_id: Option<String>,
    /// The approval's auth code (a reversal repeats its original's).
    pub auth_code: String,
    /// The merchant.
    pub merchant_id: String,
    /// The merchant's order number.
    pub order_no: String,
    /// The merchant's bank.
    pub acquirer_iin: String,
    /// Minor units: positive for an approval, negative for a reversal.
    pub amount: i64,
    /// ISO 4217 numeric code.
    pub currency: u16,
    /// When the issuer booked it, RFC 3339 in UTC.
    pub time: String,
}

/// The sum of one acquirer's entries in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Total {
    /// The acquirer.
    pub acquirer_iin: String,
    /// ISO 4217 numeric code.
    pub currency: u16,
    /// Entries.
    pub count: u64,
    /// Their amounts summed (minor units; negative when reversals outweigh approvals).
    pub amount: i64,
}

/// One issuer's clearing file of one business day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearingFile {
    /// [`FORMAT`].
    pub format: String,
    /// The issuer that wrote and signed it.
    pub issuer_iin: String,
    /// The business day, YYYY-MM-DD.
    pub business_day: String,
    /// The issuer's cut-off, HH:MM (or HH:MM:SS) UTC: the day ran from the previous day's
    /// cut-off to this one.
    pub cutoff_utc: String,
    /// SHA-256 (lowercase hex) of the issuer's file of the previous business day; null only
    /// in the issuer's first file.
    pub previous_sha256: Option<String>,
    /// Ordered by time, then txn_id.
    pub entries: Vec<Entry>,
    /// One per acquirer and currency with entries, ordered by acquirer then currency.
    pub totals: Vec<Total>,
}

/// Why a clearing file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClearingError {
    /// Not JSON of this format.
    #[error("not a clearing file: {0}")]
    Syntax(String),
    /// Larger than [`FILE_BYTES_MAX`].
    #[error("the file is larger than {FILE_BYTES_MAX} bytes")]
    TooLarge,
    /// A field is out of its range.
    #[error("{field}: {problem}")]
    Field {
        /// Which field (entries[i].name for an entry's).
        field: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A transaction id appears twice in the file.
    #[error("transaction {0} appears twice")]
    DuplicateTxn(String),
    /// The entries are not in the file's order.
    #[error("entries[{0}] is out of order (by time, then txn_id)")]
    Order(usize),
    /// The totals are not the sums of the entries.
    #[error("the totals do not match the entries")]
    Totals,
    /// The bytes are not this file's one encoding (re-encoded, reformatted, or with bytes added).
    #[error("the bytes are not the canonical encoding of the file (edited by hand?)")]
    NotCanonical,
}

fn field(field: impl Into<String>, problem: &'static str) -> ClearingError {
    ClearingError::Field { field: field.into(), problem }
}

impl ClearingFile {
    /// A file of `entries` (put in order here) with their totals.
    pub fn new(
        issuer_iin: &str,
        business_day: &str,
        cutoff_utc: &str,
        previous_sha256: Option<String>,
        mut entries: Vec<Entry>,
    ) -> Result<Self, ClearingError> {
        entries.sort_by(|a, b| (a.time.as_str(), a.txn_id.as_str()).cmp(&(b.time.as_str(), b.txn_id.as_str())));
        let totals = totals_of(&entries)?;
        let file = Self {
            format: FORMAT.to_owned(),
            issuer_iin: issuer_iin.to_owned(),
            business_day: business_day.to_owned(),
            cutoff_utc: cutoff_utc.to_owned(),
            previous_sha256,
            entries,
            totals,
        };
        file.check()?;
        Ok(file)
    }

    /// The file's one encoding: pretty JSON with a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings, integers and vectors cannot fail.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses and checks a file: every field, the order, no txn id twice, the totals, and that
    /// the bytes are exactly the encoding [`ClearingFile::to_bytes`] gives (so that what was
    /// signed and hashed is what was read).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ClearingError> {
        if bytes.len() > FILE_BYTES_MAX {
            return Err(ClearingError::TooLarge);
        }
        let file: Self = serde_json::from_slice(bytes).map_err(|e| ClearingError::Syntax(e.to_string()))?;
        file.check()?;
        if file.to_bytes() != bytes {
            return Err(ClearingError::NotCanonical);
        }
        Ok(file)
    }

    /// Checks every field, the order, unique txn ids and the totals.
    pub fn check(&self) -> Result<(), ClearingError> {
        if self.format != FORMAT {
            return Err(field("format", "must be \"mps-clearing/1\""));
        }
        if Iin::new(&self.issuer_iin).is_err() {
            return Err(field("issuer_iin", "must be 6 digits"));
        }
        if !is_day(&self.business_day) {
            return Err(field("business_day", "must be a date YYYY-MM-DD"));
        }
        if !is_cutoff(&self.cutoff_utc) {
            return Err(field("cutoff_utc", "must be HH:MM or HH:MM:SS"));
        }
        if self.previous_sha256.as_deref().is_some_and(|hash| !is_hex(hash, 64)) {
            return Err(field("previous_sha256", "must be 64 lowercase hex digits or null"));
        }
        let mut seen = BTreeSet::new();
        for (index, entry) in self.entries.iter().enumerate() {
            entry.check(index)?;
            if !seen.insert(entry.txn_id.as_str()) {
                return Err(ClearingError::DuplicateTxn(entry.txn_id.clone()));
            }
            if index > 0 {
                let before = &self.entries[index - 1];
                if (before.time.as_str(), before.txn_id.as_str()) > (entry.time.as_str(), entry.txn_id.as_str()) {
                    return Err(ClearingError::Order(index));
                }
            }
        }
        if totals_of(&self.entries)? != self.totals {
            return Err(ClearingError::Totals);
        }
        Ok(())
    }
}

impl Entry {
    fn check(&self, index: usize) -> Result<(), ClearingError> {
        let name = |name: &str| format!("entries[{index}].{name}");
        if !is_hex(&self.txn_id, 32) {
            return Err(field(name("txn_id"), "must be 32 lowercase hex digits"));
        }
        match (self.kind, &self.original_txn_id) {
            (EntryKind::Approval, None) if self.amount > 0 => {}
            (EntryKind::Reversal, Some(original)) if self.amount < 0 && is_hex(original, 32) => {
                if *original == self.txn_id {
                    return Err(field(name("original_txn_id"), "a reversal cannot reverse itself"));
                }
            }
            (EntryKind::Approval, _) => {
                return Err(field(name("amount"), "an approval has a positive amount and no original_txn_id"));
            }
            (EntryKind::Reversal, _) => {
                return Err(field(name("amount"), "a reversal has a negative amount and an original_txn_id (32 hex)"));
            }
        }
        if self.auth_code.len() != 6 || !self.auth_code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return Err(field(name("auth_code"), "must be 6 characters A-Z or 0-9"));
        }
        // The protocol's own types are the rules; the text must be their spelling exactly.
        if MerchantId::new(&self.merchant_id).map_or(true, |id| id.as_str() != self.merchant_id) {
            return Err(field(name("merchant_id"), "must be 1 to 15 printable ASCII characters, no trailing space"));
        }
        if OrderNo::new(&self.order_no).map_or(true, |order| order.as_str() != self.order_no) {
            return Err(field(name("order_no"), "must be 1 to 12 printable ASCII characters, no trailing space"));
        }
        if Iin::new(&self.acquirer_iin).is_err() {
            return Err(field(name("acquirer_iin"), "must be 6 digits"));
        }
        if Currency::from_code(self.currency).is_err() {
            return Err(field(name("currency"), "must be an ISO 4217 numeric code this build knows"));
        }
        if time::OffsetDateTime::parse(&self.time, &time::format_description::well_known::Rfc3339)
            .map_or(true, |t| t.offset() != time::UtcOffset::UTC)
        {
            return Err(field(name("time"), "must be RFC 3339 in UTC"));
        }
        Ok(())
    }
}

/// The totals of `entries`, one per acquirer and currency, in order.
pub fn totals_of(entries: &[Entry]) -> Result<Vec<Total>, ClearingError> {
    let mut sums: BTreeMap<(&str, u16), (u64, i64)> = BTreeMap::new();
    for entry in entries {
        let (count, amount) = sums.entry((entry.acquirer_iin.as_str(), entry.currency)).or_default();
        *count += 1;
        *amount = amount.checked_add(entry.amount).ok_or_else(|| field("totals", "the sum overflows i64"))?;
    }
    Ok(sums
        .into_iter()
        .map(|((acquirer_iin, currency), (count, amount))| Total {
            acquirer_iin: acquirer_iin.to_owned(),
            currency,
            count,
            amount,
        })
        .collect())
}

/// The SHA-256 of a file's bytes, lowercase hex: the next day's `previous_sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Approval => "approval",
            Self::Reversal => "reversal",
        })
    }
}

fn is_digits(text: &str, length: usize) -> bool {
    text.len() == length && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_hex(text: &str, length: usize) -> bool {
    text.len() == length && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A business day as the files spell it, YYYY-MM-DD.
pub fn parse_day(text: &str) -> Option<time::Date> {
    time::Date::parse(text, time::macros::format_description!("[year]-[month]-[day]")).ok()
}

fn is_day(text: &str) -> bool {
    parse_day(text).is_some()
}

/// A cut-off as the issuers' configuration and the files spell it: a UTC time of day, HH:MM,
/// or HH:MM:SS for one that is not on the minute. The one parser of that spelling.
pub fn parse_cutoff(text: &str) -> Option<time::Time> {
    let mut parts = text.split(':');
    let (hours, minutes, seconds) = (parts.next()?, parts.next()?, parts.next());
    if parts.next().is_some() {
        return None;
    }
    let two_digits = |part: &str| if is_digits(part, 2) { part.parse::<u8>().ok() } else { None };
    let seconds = match seconds {
        None => 0,
        Some(seconds) => two_digits(seconds)?,
    };
    time::Time::from_hms(two_digits(hours)?, two_digits(minutes)?, seconds).ok()
}

/// The spelling of a cut-off: HH:MM on the minute, else HH:MM:SS (what [`parse_cutoff`] reads).
pub fn cutoff_text(cutoff: time::Time) -> String {
    let (hours, minutes, seconds) = cutoff.as_hms();
    if seconds == 0 { format!("{hours:02}:{minutes:02}") } else { format!("{hours:02}:{minutes:02}:{seconds:02}") }
}

fn is_cutoff(text: &str) -> bool {
    parse_cutoff(text).is_some()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn approval(txn: u8, acquirer: &str, amount: i64, time: &str) -> Entry {
        Entry {
            txn_id: format!("{txn:032x}"),
            kind: EntryKind::Approval,
            original_txn_id: None,
            auth_code: "A1B2C3".to_owned(),
            merchant_id: "COFFEE-SHOP-01".to_owned(),
            order_no: format!("O-{txn}"),
            acquirer_iin: acquirer.to_owned(),
            amount,
            currency: 978,
            time: time.to_owned(),
        }
    }

    fn reversal(txn: u8, original: u8, acquirer: &str, amount: i64, time: &str) -> Entry {
        Entry {
            kind: EntryKind::Reversal,
            original_txn_id: Some(format!("{original:032x}")),
            ..approval(txn, acquirer, amount, time)
        }
    }

    fn day() -> ClearingFile {
        ClearingFile::new(
            "400012",
            "2026-11-30",
            "22:00",
            Some("ab".repeat(32)),
            vec![
                approval(2, "510050", 300, "2026-11-30T10:00:00Z"),
                approval(1, "400012", 100, "2026-11-30T09:00:00Z"),
                reversal(3, 9, "510050", -50, "2026-11-30T11:00:00Z"),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_file_is_ordered_totalled_and_reads_back_from_its_bytes() {
        let file = day();
        assert_eq!(file.entries[0].txn_id, format!("{:032x}", 1));
        assert_eq!(
            file.totals,
            vec![
                Total { acquirer_iin: "400012".into(), currency: 978, count: 1, amount: 100 },
                Total { acquirer_iin: "510050".into(), currency: 978, count: 2, amount: 250 },
            ]
        );
        let bytes = file.to_bytes();
        assert_eq!(ClearingFile::from_bytes(&bytes).unwrap(), file);
        assert_eq!(sha256_hex(&bytes).len(), 64);
    }

    #[test]
    fn a_changed_byte_or_a_reformatted_file_is_refused() {
        let bytes = day().to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let more = text.replacen("\"amount\": 300", "\"amount\": 301", 1);
        assert_eq!(ClearingFile::from_bytes(more.as_bytes()), Err(ClearingError::Totals));
        let compact = serde_json::to_vec(&day()).unwrap();
        assert_eq!(ClearingFile::from_bytes(&compact), Err(ClearingError::NotCanonical));
        let mut trailing = bytes.clone();
        trailing.push(b'\n');
        assert_eq!(ClearingFile::from_bytes(&trailing), Err(ClearingError::NotCanonical));
        assert!(matches!(ClearingFile::from_bytes(&bytes[..bytes.len() / 2]), Err(ClearingError::Syntax(_))));
    }

    #[test]
    fn inconsistent_entries_are_refused() {
        let mut twice = day();
        twice.entries[1].txn_id = twice.entries[0].txn_id.clone();
        assert!(matches!(twice.check(), Err(ClearingError::DuplicateTxn(_))));
        let mut swapped = day();
        swapped.entries.swap(0, 1);
        assert_eq!(swapped.check(), Err(ClearingError::Order(1)));
        let mut negative = day();
        negative.entries[0].amount = -100;
        assert!(matches!(negative.check(), Err(ClearingError::Field { .. })));
        let mut positive_reversal = day();
        positive_reversal.entries[2].amount = 50;
        assert!(matches!(positive_reversal.check(), Err(ClearingError::Field { .. })));
        let mut lower = day();
        lower.entries[0].auth_code = "a1b2c3".into();
        assert!(matches!(lower.check(), Err(ClearingError::Field { .. })));
        let mut local_time = day();
        local_time.entries[0].time = "2026-11-30T10:00:00+01:00".into();
        assert!(matches!(local_time.check(), Err(ClearingError::Field { .. })));
        let mut bad_previous = day();
        bad_previous.previous_sha256 = Some("AB".repeat(32));
        assert!(matches!(bad_previous.check(), Err(ClearingError::Field { .. })));
    }

    #[test]
    fn the_cutoff_and_the_file_name_have_one_spelling() {
        assert!(is_cutoff("22:00") && is_cutoff("00:00") && !is_cutoff("24:00") && !is_cutoff("9:00"));
        assert!(is_cutoff("20:55:30") && is_cutoff("23:59:59") && is_cutoff("06:30:00"));
        for bad in ["20:55:60", "20:55:3", "20:55:", "20:55:30:00", "20:55:+3", "20:55:30Z", ":00", ""] {
            assert!(!is_cutoff(bad), "{bad}");
        }
        for text in ["00:00", "22:00", "20:55:30"] {
            assert_eq!(cutoff_text(parse_cutoff(text).unwrap()), text);
        }
        assert_eq!(cutoff_text(parse_cutoff("06:30:00").unwrap()), "06:30", "on the minute: HH:MM");
        assert_eq!(file_name("400012", "2026-11-30"), "clearing-400012-2026-11-30.json");
    }
}
