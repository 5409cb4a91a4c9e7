//! RFC 6455 framing, sans-IO. The relay never decodes or re-compresses payloads: it only needs
//! frame boundaries (to inject its own control frames between frames), control frames (to see
//! close codes and consume the pongs that answer its pings) and lengths (for limits). RSV bits are
//! passed through untouched, so `permessage-deflate` negotiated end to end keeps working.

use thiserror::Error;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest possible header: 2 + 8 (extended length) + 4 (mask).
pub const MAX_HEADER: usize = 14;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("control frame with {0} byte payload (max 125)")]
    ControlTooLong(u64),
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("64-bit payload length with the high bit set")]
    BadLength,
    #[error("frame masking does not match the sender's role")]
    BadMasking,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits (RSV1 = 0b100, set by permessage-deflate).
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes the header occupies on the wire.
    pub header_len: usize,
}

impl FrameHeader {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// Parse a header from the start of `buf`; `Ok(None)` when more bytes are needed.
    pub fn parse(buf: &[u8]) -> Result<Option<FrameHeader>, FrameError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let b0 = buf[0];
        let b1 = buf[1];
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        let opcode = b0 & 0x0F;
        if matches!(opcode, 0x3..=0x7 | 0xB..=0xF) {
            return Err(FrameError::ReservedOpcode(opcode));
        }
        let masked = b1 & 0x80 != 0;
        let len7 = (b1 & 0x7F) as u64;
        let (payload_len, mut at) = match len7 {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let n = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if n >> 63 != 0 {
                    return Err(FrameError::BadLength);
                }
                (n, 10)
            }
            n => (n, 2),
        };
        let mask = if masked {
            if buf.len() < at + 4 {
                return Ok(None);
            }
            let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        let h = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
            header_len: at,
        };
        if h.is_control() {
            if payload_len > 125 {
                return Err(FrameError::ControlTooLong(payload_len));
            }
            if !fin {
                return Err(FrameError::FragmentedControl);
            }
        }
        Ok(Some(h))
    }
}

/// XOR `data` with the masking key, as it sits at `offset` within the payload.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(offset + i) & 3];
    }
}

/// Encode a complete single frame (FIN set, no RSV). `mask` must be given for frames a client
/// role sends (toward an upstream), and omitted toward a client.
pub fn encode(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, opcode, payload, mask);
    out
}

/// `encode`, appending to `out` (frames queued for one write).
pub fn encode_into(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.reserve(MAX_HEADER + payload.len());
    out.push(0x80 | opcode);
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mbit | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(mbit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mbit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m, 0);
    }
}

/// Payload of a close frame: code then UTF-8 reason, truncated to fit 125 bytes.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    let mut r = reason;
    while r.len() > 123 {
        let mut cut = 123;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r = &r[..cut];
    }
    p.extend_from_slice(r.as_bytes());
    p
}

/// The (unmasked) payload of a complete control frame held in `raw`.
pub fn control_payload(h: &FrameHeader, raw: &[u8]) -> Vec<u8> {
    let mut p = raw[h.header_len..h.header_len + h.payload_len as usize].to_vec();
    if let Some(m) = h.mask {
        apply_mask(&mut p, m, 0);
    }
    p
}

/// Close code of a close frame's payload (1005 "no status" when empty).
pub fn close_code(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

/// What the scanner found at the front of the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A data-frame header of this many bytes is at the front (its payload follows as `Pass`).
    Header(FrameHeader, usize),
    /// Pass these many payload bytes through untouched.
    Pass(usize),
    /// A whole control frame of `len` bytes is at the front; the caller decides what to do with it.
    Control(FrameHeader, usize),
    /// Nothing can be decided before more bytes arrive.
    NeedMore,
}

/// Incremental frame scanner for one direction of a connection. Data payloads stream through
/// in whatever pieces they arrive in; only headers and control frames (at most 139 bytes) are
/// ever held back whole.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Payload bytes of the current data frame still to pass.
    remaining: u64,
    /// Header of the data frame whose payload is passing (for limits and logging).
    current: Option<FrameHeader>,
}

impl Scanner {
    /// True between frames: what was passed so far ends exactly at a frame boundary, so a frame
    /// of our own may be written now.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// The header of the data frame now passing or the last one passed.
    pub fn current(&self) -> Option<&FrameHeader> {
        self.current.as_ref()
    }

    /// Look at the front of `buf` (the bytes not yet consumed) and say what to do with it.
    /// The caller advances by the returned length.
    pub fn step(&mut self, buf: &[u8]) -> Result<Step, FrameError> {
        if buf.is_empty() {
            return Ok(Step::NeedMore);
        }
        if self.remaining > 0 {
            let n = (self.remaining.min(buf.len() as u64)) as usize;
            self.remaining -= n as u64;
            return Ok(Step::Pass(n));
        }
        let Some(h) = FrameHeader::parse(buf)? else {
            return Ok(Step::NeedMore);
        };
        if h.is_control() {
            let total = h.header_len + h.payload_len as usize;
            if buf.len() < total {
                return Ok(Step::NeedMore);
            }
            return Ok(Step::Control(h, total));
        }
        self.remaining = h.payload_len;
        self.current = Some(h);
        Ok(Step::Header(h, h.header_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(bytes: &[u8], chunk: usize) -> Vec<String> {
        let mut s = Scanner::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            pending.extend_from_slice(piece);
            loop {
                match s.step(&pending).unwrap() {
                    Step::Header(_, n) | Step::Pass(n) => {
                        out.push(format!("pass{n}"));
                        pending.drain(..n);
                    }
                    Step::Control(h, n) => {
                        out.push(format!("ctl{:x}:{}", h.opcode, n));
                        pending.drain(..n);
                    }
                    Step::NeedMore => break,
                }
            }
        }
        assert!(pending.is_empty());
        assert!(s.at_boundary());
        out
    }

    #[test]
    fn header_lengths() {
        let f = encode(OP_BINARY, &[7u8; 200], None);
        let h = FrameHeader::parse(&f).unwrap().unwrap();
        assert_eq!((h.payload_len, h.header_len, h.mask), (200, 4, None));
        let f = encode(OP_TEXT, &vec![1u8; 70_000], Some([1, 2, 3, 4]));
        let h = FrameHeader::parse(&f).unwrap().unwrap();
        assert_eq!((h.payload_len, h.header_len), (70_000, 14));
        assert_eq!(FrameHeader::parse(&f[..9]).unwrap(), None);
    }

    #[test]
    fn masking_round_trips() {
        let f = encode(OP_CLOSE, &close_payload(1001, "bye"), Some([9, 8, 7, 6]));
        let h = FrameHeader::parse(&f).unwrap().unwrap();
        let p = control_payload(&h, &f);
        assert_eq!(close_code(&p), 1001);
        assert_eq!(&p[2..], b"bye");
    }

    #[test]
    fn scanner_streams_data_and_isolates_control_frames() {
        let mut wire = encode(OP_TEXT, b"hello", None);
        wire.extend(encode(OP_PING, b"p", Some([1, 1, 1, 1])));
        wire.extend(encode(OP_BINARY, &[0u8; 300], None));
        wire.extend(encode(OP_CLOSE, &close_payload(1000, ""), None));
        // Whole buffer at once.
        assert_eq!(
            scan_all(&wire, wire.len()),
            vec!["pass2", "pass5", "ctl9:7", "pass4", "pass300", "ctl8:4"]
        );
        // Byte by byte: payloads are passed as they come, control frames only whole.
        let one = scan_all(&wire, 1);
        assert_eq!(one.iter().filter(|s| s.starts_with("ctl")).count(), 2);
        let passed: usize = one
            .iter()
            .filter_map(|s| s.strip_prefix("pass"))
            .map(|n| n.parse::<usize>().unwrap())
            .sum();
        assert_eq!(passed, 2 + 5 + 4 + 300);
    }

    #[test]
    fn rsv_bits_are_tolerated() {
        let mut f = encode(OP_TEXT, b"x", None);
        f[0] |= 0x40; // RSV1 as permessage-deflate sets it
        let h = FrameHeader::parse(&f).unwrap().unwrap();
        assert_eq!(h.rsv, 0b100);
    }

    #[test]
    fn protocol_errors() {
        assert_eq!(
            FrameHeader::parse(&[0x83, 0]),
            Err(FrameError::ReservedOpcode(3))
        );
        assert_eq!(
            FrameHeader::parse(&[0x89, 126, 0, 200]),
            Err(FrameError::ControlTooLong(200))
        );
        assert_eq!(
            FrameHeader::parse(&[0x09, 0]),
            Err(FrameError::FragmentedControl)
        );
        let mut big = vec![0x82, 127];
        big.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(FrameHeader::parse(&big), Err(FrameError::BadLength));
    }

    #[test]
    fn close_reason_truncated_on_char_boundary() {
        let p = close_payload(1000, &"é".repeat(100));
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }
}
