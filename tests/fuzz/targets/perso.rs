//! Fuzz target: the personalisation record (DESIGN.md section 9) as `sim personalise` reads it:
//! JSON text, then every field parsed. A record that parses survives its own JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mps_protocol::perso::{PersoRecord, WRAPPED_KEY_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(record) = PersoRecord::from_json(text) else { return };
    let Ok(parsed) = record.parse() else { return };
    assert_eq!(parsed.wrapped_chain_key.len(), WRAPPED_KEY_LEN);
    // The record this text parsed into is written and read again unchanged.
    let again = PersoRecord::from_json(&record.to_json());
    assert!(again.is_ok_and(|again| again == record), "a parsed record does not survive its own JSON");
});
