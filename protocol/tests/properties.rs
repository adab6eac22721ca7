//! Property tests of the wire codecs: round trips, single-bit flips, truncations, extensions.
//!
//! Every malformed input must come back as an error value: a panic fails the test run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mps_protocol::keys::{AesKey, SessionKeys};
use mps_protocol::wire::{
    ANSWER_LEN, AnswerPlain, AuthCode, ClearFields, PACKET_LEN, PayerAnswer, PayerPacket, PaymentSecret, ResponseCode,
    TxnId,
};
use mps_protocol::{Account, Amount, Counter, Currency, Iin, MerchantId, OrderNo, Password, Rsn, SimId};
use proptest::prelude::*;

fn digits(min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[0-9]{{{min},{max}}}")).unwrap()
}

fn printable(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[!-~][ -~]{{0,{}}}", max - 1)).unwrap()
}

fn currency() -> impl Strategy<Value = Currency> {
    prop::sample::select(vec![978u16, 840, 156, 392, 826]).prop_map(|c| Currency::from_code(c).unwrap())
}

prop_compose! {
    fn clear_fields()(
        iin in digits(6, 6),
        sim in digits(19, 20),
        counter in 1u64..=Counter::MAX,
        merchant in printable(15),
        order in printable(12),
        amount in any::<u64>(),
        currency in currency(),
    ) -> ClearFields {
        ClearFields {
            iin: Iin::new(&iin).unwrap(),
            sim_id: SimId::new(&sim).unwrap(),
            counter: Counter::new(counter).unwrap(),
            merchant_id: MerchantId::new(&merchant).unwrap(),
            order_no: OrderNo::new(&order).unwrap(),
            amount: Amount::from_minor(amount),
            currency,
        }
    }
}

prop_compose! {
    fn secret()(account in digits(12, 19), password in proptest::string::string_regex("[ -~]{4,12}").unwrap()) -> PaymentSecret {
        PaymentSecret { account: Account::new(&account).unwrap(), password: Password::new(&password).unwrap() }
    }
}

prop_compose! {
    fn session_keys()(chain in any::<[u8; 32]>(), counter in 1u64..1000, rsn in any::<[u8; 8]>()) -> SessionKeys {
        SessionKeys::derive(&AesKey::from_bytes(chain), Counter::new(counter).unwrap(), &Rsn(rsn))
    }
}

prop_compose! {
    fn answer_plain()(
        code in prop::sample::select(ResponseCode::ALL.to_vec()),
        auth in proptest::string::string_regex("[A-Z0-9]{6}").unwrap(),
        balance in any::<i64>(),
        currency in currency(),
        rsn in any::<[u8; 8]>(),
        txn in any::<[u8; 16]>(),
    ) -> AnswerPlain {
        let auth_code = if code == ResponseCode::Approved { AuthCode(auth.as_bytes().try_into().unwrap()) } else { AuthCode::NONE };
        AnswerPlain { response_code: code, auth_code, balance, currency, next_rsn: Rsn(rsn), txn_id: TxnId(txn) }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn packet_encode_decode_open_round_trip(fields in clear_fields(), secret in secret(), keys in session_keys(), iv in any::<[u8; 16]>()) {
        let packet = PayerPacket::seal(&keys, fields.clone(), &secret, iv);
        let bytes = packet.encode();
        prop_assert_eq!(bytes.len(), PACKET_LEN);
        let decoded = PayerPacket::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &packet);
        prop_assert_eq!(&decoded.fields, &fields);
        let opened = decoded.open(&keys).unwrap();
        prop_assert_eq!(opened, secret);
    }

    #[test]
    fn packet_single_bit_flip_never_verifies(fields in clear_fields(), secret in secret(), keys in session_keys(), iv in any::<[u8; 16]>(), bit in 0usize..PACKET_LEN * 8) {
        let mut bytes = PayerPacket::seal(&keys, fields, &secret, iv).encode();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let verified = PayerPacket::decode(&bytes).and_then(|p| p.open(&keys));
        prop_assert!(verified.is_err(), "bit {} flipped and the packet still verified", bit);
    }

    #[test]
    fn packet_truncation_and_extension_are_errors(fields in clear_fields(), secret in secret(), keys in session_keys(), iv in any::<[u8; 16]>(), extra in prop::collection::vec(any::<u8>(), 1..64)) {
        let bytes = PayerPacket::seal(&keys, fields, &secret, iv).encode();
        for len in 0..PACKET_LEN {
            prop_assert!(PayerPacket::decode(&bytes[..len]).is_err());
        }
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&extra);
        prop_assert!(PayerPacket::decode(&longer).is_err());
    }

    #[test]
    fn answer_encode_decode_open_round_trip(plain in answer_plain(), keys in session_keys(), counter in 1u64..=Counter::MAX, iv in any::<[u8; 16]>()) {
        let answer = PayerAnswer::seal(&keys, Counter::new(counter).unwrap(), &plain, iv);
        let bytes = answer.encode();
        prop_assert_eq!(bytes.len(), ANSWER_LEN);
        let decoded = PayerAnswer::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &answer);
        prop_assert_eq!(decoded.open(&keys).unwrap(), plain);
    }

    #[test]
    fn answer_single_bit_flip_never_verifies(plain in answer_plain(), keys in session_keys(), iv in any::<[u8; 16]>(), bit in 0usize..ANSWER_LEN * 8) {
        let mut bytes = PayerAnswer::seal(&keys, Counter::new(1).unwrap(), &plain, iv).encode();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let verified = PayerAnswer::decode(&bytes).and_then(|a| a.open(&keys));
        prop_assert!(verified.is_err(), "bit {} flipped and the answer still verified", bit);
    }

    #[test]
    fn answer_truncation_and_extension_are_errors(plain in answer_plain(), keys in session_keys(), iv in any::<[u8; 16]>(), extra in prop::collection::vec(any::<u8>(), 1..64)) {
        let bytes = PayerAnswer::seal(&keys, Counter::new(7).unwrap(), &plain, iv).encode();
        for len in 0..ANSWER_LEN {
            prop_assert!(PayerAnswer::decode(&bytes[..len]).is_err());
        }
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&extra);
        prop_assert!(PayerAnswer::decode(&longer).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), keys in session_keys()) {
        let _ = PayerPacket::decode(&bytes).and_then(|p| p.open(&keys));
        let _ = PayerAnswer::decode(&bytes).and_then(|a| a.open(&keys));
        let _ = PaymentSecret::from_plaintext(&bytes);
        let _ = AnswerPlain::from_plaintext(&bytes);
    }
}

/// Exhaustive over every bit of one packet and one answer (the proptest above samples).
#[test]
fn every_single_bit_flip_of_a_fixed_packet_and_answer_fails() {
    let keys = SessionKeys::derive(&AesKey::from_bytes([0x42; 32]), Counter::new(3).unwrap(), &Rsn([9; 8]));
    let fields = ClearFields {
        iin: Iin::new("400012").unwrap(),
        sim_id: SimId::new("89490123456789012345").unwrap(),
        counter: Counter::new(3).unwrap(),
        merchant_id: MerchantId::new("SHOP-1").unwrap(),
        order_no: OrderNo::new("A-1").unwrap(),
        amount: Amount::from_minor(1),
        currency: Currency::EUR,
    };
    let secret =
        PaymentSecret { account: Account::new("123456789012").unwrap(), password: Password::new("1234").unwrap() };
    let packet = PayerPacket::seal(&keys, fields, &secret, [1; 16]).encode();
    for bit in 0..PACKET_LEN * 8 {
        let mut bytes = packet;
        bytes[bit / 8] ^= 1 << (bit % 8);
        assert!(PayerPacket::decode(&bytes).and_then(|p| p.open(&keys)).is_err(), "packet bit {bit}");
    }
    let plain = AnswerPlain {
        response_code: ResponseCode::Approved,
        auth_code: AuthCode(*b"ABC123"),
        balance: 10,
        currency: Currency::EUR,
        next_rsn: Rsn([2; 8]),
        txn_id: TxnId([3; 16]),
    };
    let answer = PayerAnswer::seal(&keys, Counter::new(3).unwrap(), &plain, [4; 16]).encode();
    for bit in 0..ANSWER_LEN * 8 {
        let mut bytes = answer;
        bytes[bit / 8] ^= 1 << (bit % 8);
        assert!(PayerAnswer::decode(&bytes).and_then(|a| a.open(&keys)).is_err(), "answer bit {bit}");
    }
}
