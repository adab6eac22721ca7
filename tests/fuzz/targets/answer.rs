//! Fuzz target: the issuer's answer as the SIM decodes it (DESIGN.md section 5), and the
//! decoder of its decrypted body. Whatever decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mps_protocol::wire::{AnswerPlain, PayerAnswer};

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = PayerAnswer::decode(data) {
        assert_eq!(&answer.encode()[..], data, "a decoded answer encodes to other bytes");
        assert_eq!(&answer.mac_input()[..], &data[..answer.mac_input().len()]);
    }
    if let Ok(plain) = AnswerPlain::from_plaintext(data) {
        assert_eq!(&plain.to_plaintext()[..], data, "a decoded answer body encodes to other bytes");
    }
});
