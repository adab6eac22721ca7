//! The free SIMs: a request takes one, owns it for the whole exchange, and puts it back, so a
//! SIM never has two payments in flight and the next payment of a SIM uses the next keys.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Semaphore;

use crate::provision::Payer;

/// SIMs waiting for their next request, oldest first.
pub struct SimPool {
    free: Mutex<VecDeque<Payer>>,
    available: Semaphore,
}

impl SimPool {
    /// A pool holding `payers`.
    pub fn new(payers: Vec<Payer>) -> Self {
        let available = Semaphore::new(payers.len());
        Self { free: Mutex::new(payers.into()), available }
    }

    /// Waits for a free SIM (None only if the pool is closed).
    pub async fn take(&self) -> Option<Payer> {
        let permit = self.available.acquire().await.ok()?;
        permit.forget();
        let payer = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
        // A permit is added only after a SIM is pushed, so a permit always finds one.
        debug_assert!(payer.is_some());
        payer
    }

    /// Returns a SIM to the back of the line.
    pub fn put(&self, payer: Payer) {
        self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_back(payer);
        self.available.add_permits(1);
    }

    /// The SIMs, once every request has returned its SIM.
    pub fn into_payers(self) -> Vec<Payer> {
        self.free.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).into()
    }
}
