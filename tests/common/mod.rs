//! Test harness: the real wsedge server in-process on 127.0.0.1:0, a real upstream (hyper for
//! HTTP, tokio-tungstenite for WebSocket) and real clients. No fixed ports; every wait is bounded.
#![allow(dead_code)]

pub mod faulty;
pub mod hooks;
pub mod process;
pub mod push;
pub mod raw;
pub mod redis;
pub mod upstream;
pub mod yclient;

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsedge::config::Config;
use wsedge::server::Running;

#[allow(unused_imports)]
pub use upstream::{Event, Upstream};

/// Bounded wait for anything in tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub struct Edge {
    pub running: Option<Running>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub certdir: tempfile::TempDir,
}

impl Edge {
    /// Start wsedge with `routes` (TOML `[[route]]` tables) and `server_extra` lines for
    /// `[server]`; listeners on 127.0.0.1:0, certdir a fresh temp dir unless given.
    pub async fn start(server_extra: &str, routes: &str) -> Edge {
        let certdir = tempfile::tempdir().unwrap();
        Self::start_with_certdir(certdir, server_extra, routes).await
    }

    pub async fn start_with_certdir(
        certdir: tempfile::TempDir,
        server_extra: &str,
        routes: &str,
    ) -> Edge {
        Self::start_full(certdir, server_extra, routes, wsedge::proxy::redb_stores()).await
    }

    /// Start wsedge with room store files opened by `open_store`.
    pub async fn start_with_stores(
        open_store: wsedge::proxy::OpenStore,
        server_extra: &str,
        routes: &str,
    ) -> Edge {
        Self::start_full(
            tempfile::tempdir().unwrap(),
            server_extra,
            routes,
            open_store,
        )
        .await
    }

    async fn start_full(
        certdir: tempfile::TempDir,
        server_extra: &str,
        routes: &str,
        open_store: wsedge::proxy::OpenStore,
    ) -> Edge {
        init_tracing();
        // The admin listener on loopback, unless the test places it.
        let admin = if server_extra.contains("admin =") {
            ""
        } else {
            "admin = \"127.0.0.1:0\"\n"
        };
        let text = format!(
            "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\n{admin}certdir = \"{}\"\n{server_extra}\n{routes}",
            certdir.path().display()
        );
        let config = Config::parse(&text, "test.toml", &HashMap::<&str, &str>::new())
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
        let running = wsedge::server::start_with(config, open_store)
            .await
            .expect("server starts");
        Edge {
            http: running.http_addr,
            https: running.https_addr,
            running: Some(running),
            certdir,
        }
    }

    pub async fn shutdown(&mut self) -> bool {
        self.running.take().expect("running").shutdown().await
    }
}

/// A route table entry for an upstream, also served on the plain-HTTP listener (most tests
/// talk plain HTTP; the default there is a redirect to https).
pub fn route(path: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[[route]]\npath = \"{path}\"\nupstream = \"http://{upstream}\"\nplain_http = true\n{extra}\n"
    )
}

/// A port where nothing listens (bound, then released).
pub async fn dead_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Send a raw HTTP/1.1 request and read until the server closes or `WAIT` passes.
pub async fn raw_request(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Read from a stream until `needle` appears (bounded).
pub async fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    while !String::from_utf8_lossy(&out).contains(needle) {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A tokio-tungstenite client on the plain listener with extra request headers (bounded wait).
pub async fn ws_connect(
    edge: &Edge,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<TcpStream>,
        http::Response<Option<Vec<u8>>>,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    ws_connect_addr(edge.http, path, headers).await
}

/// [`ws_connect`] to any address (e.g. a `wsedge` child process).
pub async fn ws_connect_addr(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<TcpStream>,
        http::Response<Option<Vec<u8>>>,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://a.test{path}").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("handshake in time")
}

/// A WebSocket handshake written by hand on a fresh TCP connection to the plain listener (for
/// tests that need raw frames: what tungstenite would reject or rewrite). Returns after the 101.
pub async fn raw_upgrade(edge: &Edge, path: &str) -> TcpStream {
    let (status, head, tcp) = upgrade_status(edge.http, path).await;
    assert_eq!(status, 101, "{head}");
    tcp
}

/// One handshake by hand on a fresh connection: the status, the response head, and the socket
/// (hold it to keep an admitted connection open).
pub async fn upgrade_status(addr: SocketAddr, path: &str) -> (u16, String, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let head = read_until(&mut tcp, "\r\n\r\n").await;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    (status, head, tcp)
}

/// One HTTP/1.1 request with hyper's client over a fresh connection.
pub async fn get(
    addr: SocketAddr,
    req: http::Request<Full<bytes::Bytes>>,
) -> (http::response::Parts, bytes::Bytes) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp: http::Response<Incoming> = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .expect("response in time")
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body in time")
        .unwrap()
        .to_bytes();
    (parts, body)
}

pub fn request(path: &str, host: &str) -> http::request::Builder {
    http::Request::builder().uri(path).header("host", host)
}

pub fn empty() -> Full<bytes::Bytes> {
    Full::new(bytes::Bytes::new())
}

/// A TLS client config trusting the given CA certificate.
pub fn tls_client(
    ca: &rustls_pki_types::CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    wsedge::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

/// DNS SANs of the certificate the server presented.
pub fn peer_sans(s: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<String> {
    let certs = s
        .get_ref()
        .1
        .peer_certificates()
        .expect("server sent certificates");
    wsedge::tls::certbot::leaf_info(&certs[0]).unwrap().0
}

/// A client verifier that accepts any certificate (to look at the self-signed fallback).
#[derive(Debug)]
pub struct AcceptAny(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn tls_client_accept_any() -> Arc<rustls::ClientConfig> {
    wsedge::tls::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth(),
    )
}

/// `tests/js` with the npm packages its package-lock.json pins (`npm ci` when one of `needs`
/// is missing from its node_modules, e.g. after a package was added).
pub fn js_modules(needs: &[&str]) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if needs
        .iter()
        .any(|m| !dir.join("node_modules").join(m).exists())
    {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm is installed");
        assert!(status.success(), "npm ci in tests/js failed");
    }
    dir
}

/// Run `tests/js/scenarios.mjs` with `args` under Node (the real `yjs` + `y-websocket`): the
/// JSON line it prints last.
pub async fn js_scenario(args: Vec<String>) -> serde_json::Value {
    let dir = js_modules(&["y-websocket", "yjs", "ws"]);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(dir.join("scenarios.mjs"))
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}
