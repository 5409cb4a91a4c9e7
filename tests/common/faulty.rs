//! A room store that fails on demand, wrapped around the real redb store, and that checks the
//! ordering promise of compaction: a snapshot handed to `replace` must contain every update
//! appended before it (otherwise the flush would delete an acknowledged update).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use wsedge::rooms::store::{RedbStore, RoomStore, StoreError};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, Transact, Update};

pub struct Faulty {
    inner: RedbStore,
    pub fail_load: AtomicBool,
    pub fail_flush: AtomicBool,
    /// A room whose load takes this long (to show that other joins do not wait for it).
    pub slow_load: Mutex<Option<(String, std::time::Duration)>>,
    /// Updates appended per room since its last replace.
    since_replace: Mutex<HashMap<String, Vec<Vec<u8>>>>,
    pub replaces: AtomicUsize,
    /// Snapshots that lacked an update appended before them.
    pub violations: AtomicUsize,
}

impl Faulty {
    fn fault(&self, what: &str) -> StoreError {
        StoreError::Io {
            path: self.inner.path.clone(),
            reason: format!("injected {what} failure"),
        }
    }
}

/// Where `opener` leaves the store it opened.
pub type Slot = Arc<Mutex<Option<Arc<Faulty>>>>;

/// An opener for `wsedge::server::start_with` that keeps a handle on the store it opens.
pub fn opener() -> (wsedge::proxy::OpenStore, Slot) {
    let slot: Slot = Arc::default();
    let keep = slot.clone();
    let open: wsedge::proxy::OpenStore = Arc::new(move |path| {
        let f = Arc::new(Faulty {
            inner: RedbStore::open(path)?,
            fail_load: AtomicBool::new(false),
            fail_flush: AtomicBool::new(false),
            slow_load: Mutex::default(),
            since_replace: Mutex::default(),
            replaces: AtomicUsize::new(0),
            violations: AtomicUsize::new(0),
        });
        *keep.lock().unwrap() = Some(f.clone());
        Ok(f as Arc<dyn RoomStore>)
    });
    (open, slot)
}

impl RoomStore for Faulty {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn load(&self, room: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        if self.fail_load.load(Ordering::SeqCst) {
            return Err(self.fault("load"));
        }
        let slow = self.slow_load.lock().unwrap().clone();
        if let Some((name, delay)) = slow
            && name == room
        {
            std::thread::sleep(delay);
        }
        self.inner.load(room)
    }

    fn append(&self, room: &str, update: &[u8]) -> Result<bool, StoreError> {
        let r = self.inner.append(room, update)?;
        self.since_replace
            .lock()
            .unwrap()
            .entry(room.to_string())
            .or_default()
            .push(update.to_vec());
        Ok(r)
    }

    fn replace(&self, room: &str, snapshot: Vec<u8>) -> Result<(), StoreError> {
        let appended = self
            .since_replace
            .lock()
            .unwrap()
            .remove(room)
            .unwrap_or_default();
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(&snapshot).unwrap())
            .unwrap();
        let before = doc.transact().state_vector();
        for u in &appended {
            doc.transact_mut()
                .apply_update(Update::decode_v1(u).unwrap())
                .unwrap();
        }
        if doc.transact().state_vector() != before {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        self.replaces.fetch_add(1, Ordering::SeqCst);
        self.inner.replace(room, snapshot)
    }

    fn rows(&self, room: &str) -> u64 {
        self.inner.rows(room)
    }

    fn unload(&self, room: &str) {
        self.inner.unload(room)
    }

    fn flush(&self) -> Result<usize, StoreError> {
        if self.fail_flush.load(Ordering::SeqCst) {
            return Err(self.fault("flush"));
        }
        self.inner.flush()
    }
}
