//! A room's fan-out: one log of the frames its connections are sent, read by each connection at
//! its own pace through a [`Cursor`].
//!
//! The log is bounded in bytes, never by closing anyone. When it grows past its limit:
//! 1. entries every cursor has read are dropped;
//! 2. what is left is merged: the document updates into one update (Yjs updates merge, and a
//!    client applying an update it partly has already is a no-op), the awareness changes into
//!    the latest state per client (clients ignore states whose clock is not newer);
//! 3. if even that is over half the limit, the oldest entries are dropped until it is not (never
//!    the newest), and every connection that had not read them is *behind*: it gets the whole
//!    document instead (one encoding shared by all such connections, see `RoomHandle::resync`),
//!    when it is ready to take it.
//!
//! A merged entry takes the sequence number of the last entry it holds, so a cursor anywhere in
//! its range gets all of it: more than it needs, never less. Entries are whole y-websocket
//! messages, appended under the room lock (so in the order the room applied them).

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;

/// Entries kept at most before the log is compacted (the bytes bound aside): each costs a little
/// memory and every reader walks them.
const MAX_ENTRIES: usize = 4096;

/// The fan-out log of one room.
pub struct Feed {
    log: Mutex<Log>,
    /// Bumped after every append: what readers wait on.
    tail: watch::Sender<()>,
    /// Bytes of entries kept at most (see the module docs).
    limit: usize,
}

#[derive(Default)]
struct Log {
    entries: VecDeque<Entry>,
    /// Sequence number of the next entry.
    next: u64,
    /// Entries before this were dropped unread by some cursor: a cursor below it is behind.
    base: u64,
    bytes: usize,
    /// Each reader's next sequence number, by slot (None: a free slot).
    cursors: Vec<Option<u64>>,
    free: Vec<usize>,
    /// Compactions that merged entries, and ones that had to drop them (for tests and metrics).
    merges: u64,
    resets: u64,
    /// The room was closed under its readers (a replicated room whose Redis is gone).
    closed: bool,
}

struct Entry {
    seq: u64,
    frame: Bytes,
}

/// What a reader gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Frames to send, oldest first (possibly none), and whether more are waiting.
    Frames(Vec<Bytes>, bool),
    /// The reader fell behind what the log keeps: it needs the whole document.
    Behind,
    /// The room was closed ([`Feed::close`]): the connection ends.
    Closed,
}

/// One connection's place in its room's feed.
pub struct Cursor {
    feed: Arc<Feed>,
    slot: usize,
    next: u64,
    rx: watch::Receiver<()>,
}

/// Counters of a feed (for tests and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedStats {
    pub entries: usize,
    pub bytes: usize,
    pub merges: u64,
    pub resets: u64,
}

impl Feed {
    pub fn new(limit: usize) -> Arc<Feed> {
        Arc::new(Feed {
            log: Mutex::new(Log::default()),
            tail: watch::channel(()).0,
            limit: limit.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader from now on.
    pub fn subscribe(self: &Arc<Self>) -> Cursor {
        let mut log = self.lock();
        let next = log.next;
        let slot = match log.free.pop() {
            Some(s) => {
                log.cursors[s] = Some(next);
                s
            }
            None => {
                log.cursors.push(Some(next));
                log.cursors.len() - 1
            }
        };
        Cursor {
            feed: self.clone(),
            slot,
            next,
            rx: self.tail.subscribe(),
        }
    }

    /// Append one frame for every reader (call under the room lock).
    pub(crate) fn publish(&self, frame: Bytes) {
        {
            let mut log = self.lock();
            let seq = log.next;
            log.next += 1;
            log.bytes += frame.len();
            log.entries.push_back(Entry { seq, frame });
            if log.bytes > self.limit || log.entries.len() > MAX_ENTRIES {
                log.compact(self.limit);
            }
        }
        self.tail.send_replace(());
    }

    /// Close the room under its readers: each one's next read is [`Read::Closed`].
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.tail.send_replace(());
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The sequence number the next entry will get: where a reader that has just been sent the
    /// whole document continues (read under the room lock, like [`Feed::publish`]).
    pub(crate) fn next_seq(&self) -> u64 {
        self.lock().next
    }

    pub fn stats(&self) -> FeedStats {
        let log = self.lock();
        FeedStats {
            entries: log.entries.len(),
            bytes: log.bytes,
            merges: log.merges,
            resets: log.resets,
        }
    }
}

impl Log {
    fn compact(&mut self, limit: usize) {
        // 1. What every reader (that is not behind anyway) has read goes.
        let base = self.base;
        let min = self
            .cursors
            .iter()
            .flatten()
            .copied()
            .filter(|c| *c >= base)
            .min()
            .unwrap_or(self.next);
        while self.entries.front().is_some_and(|e| e.seq < min) {
            let e = self.entries.pop_front().expect("checked");
            self.bytes -= e.frame.len();
        }
        self.base = self.base.max(min);
        if self.bytes <= limit / 2 && self.entries.len() <= MAX_ENTRIES / 2 {
            return;
        }
        // 2. Merge what is left, but the newest entry (which nobody has read yet: merged into
        // the rest, it could not be dropped without putting every reader behind).
        if self.entries.len() > 2 {
            let newest = self.entries.pop_back().expect("checked");
            let frames: Vec<&Bytes> = self.entries.iter().map(|e| &e.frame).collect();
            let seqs: Vec<u64> = self.entries.iter().map(|e| e.seq).collect();
            if let Some(merged) = merge(&frames, &seqs) {
                self.merges += 1;
                self.entries = merged
                    .into_iter()
                    .map(|(seq, frame)| Entry { seq, frame })
                    .collect();
            }
            self.entries.push_back(newest);
            self.bytes = self.entries.iter().map(|e| e.frame.len()).sum();
            if self.bytes <= limit / 2 {
                return;
            }
        }
        // 3. Still too much: the oldest entries go until half the limit is left (never the
        // newest, which nobody has read yet); whoever had not read them gets the whole
        // document instead. Readers past them are not affected.
        self.resets += 1;
        let mut last_dropped = None;
        while self.entries.len() > 1 && self.bytes > limit / 2 {
            let e = self.entries.pop_front().expect("checked");
            self.bytes -= e.frame.len();
            last_dropped = Some(e.seq);
        }
        // A merged entry holds messages numbered up to its own number: a reader at or below
        // a dropped one's number may lack some of them.
        if let Some(seq) = last_dropped {
            self.base = self.base.max(seq + 1);
        }
    }
}

/// Merge whole messages (with their sequence numbers) into at most one document update and one
/// awareness update, each numbered like the last message it holds. None if a message is not
/// what the room broadcasts, or yrs failed to merge (the caller then drops them all).
fn merge(frames: &[&Bytes], seqs: &[u64]) -> Option<Vec<(u64, Bytes)>> {
    use super::wire::{Msg, split};
    let mut updates: Vec<&[u8]> = Vec::new();
    let mut update_seq = None;
    let mut states: HashMap<yrs::ClientID, AwarenessUpdateEntry> = HashMap::new();
    let mut awareness_seq = None;
    for (frame, seq) in frames.iter().zip(seqs) {
        for m in split(frame).ok()? {
            match m {
                Msg::Update(u) | Msg::SyncStep2(u) => {
                    updates.push(u);
                    update_seq = Some(*seq);
                }
                Msg::Awareness(a) => {
                    let a = AwarenessUpdate::decode_v1(a).ok()?;
                    for (id, e) in a.clients {
                        let newer = states.get(&id).is_none_or(|old| {
                            e.clock > old.clock || (e.clock == old.clock && &*e.json == "null")
                        });
                        if newer {
                            states.insert(id, e);
                        }
                    }
                    awareness_seq = Some(*seq);
                }
                _ => return None,
            }
        }
    }
    let mut out = Vec::with_capacity(2);
    if let Some(seq) = update_seq {
        let merged = match updates.as_slice() {
            [one] => one.to_vec(),
            many => std::panic::catch_unwind(|| yrs::merge_updates_v1(many))
                .ok()?
                .ok()?,
        };
        let frame = Message::Sync(SyncMessage::Update(merged)).encode_v1();
        out.push((seq, Bytes::from(frame)));
    }
    if let Some(seq) = awareness_seq {
        let frame = Message::Awareness(AwarenessUpdate { clients: states }).encode_v1();
        out.push((seq, Bytes::from(frame)));
    }
    out.sort_by_key(|(seq, _)| *seq);
    Some(out)
}

impl Cursor {
    /// Frames from where this reader is, up to about `max_bytes` (at least one frame).
    pub fn read(&mut self, max_bytes: usize) -> Read {
        self.rx.borrow_and_update();
        let mut log = self.feed.lock();
        if log.closed {
            return Read::Closed;
        }
        if self.next < log.base {
            return Read::Behind;
        }
        let start = log.entries.partition_point(|e| e.seq < self.next);
        let mut frames = Vec::new();
        let mut size = 0;
        for e in log.entries.range(start..) {
            if !frames.is_empty() && size + e.frame.len() > max_bytes {
                break;
            }
            size += e.frame.len();
            frames.push(e.frame.clone());
            self.next = e.seq + 1;
        }
        // Past what was read: entries merged into ones numbered lower are not read twice.
        if start + frames.len() == log.entries.len() {
            self.next = log.next;
        }
        log.cursors[self.slot] = Some(self.next);
        let more = self.next < log.next;
        Read::Frames(frames, more)
    }

    /// This reader was sent the whole document when the feed was at `seq` (see
    /// [`Feed::next_seq`]).
    pub(crate) fn resynced(&mut self, seq: u64) {
        self.next = seq;
        self.feed.lock().cursors[self.slot] = Some(seq);
    }

    /// Wait for the next append (cancel-safe). Err: the feed is gone. (tokio's future itself,
    /// not wrapped in one more: a connection waiting here carries it.)
    pub fn changed(
        &mut self,
    ) -> impl std::future::Future<Output = Result<(), watch::error::RecvError>> + Send + '_ {
        self.rx.changed()
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        let mut log = self.feed.lock();
        log.cursors[self.slot] = None;
        log.free.push(self.slot);
    }
}

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;
