//! Bounded pre-validation of y-websocket frames, sans-IO, before any byte reaches yrs.
//!
//! yrs's decoders trust the wire: `Any` values are decoded recursively (an array nested 8,000
//! deep overflows a worker's stack and aborts the process), and declared counts become
//! reservations (`try_reserve` of 2^29 state-vector entries succeeds under overcommit, then
//! hashbrown writes its control bytes: 1 GB from 9 bytes). This module walks the same grammar
//! iteratively, with no allocation but a fixed-size stack, and refuses:
//! - `Any` nesting deeper than [`MAX_DEPTH`];
//! - any declared count larger than the bytes left could hold (each entry needs at least one
//!   byte, most two or three);
//! - varints longer or wider than their type (so yrs's wrapping varint reader reads exactly the
//!   values and lengths checked here), client ids over 2^53 - 1 (Yjs's limit; yrs asserts on
//!   them in debug builds), clocks at or past 2^31 (see [`MAX_CLOCK`]);
//! - anything yrs would refuse anyway (unknown tags and content refs, bad UTF-8);
//! - what yrs mishandles: a client's structs given twice in one update, legacy JSON content,
//!   subdocuments, clocks past 2^31 (see each check);
//! - more messages per frame, or entries per awareness update, than a client sends.
//!
//! It mirrors yrs 0.28's v1 decoders exactly where the two grammars could disagree (e.g. yrs
//! reads no key for `XmlHook`), because what matters is that yrs, given bytes that passed, walks
//! the very structure that was checked. Legacy JSON content, which yrs decodes differently from
//! how it encodes it, is refused outright.
//! A message that passed is decoded by yrs; its decoded size is then proportional to its bytes.

/// Deepest `Any` nesting accepted (arrays and maps inside each other). JSON-like values in real
/// documents are a few levels deep; yrs's recursion needs a few hundred bytes of stack per level.
pub const MAX_DEPTH: usize = 64;
/// Yjs client ids are uint53 (`random.uint53()`); larger ones cannot come from a real client.
const MAX_CLIENT: u64 = (1 << 53) - 1;
/// Most entries one awareness update may carry.
pub const MAX_AWARENESS_ENTRIES: u64 = 16;
/// Most messages one frame may carry (y-websocket sends one per frame; its server reads one).
pub const MAX_MESSAGES: usize = 16;
/// Highest clock accepted in updates and delete sets. yrs computes a struct's distance to the
/// document's clock as `clock as i32`: a struct at 2^31 or above is integrated as if nothing
/// were missing before it, breaking the block list's invariant, and a later delete panics in
/// its binary search (found by the room_frame fuzz target). 2^31 insertions by one client do
/// not happen in real documents.
const MAX_CLOCK: u64 = i32::MAX as u64;

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated: needed {needed} more bytes at byte {at}")]
    Truncated { at: usize, needed: usize },
    #[error("varint too long or too wide at byte {0}")]
    VarInt(usize),
    #[error("{what} declares {count} entries but only {left} bytes remain")]
    Count {
        what: &'static str,
        count: u64,
        left: usize,
    },
    #[error("values nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Well-formed, but more than a client sends.
    #[error("{0}")]
    Limit(&'static str),
}

/// One message of a frame, not yet decoded: its kind and the payload bytes the matching yrs
/// decoder gets (after they pass the `check_*` function for that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg<'a> {
    /// A state vector (`StateVector::decode_v1`).
    SyncStep1(&'a [u8]),
    /// A v1 update (`Update::decode_v1`).
    SyncStep2(&'a [u8]),
    Update(&'a [u8]),
    /// An awareness update (`AwarenessUpdate::decode_v1`).
    Awareness(&'a [u8]),
    /// Auth (servers send it; a client's is ignored).
    Auth,
    QueryAwareness,
    /// A message type this server does not speak.
    Custom(u64),
}

/// Split a frame into its messages (y-websocket sends one per frame; several are allowed).
/// Only the envelope is read here; payloads are checked by kind, so a read-only connection
/// never has its update payloads looked at.
pub fn split(frame: &[u8]) -> Result<Vec<Msg<'_>>, WireError> {
    let mut r = Reader::new(frame);
    let mut out = Vec::new();
    while !r.done() {
        if out.len() == MAX_MESSAGES {
            return Err(WireError::Limit(
                "more messages in one frame than a client sends",
            ));
        }
        let msg = match r.var_u64()? {
            0 => match r.var_u32()? {
                0 => Msg::SyncStep1(r.buf()?),
                1 => Msg::SyncStep2(r.buf()?),
                2 => Msg::Update(r.buf()?),
                _ => return Err(WireError::Invalid("sync message type")),
            },
            1 => Msg::Awareness(r.buf()?),
            2 => {
                if r.var_u32()? == 0 {
                    r.string()?;
                }
                Msg::Auth
            }
            3 => Msg::QueryAwareness,
            tag => {
                r.buf()?;
                Msg::Custom(tag)
            }
        };
        out.push(msg);
    }
    Ok(out)
}

/// A state vector: `n`, then `n` × (client, clock).
pub fn check_state_vector(bytes: &[u8]) -> Result<(), WireError> {
    let mut r = Reader::new(bytes);
    let n = r.var_u32()?;
    r.count("state vector", n.into(), 2)?;
    for _ in 0..n {
        r.client()?;
        r.var_u32()?;
    }
    Ok(())
}

/// An awareness update: `n`, then `n` × (client, clock, JSON string). At most
/// [`MAX_AWARENESS_ENTRIES`] entries (a provider announces its own state; it never needs more).
/// Clocks are read as u64: yrs wraps larger ones into u32 and ignores them as stale, which is
/// better than closing the connection (another client can push anyone's clock up to u32::MAX,
/// and y-protocols then announces 2^32).
pub fn check_awareness(bytes: &[u8]) -> Result<(), WireError> {
    let mut r = Reader::new(bytes);
    let n = r.var_u64()?;
    r.count("awareness update", n, 3)?;
    if n > MAX_AWARENESS_ENTRIES {
        return Err(WireError::Limit(
            "more awareness entries than a client sends",
        ));
    }
    for _ in 0..n {
        r.client()?;
        r.var_u64()?;
        r.string()?;
    }
    Ok(())
}

/// What an update that passed [`check_update`] holds, to bound what it adds to a document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateShape {
    /// Delete-set ranges: each may split an item, which costs more in the document's encoding
    /// than the few bytes the range took on the wire.
    pub delete_ranges: u64,
    /// Each client's first clock in the update (its structs must continue what the document
    /// holds of that client: a gap would make yrs integrate a skip).
    pub starts: Vec<(u64, u32)>,
}

impl UpdateShape {
    /// An upper bound of what applying the update adds to the document's encoded size.
    pub fn growth(&self, bytes: usize) -> u64 {
        bytes as u64 + self.delete_ranges.saturating_mul(32)
    }
}

/// A Yjs v1 update: the structs of each client, then the delete set, and nothing after it.
/// Each client's structs appear once, in decreasing client order (as Yjs and yrs write them):
/// yrs appends a repeated client's section to the first and then integrates a block over one it
/// already holds, corrupting the document's block list (a use-after-free inside yrs).
pub fn check_update(bytes: &[u8]) -> Result<UpdateShape, WireError> {
    let mut r = Reader::new(bytes);
    let clients = r.var_u32()?;
    r.count("update clients", clients.into(), 3)?;
    let mut shape = UpdateShape::default();
    let mut previous: Option<u64> = None;
    for _ in 0..clients {
        let structs = r.var_u32()?;
        r.count("update structs", structs.into(), 2)?;
        let client = r.client()?;
        if previous.is_some_and(|p| client >= p) {
            return Err(WireError::Invalid(
                "update clients repeated or out of order",
            ));
        }
        previous = Some(client);
        let mut clock = r.clock()?;
        shape.starts.push((client, clock as u32));
        for _ in 0..structs {
            clock += r.block()?;
            if clock > MAX_CLOCK {
                return Err(WireError::Invalid("clock past 2^31"));
            }
        }
    }
    // The delete set: clients, each with (clock, len) ranges.
    let clients = r.var_u32()?;
    r.count("delete set clients", clients.into(), 2)?;
    for _ in 0..clients {
        r.client()?;
        let ranges = r.var_u32()?;
        r.count("delete set ranges", ranges.into(), 2)?;
        shape.delete_ranges += u64::from(ranges);
        for _ in 0..ranges {
            let (clock, len) = (r.clock()?, u64::from(r.var_u32()?));
            if clock + len > MAX_CLOCK {
                return Err(WireError::Invalid("delete range past 2^31"));
            }
        }
    }
    if !r.done() {
        return Err(WireError::Invalid("bytes after the delete set"));
    }
    Ok(shape)
}

// yrs's block and content constants (yrs::block, yrs::types), v1 encoding.
const GC: u8 = 0;
const SKIP: u8 = 10;
const HAS_ORIGIN: u8 = 0x80;
const HAS_RIGHT_ORIGIN: u8 = 0x40;
const HAS_PARENT_SUB: u8 = 0x20;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.left() {
            return Err(WireError::Truncated {
                at: self.pos,
                needed: n - self.left(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    /// lib0 varuint that must fit `bits` bits, in at most `ceil(bits / 7)` bytes. (yrs's reader
    /// wraps instead of refusing; on what passes here both read the same value.)
    fn var(&mut self, bits: u32) -> Result<u64, WireError> {
        let at = self.pos;
        let mut value: u128 = 0;
        let mut shift = 0u32;
        loop {
            if shift >= bits {
                return Err(WireError::VarInt(at));
            }
            let b = self.u8()?;
            value |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        if value >> bits != 0 {
            return Err(WireError::VarInt(at));
        }
        Ok(value as u64)
    }

    fn var_u32(&mut self) -> Result<u32, WireError> {
        Ok(self.var(32)? as u32)
    }

    fn var_u64(&mut self) -> Result<u64, WireError> {
        self.var(64)
    }

    /// lib0 signed varint (6 bits and a sign in the first byte, 7 bits after): skipped.
    fn var_i64(&mut self) -> Result<(), WireError> {
        let at = self.pos;
        for _ in 0..10 {
            if self.u8()? & 0x80 == 0 {
                return Ok(());
            }
        }
        Err(WireError::VarInt(at))
    }

    fn client(&mut self) -> Result<u64, WireError> {
        let client = self.var_u64()?;
        if client > MAX_CLIENT {
            return Err(WireError::Invalid("client id over 2^53"));
        }
        Ok(client)
    }

    /// `n` entries of at least `min` bytes each must fit in what is left.
    fn count(&self, what: &'static str, n: u64, min: u64) -> Result<(), WireError> {
        if n.saturating_mul(min) > self.left() as u64 {
            return Err(WireError::Count {
                what,
                count: n,
                left: self.left(),
            });
        }
        Ok(())
    }

    /// lib0 varUint8Array: u32 length, then the bytes.
    fn buf(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.var_u32()? as usize;
        self.take(n)
    }

    /// lib0 varString: a buffer of UTF-8. Returns its length in bytes.
    fn string(&mut self) -> Result<u64, WireError> {
        let s = self.buf()?;
        std::str::from_utf8(s).map_err(|_| WireError::Invalid("UTF-8 string"))?;
        Ok(s.len() as u64)
    }

    fn id(&mut self) -> Result<(), WireError> {
        self.client()?;
        self.clock()?;
        Ok(())
    }

    /// A struct clock (u32 on the wire), at most [`MAX_CLOCK`].
    fn clock(&mut self) -> Result<u64, WireError> {
        let clock = u64::from(self.var_u32()?);
        if clock > MAX_CLOCK {
            return Err(WireError::Invalid("clock past 2^31"));
        }
        Ok(clock)
    }

    /// One struct (GC, Skip or Item); returns the clock length it covers, or an upper bound of
    /// it (a string's length is counted in bytes, yrs counts UTF-16 units).
    fn block(&mut self) -> Result<u64, WireError> {
        let info = self.u8()?;
        if info == SKIP {
            // Yjs writes skips only when merging updates with gaps; a client's update has none,
            // and yrs integrates what follows a skip past a hole in the document.
            return Err(WireError::Invalid("skip struct (a gap in the update)"));
        }
        if info == GC {
            let len = self.var_u32()?;
            if len == 0 {
                return Err(WireError::Invalid("empty block"));
            }
            return Ok(len.into());
        }
        if info & HAS_ORIGIN != 0 {
            self.id()?;
        }
        if info & HAS_RIGHT_ORIGIN != 0 {
            self.id()?;
        }
        if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
            // Parent: a named root type, or the id of the item holding the parent type.
            if self.var_u32()? == 1 {
                self.string()?;
            } else {
                self.id()?;
            }
            if info & HAS_PARENT_SUB != 0 {
                self.string()?;
            }
        }
        self.content(info & 0x0f)
    }

    /// An item's content (yrs `ItemContent::decode`); returns its clock length (upper bound).
    fn content(&mut self, kind: u8) -> Result<u64, WireError> {
        Ok(match kind {
            // Deleted
            1 => self.var_u32()?.into(),
            // JSON (legacy ContentJSON, which Yjs 13 no longer writes): refused. yrs reads
            // `len + 1` strings where it writes `len`, so an update holding it cannot be sent
            // on (the SyncStep2 would not decode at the clients) and, left pending, makes every
            // later encode of the document panic (found by the room_frame fuzz target).
            2 => return Err(WireError::Invalid("legacy JSON content")),
            // Binary
            3 => {
                self.buf()?;
                1
            }
            // String
            4 => self.string()?,
            // Embed (JSON text, parsed by serde_json whose depth limit is 128)
            5 => {
                self.string()?;
                1
            }
            // Format: key, JSON text
            6 => {
                self.string()?;
                self.string()?;
                1
            }
            // Type: a one-byte type ref; XmlElement carries its name.
            7 => {
                match self.u8()? {
                    0 | 1 | 2 | 4 | 5 | 6 | 9 | 15 => {}
                    3 => {
                        self.string()?;
                    }
                    _ => return Err(WireError::Invalid("type ref")),
                }
                1
            }
            // Any: u32 count, then the values.
            8 => {
                let n = self.var_u32()?;
                self.count("Any content", n.into(), 1)?;
                for _ in 0..n {
                    self.any()?;
                }
                n.into()
            }
            // Doc (a subdocument): refused. yrs keeps the parent document alive from inside
            // its own store (a reference cycle: the room's document would never be freed), and
            // hosted rooms do not serve subdocuments.
            9 => return Err(WireError::Invalid("subdocument content")),
            _ => return Err(WireError::Invalid("content type")),
        })
    }

    /// One lib0 `Any` value, walked without recursion: the stack holds, per open array or map,
    /// how many values it still expects.
    fn any(&mut self) -> Result<(), WireError> {
        let mut open: [(u64, bool); MAX_DEPTH] = [(0, false); MAX_DEPTH];
        let mut depth = 0usize;
        loop {
            match self.u8()? {
                127 | 126 | 121 | 120 => {}
                125 => self.var_i64()?,
                124 => {
                    self.take(4)?;
                }
                123 | 122 => {
                    self.take(8)?;
                }
                119 => {
                    self.string()?;
                }
                116 => {
                    self.buf()?;
                }
                tag @ (117 | 118) => {
                    let map = tag == 118;
                    let n = self.var_u64()?;
                    self.count("Any container", n, if map { 2 } else { 1 })?;
                    if n > 0 {
                        if depth == MAX_DEPTH {
                            return Err(WireError::TooDeep);
                        }
                        open[depth] = (n, map);
                        depth += 1;
                        if map {
                            self.string()?; // the first key
                        }
                        continue;
                    }
                }
                _ => return Err(WireError::Invalid("Any tag")),
            }
            // A value ended: close every container it completes, then read the next key.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let (left, map) = &mut open[depth - 1];
                *left -= 1;
                if *left > 0 {
                    if *map {
                        self.string()?;
                    }
                    break;
                }
                depth -= 1;
            }
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
pub(crate) mod tests;
