//! One side of a relayed connection.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// The read half of a peer: TCP can wait for readiness without holding a buffer.
pub enum Reader {
    Tcp(OwnedReadHalf),
    Other(Box<dyn AsyncRead + Send + Unpin>),
}

pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// One side of a relayed connection: its read and write halves and the bytes already read from
/// it (what hyper had buffered past the HTTP head).
pub struct Peer {
    pub rd: Reader,
    pub wr: BoxWrite,
    pub prefix: Bytes,
}

impl Peer {
    /// A plain TCP connection splits without a lock and reads without an idle buffer.
    pub fn tcp(tcp: TcpStream, prefix: Bytes) -> Peer {
        let (rd, wr) = tcp.into_split();
        Peer {
            rd: Reader::Tcp(rd),
            wr: Box::new(wr),
            prefix,
        }
    }

    /// Anything else (TLS, hyper's `Upgraded`) is split through tokio's lock.
    pub fn io<T: AsyncRead + AsyncWrite + Send + 'static>(io: T, prefix: Bytes) -> Peer {
        let (rd, wr) = tokio::io::split(io);
        Peer {
            rd: Reader::Other(Box::new(rd)),
            wr: Box::new(wr),
            prefix,
        }
    }
}
