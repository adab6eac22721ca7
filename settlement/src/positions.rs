//! Netting (docs/CLEARING.md, "Positions"): from the entries of checked clearing files to what
//! each issuer owes each acquirer (bilateral) and what each bank receives or pays (net), and the
//! `positions.json` / `positions.csv` encodings. Pure: no files, no clock; `run` calls it after
//! every file has been read and verified.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::clearing::{ClearingFile, sha256_hex};

/// The `format` of `positions.json`.
pub const FORMAT: &str = "mps-settlement/1";
/// The header line of `positions.csv`.
pub const CSV_HEADER: &str = "kind,bank_iin,counterparty_iin,currency,amount";

/// One clearing file the positions were computed from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// The issuer that signed it.
    pub issuer_iin: String,
    /// Its business day.
    pub business_day: String,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
}

/// What one issuer owes one acquirer in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bilateral {
    /// The paying bank.
    pub issuer_iin: String,
    /// The receiving bank.
    pub acquirer_iin: String,
    /// ISO 4217 numeric code.
    pub currency: u16,
    /// Minor units; negative when reversals outweigh approvals.
    pub amount: i64,
}

/// What one bank receives (positive) or pays (negative) in one currency, all counterparties
/// together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Net {
    /// The bank.
    pub bank_iin: String,
    /// ISO 4217 numeric code.
    pub currency: u16,
    /// Minor units.
    pub amount: i64,
}

/// The settlement center's output: `positions.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Positions {
    /// [`FORMAT`].
    pub format: String,
    /// The files netted, ordered by issuer then day.
    pub files: Vec<FileRef>,
    /// Ordered by issuer, acquirer, currency.
    pub bilateral: Vec<Bilateral>,
    /// Ordered by bank, currency; per currency the amounts sum to zero.
    pub net: Vec<Net>,
}

/// Why positions could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PositionsError {
    /// A sum leaves the range of i64 minor units (no real day comes near; the files are wrong).
    #[error(
        "the sum of currency {currency} for bank {bank_iin} overflows 64-bit minor units; check the clearing files"
    )]
    Overflow {
        /// The bank whose sum overflowed.
        bank_iin: String,
        /// The currency.
        currency: u16,
    },
}

/// Nets `files` (each with the bytes it was read from, for its SHA-256). The files must already
/// be checked (parsed by [`ClearingFile::from_bytes`], unique txn ids, chained); this only adds.
pub fn compute(files: &[(&ClearingFile, &[u8])]) -> Result<Positions, PositionsError> {
    let mut refs: Vec<FileRef> = files
        .iter()
        .map(|(file, bytes)| FileRef {
            issuer_iin: file.issuer_iin.clone(),
            business_day: file.business_day.clone(),
            sha256: sha256_hex(bytes),
        })
        .collect();
    refs.sort();

    let mut bilateral: BTreeMap<(&str, &str, u16), i64> = BTreeMap::new();
    for (file, _) in files {
        for entry in &file.entries {
            let key = (file.issuer_iin.as_str(), entry.acquirer_iin.as_str(), entry.currency);
            let sum = bilateral.entry(key).or_default();
            *sum = sum.checked_add(entry.amount).ok_or_else(|| PositionsError::Overflow {
                bank_iin: file.issuer_iin.clone(),
                currency: entry.currency,
            })?;
        }
    }

    let mut net: BTreeMap<(&str, u16), i64> = BTreeMap::new();
    for (&(issuer, acquirer, currency), &amount) in &bilateral {
        add(&mut net, issuer, currency, amount.checked_neg())?;
        add(&mut net, acquirer, currency, Some(amount))?;
    }

    Ok(Positions {
        format: FORMAT.to_owned(),
        files: refs,
        bilateral: bilateral
            .into_iter()
            .map(|((issuer, acquirer, currency), amount)| Bilateral {
                issuer_iin: issuer.to_owned(),
                acquirer_iin: acquirer.to_owned(),
                currency,
                amount,
            })
            .collect(),
        net: net
            .into_iter()
            .map(|((bank, currency), amount)| Net { bank_iin: bank.to_owned(), currency, amount })
            .collect(),
    })
}

/// Adds `amount` (None: it already overflowed) to `bank`'s net in `currency`.
fn add<'a>(
    net: &mut BTreeMap<(&'a str, u16), i64>,
    bank: &'a str,
    currency: u16,
    amount: Option<i64>,
) -> Result<(), PositionsError> {
    let overflow = || PositionsError::Overflow { bank_iin: bank.to_owned(), currency };
    let sum = net.entry((bank, currency)).or_default();
    *sum = amount.and_then(|amount| sum.checked_add(amount)).ok_or_else(overflow)?;
    Ok(())
}

impl Positions {
    /// Whether the invariants of the file hold: per currency the net amounts sum to zero, and
    /// every bank's net is what the bilateral rows say it receives minus what it pays. Checked
    /// before the file is written (a bug must not publish an unbalanced file) and after it is
    /// read back.
    pub fn is_balanced(&self) -> bool {
        // i128: the sums of i64 rows cannot overflow it for any count of rows that fits memory.
        let mut per_currency: BTreeMap<u16, i128> = BTreeMap::new();
        for row in &self.net {
            *per_currency.entry(row.currency).or_default() += i128::from(row.amount);
        }
        let mut expected: BTreeMap<(&str, u16), i128> = BTreeMap::new();
        for row in &self.bilateral {
            *expected.entry((row.issuer_iin.as_str(), row.currency)).or_default() -= i128::from(row.amount);
            *expected.entry((row.acquirer_iin.as_str(), row.currency)).or_default() += i128::from(row.amount);
        }
        let actual: BTreeMap<(&str, u16), i128> =
            self.net.iter().map(|row| ((row.bank_iin.as_str(), row.currency), i128::from(row.amount))).collect();
        per_currency.values().all(|sum| *sum == 0) && expected == actual && actual.len() == self.net.len()
    }

    /// The currencies that appear in the file.
    pub fn currencies(&self) -> BTreeSet<u16> {
        self.net.iter().map(|row| row.currency).collect()
    }

    /// `positions.json`: pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising strings, integers and vectors cannot fail.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// `positions.csv`: a header line, then the bilateral rows (bank = issuer, counterparty =
    /// acquirer), then the net rows (empty counterparty). Written by hand rather than with a CSV
    /// crate: every field is digits, a minus sign or one of two fixed words, so nothing needs
    /// quoting (the IINs are checked 6-digit strings when the clearing files are parsed).
    pub fn to_csv(&self) -> Vec<u8> {
        let mut text = String::with_capacity(64 * (1 + self.bilateral.len() + self.net.len()));
        text.push_str(CSV_HEADER);
        text.push('\n');
        for row in &self.bilateral {
            text.push_str(&format!(
                "bilateral,{},{},{},{}\n",
                row.issuer_iin, row.acquirer_iin, row.currency, row.amount
            ));
        }
        for row in &self.net {
            text.push_str(&format!("net,{},,{},{}\n", row.bank_iin, row.currency, row.amount));
        }
        text.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::clearing::{Entry, EntryKind};

    const EUR: u16 = 978;
    const USD: u16 = 840;

    fn approval(txn: u32, acquirer: &str, amount: i64, currency: u16, time: &str) -> Entry {
        Entry {
            txn_id: format!("{txn:032x}"),
            kind: EntryKind::Approval,
            original_txn_id: None,
            auth_code: "123456".to_owned(),
            merchant_id: "SHOP-01".to_owned(),
            order_no: format!("O-{txn}"),
            acquirer_iin: acquirer.to_owned(),
            amount,
            currency,
            time: time.to_owned(),
        }
    }

    fn reversal(txn: u32, original: u32, acquirer: &str, amount: i64, time: &str) -> Entry {
        Entry {
            kind: EntryKind::Reversal,
            original_txn_id: Some(format!("{original:032x}")),
            ..approval(txn, acquirer, amount, EUR, time)
        }
    }

    fn file(issuer: &str, day: &str, entries: Vec<Entry>) -> ClearingFile {
        ClearingFile::new(issuer, day, "00:00", None, entries).unwrap()
    }

    fn compute_files(files: &[ClearingFile]) -> Positions {
        let bytes: Vec<Vec<u8>> = files.iter().map(ClearingFile::to_bytes).collect();
        let pairs: Vec<(&ClearingFile, &[u8])> = files.iter().zip(&bytes).map(|(f, b)| (f, b.as_slice())).collect();
        compute(&pairs).unwrap()
    }

    fn net_of(positions: &Positions, bank: &str, currency: u16) -> i64 {
        positions.net.iter().find(|row| row.bank_iin == bank && row.currency == currency).unwrap().amount
    }

    #[test]
    fn the_issuer_owes_the_acquirer_and_the_net_sums_to_zero_per_currency() {
        let files = [
            file(
                "400001",
                "2026-11-30",
                vec![
                    approval(1, "500001", 450, EUR, "2026-11-30T09:00:00Z"),
                    approval(2, "500002", 100, EUR, "2026-11-30T10:00:00Z"),
                    approval(3, "500001", 700, USD, "2026-11-30T11:00:00Z"),
                ],
            ),
            file("400002", "2026-11-30", vec![approval(4, "500001", 50, EUR, "2026-11-30T09:00:00Z")]),
        ];
        let positions = compute_files(&files);
        assert_eq!(
            positions.bilateral,
            vec![
                Bilateral { issuer_iin: "400001".into(), acquirer_iin: "500001".into(), currency: USD, amount: 700 },
                Bilateral { issuer_iin: "400001".into(), acquirer_iin: "500001".into(), currency: EUR, amount: 450 },
                Bilateral { issuer_iin: "400001".into(), acquirer_iin: "500002".into(), currency: EUR, amount: 100 },
                Bilateral { issuer_iin: "400002".into(), acquirer_iin: "500001".into(), currency: EUR, amount: 50 },
            ]
        );
        // The issuer pays (negative), the acquirer receives (positive).
        assert_eq!(net_of(&positions, "400001", EUR), -550);
        assert_eq!(net_of(&positions, "400001", USD), -700);
        assert_eq!(net_of(&positions, "400002", EUR), -50);
        assert_eq!(net_of(&positions, "500001", EUR), 500);
        assert_eq!(net_of(&positions, "500001", USD), 700);
        assert_eq!(net_of(&positions, "500002", EUR), 100);
        for currency in positions.currencies() {
            let sum: i64 = positions.net.iter().filter(|row| row.currency == currency).map(|row| row.amount).sum();
            assert_eq!(sum, 0, "currency {currency}");
        }
        assert!(positions.is_balanced());
        let keys: Vec<(&str, u16)> = positions.net.iter().map(|row| (row.bank_iin.as_str(), row.currency)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn a_banks_own_merchants_are_listed_and_net_to_nothing() {
        let files = [file("400001", "2026-11-30", vec![approval(1, "400001", 300, EUR, "2026-11-30T09:00:00Z")])];
        let positions = compute_files(&files);
        assert_eq!(positions.bilateral.len(), 1);
        assert_eq!(positions.bilateral[0].amount, 300);
        assert_eq!(positions.net, vec![Net { bank_iin: "400001".into(), currency: EUR, amount: 0 }]);
        assert!(positions.is_balanced());
    }

    #[test]
    fn a_reversal_on_a_later_day_nets_with_its_approval() {
        let files = [
            file(
                "400001",
                "2026-11-30",
                vec![
                    approval(1, "500001", 450, EUR, "2026-11-30T09:00:00Z"),
                    approval(2, "500001", 200, EUR, "2026-11-30T09:30:00Z"),
                ],
            ),
            file("400001", "2026-12-01", vec![reversal(3, 1, "500001", -450, "2026-12-01T08:00:00Z")]),
        ];
        let positions = compute_files(&files);
        assert_eq!(positions.bilateral.len(), 1);
        assert_eq!(positions.bilateral[0].amount, 200);
        assert_eq!(net_of(&positions, "400001", EUR), -200);
        assert_eq!(net_of(&positions, "500001", EUR), 200);
        assert_eq!(positions.files.len(), 2);
        assert!(positions.files[0].business_day < positions.files[1].business_day);
    }

    #[test]
    fn reversals_that_outweigh_approvals_make_the_acquirer_pay() {
        let files = [file("400001", "2026-12-01", vec![reversal(3, 1, "500001", -450, "2026-12-01T08:00:00Z")])];
        let positions = compute_files(&files);
        assert_eq!(positions.bilateral[0].amount, -450);
        assert_eq!(net_of(&positions, "400001", EUR), 450);
        assert_eq!(net_of(&positions, "500001", EUR), -450);
        assert!(positions.is_balanced());
    }

    #[test]
    fn an_edited_net_row_is_unbalanced() {
        let files = [file("400001", "2026-11-30", vec![approval(1, "500001", 450, EUR, "2026-11-30T09:00:00Z")])];
        let mut positions = compute_files(&files);
        positions.net[1].amount += 1;
        assert!(!positions.is_balanced());
        let mut moved = compute_files(&files);
        moved.net[0].amount = -400;
        moved.net[1].amount = 400;
        assert!(!moved.is_balanced(), "sums to zero but disagrees with the bilateral rows");
        let mut dropped = compute_files(&files);
        dropped.bilateral.clear();
        assert!(!dropped.is_balanced());
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let files = [file("400001", "2026-11-30", vec![approval(1, "500001", i64::MAX, EUR, "2026-11-30T09:00:00Z")])];
        let more = file("400002", "2026-11-30", vec![approval(2, "500001", 1, EUR, "2026-11-30T09:00:00Z")]);
        let bytes = [files[0].to_bytes(), more.to_bytes()];
        let error = compute(&[(&files[0], &bytes[0]), (&more, &bytes[1])]).unwrap_err();
        assert_eq!(error, PositionsError::Overflow { bank_iin: "500001".into(), currency: EUR });
    }

    #[test]
    fn the_csv_has_the_json_rows() {
        let files = [file("400001", "2026-11-30", vec![approval(1, "500001", 450, EUR, "2026-11-30T09:00:00Z")])];
        let positions = compute_files(&files);
        let csv = String::from_utf8(positions.to_csv()).unwrap();
        assert_eq!(
            csv,
            "kind,bank_iin,counterparty_iin,currency,amount\n\
             bilateral,400001,500001,978,450\n\
             net,400001,,978,-450\n\
             net,500001,,978,450\n"
        );
        let back: Positions = serde_json::from_slice(&positions.to_json()).unwrap();
        assert_eq!(back, positions);
    }
}
