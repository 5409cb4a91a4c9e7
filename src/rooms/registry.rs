//! Rooms by name. A room is created on first join and kept in memory (the only store so far).

use super::protocol::Room;
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
}

#[derive(Default)]
pub struct Registry {
    rooms: Mutex<HashMap<String, Arc<RoomHandle>>>,
}

impl Registry {
    pub fn get_or_create(&self, name: &str) -> Arc<RoomHandle> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .entry(name.to_string())
            .or_insert_with(|| {
                tracing::debug!(room = name, "room created");
                Arc::new(RoomHandle {
                    name: name.to_string(),
                    room: Mutex::new(Room::default()),
                    fanout: broadcast::channel(FANOUT_CAPACITY).0,
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
