//! The y-websocket protocol for one room, sans-IO: frames in, frames out. Each outgoing frame
//! carries exactly one message (the JS client decodes only the first message of a frame).
//!
//! A `Room` owns the document and awareness; a `Conn` is what the room remembers about one
//! connection (the awareness client ids it announced, whether it may write). The socket side
//! (later) sends `Out::Reply` to that connection and `Out::Broadcast` to every connection of the
//! room, the sender included (y-websocket clients rely on their own awareness echo to stay alive).

use super::wire::{self, Msg};
use std::collections::{HashMap, HashSet};
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::{Awareness, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update};

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
pub const MAX_CLIENTS_PER_CONN: usize = 16;

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
    pub fn into_result(self) -> Result<Vec<Out>, ProtocolError> {
        match self.error {
            None => Ok(self.out),
            Some(e) => Err(e),
        }
    }
}

/// A message that passed validation and decoding, waiting to be applied.
enum Decoded<'a> {
    Step1(StateVector),
    /// The update as sent (for the broadcast and the store), decoded, and an upper bound of
    /// what it adds to the document's encoded size.
    Update(&'a [u8], Update, u64),
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
    pub fn with_clock(doc: Doc, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Room {
        Room {
            awareness: Awareness::with_clock(doc, clock),
            size: 0,
        }
    }

    /// A room whose document is rebuilt from stored updates, and the indexes of the rows that
    /// could not be applied (skipped with a log line: a damaged row must not make the whole room
    /// unavailable, and the caller must then never compact the log over it).
    pub fn from_updates(updates: &[Vec<u8>]) -> (Room, Vec<usize>) {
        let mut room = Room::default();
        let mut skipped = Vec::new();
        for (i, u) in updates.iter().enumerate() {
            let applied = wire::check_update(u).is_ok()
                && guarded(|| {
                    Update::decode_v1(u)
                        .ok()
                        .is_some_and(|update| integrate(room.doc(), u, update).is_ok())
                })
                .unwrap_or(false);
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
    pub fn try_snapshot(&self) -> Option<Vec<u8>> {
        guarded(|| self.snapshot()).ok()
    }

    /// The whole document as one v1 update (what a store persists).
    pub fn snapshot(&self) -> Vec<u8> {
        self.doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
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
    /// of its updates fails midway, what was applied is still broadcast and persisted
    /// ([`Handled::out`]) before the error closes the connection.
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
                Decoded::Update(_, _, growth) => *growth,
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
    pub fn encoded_size(&self) -> u64 {
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
            Decoded::Update(bytes, update, growth) => {
                let before = self.doc().transact().state_vector();
                let result = guarded(|| integrate(self.doc(), bytes, update));
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
                    (txn.state_vector() != before).then(|| txn.encode_diff_v1(&before))
                };
                if let Some(diff) = gained {
                    self.size += diff.len() as u64;
                    out.push(Out::Broadcast(
                        Message::Sync(SyncMessage::Update(diff.clone())).encode_v1(),
                    ));
                    out.push(Out::Persist(diff));
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
    pub fn expire_awareness(&mut self, now_ms: u64, timeout_ms: u64) -> Option<Vec<u8>> {
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

/// Apply `update` (decoded from `bytes`). yrs retries the updates it holds pending (waiting for a
/// missing dependency) inside every apply, so a pending update of another client whose parent
/// turns out not to be a type would fail, and be blamed on, every later update of the room. So
/// on failure the pending updates are taken out and this update is tried alone:
/// - it applies: the pending updates were what failed; they are dropped (they cannot be
///   integrated next to what the document holds);
/// - it fails on its own: it is refused (what failed of it is dropped) and the pending updates
///   are put back (applied again; dropped if that fails).
///
/// The store's replay ([`Room::from_updates`]) goes through here as well, so a reloaded room
/// ends where the live one did.
fn integrate(doc: &Doc, bytes: &[u8], update: Update) -> Result<(), yrs::error::UpdateError> {
    use yrs::WriteTxn;
    if doc.transact_mut().apply_update(update).is_ok() {
        return Ok(());
    }
    let pending = doc.transact_mut().prune_pending();
    let again = Update::decode_v1(bytes).expect("decoded once already");
    let result = doc.transact_mut().apply_update(again);
    match (&result, pending) {
        (Ok(()), Some(_)) => {
            tracing::debug!("dropped pending updates that could not be integrated");
        }
        (Err(_), pending) => {
            doc.transact_mut().prune_pending();
            if let Some(p) = pending
                && doc.transact_mut().apply_update(p).is_err()
            {
                doc.transact_mut().prune_pending();
            }
        }
        (Ok(()), None) => {}
    }
    result
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
                Decoded::Update(bytes, update, shape.growth(bytes.len()))
            }
            Msg::Awareness(bytes) => {
                wire::check_awareness(bytes).map_err(|e| invalid("awareness update", &e))?;
                let update = guarded(|| AwarenessUpdate::decode_v1(bytes))
                    .map_err(|e| invalid("awareness update", &e))?
                    .map_err(|e| invalid("awareness update", &e))?;
                // Other clients JSON.parse every state: one that does not parse would break them.
                for (id, entry) in &update.clients {
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
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    const LIMITS: Limits = Limits {
        max_document: 1 << 30,
    };

    /// A client-side document, as the JS provider keeps one.
    fn client_edit(doc: &Doc, text: &str) -> Vec<u8> {
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        let before = txn.state_vector();
        let len = t.len(&txn);
        t.insert(&mut txn, len, text);
        txn.encode_state_as_update_v1(&before)
    }

    fn apply(doc: &Doc, frame: &[u8]) {
        match Message::decode_v1(frame).unwrap() {
            Message::Sync(SyncMessage::Update(u)) | Message::Sync(SyncMessage::SyncStep2(u)) => {
                doc.transact_mut()
                    .apply_update(Update::decode_v1(&u).unwrap())
                    .unwrap();
            }
            other => panic!("not a doc update: {other:?}"),
        }
    }

    fn text(doc: &Doc) -> String {
        let t = doc.get_or_insert_text("t");
        t.get_string(&doc.transact())
    }

    fn update_frame(u: Vec<u8>) -> Vec<u8> {
        Message::Sync(SyncMessage::Update(u)).encode_v1()
    }

    #[test]
    fn updates_are_applied_and_broadcast_and_late_joiners_get_everything() {
        let mut room = Room::default();
        let (mut a, mut b) = (Conn::default(), Conn::default());
        let (doc_a, doc_b) = (Doc::new(), Doc::new());
        let out = room
            .handle(&mut a, &update_frame(client_edit(&doc_a, "hello ")), LIMITS)
            .into_result()
            .unwrap();
        let [Out::Broadcast(f), Out::Persist(_)] = &out[..] else {
            panic!("{out:?}")
        };
        apply(&doc_b, f);
        let out = room
            .handle(&mut b, &update_frame(client_edit(&doc_b, "world")), LIMITS)
            .into_result()
            .unwrap();
        let [Out::Broadcast(f), Out::Persist(_)] = &out[..] else {
            panic!("{out:?}")
        };
        apply(&doc_a, f);
        assert_eq!(text(&doc_a), "hello world");
        assert_eq!(text(&doc_b), "hello world");

        // A late joiner sends its (empty) state vector and gets the whole document.
        let late = Doc::new();
        let step1 =
            Message::Sync(SyncMessage::SyncStep1(late.transact().state_vector())).encode_v1();
        let out = room
            .handle(&mut Conn::default(), &step1, LIMITS)
            .into_result()
            .unwrap();
        let [Out::Reply(f)] = &out[..] else {
            panic!("{out:?}")
        };
        apply(&late, f);
        assert_eq!(text(&late), "hello world");
        // And the room opens with its own SyncStep1, alone in its frame.
        let w = room.welcome();
        assert_eq!(w.len(), 1);
        assert!(matches!(
            Message::decode_v1(&w[0]).unwrap(),
            Message::Sync(SyncMessage::SyncStep1(_))
        ));
    }

    #[test]
    fn several_messages_in_one_frame_are_all_handled() {
        let mut room = Room::default();
        let doc = Doc::new();
        let mut frame = update_frame(client_edit(&doc, "a"));
        frame.extend(Message::Sync(SyncMessage::SyncStep1(StateVector::default())).encode_v1());
        let out = room
            .handle(&mut Conn::default(), &frame, LIMITS)
            .into_result()
            .unwrap();
        assert!(
            matches!(
                &out[..],
                [Out::Broadcast(_), Out::Persist(_), Out::Reply(_)]
            ),
            "{out:?}"
        );
    }

    #[test]
    fn awareness_is_relayed_and_removed_when_the_connection_leaves() {
        let mut room = Room::default();
        let mut a = Conn::default();
        let mut peer = Awareness::new(Doc::with_client_id(42));
        peer.set_local_state_raw(r#"{"user":"ann"}"#);
        let frame = Message::Awareness(peer.update().unwrap()).encode_v1();
        let out = room.handle(&mut a, &frame, LIMITS).into_result().unwrap();
        assert!(matches!(&out[..], [Out::Broadcast(_)]));
        assert_eq!(room.awareness_clients(), vec![42]);
        assert_eq!(
            room.welcome().len(),
            2,
            "a newcomer gets SyncStep1 and the awareness states"
        );
        let removal = room.leave(&mut a).expect("a removal to broadcast");
        let u = decode_awareness(&removal).unwrap();
        assert_eq!(&*u.clients[&ClientID::new(42)].json, "null");
        assert!(room.awareness_clients().is_empty());
        assert!(room.leave(&mut a).is_none(), "nothing left to remove");
    }

    #[test]
    fn awareness_not_renewed_for_30_s_expires() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let now = Arc::new(AtomicU64::new(1_000_000));
        let clock = now.clone();
        let mut room = Room::with_clock(Doc::new(), move || clock.load(Ordering::Relaxed));
        let announce = |room: &mut Room, id: u64, clock: u32| {
            let mut peer = Awareness::new(Doc::with_client_id(id));
            for _ in 0..clock {
                peer.set_local_state_raw(r#"{"user":"x"}"#);
            }
            let frame = Message::Awareness(peer.update().unwrap()).encode_v1();
            room.handle(&mut Conn::default(), &frame, LIMITS)
                .into_result()
                .unwrap();
        };
        announce(&mut room, 1, 1);
        now.fetch_add(20_000, Ordering::Relaxed);
        announce(&mut room, 2, 1);
        assert!(
            room.expire_awareness(now.load(Ordering::Relaxed), 30_000)
                .is_none()
        );
        now.fetch_add(15_000, Ordering::Relaxed); // 1 is 35 s old, 2 is 15 s old
        let removal = room
            .expire_awareness(now.load(Ordering::Relaxed), 30_000)
            .expect("client 1 expired");
        let u = decode_awareness(&removal).unwrap();
        assert_eq!(u.clients.len(), 1);
        assert_eq!(&*u.clients[&ClientID::new(1)].json, "null");
        assert_eq!(room.awareness_clients(), vec![2]);
        // A renewal (higher clock) keeps 2 alive past its first 30 s.
        now.fetch_add(10_000, Ordering::Relaxed);
        announce(&mut room, 2, 2);
        now.fetch_add(25_000, Ordering::Relaxed);
        assert!(
            room.expire_awareness(now.load(Ordering::Relaxed), 30_000)
                .is_none()
        );
        assert_eq!(room.awareness_clients(), vec![2]);
    }

    #[test]
    fn read_only_connections_cannot_write() {
        let mut room = Room::default();
        let mut ro = Conn {
            read_only: true,
            ..Default::default()
        };
        let out = room
            .handle(
                &mut ro,
                &update_frame(client_edit(&Doc::new(), "x")),
                LIMITS,
            )
            .into_result()
            .unwrap();
        let [Out::Reply(f)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(f[0], 2, "Auth message");
        assert_eq!(f[1], 0, "PermissionDenied");
        assert_eq!(text(room.doc()), "");
    }

    #[test]
    fn bad_input_is_refused_with_the_right_code_and_the_document_survives() {
        let mut room = Room::default();
        let mut c = Conn::default();
        room.handle(
            &mut c,
            &update_frame(client_edit(&Doc::new(), "kept")),
            LIMITS,
        )
        .into_result()
        .unwrap();
        let e = room
            .handle(
                &mut c,
                &update_frame(vec![0xff, 0xff, 0xff, 0x01, 0x02]),
                LIMITS,
            )
            .into_result()
            .unwrap_err();
        assert_eq!(e.close_code(), 1007, "{e}");
        let e = room
            .handle(&mut c, &[5, 0], LIMITS)
            .into_result()
            .unwrap_err();
        assert_eq!(e, ProtocolError::Unsupported(5));
        assert_eq!(e.close_code(), 1003);
        let e = room.handle(&mut c, &[], LIMITS).into_result().unwrap_err();
        assert_eq!(e.close_code(), 1002);
        let e = room
            .handle(&mut c, &[0, 9, 1], LIMITS)
            .into_result()
            .unwrap_err();
        assert_eq!(e.close_code(), 1002, "{e}");
        // An awareness client id wider than Yjs's 53 bits (yrs's decoder asserts on it in debug
        // builds): refused by validation, in every build.
        let mut bad = vec![1u8];
        let mut payload = Vec::new();
        payload.push(1); // one client
        payload.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]); // huge id
        payload.push(1); // clock
        payload.extend([4, b'n', b'u', b'l', b'l']);
        bad.push(payload.len() as u8);
        bad.extend(payload);
        let e = room.handle(&mut c, &bad, LIMITS).into_result().unwrap_err();
        assert_eq!(e.close_code(), 1007, "{e}");
        assert_eq!(text(room.doc()), "kept");
    }

    #[test]
    fn hostile_payloads_are_refused_1007_before_yrs_sees_them() {
        let mut room = Room::default();
        let mut c = Conn::default();
        // Any nested past the limit (the stack-overflow update), and a 2^29-entry state vector.
        let deep = update_frame(crate::rooms::wire::tests::nested_any_update(10_000));
        let e = room
            .handle(&mut c, &deep, LIMITS)
            .into_result()
            .unwrap_err();
        assert_eq!(e.close_code(), 1007, "{e}");
        let bomb = [0, 0, 5, 0x80, 0x80, 0x80, 0x80, 0x02];
        let e = room
            .handle(&mut c, &bomb, LIMITS)
            .into_result()
            .unwrap_err();
        assert_eq!(e.close_code(), 1007, "{e}");
        // A read-only connection's update is refused without being decoded: even a hostile one
        // only earns PermissionDenied.
        let mut ro = Conn {
            read_only: true,
            ..Default::default()
        };
        let out = room.handle(&mut ro, &deep, LIMITS).into_result().unwrap();
        assert!(matches!(&out[..], [Out::Reply(f)] if f[0] == 2));
    }

    #[test]
    fn a_frame_that_does_not_decode_applies_nothing() {
        let mut room = Room::default();
        let mut frame = update_frame(client_edit(&Doc::new(), "PARTIAL"));
        frame.extend(update_frame(vec![0xff, 0xff, 0xff, 0x01, 0x02]));
        let h = room.handle(&mut Conn::default(), &frame, LIMITS);
        assert_eq!(h.error.as_ref().map(|e| e.close_code()), Some(1007));
        assert!(h.out.is_empty(), "{:?}", h.out);
        assert_eq!(text(room.doc()), "");
    }

    #[test]
    fn an_update_failing_midway_still_broadcasts_and_persists_what_was_applied() {
        // First update fine; the second's item names a parent (an item holding a string, not
        // a type): yrs integrates the first and fails on the second with InvalidParent.
        let mut room = Room::default();
        let doc = Doc::with_client_id(1);
        let first = client_edit(&doc, "applied");
        let bad = {
            // One item of client 2 whose parent is item (1, 0) (a string), then a bad content.
            vec![1, 1, 2, 0, 4, 0, 1, 0, 1, b'x', 0]
        };
        let mut frame = update_frame(first);
        frame.extend(update_frame(bad));
        let h = room.handle(&mut Conn::default(), &frame, LIMITS);
        assert_eq!(
            h.error.as_ref().map(|e| e.close_code()),
            Some(1007),
            "{h:?}"
        );
        assert_eq!(text(room.doc()), "applied");
        let persisted = h
            .out
            .iter()
            .filter(|o| matches!(o, Out::Persist(_)))
            .count();
        let broadcast = h
            .out
            .iter()
            .filter(|o| matches!(o, Out::Broadcast(_)))
            .count();
        assert!(persisted >= 1 && broadcast == persisted, "{:?}", h.out);
        // What was persisted rebuilds the document.
        let rows: Vec<Vec<u8>> = h
            .out
            .into_iter()
            .filter_map(|o| match o {
                Out::Persist(u) => Some(u),
                _ => None,
            })
            .collect();
        let (rebuilt, skipped) = Room::from_updates(&rows);
        assert!(skipped.is_empty());
        assert_eq!(text(rebuilt.doc()), text(room.doc()));
    }

    #[test]
    fn a_pending_update_that_cannot_integrate_is_not_blamed_on_the_next_writer() {
        // Client 2002: an item whose parent is item (1001, 0), which does not exist yet.
        let mut hostile = vec![1, 1];
        hostile.extend([0xd2, 0x0f]); // client 2002
        hostile.extend([0, 4, 0]); // clock 0, string content, parent given by id
        hostile.extend([0xe9, 0x07, 0]); // (1001, 0)
        hostile.extend([1, b'x', 0]);
        let mut room = Room::default();
        let mut rows = Vec::new();
        let mut keep = |out: Vec<Out>| {
            for o in out {
                if let Out::Persist(u) = o {
                    rows.push(u);
                }
            }
        };
        keep(
            room.handle(&mut Conn::default(), &update_frame(hostile), LIMITS)
                .into_result()
                .unwrap(),
        );
        // 1001 creates (1001, 0) as text: yrs retries the pending item, which fails (its parent
        // is not a type). The edit is fine: applied, sent, stored, and its sender not closed.
        let doc = Doc::with_client_id(1001);
        let edit = update_frame(client_edit(&doc, "innocent"));
        let out = room
            .handle(&mut Conn::default(), &edit, LIMITS)
            .into_result()
            .unwrap();
        assert!(
            matches!(&out[..], [Out::Broadcast(_), Out::Persist(_)]),
            "{out:?}"
        );
        keep(out);
        assert_eq!(text(room.doc()), "innocent");
        assert!(!room.doc().transact().has_missing_updates());
        // The store's replay ends in the same place.
        let (reloaded, skipped) = Room::from_updates(&rows);
        assert!(skipped.is_empty());
        assert_eq!(text(reloaded.doc()), "innocent");
        assert_eq!(
            reloaded.doc().transact().state_vector(),
            room.doc().transact().state_vector()
        );
    }

    #[test]
    fn documents_stop_growing_at_max_document() {
        let mut room = Room::default();
        let mut c = Conn::default();
        let limits = Limits { max_document: 4096 };
        let doc = Doc::new();
        let big = client_edit(&doc, &"x".repeat(3000));
        room.handle(&mut c, &update_frame(big), limits)
            .into_result()
            .unwrap();
        let more = client_edit(&doc, &"y".repeat(2000));
        let e = room
            .handle(&mut c, &update_frame(more), limits)
            .into_result()
            .unwrap_err();
        assert!(matches!(e, ProtocolError::TooLarge { .. }), "{e}");
        assert_eq!(e.close_code(), 1009);
        assert_eq!(
            text(room.doc()).len(),
            3000,
            "the refused update was not applied"
        );
        // The refusal re-measured the document exactly: a small edit still fits.
        let small = Doc::new();
        room.handle(&mut c, &update_frame(client_edit(&small, "z")), limits)
            .into_result()
            .unwrap();
    }

    #[test]
    fn removals_of_unknown_awareness_ids_are_dropped_not_kept() {
        let mut room = Room::default();
        let mut clients = HashMap::new();
        for id in 1..=16u64 {
            clients.insert(
                ClientID::new(id),
                AwarenessUpdateEntry {
                    clock: 1,
                    json: "null".into(),
                },
            );
        }
        let frame = Message::Awareness(AwarenessUpdate { clients }).encode_v1();
        let out = room
            .handle(&mut Conn::default(), &frame, LIMITS)
            .into_result()
            .unwrap();
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(
            room.awareness.iter().count(),
            0,
            "yrs would keep an entry per id"
        );
    }

    #[test]
    fn a_client_pushed_past_u32_clocks_is_ignored_not_closed_and_not_answered() {
        let mut room = Room::default();
        let mut c = Conn::default();
        let entry = |clock: u32, json: &str| {
            let mut clients = HashMap::new();
            clients.insert(
                ClientID::new(42),
                AwarenessUpdateEntry {
                    clock,
                    json: json.into(),
                },
            );
            Message::Awareness(AwarenessUpdate { clients }).encode_v1()
        };
        room.handle(&mut c, &entry(1, "{}"), LIMITS)
            .into_result()
            .unwrap();
        // Someone removes client 42 at clock u32::MAX; the victim bumps to 2^32 (a JS number),
        // which arrives here as a 5-byte varint.
        room.handle(&mut Conn::default(), &entry(u32::MAX, "null"), LIMITS)
            .into_result()
            .unwrap();
        let mut victim = vec![1u8];
        let payload = [1u8, 42, 0x80, 0x80, 0x80, 0x80, 0x10, 2, b'{', b'}'];
        victim.push(payload.len() as u8);
        victim.extend(payload);
        let out = room.handle(&mut c, &victim, LIMITS).into_result().unwrap();
        assert!(
            !out.iter().any(|o| matches!(o, Out::Reply(_))),
            "no answer that could ping-pong: {out:?}"
        );
    }

    #[test]
    fn a_reconnecting_client_is_told_to_re_announce() {
        let mut room = Room::default();
        let mut first = Conn::default();
        let mut peer = Awareness::new(Doc::with_client_id(42));
        peer.set_local_state_raw(r#"{"user":"ann"}"#);
        let announce = Message::Awareness(peer.update().unwrap()).encode_v1();
        room.handle(&mut first, &announce, LIMITS)
            .into_result()
            .unwrap();
        // It leaves: removed at its own clock (1), as y-protocols does.
        let removal = room.leave(&mut first).unwrap();
        let u = decode_awareness(&removal).unwrap();
        assert_eq!(u.clients[&ClientID::new(42)].clock, 1);
        // It comes back announcing the same clock: applied? No (not newer) -- so the room
        // answers with a removal at that clock, which makes the provider bump and re-announce.
        let mut second = Conn::default();
        let out = room
            .handle(&mut second, &announce, LIMITS)
            .into_result()
            .unwrap();
        let reply = out
            .iter()
            .find_map(|o| match o {
                Out::Reply(f) => decode_awareness(f),
                _ => None,
            })
            .expect("a reply telling the client it was removed");
        assert_eq!(&*reply.clients[&ClientID::new(42)].json, "null");
        assert_eq!(reply.clients[&ClientID::new(42)].clock, 1);
        // The provider's answer (clock 2) is applied.
        peer.set_local_state_raw(r#"{"user":"ann"}"#);
        let again = Message::Awareness(peer.update().unwrap()).encode_v1();
        room.handle(&mut second, &again, LIMITS)
            .into_result()
            .unwrap();
        assert_eq!(room.awareness_clients(), vec![42]);
    }
}
