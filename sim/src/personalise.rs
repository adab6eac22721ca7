//! Import of the bank's personalisation record (DESIGN.md section 9): unwrap CK_0 under the SIM
//! vendor's transport key and store it, with RSN_1 and counter 0, as this issuer's key set.

use mps_protocol::AesKey;
use mps_protocol::perso::{PersoRecord, unwrap_key};

use crate::error::SimError;
use crate::profile::{KEY_SETS_MAX, KeySet, Profile};

impl Profile {
    /// Imports a personalisation record. Refuses a record for an issuer whose key set exists
    /// already unless `replace` is set (replacing drops that issuer's pending payment and starts
    /// its counter at 0 again; its accounts stay). Nothing changes unless the record parses and
    /// the transport key unwraps its chain key.
    pub fn personalise(
        &mut self,
        record: &PersoRecord,
        transport_key: &AesKey,
        replace: bool,
    ) -> Result<&KeySet, SimError> {
        let parsed = record.parse()?;
        let iin = parsed.iin;
        let exists = self.key_sets.contains_key(&iin);
        if exists && !replace {
            return Err(SimError::KeySetExists { iin });
        }
        if !exists && self.key_sets.len() >= KEY_SETS_MAX {
            return Err(SimError::ListFull { what: "key sets", max: KEY_SETS_MAX });
        }
        let chain_key = unwrap_key(transport_key, &parsed.wrapped_chain_key)?;
        let key_set = KeySet {
            iin,
            sim_id: parsed.sim_id,
            transport_key_label: parsed.transport_key,
            chain_key,
            counter: parsed.counter,
            next_rsn: parsed.rsn,
            bank_certificate_pem: parsed.bank_certificate_pem,
            pending: None,
        };
        self.key_sets.insert(iin, key_set);
        // Just inserted under this key.
        self.key_sets.get(&iin).ok_or(SimError::UnknownIssuer { iin })
    }
}
