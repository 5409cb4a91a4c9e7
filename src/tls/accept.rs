//! TLS accept with an SNI check before the handshake goes on: a ClientHello for a name no
//! certificate covers (or without SNI) gets the `default_cert` if one is configured, else a fatal
//! `unrecognized_name` alert (RFC 6066 §3). rustls alone would answer `access_denied`.

use super::CertStore;
use rustls::server::Acceptor;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::StartHandshake;
use tokio_rustls::server::TlsStream;

/// A plaintext TLS alert record: fatal (2), unrecognized_name (112).
const UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("connection closed before the ClientHello")]
    Eof,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad ClientHello: {0}")]
    Tls(rustls::Error),
    #[error("no certificate for server name {0:?}")]
    UnknownName(Option<String>),
}

pub async fn accept(
    mut tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    store: &CertStore,
) -> Result<TlsStream<TcpStream>, AcceptError> {
    let mut acceptor = Acceptor::default();
    let mut buf = vec![0u8; 4096];
    let accepted = loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Err(AcceptError::Eof);
        }
        let mut rd = &buf[..n];
        while !rd.is_empty() {
            acceptor.read_tls(&mut rd)?;
        }
        match acceptor.accept() {
            Ok(Some(a)) => break a,
            Ok(None) => continue,
            Err((e, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = tcp.write_all(&out).await;
                return Err(AcceptError::Tls(e));
            }
        }
    };
    let sni = accepted.client_hello().server_name().map(str::to_string);
    if store.current().lookup(sni.as_deref()).is_none() {
        let _ = tcp.write_all(&UNRECOGNIZED_NAME).await;
        let _ = tcp.shutdown().await;
        return Err(AcceptError::UnknownName(sni));
    }
    Ok(StartHandshake::from_parts(accepted, tcp)
        .into_stream(config)
        .await?)
}
