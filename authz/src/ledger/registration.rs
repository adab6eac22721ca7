//! Registration and administration writes (DESIGN.md section 9): open an account with its
//! opening-balance entry, register a SIM with its bound accounts and CK_0, block and unblock,
//! close and reopen, reset wrong-password tries, and the readiness heartbeat.

use std::collections::BTreeSet;

use mps_protocol::{Account, Iin, Rsn, SimId};

use super::error::LedgerError;
use super::journal::{self, Posting, PostingTarget};
use super::model::{
    AccountKind, AccountStatus, EntryKind, HOLDER_NAME_CHARS_MAX, InternalAccount, NewAccount, SimStatus, signed,
};
use super::queries;
use super::sql::{Sql, args};

/// Most accounts one SIM may be bound to.
pub const SIM_ACCOUNTS_MAX: usize = 16;

/// Opens an account; a non-zero opening balance is booked against the bank's funding account.
pub(crate) fn create_account(conn: &dyn Sql, new: &NewAccount, now: &str) -> Result<(), LedgerError> {
    validate_account(new)?;
    if queries::account(conn, &new.account)?.is_some() {
        return Err(LedgerError::AlreadyExists("account"));
    }
    let opening = signed(new.opening_balance, "opening balance")?;
    conn.execute(
        "INSERT INTO accounts (account, holder_name, kind, currency, credit_limit, balance, status,
             password_verification_value, password_failures, password_locked, per_txn_limit, daily_limit, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, 'open', ?6, 0, 0, ?7, ?8, ?9)",
        args![
            new.account.expose(),
            new.holder_name.expose(),
            new.kind.as_str(),
            i64::from(new.currency.code()),
            signed(new.credit_limit, "credit limit")?,
            &new.password_verification_value.expose()[..],
            signed(new.per_txn_limit, "per-transaction limit")?,
            signed(new.daily_limit, "daily limit")?,
            now,
        ],
    )?;
    if opening > 0 {
        let funding = journal::internal_account_id(conn, InternalAccount::Funding, new.currency, now)?;
        let postings = [
            Posting { target: PostingTarget::Customer(&new.account), amount: opening, currency: new.currency },
            Posting { target: PostingTarget::Internal(funding), amount: -opening, currency: new.currency },
        ];
        journal::post_entry(conn, EntryKind::Opening, None, now, &postings)?;
    }
    let stored = queries::account(conn, &new.account)?.ok_or(LedgerError::Invariant("the new account vanished"))?;
    if stored.balance != opening {
        return Err(LedgerError::Invariant("the opening balance was not booked"));
    }
    Ok(())
}

fn validate_account(new: &NewAccount) -> Result<(), LedgerError> {
    let name = new.holder_name.expose().as_str();
    let chars = name.chars().count();
    if chars == 0 || chars > HOLDER_NAME_CHARS_MAX || name.trim() != name || name.chars().any(char::is_control) {
        return Err(LedgerError::InvalidInput("holder name must be 1 to 140 characters, no control characters"));
    }
    if new.kind == AccountKind::Debit && new.credit_limit.minor() != 0 {
        return Err(LedgerError::InvalidInput("a debit account has no credit limit"));
    }
    Ok(())
}

/// A SIM to register (the writer's command; [`super::Ledger::register_sim`] builds it).
pub(crate) struct NewSim {
    pub sim_id: SimId,
    pub iin: Iin,
    pub accounts: Vec<Account>,
    pub wrapped_chain_key: mps_hsm::WrappedChainKey,
    pub first_rsn: Rsn,
}

/// Registers a SIM at counter 0 with CK_0 and RSN_1, bound to existing accounts.
pub(crate) fn register_sim(conn: &dyn Sql, new: &NewSim, now: &str) -> Result<(), LedgerError> {
    let distinct: BTreeSet<&str> = new.accounts.iter().map(Account::expose).collect();
    if new.accounts.is_empty() || new.accounts.len() > SIM_ACCOUNTS_MAX {
        return Err(LedgerError::InvalidInput("a SIM needs 1 to 16 accounts"));
    }
    if distinct.len() != new.accounts.len() {
        return Err(LedgerError::InvalidInput("an account is listed twice"));
    }
    if conn.query_opt("SELECT 1 FROM sims WHERE sim_id = ?1", args![new.sim_id.as_str()])?.is_some() {
        return Err(LedgerError::AlreadyExists("sim"));
    }
    for account in &new.accounts {
        if queries::account(conn, account)?.is_none() {
            return Err(LedgerError::NotFound("account"));
        }
    }
    conn.execute(
        "INSERT INTO sims (sim_id, iin, status, counter, wrapped_chain_key, next_rsn, created_at, kek_version)
         VALUES (?1, ?2, 'active', 0, ?3, ?4, ?5, ?6)",
        args![
            new.sim_id.as_str(),
            new.iin.as_str(),
            &new.wrapped_chain_key.bytes,
            &new.first_rsn.0,
            now,
            i64::from(new.wrapped_chain_key.kek_version)
        ],
    )?;
    for account in &new.accounts {
        conn.execute(
            "INSERT INTO sim_accounts (sim_id, account) VALUES (?1, ?2)",
            args![new.sim_id.as_str(), account.expose()],
        )?;
    }
    Ok(())
}

/// Blocks or unblocks a SIM.
pub(crate) fn set_sim_status(conn: &dyn Sql, sim_id: &SimId, status: SimStatus) -> Result<(), LedgerError> {
    let changed =
        conn.execute("UPDATE sims SET status = ?1 WHERE sim_id = ?2", args![status.as_str(), sim_id.as_str()])?;
    if changed != 1 {
        return Err(LedgerError::NotFound("sim"));
    }
    Ok(())
}

/// Closes or reopens an account.
pub(crate) fn set_account_status(conn: &dyn Sql, account: &Account, status: AccountStatus) -> Result<(), LedgerError> {
    let changed =
        conn.execute("UPDATE accounts SET status = ?1 WHERE account = ?2", args![status.as_str(), account.expose()])?;
    if changed != 1 {
        return Err(LedgerError::NotFound("account"));
    }
    Ok(())
}

/// Clears the wrong-password count and lifts the lock.
pub(crate) fn reset_password_tries(conn: &dyn Sql, account: &Account) -> Result<(), LedgerError> {
    let changed = conn.execute(
        "UPDATE accounts SET password_failures = 0, password_locked = 0 WHERE account = ?1",
        args![account.expose()],
    )?;
    if changed != 1 {
        return Err(LedgerError::NotFound("account"));
    }
    Ok(())
}

/// A tiny real write, committed and fsynced like any other: proves the ledger is writable.
pub(crate) fn heartbeat(conn: &dyn Sql, now: &str) -> Result<(), LedgerError> {
    conn.execute(
        "INSERT INTO health_checks (id, checked_at) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
        args![now],
    )?;
    Ok(())
}
