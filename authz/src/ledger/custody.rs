//! The ledger's side of KEK rotation (docs/HSM.md): which KEK version each stored chain key is
//! under, the chain keys still under an older one, and the compare-and-swap that moves one
//! chain key to a newer KEK without ever overwriting a session that booked meanwhile.

use mps_hsm::WrappedChainKey;
use mps_protocol::{Counter, SimId};

use super::error::{Conflict, LedgerError};
use super::rows::{counter_value, parse_chain_key, parse_counter, parse_sim_id};
use super::sql::{Sql, args};

/// One SIM's stored chain key, as a rewrap reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChainKey {
    /// The SIM.
    pub sim_id: SimId,
    /// Its counter when read: the rewrap applies only if it has not moved.
    pub counter: Counter,
    /// The chain key and its KEK version.
    pub key: WrappedChainKey,
}

/// Chain keys per KEK version: (version, SIMs), ascending.
pub(crate) fn kek_usage(conn: &dyn Sql) -> Result<Vec<(u32, u64)>, LedgerError> {
    let rows =
        conn.query("SELECT kek_version, COUNT(*) FROM sims GROUP BY kek_version ORDER BY kek_version", args![])?;
    rows.iter()
        .map(|row| {
            let corrupt = |_| LedgerError::Corrupt("sims.kek_version");
            let version = u32::try_from(row.get::<i64>(0, "sims.kek_version")?).map_err(corrupt)?;
            let count = u64::try_from(row.get::<i64>(1, "sims.kek_version")?).map_err(corrupt)?;
            Ok((version, count))
        })
        .collect()
}

/// Up to `limit` chain keys under a KEK version below `newest`, oldest version first.
pub(crate) fn chain_keys_below(conn: &dyn Sql, newest: u32, limit: usize) -> Result<Vec<StoredChainKey>, LedgerError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn.query(
        "SELECT sim_id, counter, wrapped_chain_key, kek_version FROM sims
         WHERE kek_version < ?1 ORDER BY kek_version, sim_id LIMIT ?2",
        args![i64::from(newest), limit],
    )?;
    rows.iter()
        .map(|row| {
            let key: Vec<u8> = row.get(2, "sims.wrapped_chain_key")?;
            Ok(StoredChainKey {
                sim_id: parse_sim_id("sims.sim_id", &row.get::<String>(0, "sims.sim_id")?)?,
                counter: parse_counter("sims.counter", row.get(1, "sims.counter")?)?,
                key: parse_chain_key("sims.wrapped_chain_key", &key, row.get(3, "sims.kek_version")?)?,
            })
        })
        .collect()
}

/// Replaces one SIM's chain key by the same key under a newer KEK, only if the row still
/// holds exactly `stored` (same counter, same bytes, same version): a payment that booked
/// CK_n meanwhile wins, and this is [`Conflict::StaleCounter`].
pub(crate) fn rewrap(conn: &dyn Sql, stored: &StoredChainKey, new: &WrappedChainKey) -> Result<(), LedgerError> {
    if new.kek_version <= stored.key.kek_version {
        return Err(LedgerError::Invariant("a rewrap must move a chain key to a newer KEK"));
    }
    let changed = conn.execute(
        "UPDATE sims SET wrapped_chain_key = ?1, kek_version = ?2
         WHERE sim_id = ?3 AND counter = ?4 AND kek_version = ?5 AND wrapped_chain_key = ?6",
        args![
            &new.bytes,
            i64::from(new.kek_version),
            stored.sim_id.as_str(),
            counter_value(stored.counter)?,
            i64::from(stored.key.kek_version),
            &stored.key.bytes,
        ],
    )?;
    if changed != 1 {
        return Err(LedgerError::Conflict(Conflict::StaleCounter));
    }
    Ok(())
}
