//! `store = "memory"`: nothing is kept. A room lives while it is loaded, as with
//! y-websocket-server without persistence: once it unloads (or the process restarts) it starts
//! empty again. Every call succeeds and costs nothing.

use super::{RoomStore, StoreError};

pub struct MemoryStore;

impl RoomStore for MemoryStore {
    fn name(&self) -> &str {
        "memory"
    }

    fn load(&self, _room: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(Vec::new())
    }

    fn append(&self, _room: &str, _update: &[u8]) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn replace(&self, _room: &str, _snapshot: Vec<u8>) -> Result<(), StoreError> {
        Ok(())
    }

    fn rows(&self, _room: &str) -> u64 {
        0
    }

    fn unload(&self, _room: &str) {}

    fn flush(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}
