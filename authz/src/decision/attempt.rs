//! One authorization attempt as its caller sees it: the decision runs in a task of its own, so
//! that a caller who gives up (the request deadline, a client that disconnects or resets its
//! stream) cannot cancel a booking half-way or release the SIM, order and account locks
//! before the booking is durable. The caller and the decision meet here exactly once: either
//! the caller gives up first, and the decision stops before it queues its booking (nothing is
//! booked, and the caller may say so), or the decision queues its booking first, and the
//! caller, if it gives up afterwards, can only say that the outcome is unknown.

use std::sync::atomic::{AtomicU8, Ordering};

const DECIDING: u8 = 0;
const BOOKING: u8 = 1;
const ABANDONED: u8 = 2;

/// Shared by the caller (front/) and the decision of one request.
#[derive(Debug, Default)]
pub struct Attempt(AtomicU8);

/// What the caller may tell its client after giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The decision had not queued its booking and never will: nothing was booked.
    NothingBooked,
    /// The booking was queued and completes whatever the caller does: the same packet sent
    /// again gets the stored answer.
    OutcomeUnknown,
}

impl Attempt {
    /// A new attempt, still deciding.
    pub fn new() -> Self {
        Self::default()
    }

    /// The decision is about to queue its booking. False when the caller has already given up:
    /// then the decision must stop without booking.
    pub fn begin_booking(&self) -> bool {
        match self.0.compare_exchange(DECIDING, BOOKING, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(current) => current == BOOKING,
        }
    }

    /// The caller gives up waiting.
    pub fn give_up(&self) -> GaveUp {
        match self.0.compare_exchange(DECIDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => GaveUp::NothingBooked,
            Err(ABANDONED) => GaveUp::NothingBooked,
            Err(_) => GaveUp::OutcomeUnknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_booking_and_giving_up_wins() {
        let attempt = Attempt::new();
        assert!(attempt.begin_booking());
        assert_eq!(attempt.give_up(), GaveUp::OutcomeUnknown);
        assert!(attempt.begin_booking(), "a decision that is booking goes on");

        let attempt = Attempt::new();
        assert_eq!(attempt.give_up(), GaveUp::NothingBooked);
        assert!(!attempt.begin_booking(), "a decision whose caller gave up does not book");
        assert_eq!(attempt.give_up(), GaveUp::NothingBooked);
    }
}
