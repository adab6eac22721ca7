//! Booking one authenticated session (DESIGN.md section 7, from step 8 on): the transaction
//! row, an approval's postings, the wrong-password count, the SIM's next ratchet state and the
//! exact answer, all inside the writer's per-command savepoint.
//!
//! The decision layer holds per-SIM and per-account locks, so the premises it decided on
//! should still hold here; they are checked again anyway (counter, SIM active, account open and
//! bound, limits, duplicate order, funds), and a premise that moved is a
//! [`LedgerError::Conflict`] that rolls back this command only.

use mps_protocol::Amount;
use mps_protocol::wire::PACKET_LEN;
use time::Date;

use super::error::{Conflict, LedgerError};
use super::journal::{self, Posting, PostingTarget};
use super::model::{
    AccountRecord, DailyApproved, EntryKind, InternalAccount, PasswordEffect, SessionCommit, SessionOutcome, SimStatus,
    Transaction, merchant_account_is_valid, signed,
};
use super::queries;
use super::rows::{auth_code_is_valid, counter_value, day_text, parse_counter, parse_sim_status, time_text};
use super::sql::{Sql, args};
use crate::decision::rules;

/// Books one session. Called by the writer inside a savepoint.
pub(crate) fn commit_session(
    conn: &dyn Sql,
    commit: &SessionCommit,
    stored_answer_bytes_max: usize,
) -> Result<(), LedgerError> {
    let amount = validate(commit, stored_answer_bytes_max)?;
    let previous_counter = check_sim(conn, commit)?;
    let exists = conn.query_opt("SELECT 1 FROM transactions WHERE txn_id = ?1", args![&commit.transaction.txn_id.0])?;
    if exists.is_some() {
        return Err(LedgerError::AlreadyExists("transaction"));
    }
    let account = queries::account(conn, &commit.transaction.account)?;
    let created_at = time_text(commit.transaction.created_at)?;
    match commit.outcome {
        SessionOutcome::Approved { .. } => {
            let account = account.as_ref().ok_or(LedgerError::NotFound("account"))?;
            super::clearing::check_day_open(conn, commit.transaction.business_day)?;
            check_approval(conn, commit, account)?;
            insert_transaction(conn, commit, &created_at)?;
            book_approval(conn, commit, account, amount, &created_at)?;
            // The password was right: consecutive wrong tries start again from zero.
            apply_password_effect(conn, &commit.transaction, PasswordEffect::Reset, Some(account))?;
        }
        SessionOutcome::Declined { password_effect, .. } => {
            insert_transaction(conn, commit, &created_at)?;
            apply_password_effect(conn, &commit.transaction, password_effect, account.as_ref())?;
        }
    }
    advance_sim(conn, commit, previous_counter)?;
    store_answer(conn, commit)
}

/// The commit's own consistency; returns the amount as signed minor units.
fn validate(commit: &SessionCommit, stored_answer_bytes_max: usize) -> Result<i64, LedgerError> {
    if commit.transaction.counter.value() == 0 {
        return Err(LedgerError::InvalidInput("session counter 0"));
    }
    let amount = signed(commit.transaction.amount, "amount")?;
    if let SessionOutcome::Approved { auth_code } = &commit.outcome {
        if !auth_code_is_valid(auth_code) {
            return Err(LedgerError::InvalidInput("an approval needs a 6-character auth code"));
        }
        if amount == 0 {
            return Err(LedgerError::InvalidInput("an approval of zero"));
        }
    }
    if commit.packet.len() != PACKET_LEN {
        return Err(LedgerError::InvalidInput("the payer packet must be 113 bytes"));
    }
    if !merchant_account_is_valid(&commit.transaction.merchant_account) {
        return Err(LedgerError::InvalidInput("merchant account"));
    }
    if commit.response_body.len() + commit.response_signature.len() > stored_answer_bytes_max {
        return Err(LedgerError::InvalidInput("stored answer too large"));
    }
    Ok(amount)
}

/// The SIM is known, active, and at counter n - 1. Returns n - 1 as stored.
fn check_sim(conn: &dyn Sql, commit: &SessionCommit) -> Result<i64, LedgerError> {
    let row = conn
        .query_opt("SELECT status, counter FROM sims WHERE sim_id = ?1", args![commit.transaction.sim_id.as_str()])?
        .ok_or(LedgerError::NotFound("sim"))?;
    let (status, counter): (String, i64) = (row.get(0, "sims.status")?, row.get(1, "sims.counter")?);
    if parse_sim_status(&status)? != SimStatus::Active {
        return Err(LedgerError::Conflict(Conflict::SimNotActive));
    }
    if parse_counter("sims.counter", counter)?.next() != Some(commit.transaction.counter) {
        return Err(LedgerError::Conflict(Conflict::StaleCounter));
    }
    Ok(counter)
}

/// Steps 8 to 12 once more, inside the write transaction, with the decision's own step
/// functions on the rows read here: a rule is stated once, in `decision/`.
fn check_approval(conn: &dyn Sql, commit: &SessionCommit, account: &AccountRecord) -> Result<(), LedgerError> {
    let transaction = &commit.transaction;
    let bound = conn.query_opt(
        "SELECT 1 FROM sim_accounts WHERE sim_id = ?1 AND account = ?2",
        args![transaction.sim_id.as_str(), transaction.account.expose()],
    )?;
    // The account row read in this transaction carries the day's running total.
    let approved_today = || queries::approved_on(conn, account, transaction.business_day);
    let order_authorized = || queries::order_authorized(conn, &transaction.merchant_id, &transaction.order_no);
    rules::recheck_approval(
        bound.is_some(),
        account,
        transaction.currency,
        transaction.amount,
        approved_today,
        order_authorized,
    )
}

fn insert_transaction(conn: &dyn Sql, commit: &SessionCommit, created_at: &str) -> Result<(), LedgerError> {
    let outcome = commit.outcome.stored();
    let auth_code = outcome.auth_code().map(|code| code.as_str().to_owned());
    conn.execute(
        "INSERT INTO transactions (txn_id, sim_id, counter, account, merchant_id, order_no, acquirer_iin,
             merchant_account, amount, currency, response_code, auth_code, business_day, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        args![
            &commit.transaction.txn_id.0,
            commit.transaction.sim_id.as_str(),
            counter_value(commit.transaction.counter)?,
            commit.transaction.account.expose(),
            commit.transaction.merchant_id.as_str(),
            commit.transaction.order_no.as_str(),
            commit.transaction.acquirer_iin.as_str(),
            commit.transaction.merchant_account.as_str(),
            signed(commit.transaction.amount, "amount")?,
            i64::from(commit.transaction.currency.code()),
            outcome.response_code().as_str(),
            auth_code.as_ref(),
            &day_text(commit.transaction.business_day)?,
            created_at,
        ],
    )?;
    Ok(())
}

/// Debits the payer, credits the acquirer's settlement payable; then checks the stored
/// balance is the old one minus the amount and still within the account's invariants.
fn book_approval(
    conn: &dyn Sql,
    commit: &SessionCommit,
    account: &AccountRecord,
    amount: i64,
    created_at: &str,
) -> Result<(), LedgerError> {
    let payable = InternalAccount::SettlementPayable { acquirer_iin: commit.transaction.acquirer_iin };
    let payable_id = journal::internal_account_id(conn, payable, commit.transaction.currency, created_at)?;
    let postings = [
        Posting {
            target: PostingTarget::Customer(&commit.transaction.account),
            amount: -amount,
            currency: commit.transaction.currency,
        },
        Posting { target: PostingTarget::Internal(payable_id), amount, currency: commit.transaction.currency },
    ];
    journal::post_entry(conn, EntryKind::Authorization, Some(&commit.transaction.txn_id), created_at, &postings)?;
    add_to_daily_total(conn, commit, amount)?;
    let after = queries::account(conn, &commit.transaction.account)
        .map_err(|_| LedgerError::Invariant("the account breaks its balance invariant after the approval"))?
        .ok_or(LedgerError::Invariant("the account vanished during the approval"))?;
    if Some(after.balance) != account.balance.checked_sub(amount) {
        return Err(LedgerError::Invariant("the balance did not move by the amount"));
    }
    if after.approved != daily_total_after(account, commit.transaction.business_day, commit.transaction.amount) {
        return Err(LedgerError::Invariant("the running daily total did not move by the amount"));
    }
    Ok(())
}

/// Keeps the account's running daily total (migration 8): an approval of its day adds to it, one
/// of a later day starts the day afresh, and one of an earlier day (a late approval from an
/// instance whose clock is behind at midnight) leaves it alone: that day is summed when asked.
/// Written relative to the stored row, as the balance is; [`daily_total_after`] is the same
/// rule on the row read before, checked against the row read after.
fn add_to_daily_total(conn: &dyn Sql, commit: &SessionCommit, amount: i64) -> Result<(), LedgerError> {
    let changed = conn.execute(
        "UPDATE accounts SET
             approved_today = CASE
                 WHEN approved_day = ?2 THEN approved_today + ?3
                 WHEN approved_day IS NULL OR approved_day < ?2 THEN ?3
                 ELSE approved_today END,
             approved_day = CASE WHEN approved_day IS NULL OR approved_day < ?2 THEN ?2 ELSE approved_day END
         WHERE account = ?1",
        args![commit.transaction.account.expose(), &day_text(commit.transaction.business_day)?, amount],
    )?;
    if changed != 1 {
        return Err(LedgerError::Invariant("the running daily total changed no single account"));
    }
    Ok(())
}

/// What the running daily total of `account` should be after an approval of `amount` on `day`.
fn daily_total_after(account: &AccountRecord, day: Date, amount: Amount) -> Option<DailyApproved> {
    match account.approved {
        Some(approved) if day < approved.business_day => Some(approved),
        Some(approved) if day == approved.business_day => approved
            .total
            .minor()
            .checked_add(amount.minor())
            .map(|total| DailyApproved { business_day: day, total: Amount::from_minor(total) }),
        _ => Some(DailyApproved { business_day: day, total: amount }),
    }
}

fn apply_password_effect(
    conn: &dyn Sql,
    transaction: &Transaction,
    effect: PasswordEffect,
    account: Option<&AccountRecord>,
) -> Result<(), LedgerError> {
    if account.is_none() && effect != PasswordEffect::None {
        return Err(LedgerError::NotFound("account"));
    }
    let changed = match effect {
        PasswordEffect::None => return Ok(()),
        PasswordEffect::Reset => conn.execute(
            "UPDATE accounts SET password_failures = 0 WHERE account = ?1 AND password_failures > 0",
            args![transaction.account.expose()],
        )?,
        // The lock follows from the count this statement writes, not from one read earlier.
        PasswordEffect::Failure { tries_max } => conn.execute(
            "UPDATE accounts SET password_failures = password_failures + 1, \
             password_locked = CASE WHEN password_failures + 1 >= ?2 THEN 1 ELSE password_locked END \
             WHERE account = ?1",
            args![transaction.account.expose(), i64::from(tries_max.max(1))],
        )?,
    };
    if changed > 1 {
        return Err(LedgerError::Invariant("a password effect changed more than one account"));
    }
    Ok(())
}

/// Moves the SIM from n - 1 to n: CK_n and RSN_{n+1}. The WHERE clause re-checks the counter.
fn advance_sim(conn: &dyn Sql, commit: &SessionCommit, previous_counter: i64) -> Result<(), LedgerError> {
    let counter = counter_value(commit.transaction.counter)?;
    let changed = conn.execute(
        "UPDATE sims SET counter = ?1, wrapped_chain_key = ?2, next_rsn = ?3, kek_version = ?6
         WHERE sim_id = ?4 AND counter = ?5 AND status = 'active'",
        args![
            counter,
            &commit.wrapped_next_chain_key.bytes,
            &commit.next_rsn.0,
            commit.transaction.sim_id.as_str(),
            previous_counter,
            i64::from(commit.wrapped_next_chain_key.kek_version)
        ],
    )?;
    if changed != 1 {
        return Err(LedgerError::Conflict(Conflict::StaleCounter));
    }
    Ok(())
}

/// Keeps the exact answer of this session (replacing the previous session's).
fn store_answer(conn: &dyn Sql, commit: &SessionCommit) -> Result<(), LedgerError> {
    let counter = counter_value(commit.transaction.counter)?;
    conn.execute(
        "INSERT INTO sim_answers (sim_id, counter, txn_id, packet, response_body, response_signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (sim_id) DO UPDATE SET counter = excluded.counter, txn_id = excluded.txn_id,
             packet = excluded.packet, response_body = excluded.response_body,
             response_signature = excluded.response_signature",
        args![
            commit.transaction.sim_id.as_str(),
            counter,
            &commit.transaction.txn_id.0,
            &commit.packet,
            &commit.response_body,
            commit.response_signature.as_str(),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use mps_protocol::{AuthCode, ResponseCode};

    use crate::ledger::testing::{
        DAY, NEXT_DAY, account, approval, approved_total, changed, debit, decline, declined_with, on_both_backends,
        open_ledger, register, reversal_of, sim_id, txn_id,
    };
    use crate::ledger::{
        Conflict, LedgerConfig, LedgerError, PasswordEffect, SessionCommit, SessionOutcome, SimStatus,
    };

    on_both_backends! {
        async fn malformed_commits_are_refused_and_store_nothing(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 1_000)).await.unwrap();
            register(&ledger, 1, &[1]).await;
            // (An approval without an auth code, a decline with one, or an approval after a wrong
            // password cannot be built: SessionOutcome has no such variants.)
            let malformed = [
                SessionCommit {
                    outcome: SessionOutcome::Approved { auth_code: AuthCode(*b"abc123") },
                    ..approval(1, 1, 1, 10)
                },
                approval(1, 1, 1, 0),
                SessionCommit { packet: vec![0; 112], ..approval(1, 1, 1, 10) },
                changed(approval(1, 1, 1, 10), |t| t.merchant_account = "DE89;3704".to_owned()),
                SessionCommit { response_body: vec![b'x'; 70_000], ..approval(1, 1, 1, 10) },
                changed(approval(1, 1, 1, 10), |t| t.amount = mps_protocol::Amount::from_minor(u64::MAX)),
            ];
            for commit in malformed {
                let err = ledger.commit_session(commit.clone()).await.unwrap_err();
                assert!(matches!(err, LedgerError::InvalidInput(_)), "{commit:?}: {err:?}");
            }
            assert_eq!(ledger.sim(&sim_id(1)).await.unwrap().unwrap().counter.value(), 0);
            assert_eq!(ledger.account(&account(1)).await.unwrap().unwrap().balance, 1_000);
        }

        async fn a_moved_premise_is_a_conflict_that_stores_nothing(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 1_000)).await.unwrap();
            ledger.create_account(debit(2, 1_000)).await.unwrap();
            register(&ledger, 1, &[1]).await;

            let skipped = ledger.commit_session(approval(1, 2, 1, 10)).await.unwrap_err();
            assert!(matches!(skipped, LedgerError::Conflict(Conflict::StaleCounter)), "{skipped:?}");
            let unknown_sim = ledger.commit_session(approval(9, 1, 1, 10)).await.unwrap_err();
            assert!(matches!(unknown_sim, LedgerError::NotFound("sim")), "{unknown_sim:?}");
            let unbound = ledger.commit_session(approval(1, 1, 2, 10)).await.unwrap_err();
            assert!(matches!(unbound, LedgerError::Conflict(Conflict::AccountNotPermitted)), "{unbound:?}");
            let over_limit = ledger.commit_session(approval(1, 1, 1, 1_000_001)).await.unwrap_err();
            assert!(matches!(over_limit, LedgerError::Conflict(Conflict::LimitExceeded)), "{over_limit:?}");
            let too_much = ledger.commit_session(approval(1, 1, 1, 1_001)).await.unwrap_err();
            assert!(matches!(too_much, LedgerError::Conflict(Conflict::InsufficientFunds)), "{too_much:?}");
            ledger.set_sim_status(&sim_id(1), SimStatus::Blocked).await.unwrap();
            let blocked = ledger.commit_session(decline(1, 1, 1, 10, ResponseCode::InvalidAmount)).await.unwrap_err();
            assert!(matches!(blocked, LedgerError::Conflict(Conflict::SimNotActive)), "{blocked:?}");
            ledger.set_sim_status(&sim_id(1), SimStatus::Active).await.unwrap();

            let sim = ledger.sim(&sim_id(1)).await.unwrap().unwrap();
            assert_eq!((sim.counter.value(), sim.last_answer), (0, None));
            assert_eq!(ledger.audit().await.unwrap().entries, 2, "only the two openings");

            ledger.commit_session(approval(1, 1, 1, 10)).await.unwrap();
            let reused_id = changed(approval(1, 2, 1, 10), |t| t.txn_id = txn_id(1, 1));
            assert!(matches!(ledger.commit_session(reused_id).await, Err(LedgerError::AlreadyExists("transaction"))));
            let replayed = ledger.commit_session(approval(1, 1, 1, 10)).await.unwrap_err();
            assert!(matches!(replayed, LedgerError::Conflict(Conflict::StaleCounter)), "{replayed:?}");
            assert_eq!(ledger.account(&account(1)).await.unwrap().unwrap().balance, 990);
        }

        async fn the_daily_limit_counts_only_approvals_of_the_day(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            let tight = crate::ledger::NewAccount { daily_limit: mps_protocol::Amount::from_minor(100), ..debit(1, 1_000) };
            ledger.create_account(tight).await.unwrap();
            register(&ledger, 1, &[1]).await;
            ledger.commit_session(approval(1, 1, 1, 60)).await.unwrap();
            ledger.commit_session(decline(1, 2, 1, 500, ResponseCode::ExceedsDailyLimit)).await.unwrap();
            let over = ledger.commit_session(approval(1, 3, 1, 41)).await.unwrap_err();
            assert!(matches!(over, LedgerError::Conflict(Conflict::LimitExceeded)), "{over:?}");
            let next_day = changed(approval(1, 3, 1, 41), |t| t.business_day = time::macros::date!(2025 - 03 - 08));
            ledger.commit_session(next_day).await.unwrap();
            ledger.commit_session(approval(1, 4, 1, 40)).await.unwrap();
            let today = crate::ledger::testing::DAY;
            assert_eq!(ledger.daily_approved_total(&account(1), today).await.unwrap().minor(), 100);
        }

        /// The account row's running total (migration 8) follows the bookings: approvals of its
        /// day add, a decline does not, the next day starts afresh, and a late approval of an
        /// earlier day leaves it alone while the sum of that day counts it.
        async fn the_running_daily_total_follows_the_bookings(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 10_000)).await.unwrap();
            register(&ledger, 1, &[1]).await;
            let books = &ledger;
            let approved = || async move { books.account(&account(1)).await.unwrap().unwrap().approved };
            assert_eq!(approved().await, None, "nothing approved yet");

            ledger.commit_session(approval(1, 1, 1, 60)).await.unwrap();
            assert_eq!(approved().await, approved_total(DAY, 60));
            ledger.commit_session(approval(1, 2, 1, 40)).await.unwrap();
            assert_eq!(approved().await, approved_total(DAY, 100), "approvals of the day add");
            ledger.commit_session(decline(1, 3, 1, 500, ResponseCode::InsufficientFunds)).await.unwrap();
            assert_eq!(approved().await, approved_total(DAY, 100), "a decline does not");

            let next_day = changed(approval(1, 4, 1, 25), |t| t.business_day = NEXT_DAY);
            ledger.commit_session(next_day).await.unwrap();
            assert_eq!(approved().await, approved_total(NEXT_DAY, 25), "the next day starts from its approval");

            // An instance whose clock is still on the day before books a late approval of it.
            ledger.commit_session(approval(1, 5, 1, 7)).await.unwrap();
            assert_eq!(approved().await, approved_total(NEXT_DAY, 25), "today's total is not disturbed");
            let total_on = |day| async move { books.daily_approved_total(&account(1), day).await.unwrap().minor() };
            assert_eq!(total_on(DAY).await, 107, "the earlier day's sum counts the late approval");
            assert_eq!(total_on(NEXT_DAY).await, 25);
            assert_eq!(total_on(NEXT_DAY.next_day().unwrap()).await, 0);
            let record = ledger.account(&account(1)).await.unwrap().unwrap();
            assert_eq!(record.approved_on(DAY), None, "an earlier day is summed, not read from the row");
            assert_eq!(ledger.approved_on(&record, DAY).await.unwrap().minor(), 107);
            ledger.audit().await.unwrap();
        }

        /// A reversal takes its approval off the running total of the approval's day; one of an
        /// earlier day's approval leaves today's total alone.
        async fn a_reversal_takes_its_approval_off_its_days_total(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 10_000)).await.unwrap();
            register(&ledger, 1, &[1]).await;
            let books = &ledger;
            let approved = || async move { books.account(&account(1)).await.unwrap().unwrap().approved };
            let yesterday = approval(1, 1, 1, 30);
            ledger.commit_session(yesterday.clone()).await.unwrap();
            let first = changed(approval(1, 2, 1, 60), |t| t.business_day = NEXT_DAY);
            ledger.commit_session(first.clone()).await.unwrap();
            ledger.commit_session(changed(approval(1, 3, 1, 15), |t| t.business_day = NEXT_DAY)).await.unwrap();
            assert_eq!(approved().await, approved_total(NEXT_DAY, 75));

            ledger.commit_reversal(reversal_of(&first, 1, NEXT_DAY)).await.unwrap();
            assert_eq!(approved().await, approved_total(NEXT_DAY, 15), "the reversal subtracts");
            ledger.commit_reversal(reversal_of(&yesterday, 2, NEXT_DAY)).await.unwrap();
            assert_eq!(approved().await, approved_total(NEXT_DAY, 15), "an earlier day's reversal does not");
            assert_eq!(ledger.daily_approved_total(&account(1), DAY).await.unwrap().minor(), 0);
            assert_eq!(ledger.daily_approved_total(&account(1), NEXT_DAY).await.unwrap().minor(), 15);
            ledger.audit().await.unwrap();
        }

        /// The daily limit at its boundary, on the running total: the decision's view (the account
        /// record it read, through `Ledger::approved_on`) and the writer's re-check agree on an
        /// approval that fills the limit exactly and refuse one minor unit more, on the running
        /// total's day, on a later day, and on an earlier day (summed).
        async fn the_daily_limit_holds_at_its_boundary_on_the_running_total(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            let tight = crate::ledger::NewAccount { daily_limit: mps_protocol::Amount::from_minor(100), ..debit(1, 1_000) };
            ledger.create_account(tight).await.unwrap();
            register(&ledger, 1, &[1]).await;
            let decide = |amount: u64, day| {
                let ledger = ledger.clone();
                async move {
                    let record = ledger.account(&account(1)).await.unwrap().unwrap();
                    let today = ledger.approved_on(&record, day).await.unwrap();
                    crate::decision::rules::after_password(&record, mps_protocol::Amount::from_minor(amount), today, false)
                }
            };
            let on = |commit: SessionCommit, day| changed(commit, |t| t.business_day = day);

            ledger.commit_session(approval(1, 1, 1, 60)).await.unwrap();
            assert_eq!(decide(41, DAY).await, Err(ResponseCode::ExceedsDailyLimit));
            let over = ledger.commit_session(approval(1, 2, 1, 41)).await.unwrap_err();
            assert!(matches!(over, LedgerError::Conflict(Conflict::LimitExceeded)), "{over:?}");
            assert_eq!(decide(40, DAY).await, Ok(()));
            ledger.commit_session(approval(1, 2, 1, 40)).await.unwrap();
            assert_eq!(decide(1, DAY).await, Err(ResponseCode::ExceedsDailyLimit), "the limit is full");
            let over = ledger.commit_session(approval(1, 3, 1, 1)).await.unwrap_err();
            assert!(matches!(over, LedgerError::Conflict(Conflict::LimitExceeded)), "{over:?}");

            // A later day starts from zero: the whole limit, not one unit more.
            assert_eq!(decide(100, NEXT_DAY).await, Ok(()));
            let over = ledger.commit_session(on(approval(1, 3, 1, 101), NEXT_DAY)).await.unwrap_err();
            assert!(matches!(over, LedgerError::Conflict(Conflict::LimitExceeded)), "{over:?}");
            ledger.commit_session(on(approval(1, 3, 1, 100), NEXT_DAY)).await.unwrap();

            // The day before the running total's day is summed, and is full too.
            assert_eq!(decide(1, DAY).await, Err(ResponseCode::ExceedsDailyLimit));
            let late = ledger.commit_session(approval(1, 4, 1, 1)).await.unwrap_err();
            assert!(matches!(late, LedgerError::Conflict(Conflict::LimitExceeded)), "{late:?}");
            assert_eq!(decide(1, NEXT_DAY).await, Err(ResponseCode::ExceedsDailyLimit));
        }

        /// The audit compares every running total with the sum of its day's standing approvals:
        /// a total, or a day, written behind the ledger's back is an invariant failure.
        async fn the_audit_catches_a_running_total_that_differs_from_the_sum(backend) {
            let (store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 1_000)).await.unwrap();
            ledger.create_account(debit(2, 1_000)).await.unwrap();
            register(&ledger, 1, &[1]).await;
            ledger.commit_session(approval(1, 1, 1, 60)).await.unwrap();
            ledger.audit().await.unwrap();
            let tampered = [
                "UPDATE accounts SET approved_today = approved_today + 1 WHERE account = '4000000000000001'",
                "UPDATE accounts SET approved_today = 0 WHERE account = '4000000000000001'",
                "UPDATE accounts SET approved_day = '2025-03-06' WHERE account = '4000000000000001'",
                "UPDATE accounts SET approved_day = NULL, approved_today = 0 WHERE account = '4000000000000001'",
                "UPDATE accounts SET approved_day = '2025-03-07', approved_today = 5 WHERE account = '4000000000000002'",
            ];
            let restore = "UPDATE accounts SET approved_day = '2025-03-07', approved_today = 60
                 WHERE account = '4000000000000001';
                 UPDATE accounts SET approved_day = NULL, approved_today = 0 WHERE account = '4000000000000002'";
            for sql in tampered {
                store.execute_behind_the_ledger(sql).await;
                let err = ledger.audit().await.unwrap_err();
                assert!(
                    matches!(err, LedgerError::Corrupt("an account's running daily total differs from its approvals")),
                    "{sql}: {err:?}"
                );
                store.execute_behind_the_ledger(restore).await;
                ledger.audit().await.unwrap();
            }
            // A total without a day does not even parse.
            store.execute_behind_the_ledger("UPDATE accounts SET approved_day = NULL WHERE account = '4000000000000001'").await;
            let err = ledger.account(&account(1)).await.unwrap_err();
            assert!(matches!(err, LedgerError::Corrupt("accounts.approved_today")), "{err:?}");
        }

        async fn wrong_passwords_count_lock_and_reset(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 1_000)).await.unwrap();
            register(&ledger, 1, &[1]).await;
            let wrong =
                |n| declined_with(1, n, 1, 10, ResponseCode::IncorrectPassword, PasswordEffect::Failure { tries_max: 3 });
            ledger.commit_session(wrong(1)).await.unwrap();
            let record = ledger.account(&account(1)).await.unwrap().unwrap();
            assert_eq!((record.password_failures, record.password_locked), (1, false));
            ledger.commit_session(approval(1, 2, 1, 10)).await.unwrap();
            assert_eq!(ledger.account(&account(1)).await.unwrap().unwrap().password_failures, 0, "a right password resets");
            ledger.commit_session(wrong(3)).await.unwrap();
            ledger.commit_session(wrong(4)).await.unwrap();
            let record = ledger.account(&account(1)).await.unwrap().unwrap();
            assert_eq!((record.password_failures, record.password_locked), (2, false), "below the limit");
            ledger.commit_session(wrong(5)).await.unwrap();
            let record = ledger.account(&account(1)).await.unwrap().unwrap();
            assert_eq!((record.password_failures, record.password_locked), (3, true));
            let locked = ledger.commit_session(approval(1, 6, 1, 10)).await.unwrap_err();
            assert!(matches!(locked, LedgerError::Conflict(Conflict::PasswordLocked)), "{locked:?}");
            ledger.reset_password_tries(&account(1)).await.unwrap();
            let record = ledger.account(&account(1)).await.unwrap().unwrap();
            assert_eq!((record.password_failures, record.password_locked), (0, false));
            ledger.commit_session(approval(1, 6, 1, 10)).await.unwrap();
        }

        /// Two SIMs on one account, each decided on the same count read before either wrote: the
        /// lock comes from the count the write produces, so the third wrong try locks whichever
        /// session commits it.
        async fn two_sims_on_one_account_win_no_extra_guess(backend) {
            let (_store, ledger) = backend.open(LedgerConfig::default());
            ledger.create_account(debit(1, 1_000)).await.unwrap();
            register(&ledger, 1, &[1]).await;
            register(&ledger, 2, &[1]).await;
            let first =
                declined_with(1, 1, 1, 10, ResponseCode::IncorrectPassword, PasswordEffect::Failure { tries_max: 3 });
            ledger.commit_session(first).await.unwrap();
            // Both sessions read the account now (one failure) and decide from it.
            let stale = ledger.account(&account(1)).await.unwrap().unwrap();
            let wrong = mps_protocol::PasswordVerificationValue::new([0x5a; 32]);
            let verdicts = [1, 2].map(|_| crate::decision::password::check(&stale, &wrong, 3));
            for verdict in &verdicts {
                assert_eq!(verdict.result, Err(ResponseCode::IncorrectPassword), "each sees one try left");
            }
            let from_sim =
                |sim, counter, effect| declined_with(sim, counter, 1, 10, ResponseCode::IncorrectPassword, effect);
            ledger.commit_session(from_sim(1, 2, verdicts[0].effect)).await.unwrap();
            ledger.commit_session(from_sim(2, 1, verdicts[1].effect)).await.unwrap();
            let record = ledger.account(&account(1)).await.unwrap().unwrap();
            assert_eq!((record.password_failures, record.password_locked), (3, true), "the third wrong try locks");
        }

        /// The answer kept for retransmission (body plus signature header) may fill
        /// `stored_answer_bytes_max` exactly; one byte more refuses the whole commit.
        async fn a_stored_answer_may_fill_its_limit_and_not_one_byte_more(backend) {
            let config = LedgerConfig { stored_answer_bytes_max: 1_024, ..LedgerConfig::default() };
            let (_store, ledger) = backend.open(config);
            ledger.create_account(debit(1, 1_000)).await.unwrap();
            register(&ledger, 1, &[1]).await;
            let answered_in = |counter, bytes: usize| {
                let commit = approval(1, counter, 1, 10);
                let body_bytes = bytes - commit.response_signature.len();
                SessionCommit { response_body: vec![b'x'; body_bytes], ..commit }
            };
            let over = ledger.commit_session(answered_in(1, 1_025)).await.unwrap_err();
            assert!(matches!(over, LedgerError::InvalidInput("stored answer too large")), "{over:?}");
            assert_eq!(ledger.sim(&sim_id(1)).await.unwrap().unwrap().counter.value(), 0, "nothing stored");
            ledger.commit_session(answered_in(1, 1_024)).await.unwrap();
            let stored = ledger.sim(&sim_id(1)).await.unwrap().unwrap().last_answer.unwrap();
            assert_eq!(stored.response_body.len() + stored.response_signature.len(), 1_024);
        }
    }

    #[tokio::test]
    async fn one_approval_per_merchant_order() {
        let (dir, path, ledger) = open_ledger(LedgerConfig::default());
        ledger.create_account(debit(1, 1_000)).await.unwrap();
        register(&ledger, 1, &[1]).await;
        register(&ledger, 2, &[1]).await;
        let first = approval(1, 1, 1, 10);
        ledger.commit_session(first.clone()).await.unwrap();
        let same_order = changed(approval(2, 1, 1, 10), |t| t.order_no = first.transaction.order_no);
        let err = ledger.commit_session(same_order.clone()).await.unwrap_err();
        assert!(matches!(err, LedgerError::Conflict(Conflict::DuplicateOrder)), "{err:?}");
        // A decline of the same order is a record, not a second authorization.
        let declined =
            changed(decline(2, 1, 1, 10, ResponseCode::Duplicate), |t| t.order_no = first.transaction.order_no);
        ledger.commit_session(declined).await.unwrap();
        ledger.close().await;

        // The unique index refuses a second approval even past the code's check.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let copied = conn.execute(
            "INSERT INTO transactions (txn_id, sim_id, counter, account, merchant_id, order_no, acquirer_iin,
                 merchant_account, amount, currency, response_code, auth_code, business_day, created_at)
             SELECT randomblob(16), sim_id, counter + 100, account, merchant_id, order_no, acquirer_iin,
                 merchant_account, amount, currency, response_code, auth_code, business_day, created_at
             FROM transactions WHERE response_code = '00'",
            [],
        );
        let err = copied.unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::ConstraintViolation), "{err}");
        drop(dir);
    }
}
