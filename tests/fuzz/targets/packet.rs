//! Fuzz target: the payer packet's decoder (DESIGN.md section 4), the first thing authz does
//! with a SIM's bytes, and the decoder of its decrypted secret. Whatever decodes must encode
//! back to the same bytes: the MAC is checked over the re-encoded fields, so two encodings of
//! one packet would let bytes the MAC never covered through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mps_protocol::wire::{PayerPacket, PaymentSecret};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = PayerPacket::decode(data) {
        assert_eq!(&packet.encode()[..], data, "a decoded packet encodes to other bytes");
        assert_eq!(&packet.mac_input()[..], &data[..packet.mac_input().len()]);
    }
    if let Ok(secret) = PaymentSecret::from_plaintext(data) {
        assert_eq!(&secret.to_plaintext()[..], data, "a decoded secret encodes to other bytes");
    }
});
