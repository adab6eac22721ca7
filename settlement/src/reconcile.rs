//! `settlement reconcile` (docs/CLEARING.md): one merchant's export of its paid orders of a day
//! (the merchant server's `GET /v1/orders?day=D`) against the approvals of that merchant in the
//! issuers' clearing files. Pure: the caller reads the files; this matches and lists what
//! differs.
//!
//! Matching: an order is matched to an approval by `txn_id`, else by (merchant id, `order_no`).
//! A reversal entry in the files cancels its original approval, as a reversed order leaves the
//! merchant's export (the merchant sets it to `reversed`, and the export lists only `paid`
//! orders). An approval of the files that no order matches is listed as missing from the export
//! when its booking time falls on the export's day (UTC), or when the export covers every day.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::clearing::{ClearingFile, Entry, EntryKind};

/// The `format` of the JSON report.
pub const FORMAT: &str = "mps-reconcile/1";
/// The status of an approved order in the merchant's export.
const PAID: &str = "paid";

/// The merchant's export, only the fields compared; any other field is ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct MerchantExport {
    /// The day (YYYY-MM-DD), or null when the export covers every day.
    #[serde(default)]
    pub day: Option<String>,
    /// The orders.
    pub orders: Vec<ExportOrder>,
}

/// One order of the export.
#[derive(Debug, Clone, Deserialize)]
pub struct ExportOrder {
    /// The merchant's order number.
    pub order_no: String,
    /// Minor units.
    pub amount: u64,
    /// ISO 4217 numeric code.
    pub currency: u16,
    /// `paid` for an approved order; an order of any other status is not compared.
    #[serde(default)]
    pub status: Option<String>,
    /// The issuer's auth code.
    #[serde(default)]
    pub auth_code: Option<String>,
    /// The issuer's transaction id.
    #[serde(default)]
    pub txn_id: Option<String>,
}

/// An order of the export with no approval in the clearing files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingOrder {
    /// The order.
    pub order_no: String,
    /// Its transaction id, if the merchant has one.
    pub txn_id: Option<String>,
    /// Minor units.
    pub amount: u64,
    /// ISO 4217 numeric code.
    pub currency: u16,
}

/// An approval of the clearing files with no order in the export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingEntry {
    /// The issuer whose file holds it.
    pub issuer_iin: String,
    /// That file's business day.
    pub business_day: String,
    /// The transaction.
    pub txn_id: String,
    /// The order.
    pub order_no: String,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217 numeric code.
    pub currency: u16,
}

/// One field that differs between a matched order and approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The order.
    pub order_no: String,
    /// The approval's transaction id.
    pub txn_id: String,
    /// `amount`, `currency`, `auth_code`, `txn_id` or `order_no`.
    pub field: &'static str,
    /// The export's value (empty when it has none).
    pub merchant: String,
    /// The clearing file's value.
    pub clearing: String,
}

/// The result: empty lists mean the two sides agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// [`FORMAT`].
    pub format: &'static str,
    /// The merchant.
    pub merchant_id: String,
    /// The export's day (null: every day).
    pub day: Option<String>,
    /// Paid orders in the export.
    pub orders: usize,
    /// Approvals of the merchant in the files, net of reversals.
    pub approvals: usize,
    /// Orders with no approval.
    pub missing_in_clearing: Vec<MissingOrder>,
    /// Approvals with no order.
    pub missing_in_export: Vec<MissingEntry>,
    /// Matched pairs that differ.
    pub differences: Vec<Difference>,
}

/// Why the comparison could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// A transaction id is in two of the clearing files given.
    #[error(
        "transaction {0} is in two of the clearing files given: give each file once (settlement run refuses such files)"
    )]
    TxnTwice(String),
}

impl Report {
    /// Whether the export and the files agree.
    pub fn agrees(&self) -> bool {
        self.missing_in_clearing.is_empty() && self.missing_in_export.is_empty() && self.differences.is_empty()
    }

    /// The report as a plain-text table.
    pub fn to_table(&self) -> String {
        let mut text = String::new();
        let day = self.day.as_deref().unwrap_or("every day");
        let _ = writeln!(
            text,
            "merchant {} ({day}): {} paid orders, {} approvals in the clearing files",
            self.merchant_id, self.orders, self.approvals
        );
        if self.agrees() {
            text.push_str("agree: no order missing, no difference\n");
            return text;
        }
        let _ = writeln!(
            text,
            "{:<20} {:<12} {:<32} {:<12} {:>14} {:>8}",
            "problem", "order_no", "txn_id", "issuer", "amount", "currency"
        );
        for order in &self.missing_in_clearing {
            let txn = order.txn_id.as_deref().unwrap_or("-");
            let _ = writeln!(
                text,
                "{:<20} {:<12} {:<32} {:<12} {:>14} {:>8}",
                "missing in clearing", order.order_no, txn, "-", order.amount, order.currency
            );
        }
        for entry in &self.missing_in_export {
            let _ = writeln!(
                text,
                "{:<20} {:<12} {:<32} {:<12} {:>14} {:>8}",
                "missing in export", entry.order_no, entry.txn_id, entry.issuer_iin, entry.amount, entry.currency
            );
        }
        if !self.differences.is_empty() {
            let _ = writeln!(
                text,
                "{:<20} {:<12} {:<32} {:<10} {:>16} {:>16}",
                "problem", "order_no", "txn_id", "field", "merchant", "clearing"
            );
            for difference in &self.differences {
                let _ = writeln!(
                    text,
                    "{:<20} {:<12} {:<32} {:<10} {:>16} {:>16}",
                    "different",
                    difference.order_no,
                    difference.txn_id,
                    difference.field,
                    difference.merchant,
                    difference.clearing
                );
            }
        }
        text
    }

    /// The report as JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising strings, integers and vectors cannot fail.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// An approval of the files with the file it is in.
struct Approval<'a> {
    entry: &'a Entry,
    file: &'a ClearingFile,
}

/// Compares `export` (of `merchant_id`) with the approvals of that merchant in `files`.
pub fn reconcile(merchant_id: &str, export: &MerchantExport, files: &[ClearingFile]) -> Result<Report, ReconcileError> {
    let approvals = approvals_of(merchant_id, files)?;
    let orders: Vec<&ExportOrder> =
        export.orders.iter().filter(|order| order.status.as_deref().is_none_or(|status| status == PAID)).collect();

    let by_txn: HashMap<&str, usize> =
        approvals.iter().enumerate().map(|(index, approval)| (approval.entry.txn_id.as_str(), index)).collect();
    let mut matched = vec![false; approvals.len()];
    let mut report = Report {
        format: FORMAT,
        merchant_id: merchant_id.to_owned(),
        day: export.day.clone(),
        orders: orders.len(),
        approvals: approvals.len(),
        missing_in_clearing: Vec::new(),
        missing_in_export: Vec::new(),
        differences: Vec::new(),
    };
    for order in orders {
        let by_id = order.txn_id.as_deref().and_then(|txn| by_txn.get(txn)).copied().filter(|index| !matched[*index]);
        let by_order_no = || {
            approvals
                .iter()
                .enumerate()
                .position(|(index, approval)| !matched[index] && approval.entry.order_no == order.order_no)
        };
        match by_id.or_else(by_order_no) {
            Some(index) => {
                matched[index] = true;
                compare(order, approvals[index].entry, &mut report.differences);
            }
            None => report.missing_in_clearing.push(MissingOrder {
                order_no: order.order_no.clone(),
                txn_id: order.txn_id.clone(),
                amount: order.amount,
                currency: order.currency,
            }),
        }
    }
    for (approval, _) in approvals.iter().zip(&matched).filter(|(_, matched)| !**matched) {
        if export.day.as_deref().is_none_or(|day| approval.entry.time.starts_with(day)) {
            report.missing_in_export.push(MissingEntry {
                issuer_iin: approval.file.issuer_iin.clone(),
                business_day: approval.file.business_day.clone(),
                txn_id: approval.entry.txn_id.clone(),
                order_no: approval.entry.order_no.clone(),
                amount: approval.entry.amount,
                currency: approval.entry.currency,
            });
        }
    }
    Ok(report)
}

/// The merchant's approvals in `files` that no reversal in `files` cancels, in file order.
fn approvals_of<'a>(merchant_id: &str, files: &'a [ClearingFile]) -> Result<Vec<Approval<'a>>, ReconcileError> {
    let mut seen = BTreeSet::new();
    let mut reversed = BTreeSet::new();
    for entry in files.iter().flat_map(|file| &file.entries) {
        if !seen.insert(entry.txn_id.as_str()) {
            return Err(ReconcileError::TxnTwice(entry.txn_id.clone()));
        }
        if let Some(original) = &entry.original_txn_id {
            reversed.insert(original.as_str());
        }
    }
    Ok(files
        .iter()
        .flat_map(|file| file.entries.iter().map(move |entry| Approval { entry, file }))
        .filter(|approval| {
            approval.entry.kind == EntryKind::Approval
                && approval.entry.merchant_id == merchant_id
                && !reversed.contains(approval.entry.txn_id.as_str())
        })
        .collect())
}

fn compare(order: &ExportOrder, entry: &Entry, differences: &mut Vec<Difference>) {
    let mut differ = |field, merchant: String, clearing: String| {
        if merchant != clearing {
            differences.push(Difference {
                order_no: order.order_no.clone(),
                txn_id: entry.txn_id.clone(),
                field,
                merchant,
                clearing,
            });
        }
    };
    differ("order_no", order.order_no.clone(), entry.order_no.clone());
    differ("amount", order.amount.to_string(), entry.amount.to_string());
    differ("currency", order.currency.to_string(), entry.currency.to_string());
    differ("auth_code", order.auth_code.clone().unwrap_or_default(), entry.auth_code.clone());
    differ("txn_id", order.txn_id.clone().unwrap_or_default(), entry.txn_id.clone());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(txn: u32, order: &str, amount: i64, time: &str) -> Entry {
        Entry {
            txn_id: format!("{txn:032x}"),
            kind: EntryKind::Approval,
            original_txn_id: None,
            auth_code: "123456".to_owned(),
            merchant_id: "SHOP-01".to_owned(),
            order_no: order.to_owned(),
            acquirer_iin: "500001".to_owned(),
            amount,
            currency: 978,
            time: time.to_owned(),
        }
    }

    fn order(txn: Option<u32>, order_no: &str, amount: u64) -> ExportOrder {
        ExportOrder {
            order_no: order_no.to_owned(),
            amount,
            currency: 978,
            status: Some("paid".to_owned()),
            auth_code: Some("123456".to_owned()),
            txn_id: txn.map(|txn| format!("{txn:032x}")),
        }
    }

    fn files() -> Vec<ClearingFile> {
        let mut other_merchant = entry(3, "O-3", 999, "2026-11-30T11:00:00Z");
        other_merchant.merchant_id = "OTHER".to_owned();
        vec![
            ClearingFile::new(
                "400001",
                "2026-11-30",
                "00:00",
                None,
                vec![
                    entry(1, "O-1", 450, "2026-11-30T09:00:00Z"),
                    entry(2, "O-2", 300, "2026-11-30T10:00:00Z"),
                    other_merchant,
                ],
            )
            .unwrap(),
        ]
    }

    fn export(orders: Vec<ExportOrder>) -> MerchantExport {
        MerchantExport { day: Some("2026-11-30".to_owned()), orders }
    }

    #[test]
    fn matching_orders_agree() {
        let report =
            reconcile("SHOP-01", &export(vec![order(Some(1), "O-1", 450), order(Some(2), "O-2", 300)]), &files())
                .unwrap();
        assert!(report.agrees(), "{report:?}");
        assert_eq!((report.orders, report.approvals), (2, 2));
        assert!(report.to_table().contains("agree"));
    }

    #[test]
    fn missing_and_different_orders_are_listed() {
        let orders = vec![order(Some(1), "O-1", 451), order(Some(7), "O-7", 10)];
        let report = reconcile("SHOP-01", &export(orders), &files()).unwrap();
        assert_eq!(report.missing_in_clearing.len(), 1);
        assert_eq!(report.missing_in_clearing[0].order_no, "O-7");
        assert_eq!(report.missing_in_export.len(), 1);
        assert_eq!(report.missing_in_export[0].order_no, "O-2");
        assert_eq!(report.differences.len(), 1);
        assert_eq!(
            (
                report.differences[0].field,
                report.differences[0].merchant.as_str(),
                report.differences[0].clearing.as_str()
            ),
            ("amount", "451", "450")
        );
        assert!(!report.agrees());
    }

    #[test]
    fn a_reversal_in_a_later_file_cancels_its_approval() {
        let mut files = files();
        let reversal = Entry {
            kind: EntryKind::Reversal,
            original_txn_id: Some(format!("{:032x}", 2)),
            amount: -300,
            time: "2026-12-01T08:00:00Z".to_owned(),
            ..entry(9, "O-2", 0, "")
        };
        let previous = Some(crate::clearing::sha256_hex(&files[0].to_bytes()));
        files.push(ClearingFile::new("400001", "2026-12-01", "00:00", previous, vec![reversal]).unwrap());
        let report = reconcile("SHOP-01", &export(vec![order(Some(1), "O-1", 450)]), &files).unwrap();
        assert!(report.agrees(), "{report:?}");
    }

    #[test]
    fn the_export_is_read_tolerantly_and_only_paid_orders_count() {
        let json = r#"{"day":"2026-11-30","orders":[
            {"order_no":"O-1","amount":450,"currency":978,"amount_display":"4.50 EUR","status":"paid",
             "auth_code":"123456","txn_id":"00000000000000000000000000000001","bank_answer":"{}"},
            {"order_no":"O-2","amount":300,"currency":978,"status":"paid","auth_code":"123456","txn_id":null},
            {"order_no":"O-9","amount":5,"currency":978,"status":"reversed"}],
            "totals":{"978":750}}"#;
        let export: MerchantExport = serde_json::from_str(json).unwrap();
        let report = reconcile("SHOP-01", &export, &files()).unwrap();
        assert_eq!(report.orders, 2);
        // O-2 matched by order number; the export has no txn id for it.
        assert_eq!(report.differences.len(), 1);
        assert_eq!(report.differences[0].field, "txn_id");
    }

    #[test]
    fn a_transaction_in_two_files_is_an_error() {
        let twice = [files(), files()].concat();
        assert!(matches!(reconcile("SHOP-01", &export(Vec::new()), &twice), Err(ReconcileError::TxnTwice(_))));
    }
}
