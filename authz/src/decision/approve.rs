//! Step 13 of the decision: approval with a 6-character auth code, and the transaction id every
//! processed authorization carries.

use mps_protocol::{AuthCode, TxnId};
use rand::Rng;
use time::OffsetDateTime;

const AUTH_CODE_ALPHABET: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A fresh auth code: six characters from A-Z and 0-9, from the OS random generator.
pub fn new_auth_code() -> AuthCode {
    let mut rng = rand::rngs::OsRng;
    let mut code = [0u8; 6];
    for byte in &mut code {
        *byte = AUTH_CODE_ALPHABET[rng.gen_range(0..AUTH_CODE_ALPHABET.len())];
    }
    AuthCode(code)
}

/// A fresh transaction id made at `now`, laid out as a UUID version 7 (RFC 9562 section 5.7):
/// the Unix time in milliseconds in the first 48 bits, big-endian, then the version and variant
/// bits around 74 bits from the OS random generator.
///
/// The time comes first so that ids made later sort later: a booking's entries in the ledger's
/// indexes on `txn_id` (the transactions' key, the journal's) land on the indexes' last pages,
/// which every booking shares, instead of on a random page of an index that grows all day. With
/// random ids the pages a group commit writes, and so its cost, grew with the books.
/// DESIGN.md asks only for 16 bytes; the 74 random bits keep ids unique and unguessable.
pub fn new_txn_id(now: OffsetDateTime) -> TxnId {
    let millis = now.unix_timestamp_nanos().div_euclid(1_000_000).clamp(0, MAX_UNIX_MILLIS);
    let mut id: [u8; 16] = rand::rngs::OsRng.r#gen();
    id[..6].copy_from_slice(&millis.to_be_bytes()[10..]);
    id[6] = 0x70 | (id[6] & 0x0f);
    id[8] = 0x80 | (id[8] & 0x3f);
    TxnId(id)
}

/// The largest time a UUID version 7 holds: 48 bits of milliseconds (the year 10889).
const MAX_UNIX_MILLIS: i128 = (1 << 48) - 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_codes_are_six_uppercase_letters_or_digits() {
        for _ in 0..100 {
            let code = new_auth_code();
            assert!(code.0.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        }
    }

    #[test]
    fn txn_ids_sort_by_the_time_they_were_made_and_differ_within_one_millisecond() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_764_547_200_123_456_789).unwrap();
        let id = new_txn_id(at);
        assert_eq!(id.0[..6], 1_764_547_200_123u64.to_be_bytes()[2..], "milliseconds, big-endian");
        assert_eq!(id.0[6] >> 4, 7, "UUID version 7");
        assert_eq!(id.0[8] >> 6, 0b10, "RFC 9562 variant");

        let same_millisecond: std::collections::HashSet<_> = (0..1000).map(|_| new_txn_id(at)).collect();
        assert_eq!(same_millisecond.len(), 1000);

        let mut earlier = new_txn_id(at);
        for step in 1..=1000i64 {
            let later = new_txn_id(at + time::Duration::milliseconds(step));
            assert!(later > earlier, "an id made later sorts later");
            earlier = later;
        }
        let before_1970 = new_txn_id(OffsetDateTime::from_unix_timestamp(-1).unwrap());
        assert_eq!(before_1970.0[..6], [0; 6]);
    }
}
