//! Rooms by name. A room is created on first join and kept in memory (the only store so far).

use super::protocol::Room;
use super::store::RedbStore;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Frames a room fans out; a subscriber this far behind is closed (1013) instead of buffering.
pub const FANOUT_CAPACITY: usize = 1024;

pub struct RoomHandle {
    pub name: String,
    /// The document and awareness; locked only for the (synchronous) handling of one frame.
    pub room: Mutex<Room>,
    /// Every connection of the room subscribes; broadcasts reach the sender too.
    pub fanout: broadcast::Sender<Bytes>,
    /// Where applied updates go (None: memory only).
    pub store: Option<Arc<RedbStore>>,
}

impl RoomHandle {
    /// Queue an applied update for the store, compacting the room's log when it grew long.
    pub fn persist(&self, update: &[u8]) {
        if let Some(store) = &self.store
            && store.append(&self.name, update)
        {
            let snapshot = self
                .room
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .snapshot();
            store.replace(&self.name, snapshot);
        }
    }
}

#[derive(Default)]
pub struct Registry {
    rooms: Mutex<HashMap<String, Arc<RoomHandle>>>,
    pub store: Option<Arc<RedbStore>>,
}

impl Registry {
    pub fn with_store(store: Option<Arc<RedbStore>>) -> Registry {
        Registry {
            rooms: Mutex::default(),
            store,
        }
    }

    pub fn get_or_create(&self, name: &str) -> Arc<RoomHandle> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .entry(name.to_string())
            .or_insert_with(|| {
                let room = match &self.store {
                    None => Room::default(),
                    Some(store) => match store.load(name) {
                        Ok(updates) => Room::from_updates(&updates),
                        Err(e) => {
                            tracing::error!(room = name, error = %e, "cannot load room; starting it empty");
                            Room::default()
                        }
                    },
                };
                tracing::debug!(room = name, "room loaded");
                Arc::new(RoomHandle {
                    name: name.to_string(),
                    room: Mutex::new(room),
                    fanout: broadcast::channel(FANOUT_CAPACITY).0,
                    store: self.store.clone(),
                })
            })
            .clone()
    }

    pub fn len(&self) -> usize {
        self.rooms.lock().map(|r| r.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
