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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpdateShape {
    /// Delete-set ranges: each may split an item, which costs more in the document's encoding
    /// than the few bytes the range took on the wire.
    pub delete_ranges: u64,
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
        for _ in 0..structs {
            clock += r.block()?;
            if clock > MAX_CLOCK {
                return Err(WireError::Invalid("clock past 2^31"));
            }
        }
    }
    // The delete set: clients, each with (clock, len) ranges.
    let mut shape = UpdateShape::default();
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
        if info == GC || info == SKIP {
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
pub(crate) mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::updates::encoder::Encode;
    use yrs::{
        Any, Array, Doc, Map, ReadTxn, StateVector, Text, Transact, Update, WriteTxn, XmlFragment,
    };

    fn varuint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// An update of one item whose content is one `Any` of `depth` nested arrays around `null`.
    pub(crate) fn nested_any_update(depth: usize) -> Vec<u8> {
        let mut u = vec![1, 1]; // one client, one struct
        varuint(7, &mut u); // client 7
        u.push(0); // clock 0
        u.push(8); // info: Any content, no origins
        u.push(1); // parent is a named type
        u.extend([1, b't']);
        u.push(1); // one Any value
        for _ in 0..depth {
            u.extend([117, 1]);
        }
        u.push(126);
        u.push(0); // empty delete set
        u
    }

    #[test]
    fn real_updates_of_every_kind_pass_and_decode() {
        let doc = Doc::with_client_id(123_456_789);
        {
            let mut txn = doc.transact_mut();
            let text = txn.get_or_insert_text("text");
            text.insert(&mut txn, 0, "héllo wörld 👋");
            text.format(&mut txn, 0, 3, [("bold".into(), Any::Bool(true))].into());
            text.remove_range(&mut txn, 1, 2);
            let map = txn.get_or_insert_map("map");
            let nested: Any = serde_json::from_str(
                r#"{"a":[1,2.5,{"b":[null,true,"x",{"c":[[[]]]}]}],"n":-123456789012}"#,
            )
            .unwrap();
            map.insert(&mut txn, "json", nested);
            map.insert(&mut txn, "bin", Any::Buffer(vec![1, 2, 3].into()));
            map.insert(&mut txn, "big", Any::from(-1i64 << 60));
            map.insert(&mut txn, "sub", yrs::MapPrelim::default());
            let arr = txn.get_or_insert_array("arr");
            arr.insert_range(&mut txn, 0, [1, 2, 3]);
            arr.remove_range(&mut txn, 0, 1);
            let xml = txn.get_or_insert_xml_fragment("xml");
            let el = xml.insert(&mut txn, 0, yrs::XmlElementPrelim::empty("p"));
            el.insert(&mut txn, 0, yrs::XmlTextPrelim::new("para"));
        }
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        check_update(&update).unwrap();
        Update::decode_v1(&update).unwrap();
        let sv = doc.transact().state_vector().encode_v1();
        check_state_vector(&sv).unwrap();
        check_state_vector(&StateVector::default().encode_v1()).unwrap();
    }

    #[test]
    fn deep_nesting_is_refused_below_the_limit_passes() {
        check_update(&nested_any_update(MAX_DEPTH)).unwrap();
        Update::decode_v1(&nested_any_update(MAX_DEPTH)).unwrap();
        assert_eq!(
            check_update(&nested_any_update(MAX_DEPTH + 1)),
            Err(WireError::TooDeep)
        );
        assert_eq!(
            check_update(&nested_any_update(100_000)),
            Err(WireError::TooDeep)
        );
    }

    #[test]
    fn huge_declared_counts_are_refused_before_anything_is_reserved() {
        // SyncStep1 state vector claiming 2^29 entries (the 9-byte bomb).
        let mut sv = Vec::new();
        varuint(1 << 29, &mut sv);
        sv.extend([1, 1]);
        assert!(matches!(
            check_state_vector(&sv),
            Err(WireError::Count { .. })
        ));
        // Awareness claiming 2^40 clients.
        let mut aw = Vec::new();
        varuint(1 << 40, &mut aw);
        assert!(matches!(check_awareness(&aw), Err(WireError::Count { .. })));
        // Update: clients, structs, delete-set clients and ranges, Any containers.
        for bomb in [
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
            vec![1, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 0],
            vec![0, 0xff, 0xff, 0xff, 0xff, 0x0f],
            vec![0, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ] {
            assert!(
                matches!(check_update(&bomb), Err(WireError::Count { .. })),
                "{bomb:?}"
            );
        }
        let mut any_map = vec![1, 1, 7, 0, 8, 1, 1, b't', 1, 118];
        varuint(1 << 50, &mut any_map);
        assert!(matches!(
            check_update(&any_map),
            Err(WireError::Count { .. })
        ));
    }

    #[test]
    fn varints_wider_than_their_type_and_bad_ids_are_refused() {
        // A u32 count in 6 bytes, or with bits past 32.
        assert!(matches!(
            check_state_vector(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(WireError::VarInt(0))
        ));
        assert!(matches!(
            check_state_vector(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(WireError::VarInt(0))
        ));
        // u32::MAX itself is a valid varint (then too many entries).
        assert!(matches!(
            check_state_vector(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(WireError::Count { .. })
        ));
        // A client id of 2^60.
        let mut sv = vec![1];
        varuint(1 << 60, &mut sv);
        sv.push(0);
        assert_eq!(
            check_state_vector(&sv),
            Err(WireError::Invalid("client id over 2^53"))
        );
        // u64::MAX is 10 bytes; an 11th is refused.
        let mut v = vec![0xff; 9];
        v.push(0x01);
        assert_eq!(Reader::new(&v).var_u64(), Ok(u64::MAX));
        let mut v = vec![0xff; 9];
        v.push(0x02);
        assert!(Reader::new(&v).var_u64().is_err());
    }

    #[test]
    fn clocks_past_2_31_are_refused() {
        // A GC struct at clock ~3.6e9 and a delete below it: yrs integrated the struct without
        // the skip before it, then panicked deleting (fuzz/regressions/room_frame).
        let u = [
            1, 1, 1, 0xff, 0xff, 0xff, 0xda, 0x0d, 0, 0x28, 1, 1, 1, 0, 3,
        ];
        assert_eq!(check_update(&u), Err(WireError::Invalid("clock past 2^31")));
        let at_limit = [1, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x07, 0, 1, 0];
        assert!(check_update(&at_limit).is_ok());
        let mut ds = vec![0, 1, 1, 1];
        ds.extend([0xff, 0xff, 0xff, 0xff, 0x07, 1]);
        assert_eq!(
            check_update(&ds),
            Err(WireError::Invalid("delete range past 2^31"))
        );
    }

    #[test]
    fn what_yrs_mishandles_is_refused() {
        // Client 7's structs twice (yrs would integrate "b" over "a": a use-after-free).
        let twice = [
            2, 1, 7, 0, 4, 1, 1, b't', 1, b'a', 1, 7, 0, 4, 1, 1, b't', 1, b'b', 0,
        ];
        assert_eq!(
            check_update(&twice),
            Err(WireError::Invalid(
                "update clients repeated or out of order"
            ))
        );
        // Increasing order is not what Yjs or yrs write either.
        let up = [
            2, 1, 7, 0, 4, 1, 1, b't', 1, b'a', 1, 8, 0, 4, 1, 1, b't', 1, b'b', 0,
        ];
        assert!(check_update(&up).is_err());
        let down = [
            2, 1, 8, 0, 4, 1, 1, b't', 1, b'a', 1, 7, 0, 4, 1, 1, b't', 1, b'b', 0,
        ];
        assert!(check_update(&down).is_ok());
        // A subdocument item, and bytes after the delete set.
        let doc = [1, 1, 7, 0, 9, 1, 1, b't', 1, b'g', 126, 0];
        assert_eq!(
            check_update(&doc),
            Err(WireError::Invalid("subdocument content"))
        );
        let trailing = [1, 1, 7, 0, 4, 1, 1, b't', 1, b'a', 0, 0];
        assert_eq!(
            check_update(&trailing),
            Err(WireError::Invalid("bytes after the delete set"))
        );
        // Delete ranges count toward the growth bound.
        let ds = [0, 1, 7, 2, 0, 1, 5, 1];
        assert_eq!(check_update(&ds).unwrap().growth(ds.len()), 8 + 64);
    }

    #[test]
    fn awareness_and_frames_are_bounded_to_what_clients_send() {
        let mut many = Vec::new();
        varuint(MAX_AWARENESS_ENTRIES + 1, &mut many);
        for i in 0..=MAX_AWARENESS_ENTRIES {
            many.extend([i as u8 + 1, 1, 4]);
            many.extend(b"null");
        }
        assert!(check_awareness(&many).is_err());
        // A clock past u32 (y-protocols after someone pushed it to u32::MAX) is not refused.
        let mut big_clock = vec![1, 5];
        varuint(1 << 32, &mut big_clock);
        big_clock.extend([2, b'{', b'}']);
        assert!(check_awareness(&big_clock).is_ok());
        let frame = vec![3u8; MAX_MESSAGES + 1];
        assert!(split(&frame).is_err());
        assert_eq!(split(&frame[..MAX_MESSAGES]).unwrap().len(), MAX_MESSAGES);
    }

    #[test]
    fn legacy_json_content_is_refused() {
        // Item (client 7, clock 0) in root "t" with ContentJSON of one string "1".
        let u = [1, 1, 7, 0, 2, 1, 1, b't', 1, 1, b'1', 1, b'2', 0];
        assert_eq!(
            check_update(&u),
            Err(WireError::Invalid("legacy JSON content"))
        );
    }

    #[test]
    fn frames_split_into_messages() {
        let frame = [0, 0, 1, 0, 0, 2, 2, 0, 0, 3, 1, 1, 0];
        assert_eq!(
            split(&frame).unwrap(),
            vec![
                Msg::SyncStep1(&[0]),
                Msg::Update(&[0, 0]),
                Msg::QueryAwareness,
                Msg::Awareness(&[0]),
            ]
        );
        assert!(split(&[0, 2, 5, 1]).is_err(), "truncated payload");
        assert!(split(&[0, 7, 0]).is_err(), "unknown sync type");
        assert_eq!(split(&[9, 1, 0]).unwrap(), vec![Msg::Custom(9)]);
        assert_eq!(split(&[]).unwrap(), vec![]);
    }
}
