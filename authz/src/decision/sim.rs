//! Steps 5 and 6 of the decision: the SIM is known and active, and the packet's counter is the
//! next session; or the packet is a byte-identical retransmission of the last one, answered
//! with its stored answer before the SIM's status is looked at. These checks run before
//! the packet is authenticated, so a refusal here never moves the SIM's state.

use mps_protocol::wire::PayerPacket;
use mps_protocol::{Counter, ResponseCode};

use crate::ledger::{SimRecord, SimStatus};

/// What to do with the packet after steps 5 and 6.
#[derive(Debug)]
pub enum CounterVerdict {
    /// n = stored + 1: a new session; go on to the HSM.
    NextSession,
    /// n = stored and the packet is byte-identical to the stored one: answer with the stored
    /// answer unchanged.
    Retransmission,
}

/// Steps 5 and 6.
pub fn check(
    sim: Option<&SimRecord>,
    packet: &PayerPacket,
    packet_bytes: &[u8],
) -> Result<CounterVerdict, ResponseCode> {
    let sim = sim.ok_or(ResponseCode::UnknownSim)?;
    let received = packet.fields.counter;
    // A retransmission gets its stored answer whatever happened to the SIM since: a payment
    // that was approved and booked stays approved when the SIM is blocked before the retry.
    let identical_retransmission = received == sim.counter
        && received != Counter::ZERO
        && sim.last_answer.as_ref().is_some_and(|stored| stored.packet == packet_bytes);
    if identical_retransmission {
        return Ok(CounterVerdict::Retransmission);
    }
    if sim.status != SimStatus::Active {
        return Err(ResponseCode::Restricted);
    }
    if Some(received) == sim.counter.next() {
        return Ok(CounterVerdict::NextSession);
    }
    Err(ResponseCode::SecurityViolation)
}

#[cfg(test)]
mod tests {
    use mps_protocol::wire::ClearFields;
    use mps_protocol::{Amount, Currency, Iin, MerchantId, OrderNo, Rsn, TxnId};

    use super::*;
    use crate::ledger::StoredAnswer;
    use crate::ledger::testing::sim_id;

    /// SIM 1's packet for session `counter` and its bytes; `mac` tells two packets of one
    /// session apart.
    fn packet(counter: u64, mac: u8) -> (PayerPacket, Vec<u8>) {
        let packet = PayerPacket {
            fields: ClearFields {
                iin: Iin::new("400012").unwrap(),
                sim_id: sim_id(1),
                counter: Counter::new(counter).unwrap(),
                merchant_id: MerchantId::new("SHOP-001").unwrap(),
                order_no: OrderNo::new("O-1").unwrap(),
                amount: Amount::from_minor(10),
                currency: Currency::EUR,
            },
            iv: [0; 16],
            ciphertext: [0; 32],
            mac: [mac; 8],
        };
        let bytes = packet.encode().to_vec();
        (packet, bytes)
    }

    /// SIM 1 after session `counter`, whose packet was `answered` (none before the first).
    fn sim(status: SimStatus, counter: u64, answered: Option<&[u8]>) -> SimRecord {
        let counter = Counter::new(counter).unwrap();
        SimRecord {
            sim_id: sim_id(1),
            iin: Iin::new("400012").unwrap(),
            status,
            counter,
            wrapped_chain_key: mps_hsm::WrappedChainKey { kek_version: 1, bytes: [0x10; 40] },
            next_rsn: Rsn([1; 8]),
            accounts: Vec::new(),
            last_answer: answered.map(|packet| StoredAnswer {
                counter,
                txn_id: TxnId([1; 16]),
                response_code: ResponseCode::Approved,
                packet: packet.to_vec(),
                response_body: b"{}".to_vec(),
                response_signature: "sig".to_owned(),
            }),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn an_unknown_sim_is_refused_with_14() {
        let (packet, bytes) = packet(1, 0);
        assert!(matches!(check(None, &packet, &bytes), Err(ResponseCode::UnknownSim)));
    }

    #[test]
    fn only_the_next_counter_of_an_active_sim_opens_a_session() {
        let (last, last_bytes) = packet(4, 0);
        let active = sim(SimStatus::Active, 4, Some(&last_bytes));
        let (next, next_bytes) = packet(5, 0);
        assert!(matches!(check(Some(&active), &next, &next_bytes), Ok(CounterVerdict::NextSession)));
        let blocked = sim(SimStatus::Blocked, 4, Some(&last_bytes));
        assert!(matches!(check(Some(&blocked), &next, &next_bytes), Err(ResponseCode::Restricted)));
        for (counter, mac) in [(3, 0), (6, 0), (4, 9)] {
            let (other, other_bytes) = packet(counter, mac);
            let verdict = check(Some(&active), &other, &other_bytes);
            assert!(matches!(verdict, Err(ResponseCode::SecurityViolation)), "counter {counter}: {verdict:?}");
        }
        assert_eq!(last.fields.counter.value(), 4);
    }

    #[test]
    fn the_same_packet_again_gets_the_stored_answer_even_from_a_blocked_sim() {
        let (last, last_bytes) = packet(4, 0);
        for status in [SimStatus::Active, SimStatus::Blocked] {
            let record = sim(status, 4, Some(&last_bytes));
            let verdict = check(Some(&record), &last, &last_bytes);
            assert!(matches!(verdict, Ok(CounterVerdict::Retransmission)), "{status:?}: {verdict:?}");
        }
        let never_answered = sim(SimStatus::Active, 4, None);
        let verdict = check(Some(&never_answered), &last, &last_bytes);
        assert!(matches!(verdict, Err(ResponseCode::SecurityViolation)), "nothing stored to resend: {verdict:?}");
    }
}
