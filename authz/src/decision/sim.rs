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
