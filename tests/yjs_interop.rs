//! Interop with the real JavaScript `yjs` + `y-websocket` packages under Node (installed from the
//! npm registry by this test's setup when `tests/js/node_modules` is missing).

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn ensure_node_modules() -> std::path::PathBuf {
    js_modules(&["y-websocket", "yjs", "ws"])
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

fn node(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("node")
        .arg(dir.join("persist.mjs"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "node {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_state_survives_a_restart_with_a_redb_store() {
    let dir = ensure_node_modules();
    let data = tempfile::tempdir().unwrap();
    let store = data.path().join("rooms.redb");
    let routes = format!(
        "[[route]]\npath = \"/wss\"\nrooms = {{ store = \"{}\" }}\nplain_http = true\n",
        store.display()
    );
    let mut edge = Edge::start("", &routes).await;
    let url = format!("ws://{}/wss", edge.http);
    let (d, u) = (dir.clone(), url.clone());
    tokio::task::spawn_blocking(move || {
        node(&d, &["write", &u, "kept", "written before the restart"])
    })
    .await
    .unwrap();
    assert!(
        edge.shutdown().await,
        "clean shutdown (the store is flushed)"
    );

    let edge = Edge::start("", &routes).await;
    let url = format!("ws://{}/wss", edge.http);
    let (d, u) = (dir.clone(), url.clone());
    let text = tokio::task::spawn_blocking(move || node(&d, &["read", &u, "kept"]))
        .await
        .unwrap();
    assert_eq!(text, "written before the restart");
    let (d, u) = (dir.clone(), url.clone());
    let other = tokio::task::spawn_blocking(move || node(&d, &["read", &u, "never-written"]))
        .await
        .unwrap();
    assert_eq!(other, "");
}

/// Run `scenarios.mjs` with `args`; its JSON line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_providers_making_fifty_edits_each_converge() {
    let edge = Edge::start(
        "",
        "[[route]]\npath = \"/wss\"\nrooms = { store = \"memory\" }\nplain_http = true\n",
    )
    .await;
    let url = format!("ws://{}/wss", edge.http);
    let r = js_scenario(vec![
        "many".into(),
        url,
        "crowd".into(),
        "20".into(),
        "50".into(),
    ])
    .await;
    assert_eq!(r["mapSize"], 1000, "{r}");
    assert_eq!(
        r["textLen"], r["expectedLen"],
        "every text insert arrived: {r}"
    );
    assert_eq!(r["sameCharacters"], true, "{r}");
    assert_eq!(r["allEqual"], true, "{r}");
    assert_eq!(r["lateEqual"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_refused_tokens_with_the_real_provider() {
    use common::hooks::{SECRET, exp, jwt};
    let edge = Edge::start(
        "",
        &format!("[[route]]\npath = \"/wss\"\nplain_http = true\n[route.rooms]\nstore = \"memory\"\nauth = {{ mode = \"jwt\", secret = \"{SECRET}\" }}\n"),
    )
    .await;
    let url = format!("ws://{}/wss", edge.http);
    let rw = jwt(
        serde_json::json!({"exp": exp(600), "rooms": ["doc"]}),
        SECRET,
    );
    let ro = jwt(
        serde_json::json!({"exp": exp(600), "rooms": ["doc"], "access": "ro"}),
        SECRET,
    );
    let bad = jwt(
        serde_json::json!({"exp": exp(600), "rooms": ["other"]}),
        SECRET,
    );
    let r = js_scenario(vec!["auth".into(), url, "doc".into(), rw, ro, bad]).await;
    assert_eq!(r["readOnlyReceives"], true, "{r}");
    assert_eq!(r["readOnlyDenied"], true, "{r}");
    assert_eq!(
        r["writerText"], "from rw",
        "the read-only edit never arrived: {r}"
    );
    assert_eq!(
        r["lateText"], "from rw",
        "nor was it applied on the server: {r}"
    );
    assert!(
        r["badTokenError"]
            .as_str()
            .unwrap_or_default()
            .contains("403"),
        "{r}"
    );
    assert_eq!(r["badTokenSynced"], false, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_fires_with_y_websocket_server_json() {
    let (cb, mut posts) = common::hooks::http_endpoint(|_| (200, None)).await;
    let edge = Edge::start(
        "",
        &format!("[[route]]\npath = \"/wss\"\nplain_http = true\n[route.rooms]\nstore = \"memory\"\ncallback = {{ url = \"http://{cb}/hook\", debounce_wait = \"100ms\", objects = {{ t = \"Text\", m = \"Map\" }} }}\n"),
    )
    .await;
    let url = format!("ws://{}/wss", edge.http);
    let r = js_scenario(vec!["edit".into(), url, "cb".into(), "hello".into()]).await;
    assert_eq!(r["done"], true);
    let (_, body) = tokio::time::timeout(WAIT, posts.recv())
        .await
        .expect("callback in time")
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"room": "cb", "data": {
            "t": {"type": "Text", "content": "hello"},
            "m": {"type": "Map", "content": {"k": "v"}}
        }})
    );
}

/// A provider that reconnects is seen again by the others within 2 s (the room answers its
/// stale re-announcement so that it bumps its clock; the Node server takes ~15 s, yrs's own
/// removal bump made it ~30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_reappears_within_two_seconds_of_a_reconnect() {
    let edge = Edge::start(
        "",
        "[[route]]\npath = \"/wss\"\nrooms = { store = \"memory\" }\nplain_http = true\n",
    )
    .await;
    let url = format!("ws://{}/wss", edge.http);
    let r = js_scenario(vec!["awareness".into(), url, "cursors".into()]).await;
    assert_eq!(r["removedAtA"], true, "{r}");
    let ms = r["reappearMs"].as_u64().expect("reappeared");
    eprintln!("awareness reappeared {ms} ms after the reconnect");
    assert!(ms < 2000, "reappeared after {ms} ms: {r}");
}

/// The rooms route's defaults (max_message 16 MiB, max_document 32 MiB) let a real provider's
/// first sync of an 8 MiB document through, and another provider gets all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_first_sync_of_an_8_mib_document_passes_the_defaults() {
    let edge = Edge::start(
        "",
        "[[route]]\npath = \"/wss\"\nrooms = { store = \"memory\" }\nplain_http = true\n",
    )
    .await;
    let url = format!("ws://{}/wss", edge.http);
    let r = js_scenario(vec!["bigsync".into(), url, "big".into(), "8".into()]).await;
    assert_eq!(r["bLen"], 8 << 20, "{r}");
    assert_eq!(r["aConnected"], true, "{r}");
    assert!(r["updateBytes"].as_u64().unwrap() > 8 << 20, "{r}");
}
