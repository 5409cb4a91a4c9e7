//! Certificates in certbot's layout: renewal under handshake load, corrupt renewals, new and
//! removed folders, the self-signed fallback being replaced, unknown names, key formats, expiry,
//! and :80's ACME webroot and redirects.

mod common;
use common::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wsedge::tls::devcerts::{self, DevCa};

fn serial_of(s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let certs = s.get_ref().1.peer_certificates().unwrap();
    wsedge::tls::certbot::leaf_details(&certs[0]).unwrap().2
}

/// Poll `f` every 50 ms until it returns Some, for at most `limit`.
async fn poll<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn serial_served(edge: &Edge, sni: &str, ca: &DevCa) -> Option<String> {
    tls_connect(edge.https, sni, tls_client(&ca.cert_der, &[]))
        .await
        .ok()
        .map(|s| serial_of(&s))
}

#[tokio::test]
async fn renewal_the_certbot_way_under_handshake_load() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certdir = dir.path().to_path_buf();
    let ca = Arc::new(DevCa::new().unwrap());
    let old = ca
        .write_certbot(&certdir, "a.test", &["a.test"], 1)
        .unwrap();
    let edge = Edge::start_with_certdir(dir, "", &route("/", up.addr, "")).await;
    assert_eq!(
        serial_served(&edge, "a.test", &ca).await.as_deref(),
        Some(old.as_str())
    );

    // A WebSocket over TLS opened before the renewal.
    let tls = tls_connect(
        edge.https,
        "a.test",
        tls_client(&ca.cert_der, &[b"http/1.1"]),
    )
    .await
    .unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async("wss://a.test/ws".into_client_request().unwrap(), tls)
            .await
            .unwrap();

    // Handshakes in a loop, recording failures and the newest serial seen.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let latest = Arc::new(std::sync::Mutex::new((old.clone(), None::<Instant>)));
    let looper = {
        let (stop, ok, failed, latest, ca, addr) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            latest.clone(),
            ca.clone(),
            edge.https,
        );
        tokio::spawn(async move {
            let client = tls_client(&ca.cert_der, &[]);
            while !stop.load(Ordering::Relaxed) {
                match tls_connect(addr, "a.test", client.clone()).await {
                    Ok(s) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let serial = serial_of(&s);
                        let mut l = latest.lock().unwrap();
                        if l.0 != serial {
                            *l = (serial, Some(Instant::now()));
                        }
                    }
                    Err(e) => {
                        eprintln!("handshake failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // certbot: new archive files, then unlink+symlink privkey, cert, chain, fullchain. The gaps
    // widen the window in which the new key and the old certificate are live together.
    let new = ca
        .write_archive(&certdir, "a.test", &["a.test"], 2, None)
        .unwrap();
    for kind in devcerts::LINK_ORDER {
        devcerts::link(&certdir, "a.test", kind, 2).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let last_link = Instant::now() - Duration::from_millis(150);
    let seen = poll(Duration::from_secs(5), || {
        let latest = latest.clone();
        let new = new.clone();
        async move {
            let l = latest.lock().unwrap();
            (l.0 == new).then(|| l.1.unwrap())
        }
    })
    .await
    .expect("the renewed certificate is served");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    looper.await.unwrap();
    let lag = seen.saturating_duration_since(last_link);
    eprintln!(
        "renewal: {} handshakes, {} failed, new serial served {:?} after the last symlink change",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        lag
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no handshake may fail during a renewal"
    );
    assert!(ok.load(Ordering::Relaxed) > 20);
    assert!(
        lag < Duration::from_secs(2),
        "new certificate served after {lag:?}"
    );

    // The WebSocket from before the renewal still echoes.
    ws.send(Message::text("still here")).await.unwrap();
    let got = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::text("still here"));
}

#[tokio::test]
async fn corrupt_or_mismatched_renewals_keep_the_old_certificate() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certdir = dir.path().to_path_buf();
    let ca = DevCa::new().unwrap();
    let old = ca
        .write_certbot(&certdir, "a.test", &["a.test"], 1)
        .unwrap();
    let mut edge = Edge::start_with_certdir(dir, "", &route("/", up.addr, "")).await;
    let store = edge.running.as_ref().unwrap().certs.clone();

    // Truncated fullchain.
    ca.write_archive(&certdir, "a.test", &["a.test"], 2, None)
        .unwrap();
    let f = certdir.join("archive/a.test/fullchain2.pem");
    let pem = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, &pem[..pem.len() / 2]).unwrap();
    for kind in devcerts::LINK_ORDER {
        devcerts::link(&certdir, "a.test", kind, 2).unwrap();
    }
    assert!(
        poll(WAIT, || async {
            (store.stats.failures.load(Ordering::Relaxed) > 0).then_some(())
        })
        .await
        .is_some(),
        "the corrupt renewal is noticed"
    );
    assert_eq!(
        serial_served(&edge, "a.test", &ca).await.as_deref(),
        Some(old.as_str())
    );

    // A key that belongs to another certificate.
    let before = store.stats.failures.load(Ordering::Relaxed);
    ca.write_archive(&certdir, "a.test", &["a.test"], 3, None)
        .unwrap();
    ca.write_archive(&certdir, "other", &["other.test"], 1, None)
        .unwrap();
    std::fs::copy(
        certdir.join("archive/other/privkey1.pem"),
        certdir.join("archive/a.test/privkey3.pem"),
    )
    .unwrap();
    for kind in devcerts::LINK_ORDER {
        devcerts::link(&certdir, "a.test", kind, 3).unwrap();
    }
    assert!(
        poll(WAIT, || async {
            (store.stats.failures.load(Ordering::Relaxed) > before).then_some(())
        })
        .await
        .is_some()
    );
    assert_eq!(
        serial_served(&edge, "a.test", &ca).await.as_deref(),
        Some(old.as_str())
    );
    let e = wsedge::tls::certbot::load_pair(
        &certdir.join("live/a.test/fullchain.pem"),
        &certdir.join("live/a.test/privkey.pem"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("live/a.test/fullchain.pem")
            && e.contains("live/a.test/privkey.pem")
            && e.contains("do not belong together"),
        "{e}"
    );

    // A good renewal afterwards is picked up.
    let good = ca
        .write_certbot(&certdir, "a.test", &["a.test"], 4)
        .unwrap();
    assert!(
        poll(WAIT, || async {
            (serial_served(&edge, "a.test", &ca).await? == good).then_some(())
        })
        .await
        .is_some()
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn new_folders_are_served_and_removed_ones_stop() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certdir = dir.path().to_path_buf();
    let ca = DevCa::new().unwrap();
    ca.write_certbot(&certdir, "a.test", &["a.test"], 1)
        .unwrap();
    let edge = Edge::start_with_certdir(dir, "", &route("/", up.addr, "")).await;
    assert!(serial_served(&edge, "d.test", &ca).await.is_none());
    let t = Instant::now();
    let serial = ca
        .write_certbot(&certdir, "d.test", &["d.test"], 1)
        .unwrap();
    let got = poll(WAIT, || serial_served(&edge, "d.test", &ca)).await;
    assert_eq!(got.as_deref(), Some(serial.as_str()));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "picked up after {:?}",
        t.elapsed()
    );
    std::fs::remove_dir_all(certdir.join("live/d.test")).unwrap();
    assert!(
        poll(WAIT, || async {
            serial_served(&edge, "d.test", &ca)
                .await
                .is_none()
                .then_some(())
        })
        .await
        .is_some()
    );
    assert!(serial_served(&edge, "a.test", &ca).await.is_some());
}

#[tokio::test]
async fn periodic_rescan_without_the_watcher() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certdir = dir.path().to_path_buf();
    let ca = DevCa::new().unwrap();
    ca.write_certbot(&certdir, "a.test", &["a.test"], 1)
        .unwrap();
    let edge = Edge::start_with_certdir(
        dir,
        "cert_watch = false\ncert_rescan = \"300ms\"",
        &route("/", up.addr, ""),
    )
    .await;
    let serial = ca
        .write_certbot(&certdir, "e.test", &["e.test"], 1)
        .unwrap();
    assert_eq!(
        poll(WAIT, || serial_served(&edge, "e.test", &ca)).await,
        Some(serial)
    );
}

#[tokio::test]
async fn self_signed_fallback_is_replaced_when_a_real_certificate_appears() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certdir = dir.path().to_path_buf();
    let routes = format!(
        "[[route]]\nhost = \"a.test\"\npath = \"/\"\nupstream = \"http://{}\"\n",
        up.addr
    );
    let edge = Edge::start_with_certdir(dir, "", &routes).await;
    let s = tls_connect(edge.https, "a.test", tls_client_accept_any())
        .await
        .unwrap();
    assert_eq!(
        peer_sans(&s),
        vec!["localhost".to_string(), "a.test".to_string()]
    );
    let ca = DevCa::new().unwrap();
    let serial = ca
        .write_certbot(&certdir, "a.test", &["a.test"], 1)
        .unwrap();
    assert_eq!(
        poll(WAIT, || serial_served(&edge, "a.test", &ca)).await,
        Some(serial)
    );
    assert!(
        edge.running
            .as_ref()
            .unwrap()
            .certs
            .current()
            .fallback
            .is_none(),
        "fallback retired"
    );
}

#[tokio::test]
async fn unknown_names_get_unrecognized_name_unless_a_default_cert_is_set() {
    let up = Upstream::start().await;
    let make = |ca: &DevCa| {
        let dir = tempfile::tempdir().unwrap();
        ca.write_certbot(dir.path(), "a.test", &["a.test"], 1)
            .unwrap();
        ca.write_certbot(dir.path(), "b.test", &["b.test", "*.b.test"], 1)
            .unwrap();
        ca.write_certbot(dir.path(), "c.test", &["c.test"], 1)
            .unwrap();
        dir
    };
    let ca = DevCa::new().unwrap();
    let edge = Edge::start_with_certdir(make(&ca), "", &route("/", up.addr, "")).await;
    let no_sni = "127.0.0.1"; // an IP address: rustls sends no SNI
    for name in ["unknown.test", "deep.x.b.test", no_sni] {
        let err = tls_connect(edge.https, name, tls_client_accept_any())
            .await
            .unwrap_err();
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .cloned();
        assert_eq!(
            inner,
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnrecognisedName
            )),
            "{name}: {err}"
        );
    }
    let edge = Edge::start_with_certdir(
        make(&ca),
        "default_cert = \"b.test\"",
        &route("/", up.addr, ""),
    )
    .await;
    for name in ["unknown.test", no_sni] {
        let s = tls_connect(edge.https, name, tls_client_accept_any())
            .await
            .unwrap();
        assert_eq!(peer_sans(&s)[0], "b.test", "{name}");
    }
    let s = tls_connect(edge.https, "c.test", tls_client_accept_any())
        .await
        .unwrap();
    assert_eq!(peer_sans(&s)[0], "c.test");
}

/// RSA (PKCS#1), ECDSA (SEC1) and PKCS#8 keys, made by the openssl CLI as certbot's users have them.
#[tokio::test]
async fn rsa_pkcs1_ec_sec1_and_pkcs8_keys() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sh = |cmd: &str, cwd: &Path| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(cwd)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for (name, keygen, marker) in [
        (
            "rsa.test",
            "openssl genrsa -traditional -out privkey.pem 2048",
            "BEGIN RSA PRIVATE KEY",
        ),
        (
            "ec.test",
            "openssl ecparam -name prime256v1 -genkey -noout -out privkey.pem",
            "BEGIN EC PRIVATE KEY",
        ),
        (
            "p8.test",
            "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out privkey.pem",
            "BEGIN PRIVATE KEY",
        ),
    ] {
        let d = dir.path().join("live").join(name);
        std::fs::create_dir_all(&d).unwrap();
        sh(keygen, &d);
        sh(
            &format!(
                "openssl req -x509 -key privkey.pem -out fullchain.pem -days 30 -subj /CN={name} -addext subjectAltName=DNS:{name}"
            ),
            &d,
        );
        assert!(
            std::fs::read_to_string(d.join("privkey.pem"))
                .unwrap()
                .contains(marker)
        );
    }
    let edge = Edge::start_with_certdir(dir, "", &route("/", up.addr, "")).await;
    for name in ["rsa.test", "ec.test", "p8.test"] {
        let s = tls_connect(edge.https, name, tls_client_accept_any())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(peer_sans(&s), vec![name.to_string()]);
    }
    // openssl's `-days 30` certificates are inside the 14-day warning window? No: 30 days left.
    let store = edge.running.as_ref().unwrap().certs.clone();
    let now = wsedge::tls::unix_now();
    for (_, _, not_after) in store.expiry() {
        let days = (not_after - now) / 86_400;
        assert!((29..=30).contains(&days), "{days}");
    }
}

#[tokio::test]
async fn expiry_is_exposed_and_soon_expiring_certificates_are_flagged() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new().unwrap();
    ca.write_archive(dir.path(), "soon.test", &["soon.test"], 1, Some(5))
        .unwrap();
    for kind in devcerts::LINK_ORDER {
        devcerts::link(dir.path(), "soon.test", kind, 1).unwrap();
    }
    let edge = Edge::start_with_certdir(dir, "", &route("/", up.addr, "")).await;
    let map = edge.running.as_ref().unwrap().certs.current();
    let c = &map.certs["soon.test"];
    let days = c.days_left(wsedge::tls::unix_now());
    assert!((4..=5).contains(&days), "{days}");
    assert!(days < wsedge::tls::EXPIRY_WARNING_DAYS);
}

#[tokio::test]
async fn port_80_serves_acme_challenges_and_redirects_the_rest() {
    let up = Upstream::start().await;
    let webroot = tempfile::tempdir().unwrap();
    let challenges = webroot.path().join(".well-known/acme-challenge");
    std::fs::create_dir_all(&challenges).unwrap();
    let token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
    std::fs::write(
        challenges.join(token),
        "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI",
    )
    .unwrap();
    std::fs::write(webroot.path().join("secret.txt"), "do not serve").unwrap();
    let routes = format!(
        "[[route]]\npath = \"/\"\nupstream = \"http://{0}\"\n[[route]]\npath = \"/open\"\nupstream = \"http://{0}\"\nplain_http = true\n",
        up.addr
    );
    let edge = Edge::start(
        &format!("acme_webroot = \"{}\"", webroot.path().display()),
        &routes,
    )
    .await;

    let (p, body) = get(
        edge.http,
        request(&format!("/.well-known/acme-challenge/{token}"), "a.test")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(p.status, 200);
    assert_eq!(p.headers["content-type"], "text/plain");
    assert!(body.starts_with(token.as_bytes()));
    for bad in [
        "/.well-known/acme-challenge/..%2f..%2fetc%2fpasswd",
        "/.well-known/acme-challenge/../secret.txt",
        "/.well-known/acme-challenge/..%2fsecret.txt",
        "/.well-known/acme-challenge/a.b",
    ] {
        let resp = raw_request(
            edge.http,
            format!("GET {bad} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{bad}: {resp}");
        assert!(
            !resp.contains("do not serve") && !resp.contains("root:"),
            "{bad}: {resp}"
        );
    }
    let (p, _) = get(
        edge.http,
        request("/.well-known/acme-challenge/missing", "a.test")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(p.status, 404);

    let port = edge.https.port();
    let (p, _) = get(
        edge.http,
        request("/page?x=1&y=2", "a.test").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(p.status, 301);
    assert_eq!(
        p.headers["location"],
        format!("https://a.test:{port}/page?x=1&y=2")
    );
    let (p, _) = get(
        edge.http,
        request("/form", "a.test")
            .method("POST")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(p.status, 308);
    assert_eq!(p.headers["location"], format!("https://a.test:{port}/form"));
    // A route marked plain_http is proxied on :80.
    let (p, body) = get(
        edge.http,
        request("/open/x", "a.test").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(p.status, 200);
    assert_eq!(&body[..], b"upstream saw /open/x");
}
