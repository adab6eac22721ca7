//! Fuzz target: step 2 of authz's decision, the merchant's JSON bodies parsed into typed fields
//! (the authorization request and the reversal request, DESIGN.md sections 6 and 6.1). Both
//! parsers see every input; what they accept must hold the limits they promise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mps_authz::decision::request::{self, AMOUNT_MAX};
use mps_authz::decision::reversal;
use mps_protocol::wire::PACKET_LEN;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = request::parse(data) {
        assert_eq!(parsed.payer_packet.len(), PACKET_LEN);
        assert!(parsed.amount.minor() <= AMOUNT_MAX);
        assert!(parsed.merchant_account.as_str().len() <= request::MerchantAccount::LEN_MAX);
    }
    if let Ok(parsed) = reversal::parse(data) {
        assert!(parsed.amount.minor() <= AMOUNT_MAX);
    }
});
