//! Step 13 of the decision: approval with a 6-character auth code, and the transaction id every
//! processed authorization carries.

use mps_protocol::{AuthCode, TxnId};
use rand::Rng;

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

/// A fresh transaction id: 16 random bytes.
pub fn new_txn_id() -> TxnId {
    TxnId(rand::rngs::OsRng.r#gen())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_codes_are_six_uppercase_letters_or_digits() {
        for _ in 0..100 {
            let code = new_auth_code();
            assert!(code.0.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        }
        assert_ne!(new_txn_id(), new_txn_id());
    }
}
