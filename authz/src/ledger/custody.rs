//! The ledger's side of KEK rotation (docs/HSM.md): which KEK version each stored chain key is
//! under, the chain keys still under an older one, and the compare-and-swap that moves one
//! chain key to a newer KEK without ever overwriting a session that booked meanwhile.

use mps_hsm::WrappedChainKey;
use mps_protocol::{Counter, SimId};
use rusqlite::{Connection, params};

use super::error::{Conflict, LedgerError};
use super::rows::{counter_value, parse_chain_key, parse_counter, parse_sim_id};

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
pub(crate) fn kek_usage(conn: &mut Connection) -> Result<Vec<(u32, u64)>, LedgerError> {
    let mut statement =
        conn.prepare_cached("SELECT kek_version, COUNT(*) FROM sims GROUP BY kek_version ORDER BY kek_version")?;
    let rows = statement.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))?;
    let mut usage = Vec::new();
    for row in rows {
        let (version, count) = row?;
        let version = u32::try_from(version).map_err(|_| LedgerError::Corrupt("sims.kek_version"))?;
        let count = u64::try_from(count).map_err(|_| LedgerError::Corrupt("sims.kek_version"))?;
        usage.push((version, count));
    }
    Ok(usage)
}

/// Up to `limit` chain keys under a KEK version below `newest`, oldest version first.
pub(crate) fn chain_keys_below(
    conn: &mut Connection,
    newest: u32,
    limit: usize,
) -> Result<Vec<StoredChainKey>, LedgerError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = conn.prepare_cached(
        "SELECT sim_id, counter, wrapped_chain_key, kek_version FROM sims
         WHERE kek_version < ?1 ORDER BY kek_version, sim_id LIMIT ?2",
    )?;
    let rows = statement.query_map(params![newest, limit], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, Vec<u8>>(2)?, row.get::<_, i64>(3)?))
    })?;
    let mut found = Vec::new();
    for row in rows {
        let (sim_id, counter, key, kek_version) = row?;
        found.push(StoredChainKey {
            sim_id: parse_sim_id("sims.sim_id", &sim_id)?,
            counter: parse_counter("sims.counter", counter)?,
            key: parse_chain_key("sims.wrapped_chain_key", &key, kek_version)?,
        });
    }
    Ok(found)
}

/// Replaces one SIM's chain key by the same key under a newer KEK, only if the row still
/// holds exactly `stored` (same counter, same bytes, same version): a payment that booked
/// CK_n meanwhile wins, and this is [`Conflict::StaleCounter`].
pub(crate) fn rewrap(conn: &Connection, stored: &StoredChainKey, new: &WrappedChainKey) -> Result<(), LedgerError> {
    if new.kek_version <= stored.key.kek_version {
        return Err(LedgerError::Invariant("a rewrap must move a chain key to a newer KEK"));
    }
    let changed = conn
        .prepare_cached(
            "UPDATE sims SET wrapped_chain_key = ?1, kek_version = ?2
             WHERE sim_id = ?3 AND counter = ?4 AND kek_version = ?5 AND wrapped_chain_key = ?6",
        )?
        .execute(params![
            &new.bytes[..],
            new.kek_version,
            stored.sim_id.as_str(),
            counter_value(stored.counter)?,
            stored.key.kek_version,
            &stored.key.bytes[..],
        ])?;
    if changed != 1 {
        return Err(LedgerError::Conflict(Conflict::StaleCounter));
    }
    Ok(())
}
