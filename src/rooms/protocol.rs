//! The y-websocket protocol for one room, sans-IO: frames in, frames out. Each outgoing frame
//! carries exactly one message (the JS client decodes only the first message of a frame).
//!
//! A `Room` owns the document and awareness; a `Conn` is what the room remembers about one
//! connection (the awareness client ids it announced, whether it may write). The socket side
//! ([`super::socket`]) sends `Out::Reply` to that connection and `Out::Broadcast` to every connection of the
//! room, the sender included (y-websocket clients rely on their own awareness echo to stay alive).

use super::wire::{self, Msg};
use std::collections::{HashMap, HashSet};
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::{Awareness, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update};

/// Largest awareness state (its JSON) a client may announce: 1007 beyond.
pub(crate) const MAX_AWARENESS_STATE: usize = 64 << 10;

/// Why a connection's frame was refused; each maps to the close code the socket side sends.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The message envelope (type, sub-type, lengths) does not parse.
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported message type {0}")]
    Unsupported(u64),
    /// A state vector, update or awareness payload that fails pre-validation or yrs's decoder.
    #[error("invalid {0}")]
    Invalid(String),
    /// Applying the frame's updates would grow the document past the route's `max_document`.
    #[error("document would be {size} bytes, over the limit of {max}")]
    TooLarge { size: u64, max: u64 },
    /// yrs panicked on input that passed validation (a bug; the connection is closed).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProtocolError {
    /// RFC 6455 close code: 1002 protocol error, 1003 unsupported data, 1007 invalid payload,
    /// 1009 too big, 1011 internal error.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::Malformed(_) => 1002,
            ProtocolError::Unsupported(_) => 1003,
            ProtocolError::Invalid(_) => 1007,
            ProtocolError::TooLarge { .. } => 1009,
            ProtocolError::Internal(_) => 1011,
        }
    }
}

/// Awareness client ids one connection may announce (a provider announces one: its own).
pub(crate) const MAX_CLIENTS_PER_CONN: usize = 16;

/// What a room enforces on the frames its connections send (the route's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded size (a v1 update of the whole state) a document may grow to.
    pub max_document: u64,
}

/// The outcome of one frame.
#[derive(Debug, Default)]
pub struct Handled {
    /// What to send and store. On error it still holds what the applied part of the frame needs
    /// (its broadcast and its row in the store): nothing applied goes unsent or unstored.
    pub out: Vec<Out>,
    /// The frame was refused: close the connection with [`ProtocolError::close_code`].
    pub error: Option<ProtocolError>,
}

impl Handled {
    /// The frames to send, or the error (dropping what an error left to send: tests and tools).
    pub(crate) fn into_result(self) -> Result<Vec<Out>, ProtocolError> {
        match self.error {
            None => Ok(self.out),
            Some(e) => Err(e),
        }
    }
}

/// A message that passed validation and decoding, waiting to be applied.
enum Decoded<'a> {
    Step1(StateVector),
    /// The update as sent (for the broadcast and the store), decoded, and its shape (growth
    /// bound, first clock of each client).
    Update(&'a [u8], Update, wire::UpdateShape),
    /// A read-only connection's update: refused with PermissionDenied, never decoded.
    Denied,
    Awareness(AwarenessUpdate),
    Query,
}

/// One frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// To the connection whose frame was handled.
    Reply(Vec<u8>),
    /// To every connection of the room, the sender included.
    Broadcast(Vec<u8>),
    /// An update the document now contains (v1 encoding), for the store.
    Persist(Vec<u8>),
    /// The whole document (v1 encoding): the store replaces the room's log by it.
    Snapshot(Vec<u8>),
}

/// What the room keeps per connection.
#[derive(Debug, Default)]
pub struct Conn {
    /// Awareness client ids this connection announced (removed and broadcast when it leaves).
    pub clients: HashSet<u64>,
    /// Read-only: its SyncStep2/Update messages are dropped and answered with PermissionDenied.
    pub read_only: bool,
}

/// A room's document and awareness.
pub struct Room {
    awareness: Awareness,
    /// Estimated encoded size of the document: the bytes loaded plus every update applied since
    /// (an upper bound, as updates overlap); re-measured exactly when it reaches the limit.
    size: u64,
}

impl Default for Room {
    fn default() -> Self {
        Room::new(Doc::new())
    }
}

impl Room {
    pub fn new(doc: Doc) -> Room {
        Room {
            awareness: Awareness::new(doc),
            size: 0,
        }
    }

    /// A room whose awareness timestamps come from `clock` (milliseconds), for tests.
    pub(crate) fn with_clock(doc: Doc, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Room {
        Room {
            awareness: Awareness::with_clock(doc, clock),
            size: 0,
        }
    }

    /// A room whose document is rebuilt from stored updates, and the indexes of the rows that
    /// could not be applied (skipped with a log line: a damaged row must not make the whole room
    /// unavailable, and the caller must then never compact the log over it).
    pub(crate) fn from_updates(updates: &[Vec<u8>]) -> (Room, Vec<usize>) {
        let mut room = Room::default();
        let mut skipped = Vec::new();
        for (i, u) in updates.iter().enumerate() {
            let applied = wire::check_update(u).is_ok_and(|shape| {
                let sv = room.doc().transact().state_vector();
                shape
                    .starts
                    .iter()
                    .all(|(c, clock)| *clock <= sv.get(&ClientID::new(*c)))
                    && guarded(|| {
                        Update::decode_v1(u)
                            .ok()
                            .is_some_and(|update| integrate(room.doc(), update).is_ok())
                    })
                    .unwrap_or(false)
            });
            if applied {
                room.size += u.len() as u64;
            } else {
                tracing::error!(row = i, "stored room update could not be applied; skipped");
                skipped.push(i);
            }
        }
        (room, skipped)
    }

    pub fn doc(&self) -> &Doc {
        self.awareness.doc()
    }

    /// [`Room::snapshot`], or None if yrs panicked (it unwraps while merging pending updates):
    /// what compaction and measuring use, so that a yrs bug costs a skipped compaction, not a
    /// connection task that never leaves its room.
    pub(crate) fn try_snapshot(&self) -> Option<Vec<u8>> {
        guarded(|| self.snapshot()).ok()
    }

    /// The whole document as one v1 update (what a store persists).
    pub fn snapshot(&self) -> Vec<u8> {
        self.doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// Frames that bring a connection up to date whatever it has: the whole document as one
    /// update (a client applies what it already has as a no-op) and every awareness state.
    pub(crate) fn resync(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        match self.try_snapshot() {
            Some(s) => out.push(Message::Sync(SyncMessage::Update(s)).encode_v1()),
            None => tracing::error!("cannot encode the document for a resync"),
        }
        // Removed states too (`update()` leaves them out): the connection may have missed their
        // removal while it was behind.
        let ids: Vec<ClientID> = self.awareness.iter().map(|(id, _)| id).collect();
        if let Ok(update) = self.awareness.update_with_clients(ids)
            && !update.clients.is_empty()
        {
            out.push(Message::Awareness(update).encode_v1());
        }
        out
    }

    /// Frames for a new connection: our SyncStep1, then the known awareness states if any.
    pub fn welcome(&self) -> Vec<Vec<u8>> {
        let sv = self.doc().transact().state_vector();
        let mut out = vec![Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1()];
        if let Ok(update) = self.awareness.update()
            && !update.clients.is_empty()
        {
            out.push(Message::Awareness(update).encode_v1());
        }
        out
    }

    /// Handle one binary frame from `conn`. Every message of the frame is validated and decoded
    /// before any is applied, so a frame that does not decode changes nothing; if applying one
    /// of its updates fails midway, what was applied is still broadcast, and the store gets a
    /// snapshot of the document ([`Handled::out`]), before the error closes the connection.
    pub fn handle(&mut self, conn: &mut Conn, frame: &[u8], limits: Limits) -> Handled {
        let mut h = Handled::default();
        let decoded = match decode(conn, frame) {
            Ok(d) => d,
            Err(e) => {
                h.error = Some(e);
                return h;
            }
        };
        let incoming: u64 = decoded
            .iter()
            .map(|d| match d {
                Decoded::Update(bytes, _, shape) => shape.growth(bytes.len()),
                _ => 0,
            })
            .sum();
        if incoming > 0
            && let Err(e) = self.admit_size(incoming, limits.max_document)
        {
            h.error = Some(e);
            return h;
        }
        for d in decoded {
            if let Err(e) = self.apply(conn, d, &mut h.out) {
                h.error = Some(e);
                break;
            }
        }
        h
    }

    /// Refuse `incoming` update bytes that could take the document past `max`. The running
    /// estimate only grows, so it is re-measured (one encode of the document, pending updates
    /// included) before anything is refused on its word.
    fn admit_size(&mut self, incoming: u64, max: u64) -> Result<(), ProtocolError> {
        if self.size.saturating_add(incoming) <= max {
            return Ok(());
        }
        self.size = self
            .try_snapshot()
            .ok_or_else(|| ProtocolError::Internal("encoding the document".into()))?
            .len() as u64;
        let size = self.size.saturating_add(incoming);
        if size <= max {
            Ok(())
        } else {
            Err(ProtocolError::TooLarge { size, max })
        }
    }

    /// The document's estimated encoded size (an upper bound; see [`Room::handle`]).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The exact encoded size of the document (one full encode).
    pub(crate) fn encoded_size(&self) -> u64 {
        self.snapshot().len() as u64
    }

    fn apply(
        &mut self,
        conn: &mut Conn,
        msg: Decoded<'_>,
        out: &mut Vec<Out>,
    ) -> Result<(), ProtocolError> {
        match msg {
            Decoded::Step1(sv) => {
                let diff = guarded(|| self.doc().transact().encode_state_as_update_v1(&sv))
                    .map_err(|e| ProtocolError::Internal(format!("encoding the document: {e}")))?;
                out.push(Out::Reply(
                    Message::Sync(SyncMessage::SyncStep2(diff)).encode_v1(),
                ));
            }
            Decoded::Denied => out.push(Out::Reply(
                Message::Auth(Some("read-only".into())).encode_v1(),
            )),
            // Nothing to apply, store or send (a provider's SyncStep2 when it has nothing new).
            Decoded::Update(_, update, _) if update.is_empty() => {}
            Decoded::Update(bytes, update, shape) => {
                let before = self.doc().transact().state_vector();
                // Each client's structs must continue what the room holds of it: a gap means the
                // update depends on content the room does not have (see `integrate`).
                if let Some((client, clock)) = shape
                    .starts
                    .iter()
                    .find(|(c, clock)| *clock > before.get(&ClientID::new(*c)))
                {
                    return Err(ProtocolError::Invalid(format!(
                        "update: client {client} starts at clock {clock}, past what the room has"
                    )));
                }
                let growth = shape.growth(bytes.len());
                // Deletions change the document without moving its state vector.
                let deletes = !update.delete_set().is_empty();
                let result = guarded(|| integrate(self.doc(), update));
                let error = match result {
                    Ok(Ok(())) => {
                        self.size += growth;
                        out.push(Out::Broadcast(
                            Message::Sync(SyncMessage::Update(bytes.to_vec())).encode_v1(),
                        ));
                        out.push(Out::Persist(bytes.to_vec()));
                        return Ok(());
                    }
                    Ok(Err(e)) => ProtocolError::Invalid(format!("update: {e}")),
                    Err(panic) => ProtocolError::Internal(format!("applying an update: {panic}")),
                };
                // Part of the update may have been integrated before the failure: what the
                // document gained goes out and into the store like any update (without yrs's
                // pending structs, which the document does not hold).
                let gained = {
                    let txn = self.doc().transact();
                    (deletes || txn.state_vector() != before).then(|| txn.encode_diff_v1(&before))
                };
                let Some(diff) = gained else {
                    return Err(error);
                };
                out.push(Out::Broadcast(
                    Message::Sync(SyncMessage::Update(diff)).encode_v1(),
                ));
                // A failed integration can leave state in yrs's block store that a diff does
                // not carry (found by the room_frame fuzz target: a later update was a no-op
                // here and failed after a reload). The store gets the whole document instead,
                // replacing the room's log, so that a reload is exactly the live room.
                if let Some(snapshot) = self.try_snapshot() {
                    self.size = snapshot.len() as u64;
                    out.push(Out::Snapshot(snapshot));
                }
                return Err(error);
            }
            Decoded::Awareness(mut update) => {
                // A removal of an id the room does not know changes nothing, and yrs would keep
                // an entry for it forever: dropped.
                update
                    .clients
                    .retain(|id, e| &*e.json != "null" || self.awareness.meta(*id).is_some());
                let mut removed_here = HashMap::new();
                for (id, entry) in &update.clients {
                    if &*entry.json == "null" {
                        conn.clients.remove(&id.get());
                        continue;
                    }
                    conn.clients.insert(id.get());
                    // A provider that reconnects re-announces its state at the clock it had,
                    // which the room (having removed it at that clock when it left) ignores as
                    // not newer, until its renewal 15-30 s later. Tell it it was removed: the
                    // provider then bumps its clock and re-announces at once. (Only at that very
                    // clock: an answer to any stale clock could ping-pong with a client whose
                    // clock someone else pushed out of range.)
                    if let Ok(known) = self.awareness.update_with_clients([*id])
                        && let Some(k) = known.clients.get(id)
                        && &*k.json == "null"
                        && k.clock == entry.clock
                    {
                        removed_here.insert(*id, k.clone());
                    }
                }
                if conn.clients.len() > MAX_CLIENTS_PER_CONN {
                    return Err(ProtocolError::Invalid(format!(
                        "more than {MAX_CLIENTS_PER_CONN} awareness client ids on one connection"
                    )));
                }
                if update.clients.is_empty() {
                    return Ok(());
                }
                let encoded = Message::Awareness(update.clone()).encode_v1();
                self.awareness
                    .apply_update(update)
                    .map_err(|e| ProtocolError::Invalid(format!("awareness update: {e}")))?;
                out.push(Out::Broadcast(encoded));
                if !removed_here.is_empty() {
                    let update = AwarenessUpdate {
                        clients: removed_here,
                    };
                    out.push(Out::Reply(Message::Awareness(update).encode_v1()));
                }
            }
            Decoded::Query => {
                if let Ok(update) = self.awareness.update() {
                    out.push(Out::Reply(Message::Awareness(update).encode_v1()));
                }
            }
        }
        Ok(())
    }

    /// Remove the awareness states of `ids` the way y-protocols' `removeAwarenessStates` does
    /// for remote clients: the state goes, the clock stays (yrs's `remove_state` bumps it, which
    /// makes the client's next announcement "not newer" and delays its return by a renewal).
    /// Returns the removal to broadcast.
    fn remove_awareness(&mut self, ids: impl IntoIterator<Item = ClientID>) -> Option<Vec<u8>> {
        let clients: HashMap<ClientID, AwarenessUpdateEntry> = ids
            .into_iter()
            .filter_map(|id| {
                let (clock, _) = self.awareness.meta(id)?;
                Some((
                    id,
                    AwarenessUpdateEntry {
                        clock,
                        json: "null".into(),
                    },
                ))
            })
            .collect();
        if clients.is_empty() {
            return None;
        }
        let update = AwarenessUpdate { clients };
        let frame = Message::Awareness(update.clone()).encode_v1();
        // Same clock and a null state: applied as a removal, clock unchanged.
        self.awareness.apply_update(update).ok()?;
        Some(frame)
    }

    /// `conn` is gone (cleanly or not): drop every awareness state it announced and return the
    /// removal to broadcast, if there was any.
    pub fn leave(&mut self, conn: &mut Conn) -> Option<Vec<u8>> {
        let ids: Vec<ClientID> = conn.clients.drain().map(ClientID::new).collect();
        self.remove_awareness(ids)
    }

    /// Drop awareness states not renewed for `timeout_ms` (clients renew every 15 s; y-websocket
    /// expires them after 30 s) and return the removal to broadcast, if any. `now_ms` is on the
    /// awareness clock (Unix milliseconds unless built with [`Room::with_clock`]).
    pub(crate) fn expire_awareness(&mut self, now_ms: u64, timeout_ms: u64) -> Option<Vec<u8>> {
        let stale: Vec<ClientID> = self
            .awareness
            .iter()
            .filter(|(_, s)| s.data.is_some() && s.last_updated.saturating_add(timeout_ms) < now_ms)
            .map(|(id, _)| id)
            .collect();
        self.remove_awareness(stale)
    }

    /// Awareness client ids currently known (for tests and metrics).
    pub fn awareness_clients(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .awareness
            .iter()
            .filter(|(_, s)| s.data.is_some())
            .map(|(id, _)| id.get())
            .collect();
        v.sort_unstable();
        v
    }
}

/// Apply `update`, keeping nothing pending. yrs holds the parts of an update whose dependencies
/// are missing as "pending" and retries them inside every later apply; in yrs 0.28.1 that retry
/// can write through freed items (valgrind: invalid write in `ItemPtr::splice` under
/// `apply_update`'s pending retry, on an input found by the room_frame fuzz target), and a
/// pending item that fails was blamed on whichever update triggered the retry. A client only
/// sends updates that build on what it has seen, which the room has, so an update with missing
/// dependencies is refused: what of it could be integrated stays (the caller stores and sends
/// it), the rest is dropped at once, and the retry never runs.
fn integrate(doc: &Doc, update: Update) -> Result<(), String> {
    use yrs::WriteTxn;
    let result = doc.transact_mut().apply_update(update);
    let dropped = doc.transact_mut().prune_pending().is_some();
    match result {
        Err(e) => Err(e.to_string()),
        Ok(()) if dropped => Err("it depends on content the room does not have".into()),
        Ok(()) => Ok(()),
    }
}

/// Validate and decode every message of a frame (nothing is applied yet). Payloads a
/// read-only connection may not send are not looked at.
fn decode<'a>(conn: &Conn, frame: &'a [u8]) -> Result<Vec<Decoded<'a>>, ProtocolError> {
    let messages = wire::split(frame).map_err(|e| match e {
        wire::WireError::Limit(_) => ProtocolError::Invalid(e.to_string()),
        _ => ProtocolError::Malformed(e.to_string()),
    })?;
    if messages.is_empty() {
        return Err(ProtocolError::Malformed("empty frame".into()));
    }
    let invalid =
        |what: &str, e: &dyn std::fmt::Display| ProtocolError::Invalid(format!("{what}: {e}"));
    // A reply per sync request or awareness query: one of each per frame (each may be a whole
    // document, and a client sends one per connection).
    let asks = |want: fn(&Msg) -> bool| messages.iter().filter(|m| want(m)).count();
    if asks(|m| matches!(m, Msg::SyncStep1(_))) > 1
        || asks(|m| matches!(m, Msg::QueryAwareness)) > 1
    {
        return Err(ProtocolError::Invalid(
            "more than one sync request or awareness query in a frame".into(),
        ));
    }
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        out.push(match m {
            Msg::SyncStep1(sv) => {
                wire::check_state_vector(sv).map_err(|e| invalid("state vector", &e))?;
                let sv = guarded(|| StateVector::decode_v1(sv))
                    .map_err(|e| invalid("state vector", &e))?
                    .map_err(|e| invalid("state vector", &e))?;
                Decoded::Step1(sv)
            }
            Msg::SyncStep2(_) | Msg::Update(_) if conn.read_only => Decoded::Denied,
            Msg::SyncStep2(bytes) | Msg::Update(bytes) => {
                let shape = wire::check_update(bytes).map_err(|e| invalid("update", &e))?;
                let update = guarded(|| Update::decode_v1(bytes))
                    .map_err(|e| invalid("update", &e))?
                    .map_err(|e| invalid("update", &e))?;
                Decoded::Update(bytes, update, shape)
            }
            Msg::Awareness(bytes) => {
                wire::check_awareness(bytes).map_err(|e| invalid("awareness update", &e))?;
                let update = guarded(|| AwarenessUpdate::decode_v1(bytes))
                    .map_err(|e| invalid("awareness update", &e))?
                    .map_err(|e| invalid("awareness update", &e))?;
                // Other clients JSON.parse every state: one that does not parse would break them.
                // A state is a cursor, a name, a colour: a large one would only be copied to
                // every member, and to every joiner, outside any budget.
                for (id, entry) in &update.clients {
                    if entry.json.len() > MAX_AWARENESS_STATE {
                        return Err(ProtocolError::Invalid(format!(
                            "awareness state of client {id} is over {MAX_AWARENESS_STATE} bytes"
                        )));
                    }
                    if serde_json::from_str::<serde::de::IgnoredAny>(&entry.json).is_err() {
                        return Err(ProtocolError::Invalid(format!(
                            "awareness state of client {id} is not JSON"
                        )));
                    }
                }
                Decoded::Awareness(update)
            }
            Msg::QueryAwareness => Decoded::Query,
            // Clients do not send Auth; ignore it rather than fail.
            Msg::Auth => continue,
            Msg::Custom(tag) => return Err(ProtocolError::Unsupported(tag)),
        });
    }
    Ok(out)
}

/// Whether a client's frame must travel to the other nodes of a replicated room: it decodes
/// (the same checks as [`Room::handle`], so that nothing that would be refused reaches the
/// shared log) and carries a non-empty document update this connection may write, or
/// awareness. Sync requests, awareness queries and empty updates (a new client's SyncStep2)
/// are handled locally and never travel.
pub(crate) fn replicated(conn: &Conn, frame: &[u8]) -> Result<bool, ProtocolError> {
    Ok(decode(conn, frame)?.iter().any(|d| match d {
        Decoded::Update(_, u, _) => !u.is_empty(),
        Decoded::Awareness(_) => true,
        _ => false,
    }))
}

/// The document updates (v1) of a frame that was appended to a replicated room's log, pushed
/// onto `out`; awareness and the rest are left out (a loading room does not replay old cursors).
pub(crate) fn updates_of(frame: &[u8], out: &mut Vec<Vec<u8>>) {
    for m in wire::split(frame).unwrap_or_default() {
        if let wire::Msg::SyncStep2(u) | wire::Msg::Update(u) = m {
            out.push(u.to_vec());
        }
    }
}

/// Run yrs over bytes that passed validation, turning a panic into an error: validation
/// bounds what yrs is given, and this keeps a yrs bug on some other input to one connection.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| "rejected by the decoder (panicked)".to_string())
}

/// Decode a frame's awareness update (tests and tools).
pub fn decode_awareness(frame: &[u8]) -> Option<AwarenessUpdate> {
    match Message::decode_v1(frame).ok()? {
        Message::Awareness(u) => Some(u),
        _ => None,
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
