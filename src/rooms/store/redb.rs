//! Room persistence in one redb file: each applied update is a row under (room, seq); a room
//! whose log grows past `COMPACT_AT` rows is replaced by one snapshot row. Writes are batched:
//! `append` only queues, `flush` commits everything queued in one transaction (group commit), so
//! many busy rooms cost one fsync per flush interval, not one per keystroke. A crash loses at most
//! what was queued since the last flush; redb's commits keep the file readable.
//!
//! One file belongs to one rooms route (`check` refuses two routes on one file): rows are keyed
//! by room name only.

use super::{COMPACT_AT, RoomStore, StoreError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

const UPDATES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("updates");

enum Op {
    Append(String, Vec<u8>),
    Replace(String, Vec<u8>),
}

impl Op {
    fn room(&self) -> &str {
        match self {
            Op::Append(r, _) | Op::Replace(r, _) => r,
        }
    }
}

pub struct RedbStore {
    pub path: String,
    db: Database,
    pending: Mutex<Vec<Op>>,
    /// Rooms whose log was loaded (only they may queue writes), with their row count (stored
    /// and queued), which decides when to compact.
    loaded: Mutex<HashMap<String, u64>>,
    /// Held for a whole flush, so a flush that returns has committed everything queued before it
    /// was called (a concurrent flush may have taken the queue), and a load never runs between
    /// a flush taking the queue and committing it (it would see the rows in neither place).
    flushing: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedbStore {
    /// Every room the file holds a log for (committed rows; for `wsedge rooms import`, on a
    /// file no server has open).
    pub fn rooms(&self) -> Result<Vec<String>, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match r.open_table(UPDATES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut rooms: Vec<String> = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, _) = row.map_err(|e| self.err(e))?;
            let room = k.value().0;
            if rooms.last().map(String::as_str) != Some(room) {
                rooms.push(room.to_string());
            }
        }
        Ok(rooms)
    }

    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Io {
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
            loaded: Mutex::new(HashMap::new()),
            flushing: Mutex::new(()),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn not_loaded(&self, room: &str) -> StoreError {
        StoreError::NotLoaded {
            path: self.path.clone(),
            room: room.to_string(),
        }
    }

    fn write(&self, ops: &[Op]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = w.open_table(UPDATES).map_err(|e| self.err(e))?;
            for op in ops {
                let room = op.room();
                let range = (room, 0)..=(room, u64::MAX);
                match op {
                    Op::Append(_, bytes) => {
                        // After the last row actually stored: never over another row.
                        let next = match t.range(range).map_err(|e| self.err(e))?.next_back() {
                            Some(row) => row.map_err(|e| self.err(e))?.0.value().1 + 1,
                            None => 0,
                        };
                        t.insert((room, next), bytes.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Op::Replace(_, snapshot) => {
                        t.retain_in(range, |_, _| false).map_err(|e| self.err(e))?;
                        t.insert((room, 0), snapshot.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        w.commit().map_err(|e| self.err(e))
    }
}

impl RoomStore for RedbStore {
    fn name(&self) -> &str {
        &self.path
    }

    fn load(&self, room: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let _no_flush_in_between = lock(&self.flushing);
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = r.open_table(UPDATES).map_err(|e| self.err(e))?;
        let mut rows = Vec::new();
        for row in t
            .range((room, 0)..=(room, u64::MAX))
            .map_err(|e| self.err(e))?
        {
            rows.push(row.map_err(|e| self.err(e))?.1.value().to_vec());
        }
        // Then what is queued for it (a snapshot queued at its unload, updates not yet flushed),
        // as the next flush will write it.
        for op in lock(&self.pending).iter().filter(|op| op.room() == room) {
            match op {
                Op::Append(_, u) => rows.push(u.clone()),
                Op::Replace(_, s) => rows = vec![s.clone()],
            }
        }
        lock(&self.loaded).insert(room.to_string(), rows.len() as u64);
        Ok(rows)
    }

    fn append(&self, room: &str, update: &[u8]) -> Result<bool, StoreError> {
        let mut loaded = lock(&self.loaded);
        let rows = loaded.get_mut(room).ok_or_else(|| self.not_loaded(room))?;
        *rows += 1;
        lock(&self.pending).push(Op::Append(room.to_string(), update.to_vec()));
        Ok(*rows >= COMPACT_AT)
    }

    fn replace(&self, room: &str, snapshot: Vec<u8>) -> Result<(), StoreError> {
        let mut loaded = lock(&self.loaded);
        let rows = loaded.get_mut(room).ok_or_else(|| self.not_loaded(room))?;
        *rows = 1;
        lock(&self.pending).push(Op::Replace(room.to_string(), snapshot));
        Ok(())
    }

    fn rows(&self, room: &str) -> u64 {
        lock(&self.loaded).get(room).copied().unwrap_or(0)
    }

    fn unload(&self, room: &str) {
        lock(&self.loaded).remove(room);
    }

    fn flush(&self) -> Result<usize, StoreError> {
        let _one_at_a_time = lock(&self.flushing);
        let ops = std::mem::take(&mut *lock(&self.pending));
        if ops.is_empty() {
            return Ok(0);
        }
        let n = ops.len();
        match self.write(&ops) {
            Ok(()) => Ok(n),
            Err(e) => {
                // Keep them for the next flush: a failed commit (disk full, say) loses nothing.
                let mut pending = lock(&self.pending);
                let newer = std::mem::replace(&mut *pending, ops);
                pending.extend(newer);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_written_for_a_room_that_was_not_loaded_and_appends_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("rooms.redb")).unwrap();
        assert!(matches!(
            s.append("a", b"x"),
            Err(StoreError::NotLoaded { .. })
        ));
        assert!(s.replace("a", b"x".to_vec()).is_err());
        s.load("a").unwrap();
        s.append("a", b"one").unwrap();
        s.flush().unwrap();
        // Unloaded: writes refused again; loaded again: appends go after the stored rows.
        s.unload("a");
        assert!(s.append("a", b"lost?").is_err());
        assert_eq!(s.load("a").unwrap(), vec![b"one".to_vec()]);
        s.append("a", b"two").unwrap();
        s.flush().unwrap();
        assert_eq!(s.load("a").unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn a_load_sees_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("rooms.redb")).unwrap();
        s.load("a").unwrap();
        s.append("a", b"one").unwrap();
        s.flush().unwrap();
        s.append("a", b"two").unwrap();
        assert_eq!(s.load("a").unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
        s.replace("a", b"snap".to_vec()).unwrap();
        s.append("a", b"three").unwrap();
        assert_eq!(
            s.load("a").unwrap(),
            vec![b"snap".to_vec(), b"three".to_vec()]
        );
        assert_eq!(s.rows("a"), 2);
    }

    #[test]
    fn append_flush_load_and_compact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rooms.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            assert!(s.load("a").unwrap().is_empty());
            assert!(s.load("b").unwrap().is_empty());
            s.append("a", b"one").unwrap();
            s.append("a", b"two").unwrap();
            s.append("b", b"other").unwrap();
            assert_eq!(s.flush().unwrap(), 3);
            assert_eq!(s.load("a").unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
            s.replace("a", b"snap".to_vec()).unwrap();
            s.append("a", b"three").unwrap();
            s.flush().unwrap();
        }
        // Reopened: the compacted log survives, other rooms untouched.
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(
            s.load("a").unwrap(),
            vec![b"snap".to_vec(), b"three".to_vec()]
        );
        assert_eq!(s.load("b").unwrap(), vec![b"other".to_vec()]);
        s.append("b", b"more").unwrap();
        s.flush().unwrap();
        assert_eq!(
            s.load("b").unwrap().len(),
            2,
            "appends continue after the last stored row"
        );
    }
}
