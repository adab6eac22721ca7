//! Serialization of work per SIM and per account. A fixed table of async mutexes, picked by a
//! hash of the key: bounded memory whatever the number of SIMs, and two keys that share a
//! slot merely wait for each other. SIM locks are always taken before account locks, from two
//! separate tables, so no cycle (and no deadlock) is possible. The same holds for the table of
//! merchant orders, taken between the two.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// A table of `slots` async mutexes.
#[derive(Debug)]
pub struct LockTable {
    slots: Vec<Arc<Mutex<()>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl LockTable {
    /// A table with `slots` mutexes (at least 1).
    pub fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots.max(1)).map(|_| Arc::new(Mutex::new(()))).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Waits for the slot of `key` and holds it until the guard drops.
    pub async fn lock<K: Hash + ?Sized>(&self, key: &K) -> OwnedMutexGuard<()> {
        let index = (self.hasher.hash_one(key) % self.slots.len() as u64) as usize;
        Arc::clone(&self.slots[index]).lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_table_stays_its_size_whatever_the_number_of_keys() {
        let table = LockTable::new(64);
        // A hundred thousand SIMs, each locked and let go in turn.
        for n in 0..100_000u64 {
            drop(table.lock(&format!("sim-{n}")).await);
        }
        assert_eq!(table.slots.len(), 64);
        // Every guard is gone: no slot is referenced from anywhere but the table.
        assert!(table.slots.iter().all(|slot| Arc::strong_count(slot) == 1));
    }

    #[tokio::test]
    async fn the_same_key_waits_for_the_holder() {
        let table = Arc::new(LockTable::new(16));
        let guard = table.lock("sim-1").await;
        let other = Arc::clone(&table);
        let waiter = tokio::spawn(async move {
            let _g = other.lock("sim-1").await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        waiter.await.unwrap();
    }
}
