//! Where rooms persist. A store keeps, per room, a log of rows (applied v1 updates, or one
//! snapshot followed by the updates applied after it) and commits queued rows in groups.
//!
//! The contract every implementation keeps, because the registry relies on it:
//! - `load` starts a room's log, and only a loaded room accepts `append`/`replace` (a room whose
//!   log could not be read must never write over it);
//! - `load` sees what was queued but not yet committed (a room unloaded and joined again in the
//!   same flush interval loses nothing);
//! - rows are committed in the order they were queued, and a row is never written over another
//!   (each append goes after the last row actually stored);
//! - a failed `flush` keeps what it could not commit for the next one.

mod memory;
mod redb;

pub(crate) use self::memory::MemoryStore;
pub use self::redb::RedbStore;

/// Rows a room's log may grow to before it is compacted into a snapshot.
pub(crate) const COMPACT_AT: u64 = 500;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("room store {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("room store {path}: room {room:?} was not loaded; refusing to write its log")]
    NotLoaded { path: String, room: String },
}

/// A room store: a redb file ([`RedbStore`]) or nothing kept ([`MemoryStore`]); tests wrap the
/// redb one to fail on demand. Rooms reach their store only through this trait.
pub trait RoomStore: Send + Sync {
    /// What logs and metrics call it (the file path).
    fn name(&self) -> &str;
    /// Every row of `room`, oldest first (a snapshot row first, if compacted), queued rows
    /// included; from now on the room's log accepts appends and replaces.
    fn load(&self, room: &str) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Queue an applied update; `Ok(true)` when the room's log should be compacted.
    fn append(&self, room: &str, update: &[u8]) -> Result<bool, StoreError>;
    /// Queue replacing the room's whole log by `snapshot` (which holds everything applied).
    fn replace(&self, room: &str, snapshot: Vec<u8>) -> Result<(), StoreError>;
    /// Rows the room's log has (stored and queued).
    fn rows(&self, room: &str) -> u64;
    /// The room left memory: its log accepts nothing more until it is loaded again.
    fn unload(&self, room: &str);
    /// Commit everything queued; returns how many operations were written.
    fn flush(&self) -> Result<usize, StoreError>;
}
