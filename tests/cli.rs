//! The binary: `check` reports every config problem with field and line; `--version`; `run`
//! refuses a bad config; a large body streams through without being buffered (peak RSS).

mod common;
use common::process::*;
use common::*;

use std::process::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("wsedge {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_the_example_config() {
    let out = Command::new(BIN)
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn check_lists_every_problem_with_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nhttps = \"443\"\n\n[[route]]\npath = \"/\"\nupstream = \"http://127.0.0.1:3000\"\n\n[[route]]\npath = \"/\"\nupstream = \"http://127.0.0.1:3001\"\nconnect_timeout = 0\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(
        err.contains("bad.toml:2: server.https: \"443\" is not a socket address"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:8: route[1]: duplicate route"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:11: route[1].connect_timeout: must be greater than 0"),
        "{err}"
    );

    // A syntax-level problem names the field path and line too.
    std::fs::write(&path, "[server]\nhttp = \"[::]:80\"\nlisten = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("bad.toml:3: server.listen: unknown field `listen`"),
        "{err}"
    );

    // `run` goes through the same load and refuses to start.
    let out = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `listen`"));

    let out = Command::new(BIN)
        .args(["check", "-c", "/nonexistent/wsedge.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read config /nonexistent/wsedge.toml")
    );
}

/// Integers and strings share the one-year bound (an integer past it used to pass `check` and
/// then panic every WebSocket at `Instant + Duration`).
#[test]
fn check_refuses_durations_past_a_year_as_integers_or_strings() {
    let check = |config: &str| {
        let (code, err) = run_check(config);
        assert_eq!(code, Some(1), "{config}");
        err
    };
    let route = "[[route]]\npath = \"/\"\nupstream = \"http://127.0.0.1:3000\"\n";
    let err = check(&format!(
        "[guard]\nidle_timeout = 9223372036854775807\n\n{route}"
    ));
    assert!(
        err.contains(
            "config.toml:2: guard.idle_timeout: invalid duration 9223372036854775807: longer than a year"
        ),
        "{err}"
    );
    let err = check(&format!(
        "{route}guard = {{ idle_timeout = 9223372036854775807 }}\n"
    ));
    assert!(
        err.contains(
            "route[0].guard.idle_timeout: invalid duration 9223372036854775807: longer than a year"
        ),
        "{err}"
    );
    let err = check(&format!("[guard]\nidle_timeout = \"366d\"\n\n{route}"));
    assert!(
        err.contains("guard.idle_timeout: invalid duration \"366d\": longer than a year"),
        "{err}"
    );
    let err = check(&format!("[server]\nshutdown_grace = 31536001\n\n{route}"));
    assert!(
        err.contains("server.shutdown_grace: invalid duration 31536001: longer than a year"),
        "{err}"
    );
    // A year is still fine, in either form.
    for year in ["31536000", "\"365d\""] {
        let (code, err) = run_check(&format!("[guard]\nidle_timeout = {year}\n\n{route}"));
        assert_eq!(code, Some(0), "{year}: {err}");
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn large_bodies_stream_through_without_buffering() {
    const SIZE: u64 = 1 << 30; // 1 GiB each way
    let up = Upstream::start().await;
    let config = format!(
        "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\ncertdir = \"CERTDIR\"\n\n[[route]]\npath = \"/\"\nupstream = \"http://{}\"\nplain_http = true\n",
        up.addr
    );
    let mut child = spawn_wsedge(&config);
    let addr = child.addr;

    // Upload: 1 GiB with a declared length, written in 1 MiB pieces.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let piece = vec![b'u'; 1 << 20];
    for _ in 0..(SIZE >> 20) {
        s.write_all(&piece).await.unwrap();
    }
    let mut resp = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        s.read_to_string(&mut resp),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with(&SIZE.to_string()),
        "{resp}"
    );

    // Download: 1 GiB streamed (chunked) from the upstream.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /download?n={SIZE} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(60), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert!(total > SIZE, "headers + chunk framing + 1 GiB, got {total}");

    let peak = peak_rss_kib(child.child.id());
    let _ = child.child.kill();
    let _ = child.child.wait();
    assert!(
        peak < 100 * 1024,
        "peak RSS {peak} KiB after 2 GiB streamed: something buffered"
    );
    eprintln!("wsedge peak RSS after streaming 1 GiB up and 1 GiB down: {peak} KiB");
}

#[tokio::test]
async fn access_log_lines_and_sigterm() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let up = Upstream::start().await;
    let config = format!(
        "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\ncertdir = \"CERTDIR\"\nshutdown_grace = \"5s\"\n\n[[route]]\npath = \"/\"\nupstream = \"http://{}\"\nplain_http = true\n",
        up.addr
    );
    let mut child = spawn_wsedge(&config);
    let resp = raw_request(
        child.addr,
        b"GET /logged?q=1 HTTP/1.1\r\nHost: log.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let l = child.wait_line(&["access", "kind=\"http\"", "path=/logged"]);
    for field in [
        "client=127.0.0.1",
        "method=GET",
        "host=log.test",
        "status=200",
        "bytes_out=",
        "duration_ms=",
    ] {
        assert!(l.contains(field), "{field} missing in {l}");
    }

    let tcp = tokio::net::TcpStream::connect(child.addr).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async("ws://log.test/ws/a".into_client_request().unwrap(), tcp)
            .await
            .unwrap();
    ws.send(Message::text("12345")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("12345"));
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    let l = child.wait_line(&["access", "kind=\"websocket\"", "path=/ws/a"]);
    for field in [
        "client=127.0.0.1",
        "host=log.test",
        "status=101",
        "bytes_in=",
        "bytes_out=",
        "duration_ms=",
        "close_code=1005",
    ] {
        assert!(l.contains(field), "{field} missing in {l}");
    }

    // SIGTERM: a clean exit, well inside the grace period.
    let t = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = loop {
        if let Some(s) = child.child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < WAIT, "wsedge did not exit after SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(code.success(), "{code:?}");
    child.wait_line(&["SIGTERM received"]);
}

#[test]
fn sighup_rescans_certificates() {
    let config = "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\ncertdir = \"CERTDIR\"\ncert_watch = false\ncert_rescan = 0\n";
    let mut child = spawn_wsedge(config);
    let certdir = child.dir.path().join("certs");
    let ca = wsedge::tls::devcerts::DevCa::new().unwrap();
    ca.write_certbot(&certdir, "hup.test", &["hup.test"], 1)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !child
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("folder=hup.test")),
        "without watcher or timer nothing picks the certificate up by itself"
    );
    let pid = child.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    child.wait_line(&["certificate loaded", "folder=hup.test"]);
    let _ = child.child.kill();
    let _ = child.child.wait();
}

#[test]
fn expiring_certificate_is_warned_about() {
    let config =
        "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\ncertdir = \"CERTDIR\"\n";
    let mut child = spawn_wsedge_with(config, |certdir| {
        let ca = wsedge::tls::devcerts::DevCa::new().unwrap();
        ca.write_archive(certdir, "soon.test", &["soon.test"], 1, Some(3))
            .unwrap();
        for kind in wsedge::tls::devcerts::LINK_ORDER {
            wsedge::tls::devcerts::link(certdir, "soon.test", kind, 1).unwrap();
        }
    });
    let l = child.wait_line(&["WARN", "certificate expires soon", "folder=soon.test"]);
    assert!(
        l.contains("days_left=2") || l.contains("days_left=3"),
        "{l}"
    );
    let _ = child.child.kill();
    let _ = child.child.wait();
}

#[test]
fn check_warns_when_push_identity_cannot_be_believed() {
    let route =
        "[[route]]\npath = \"/server_notifications\"\npush = { user_header = \"x-auth-user\" }\n";
    let (code, err) = run_check(route);
    assert_eq!(code, Some(0), "valid, with a warning");
    assert!(
        err.contains("warning: route[0].push: x-auth-user / x-auth-guest are believed only from [limits] trusted_proxies, which is empty"),
        "{err}"
    );
    // Believed now; with open origins, a cookie-derived identity could be hijacked: warned.
    let trusted = "[limits]\ntrusted_proxies = [\"10.0.0.0/8\"]\n";
    let (code, err) = run_check(&format!("{trusted}{route}"));
    assert_eq!(code, Some(0));
    assert!(
        err.contains("warning: route[0].push: allowed_origins is empty")
            && !err.contains("believed only"),
        "{err}"
    );
    let listed = route.replace(
        "push = { ",
        "push = { allowed_origins = [\"https://app.example.com\"], ",
    );
    let (code, err) = run_check(&format!("{trusted}{listed}"));
    assert_eq!(code, Some(0));
    assert!(!err.contains("warning"), "{err}");
}

/// `wsedge check` on `config` (written to a temporary file): its exit code and stderr.
fn run_check(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
