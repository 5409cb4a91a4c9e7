//! Room persistence in one redb file: each applied update is appended under (room, seq); a room
//! whose log grows past `COMPACT_AT` rows is replaced by one snapshot row. Writes are batched:
//! `append` only queues, `flush` commits everything queued in one transaction (group commit), so
//! many busy rooms cost one fsync per flush interval, not one per keystroke. A crash loses at most
//! what was queued since the last flush; redb's commits keep the file readable.

use redb::{Database, ReadableDatabase, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

const UPDATES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("updates");
/// Rows a room's log may grow to before it is compacted into a snapshot.
pub const COMPACT_AT: u64 = 500;

#[derive(Debug, Clone, thiserror::Error)]
#[error("room store {path}: {reason}")]
pub struct StoreError {
    pub path: String,
    pub reason: String,
}

enum Op {
    Append(String, Vec<u8>),
    Replace(String, Vec<u8>),
}

#[derive(Default)]
struct RoomLog {
    next_seq: u64,
    rows: u64,
}

pub struct RedbStore {
    pub path: String,
    db: Database,
    pending: Mutex<Vec<Op>>,
    logs: Mutex<HashMap<String, RoomLog>>,
    /// Held for a whole flush, so a flush that returns has committed everything queued before it
    /// was called (a concurrent flush may have taken the queue).
    flushing: Mutex<()>,
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let db = Database::create(path).map_err(|e| err(&e))?;
        // Make sure the table exists so that reads of a fresh file succeed.
        let w = db.begin_write().map_err(|e| err(&e))?;
        w.open_table(UPDATES).map_err(|e| err(&e))?;
        w.commit().map_err(|e| err(&e))?;
        Ok(RedbStore {
            path: path.display().to_string(),
            db,
            pending: Mutex::new(Vec::new()),
            logs: Mutex::new(HashMap::new()),
            flushing: Mutex::new(()),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Every stored update of `room`, oldest first (a snapshot row first, if compacted).
    pub fn load(&self, room: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = r.open_table(UPDATES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let mut last = None;
        for row in t
            .range((room, 0)..=(room, u64::MAX))
            .map_err(|e| self.err(e))?
        {
            let (k, v) = row.map_err(|e| self.err(e))?;
            last = Some(k.value().1);
            out.push(v.value().to_vec());
        }
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.insert(
            room.to_string(),
            RoomLog {
                next_seq: last.map_or(0, |s| s + 1),
                rows: out.len() as u64,
            },
        );
        Ok(out)
    }

    /// Queue an applied update; returns true when the room's log should be compacted.
    pub fn append(&self, room: &str, update: &[u8]) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Op::Append(room.to_string(), update.to_vec()));
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let log = logs.entry(room.to_string()).or_default();
        log.rows += 1;
        log.rows >= COMPACT_AT
    }

    /// Queue replacing the room's whole log by `snapshot` (which includes everything applied).
    pub fn replace(&self, room: &str, snapshot: Vec<u8>) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Op::Replace(room.to_string(), snapshot));
        if let Some(log) = self
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(room)
        {
            log.rows = 1;
        }
    }

    /// Rows the room's log has (stored and queued).
    pub fn rows(&self, room: &str) -> u64 {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            .map_or(0, |l| l.rows)
    }

    /// Commit everything queued in one transaction; returns how many operations were written.
    pub fn flush(&self) -> Result<usize, StoreError> {
        let _one_at_a_time = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let ops = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if ops.is_empty() {
            return Ok(0);
        }
        let n = ops.len();
        match self.write(&ops) {
            Ok(()) => Ok(n),
            Err(e) => {
                // Keep them for the next flush: a failed commit (disk full, say) loses nothing.
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let newer = std::mem::replace(&mut *pending, ops);
                pending.extend(newer);
                Err(e)
            }
        }
    }

    fn write(&self, ops: &[Op]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = w.open_table(UPDATES).map_err(|e| self.err(e))?;
            let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
            for op in ops {
                match op {
                    Op::Append(room, bytes) => {
                        let log = logs.entry(room.clone()).or_default();
                        t.insert((room.as_str(), log.next_seq), bytes.as_slice())
                            .map_err(|e| self.err(e))?;
                        log.next_seq += 1;
                    }
                    Op::Replace(room, snapshot) => {
                        t.retain_in((room.as_str(), 0)..=(room.as_str(), u64::MAX), |_, _| false)
                            .map_err(|e| self.err(e))?;
                        t.insert((room.as_str(), 0), snapshot.as_slice())
                            .map_err(|e| self.err(e))?;
                        logs.entry(room.clone()).or_default().next_seq = 1;
                    }
                }
            }
        }
        w.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_flush_load_and_compact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rooms.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            assert!(s.load("a").unwrap().is_empty());
            s.append("a", b"one");
            s.append("a", b"two");
            s.append("b", b"other");
            assert!(
                s.load("a").unwrap().is_empty(),
                "nothing is visible before a flush"
            );
            assert_eq!(s.flush().unwrap(), 3);
            assert_eq!(s.load("a").unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
            s.replace("a", b"snap".to_vec());
            s.append("a", b"three");
            s.flush().unwrap();
        }
        // Reopened: the compacted log survives, other rooms untouched.
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(
            s.load("a").unwrap(),
            vec![b"snap".to_vec(), b"three".to_vec()]
        );
        assert_eq!(s.load("b").unwrap(), vec![b"other".to_vec()]);
        s.append("b", b"more");
        s.flush().unwrap();
        assert_eq!(
            s.load("b").unwrap().len(),
            2,
            "appends continue after the last stored row"
        );
    }
}
