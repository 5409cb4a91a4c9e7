//! TLS listener: certificates from a certbot-layout CERTDIR chosen by SNI, ALPN h2, TLS 1.2/1.3,
//! and the self-signed fallback on an empty CERTDIR.

mod common;
use common::*;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};

async fn edge_with_certs(up: std::net::SocketAddr) -> (Edge, wsedge::tls::devcerts::DevCa) {
    let dir = tempfile::tempdir().unwrap();
    let ca = wsedge::tls::devcerts::DevCa::new().unwrap();
    ca.write_certbot(dir.path(), "a.test", &["a.test", "www.a.test"], 1)
        .unwrap();
    ca.write_certbot(dir.path(), "b.test", &["b.test", "*.b.test"], 1)
        .unwrap();
    ca.write_certbot(dir.path(), "c.test", &["c.test"], 1)
        .unwrap();
    // A folder certbot would never leave, to show one broken entry does not stop the others.
    std::fs::create_dir_all(dir.path().join("live/broken")).unwrap();
    std::fs::write(dir.path().join("live/broken/fullchain.pem"), "not a pem").unwrap();
    std::fs::write(dir.path().join("live/broken/privkey.pem"), "not a pem").unwrap();
    (
        Edge::start_with_certdir(dir, "", &route("/", up, "")).await,
        ca,
    )
}

#[tokio::test]
async fn sni_picks_the_certificate_from_its_sans() {
    let up = Upstream::start().await;
    let (edge, ca) = edge_with_certs(up.addr).await;
    let client = tls_client(&ca.cert_der, &[]);
    for (sni, expect) in [
        ("a.test", "a.test"),
        ("www.a.test", "a.test"),
        ("b.test", "b.test"),
        ("x.b.test", "b.test"),
        ("c.test", "c.test"),
    ] {
        let s = tls_connect(edge.https, sni, client.clone())
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(peer_sans(&s)[0], expect, "SNI {sni}");
    }
    // The wildcard covers one label only, and unknown names get no certificate.
    assert!(
        tls_connect(edge.https, "deep.x.b.test", client.clone())
            .await
            .is_err()
    );
    assert!(
        tls_connect(edge.https, "unknown.test", client)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn tls12_and_tls13_both_work() {
    let up = Upstream::start().await;
    let (edge, ca) = edge_with_certs(up.addr).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).unwrap();
        let cfg = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots)
            .with_no_client_auth();
        let s = tls_connect(edge.https, "a.test", std::sync::Arc::new(cfg))
            .await
            .unwrap();
        assert_eq!(s.get_ref().1.protocol_version(), Some(version.version));
    }
}

#[tokio::test]
async fn http2_over_tls_via_alpn_reaches_an_http11_upstream() {
    let mut up = Upstream::start().await;
    let (edge, ca) = edge_with_certs(up.addr).await;
    let tls = tls_connect(
        edge.https,
        "a.test",
        tls_client(&ca.cert_der, &[b"h2", b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req = http::Request::builder()
            .uri(format!("https://a.test/h2/{i}"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"body",
            )))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], format!("upstream saw /h2/{i}").as_bytes());
        let Event::Request {
            version, headers, ..
        } = up.next().await
        else {
            panic!()
        };
        assert_eq!(version, http::Version::HTTP_11);
        assert_eq!(headers["host"], "a.test");
        assert_eq!(headers["x-forwarded-proto"], "https");
    }
}

#[tokio::test]
async fn empty_certdir_serves_a_self_signed_fallback() {
    let up = Upstream::start().await;
    let edge = Edge::start("", &route("/", up.addr, "")).await;
    let s = tls_connect(edge.https, "anything.test", tls_client_accept_any())
        .await
        .unwrap();
    assert_eq!(peer_sans(&s), vec!["localhost".to_string()]);
    // And https requests are served with it.
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(request("/x", "anything.test").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
