//! Who is connected to a push route: sockets by user, by room and by tab, and each socket's
//! outbox. A push is put in the outboxes of its targets (the socket tasks write them); nothing
//! here does I/O, and no lock is held while anything is written.
//!
//! Better than the original, invisibly to clients: ids are map keys of their own (any string is
//! an ordinary id); an `AuthEvent` adds the guest's sockets to the user's; a socket's outbox is
//! bounded in bytes — past the bound the socket is closed 1013 (its client reconnects) instead of
//! growing memory; pushes are queued whatever the heartbeat is doing.

use super::protocol::{Push, Target};
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One socket's pending pushes.
#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<Queue>,
    /// Woken when something is queued (or the socket is to close).
    pub ready: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// The bound was passed: the socket closes (1013) rather than queue more.
    overflowed: bool,
}

/// What a socket finds in its outbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    Frames(Vec<Bytes>),
    /// More was pushed than `max_queue` bytes while the socket was not writing.
    Overflowed,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue one frame; false if the outbox is over `max` bytes (the socket will close).
    fn put(&self, frame: &Bytes, max: usize) -> bool {
        let mut q = self.lock();
        if q.overflowed {
            return false;
        }
        let fits = q.bytes + frame.len() <= max || q.frames.is_empty();
        if fits {
            q.bytes += frame.len();
            q.frames.push_back(frame.clone());
        } else {
            q.overflowed = true;
            q.frames.clear();
            q.bytes = 0;
        }
        drop(q);
        // Woken either way: to write, or to close.
        self.ready.notify_one();
        fits
    }

    /// Everything queued (empty when nothing is).
    pub fn take(&self) -> Taken {
        let mut q = self.lock();
        if q.overflowed {
            return Taken::Overflowed;
        }
        q.bytes = 0;
        Taken::Frames(q.frames.drain(..).collect())
    }
}

/// What a join would do (see [`Hub::joinable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joinable {
    Yes,
    Already,
    Full,
}

/// One socket as the hub knows it.
struct Member {
    tab: String,
    outbox: Arc<Outbox>,
    /// The user keys it is listed under (its own id, and users that took it over by AuthEvent).
    users: Vec<String>,
    rooms: HashSet<String>,
}

#[derive(Default)]
struct Maps {
    members: HashMap<u64, Member>,
    users: HashMap<String, HashSet<u64>>,
    rooms: HashMap<String, HashSet<u64>>,
}

/// Counters of a hub, for metrics and tests.
#[derive(Debug, Default)]
pub struct HubStats {
    pub received: AtomicU64,
    pub delivered: AtomicU64,
    pub refused: AtomicU64,
    pub joins_refused: AtomicU64,
    /// Client frames that were not a command (ignored, as in the original).
    pub ignored: AtomicU64,
    pub overflows: AtomicU64,
}

/// The sockets of one push route.
pub struct Hub {
    maps: Mutex<Maps>,
    next: AtomicU64,
    /// Bytes a socket's outbox may hold before it is closed 1013.
    max_queue: usize,
    /// Rooms one socket may be in (more joins are ignored and counted).
    max_rooms: usize,
    pub stats: HubStats,
}

/// A socket's place in the hub; dropping it removes the socket from every map.
pub struct Membership {
    hub: Arc<Hub>,
    pub id: u64,
    pub tab: String,
    pub outbox: Arc<Outbox>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut m = self.hub.lock();
        let Some(member) = m.members.remove(&self.id) else {
            return;
        };
        for u in &member.users {
            remove(&mut m.users, u, self.id);
        }
        for r in &member.rooms {
            remove(&mut m.rooms, r, self.id);
        }
    }
}

fn remove(map: &mut HashMap<String, HashSet<u64>>, key: &str, id: u64) {
    if let Some(set) = map.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl Hub {
    pub fn new(max_queue: usize, max_rooms: usize) -> Arc<Hub> {
        Arc::new(Hub {
            maps: Mutex::default(),
            next: AtomicU64::new(1),
            max_queue,
            max_rooms,
            stats: HubStats::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new socket with this tab id, tracked under `user` if it has one.
    pub fn join(self: &Arc<Self>, tab: String, user: Option<String>) -> Membership {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::default());
        let mut m = self.lock();
        let users: Vec<String> = user.into_iter().collect();
        for u in &users {
            m.users.entry(u.clone()).or_default().insert(id);
        }
        m.members.insert(
            id,
            Member {
                tab: tab.clone(),
                outbox: outbox.clone(),
                users,
                rooms: HashSet::new(),
            },
        );
        Membership {
            hub: self.clone(),
            id,
            tab,
            outbox,
        }
    }

    /// The socket joins `room` (once; ignored past `max_rooms`): false if refused.
    pub fn join_room(&self, id: u64, room: &str) -> bool {
        let mut m = self.lock();
        let Some(member) = m.members.get_mut(&id) else {
            return false;
        };
        if member.rooms.contains(room) {
            return true;
        }
        if member.rooms.len() >= self.max_rooms {
            self.stats.joins_refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        member.rooms.insert(room.to_string());
        m.rooms.entry(room.to_string()).or_default().insert(id);
        true
    }

    /// Would a join of `room` change anything: not when the socket is in it already, nor when
    /// it is in `max_rooms` rooms (the join is then refused; checked first, so that refused
    /// joins cost no join check).
    pub fn joinable(&self, id: u64, room: &str) -> Joinable {
        match self.lock().members.get(&id) {
            Some(m) if m.rooms.contains(room) => Joinable::Already,
            Some(m) if m.rooms.len() < self.max_rooms => Joinable::Yes,
            _ => Joinable::Full,
        }
    }

    pub fn leave_room(&self, id: u64, room: &str) {
        let mut m = self.lock();
        if let Some(member) = m.members.get_mut(&id)
            && member.rooms.remove(room)
        {
            remove(&mut m.rooms, room, id);
        }
    }

    /// A `BackgroundPush`: queued for every target socket (filtered by tab); how many.
    pub fn deliver(&self, p: &Push) -> usize {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let frame = Bytes::from(p.frame.clone());
        let outboxes: Vec<Arc<Outbox>> = {
            let m = self.lock();
            let ids = match &p.target {
                Target::User(u) => m.users.get(u),
                Target::Room(r) => m.rooms.get(r),
            };
            ids.into_iter()
                .flatten()
                .filter_map(|id| m.members.get(id))
                .filter(|member| p.tab.as_ref().is_none_or(|t| *t == member.tab))
                .map(|member| member.outbox.clone())
                .collect()
        };
        let mut n = 0;
        for o in outboxes {
            if o.put(&frame, self.max_queue) {
                n += 1;
            } else {
                self.stats.overflows.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.stats.delivered.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// An `AuthEvent`: the guest's sockets are the user's too (added, never replacing the
    /// user's own). How many sockets were added.
    pub fn alias(&self, guest: &str, user: &str) -> usize {
        let mut m = self.lock();
        let Some(guests) = m.users.get(guest).cloned() else {
            return 0;
        };
        let mut added = 0;
        for id in guests {
            if let Some(member) = m.members.get_mut(&id)
                && !member.users.iter().any(|u| u == user)
            {
                member.users.push(user.to_string());
                m.users.entry(user.to_string()).or_default().insert(id);
                added += 1;
            }
        }
        added
    }

    /// Open sockets, distinct users and rooms (for metrics).
    pub fn counts(&self) -> (usize, usize, usize) {
        let m = self.lock();
        (m.members.len(), m.users.len(), m.rooms.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::protocol::push;

    fn frames(o: &Outbox) -> Vec<String> {
        match o.take() {
            Taken::Frames(f) => f
                .iter()
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .collect(),
            Taken::Overflowed => panic!("overflowed"),
        }
    }

    #[test]
    fn users_rooms_and_tabs() {
        let hub = Hub::new(1 << 20, 32);
        let a1 = hub.join("t1".into(), Some("alice".into()));
        let a2 = hub.join("t2".into(), Some("alice".into()));
        let anon = hub.join("t3".into(), None);
        assert!(hub.join_room(anon.id, "news"));
        assert!(hub.join_room(a1.id, "news"));
        assert!(hub.join_room(a1.id, "news"), "twice is once");
        let p = |s: &str| push(s.as_bytes()).unwrap();
        assert_eq!(hub.deliver(&p(r#"{"payload":1,"pushToUser":"alice"}"#)), 2);
        assert_eq!(hub.deliver(&p(r#"{"payload":2,"pushToRoom":"news"}"#)), 2);
        assert_eq!(
            hub.deliver(&p(
                r#"{"payload":3,"pushToUser":"alice","tabWindowId":"t2"}"#
            )),
            1
        );
        assert_eq!(hub.deliver(&p(r#"{"payload":4,"pushToRoom":"nobody"}"#)), 0);
        assert_eq!(frames(&a1.outbox), ["1", "2"]);
        assert_eq!(frames(&a2.outbox), ["1", "3"]);
        assert_eq!(frames(&anon.outbox), ["2"]);
        hub.leave_room(a1.id, "news");
        assert_eq!(hub.deliver(&p(r#"{"payload":5,"pushToRoom":"news"}"#)), 1);
        drop(anon);
        assert_eq!(hub.deliver(&p(r#"{"payload":6,"pushToRoom":"news"}"#)), 0);
        assert_eq!(hub.counts(), (2, 1, 0), "maps emptied as sockets go");
    }

    #[test]
    fn auth_events_add_and_ids_are_ordinary() {
        let hub = Hub::new(1 << 20, 32);
        let user_tab = hub.join("u".into(), Some("constructor".into()));
        let guest_tab = hub.join("g".into(), Some("__proto__".into()));
        assert_eq!(hub.alias("__proto__", "constructor"), 1);
        assert_eq!(hub.alias("__proto__", "constructor"), 0, "once");
        assert_eq!(hub.alias("nobody", "constructor"), 0);
        let p = push(br#"{"payload":"x","pushToUser":"constructor"}"#).unwrap();
        assert_eq!(hub.deliver(&p), 2, "the user's own tab is kept");
        assert_eq!(frames(&user_tab.outbox), ["\"x\""]);
        assert_eq!(frames(&guest_tab.outbox), ["\"x\""]);
        drop(guest_tab);
        assert_eq!(hub.counts(), (1, 1, 0));
    }

    #[test]
    fn rooms_per_socket_and_queue_bytes_are_bounded() {
        let hub = Hub::new(10, 2);
        let s = hub.join("t".into(), Some("u".into()));
        assert!(hub.join_room(s.id, "a") && hub.join_room(s.id, "b"));
        assert_eq!(hub.joinable(s.id, "a"), Joinable::Already);
        assert_eq!(hub.joinable(s.id, "c"), Joinable::Full);
        assert!(!hub.join_room(s.id, "c"));
        assert_eq!(hub.stats.joins_refused.load(Ordering::Relaxed), 1);
        let p = push(br#"{"payload":"12345678","pushToUser":"u"}"#).unwrap();
        assert_eq!(hub.deliver(&p), 1, "one frame always fits");
        assert_eq!(hub.deliver(&p), 0, "the second passes the bound");
        assert_eq!(s.outbox.take(), Taken::Overflowed);
    }
}
