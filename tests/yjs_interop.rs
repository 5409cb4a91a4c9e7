//! Interop with the real JavaScript `yjs` + `y-websocket` packages under Node (installed from the
//! npm registry by this test's setup when `tests/js/node_modules` is missing).

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn ensure_node_modules() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if !dir.join("node_modules/y-websocket").exists() {
        // `npm ci` installs exactly what package-lock.json pins.
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm is installed");
        assert!(status.success(), "npm install in tests/js failed");
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn y_websocket_clients_sync_through_a_rooms_route() {
    let dir = ensure_node_modules();
    let edge = Edge::start(
        "",
        "[[route]]\npath = \"/wss\"\nrooms = { store = \"memory\" }\nplain_http = true\n",
    )
    .await;
    let url = format!("ws://{}/wss", edge.http);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("interop.mjs"))
            .args([&url, "doc-1"])
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
    let line = stdout.lines().last().unwrap_or_default();
    for expect in [
        "\"awarenessSeen\":true",
        "\"awarenessRemoved\":true",
        "\"other\":\"\"",
        "\"mapA\":{\"a\":1,\"b\":2}",
    ] {
        assert!(
            line.contains(expect)
                || line.contains(&expect.replace("{\"a\":1,\"b\":2}", "{\"b\":2,\"a\":1}")),
            "{expect} missing in {line}"
        );
    }
    // Both texts converged to the same string, and the late joiner has it too.
    let field = |name: &str| {
        let start = line
            .find(&format!("\"{name}\":\""))
            .unwrap_or_else(|| panic!("{name} in {line}"))
            + name.len()
            + 4;
        let end = start + line[start..].find('"').unwrap();
        line[start..end].to_string()
    };
    let (a, b, late) = (field("textA"), field("textB"), field("late"));
    assert_eq!(a, b);
    assert_eq!(a, late);
    assert!(
        a.contains("hello from A.") && a.contains("hello from B."),
        "{a}"
    );
    assert_eq!(edge.running.as_ref().unwrap().proxy.open_rooms(), 2);
}
