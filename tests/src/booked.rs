//! What SIMs were told, checked against the ledger afterwards: every answer a SIM read is
//! booked once, as it said, under its session. Shared by the tests that kill authz mid-run
//! (`authz_crash` on SQLite, `authz_multi_instance` on PostgreSQL).

use std::collections::BTreeSet;

use mps_authz::ledger::Ledger;
use mps_protocol::{Account, ResponseCode, SimId, TxnId};

/// One answer a SIM read.
#[derive(Debug, Clone)]
pub struct BookedAnswer {
    pub txn_id: TxnId,
    pub code: ResponseCode,
    /// From the SIM's decrypted answer; None on a decline.
    pub auth_code: Option<String>,
    pub order_no: String,
    pub amount: u64,
}

/// One SIM's answers, in the order of its sessions n = 1, 2, ...
#[derive(Debug, Clone)]
pub struct SimAnswers {
    /// The test's number for the SIM, for messages.
    pub index: usize,
    pub sim_id: SimId,
    pub account: Account,
    pub answers: Vec<BookedAnswer>,
}

impl SimAnswers {
    /// SIM `index`'s answers, in the order it read them.
    pub fn new<'a>(
        index: usize,
        sim_id: &SimId,
        account: &Account,
        answers: impl Iterator<Item = &'a BookedAnswer>,
    ) -> Self {
        Self { index, sim_id: sim_id.clone(), account: account.clone(), answers: answers.cloned().collect() }
    }
}

/// Every answer a SIM read is booked once, as it said, under its session, whichever process
/// decided it; each SIM has had exactly as many sessions booked as it read answers.
pub async fn check_answers_are_booked(ledger: &Ledger, sims: &[SimAnswers]) {
    let mut txn_ids = BTreeSet::new();
    for sim in sims {
        for (session, answer) in (1..).zip(&sim.answers) {
            let what = format!("SIM {} order {} (txn {})", sim.index, answer.order_no, answer.txn_id.to_hex());
            assert!(txn_ids.insert(answer.txn_id), "{what}: a second answer with this txn id");
            let record = ledger
                .transaction(&answer.txn_id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{what}: the SIM read this answer, the ledger has no such transaction"));
            assert_eq!(record.outcome.response_code(), answer.code, "{what}");
            assert_eq!(record.outcome.auth_code().map(|c| c.as_str().to_owned()), answer.auth_code, "{what}");
            assert_eq!(record.transaction.sim_id, sim.sim_id, "{what}");
            assert_eq!(record.transaction.counter.value(), session, "{what}: booked under another session");
            assert_eq!(record.transaction.order_no.as_str(), answer.order_no, "{what}");
            assert_eq!(record.transaction.amount.minor(), answer.amount, "{what}");
            assert_eq!(record.transaction.account, sim.account, "{what}");
        }
        let stored = ledger.sim(&sim.sim_id).await.unwrap().unwrap();
        assert_eq!(stored.counter.value(), sim.answers.len() as u64, "SIM {}: sessions booked", sim.index);
    }
}
