//! Rooms shared by nodes on one Redis (`cluster = "replicate"`), against real servers and a real
//! `redis-server`: two wsedge nodes (in this process, each with its own listeners and state),
//! y-websocket clients on each. What is built so far: updates acknowledged only after Redis took
//! them, read by the other node and applied there, and a room loaded from the stream after it
//! unloaded everywhere.

mod common;

use common::redis::{Redis, free_port};
use common::yclient::{self, YClient};
use common::*;
use std::time::Duration;

/// A node with a replicated rooms route at `/collab` (rooms unload 1 s after their last client).
async fn node(redis: &Redis, id: &str) -> Edge {
    Edge::start(
        &format!(
            "[redis]\nurl = \"{}\"\n[cluster]\nnode_id = \"{id}\"\n",
            redis.url()
        ),
        "[[route]]\npath = \"/collab\"\nplain_http = true\n\
         rooms = { cluster = \"replicate\", unload_after = \"1s\" }\n",
    )
    .await
}

async fn client(edge: &Edge, room: &str) -> YClient {
    let mut c = YClient::connect(edge, &format!("/collab/{room}"), &[])
        .await
        .unwrap();
    assert!(c.until(|c| c.synced).await, "synced");
    c
}

#[tokio::test]
async fn edits_on_one_node_reach_the_other_and_survive_unloading() {
    let redis = Redis::start(free_port());
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let mut on_a = client(&a, "doc").await;
    let mut on_b = client(&b, "doc").await;
    // Give node b's reader a moment to pick up the newly loaded room (it blocks up to 1 s).
    tokio::time::sleep(Duration::from_millis(1200)).await;

    on_a.edit("hello ").await;
    assert!(
        on_b.until(|c| c.text() == "hello ").await,
        "a → b: {:?}",
        on_b.text()
    );
    on_b.edit("world").await;
    assert!(
        on_a.until(|c| c.text() == "hello world").await,
        "b → a: {:?}",
        on_a.text()
    );
    assert!(on_b.until(|c| c.text() == "hello world").await);
    let entries = redis.cli(&["XLEN", "wsedge:room:{/collab|doc}:log"]);
    assert_eq!(
        entries, "2",
        "one entry per update (sync requests do not travel)"
    );
    // Metrics (per process: both nodes live here, so only lower bounds can be asserted).
    let (_, metrics) = common::push::admin(&b, "GET", "/metrics", "").await;
    let value = |op: &str| -> f64 {
        let line = format!("wsedge_cluster_redis_total{{op=\"{op}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line} in {metrics}"))
    };
    assert!(value("append") >= 1.0 && value("applied") >= 1.0);
    assert!(metrics.contains("wsedge_cluster_connected 1"), "{metrics}");

    // Everyone leaves; both nodes unload the room; a late joiner on b gets it from Redis.
    drop((on_a, on_b));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = client(&b, "doc").await;
    assert_eq!(late.text(), "hello world");
}

#[tokio::test]
async fn an_update_redis_does_not_take_is_not_acknowledged() {
    let redis = Redis::start(free_port());
    let a = node(&redis, "a").await;
    let mut writer = client(&a, "full").await;
    let mut reader = client(&a, "full").await;
    // Redis refuses writes once it is over maxmemory with noeviction.
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    writer.edit("lost?").await;
    assert_eq!(
        writer.close_code().await,
        Some(1011),
        "the writer is closed 1011"
    );
    reader.drain(500).await;
    assert_eq!(reader.text(), "", "nobody else saw the update");
}

#[tokio::test]
async fn cursors_appear_and_disappear_across_nodes() {
    let redis = Redis::start(free_port());
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let mut on_a = client(&a, "cursors").await;
    let mut on_b = client(&b, "cursors").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    on_a.announce(77, r#"{"user":"ann"}"#).await;
    assert!(
        on_b.until(|c| c.awareness.get(&77).is_some_and(|s| s.contains("ann")))
            .await,
        "a's cursor shows on b: {:?}",
        on_b.awareness
    );
    drop(on_a);
    assert!(
        on_b.until(|c| c.awareness.get(&77).is_some_and(|s| s == "null"))
            .await,
        "and goes when a's client leaves: {:?}",
        on_b.awareness
    );
}

#[tokio::test]
async fn a_room_is_compacted_into_a_snapshot_and_loads_from_it() {
    let redis = Redis::start(free_port());
    let a = node(&redis, "a").await;
    let mut writer = client(&a, "long").await;
    let mut expected = String::new();
    for i in 0..300 {
        let s = format!("{i},");
        writer.edit(&s).await;
        expected.push_str(&s);
    }
    assert!(
        writer.until(|c| c.updates >= 300).await,
        "all echoed: {}",
        writer.updates
    );
    let snap = "wsedge:room:{/collab|long}:snap";
    let mut upto = String::new();
    for _ in 0..50 {
        upto = redis.cli(&["HGET", snap, "upto"]);
        if !upto.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(upto.contains('-'), "a snapshot after 256 appends: {upto:?}");
    let mut len = String::new();
    for _ in 0..50 {
        len = redis.cli(&["XLEN", "wsedge:room:{/collab|long}:log"]);
        if len == "300" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(len, "300", "entries younger than 60 s are not trimmed");
    writer.edit("end").await;
    expected.push_str("end");
    assert!(writer.until(|c| c.text() == expected).await);
    drop(writer);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let b = node(&redis, "b").await;
    let late = client(&b, "long").await;
    assert_eq!(late.text(), expected, "snapshot + the entries after it");
    assert_eq!(
        redis.cli(&["EXISTS", "wsedge:room:{/collab|long}:lease"]),
        "0",
        "released"
    );
}

#[tokio::test]
async fn without_redis_joins_get_503_and_the_node_is_not_ready() {
    let redis = Redis::start(free_port());
    let a = node(&redis, "a").await;
    let ready = || common::push::admin(&a, "GET", "/readyz", "");
    let mut up = false;
    for _ in 0..50 {
        if ready().await.0 == 200 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "ready once the reader is connected");
    drop(redis);
    let mut status = (0, String::new());
    for _ in 0..50 {
        status = ready().await;
        if status.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status.0, 503, "{status:?}");
    assert!(status.1.contains("Redis unreachable"), "{status:?}");
    let r = YClient::connect(&a, "/collab/offline", &[]).await;
    assert_eq!(
        yclient::refused_status(r),
        503,
        "never a stale or empty copy"
    );
}

#[tokio::test]
async fn a_compaction_trims_what_its_snapshot_covers() {
    let redis = Redis::start(free_port());
    let a = node(&redis, "a").await;
    // Trim covered entries at once (60 s in production: a lagging reader keeps what it needs).
    let replica = a.running.as_ref().unwrap().proxy.replica.clone().unwrap();
    replica.set_trim_after(Duration::ZERO);
    let mut writer = client(&a, "trimmed").await;
    let mut expected = String::new();
    for i in 0..300 {
        let s = format!("{i};");
        writer.edit(&s).await;
        expected.push_str(&s);
    }
    // Every update echoed by the server: applied there, so in Redis (appended before applied).
    assert!(
        writer.until(|c| c.updates >= 300).await,
        "echoes: {}",
        writer.updates
    );
    // The compaction after the 256th append (it runs beside the appends that follow, so it may
    // cover a few more) saved a snapshot and trimmed what it covers.
    let (log, snap) = (
        "wsedge:room:{/collab|trimmed}:log",
        "wsedge:room:{/collab|trimmed}:snap",
    );
    let mut seen = (String::new(), 300);
    for _ in 0..100 {
        seen = (
            redis.cli(&["HGET", snap, "upto"]),
            redis.cli(&["XLEN", log]).parse().unwrap(),
        );
        if !seen.0.is_empty() && seen.1 <= 300 - 256 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.0.contains('-') && seen.1 <= 300 - 256,
        "snapshot upto and entries left: {seen:?}"
    );
    // A node that loads the room now has only the snapshot and the tail, and gets everything.
    let b = node(&redis, "b").await;
    let late = client(&b, "trimmed").await;
    assert_eq!(late.text(), expected);
}

#[tokio::test]
async fn a_single_nodes_redb_rooms_are_imported_into_a_replicate_route() {
    // A single node with a redb store: two rooms with content, flushed by a clean shutdown.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("rooms.redb");
    let mut single = Edge::start(
        "",
        &format!(
            "[[route]]\npath = \"/collab\"\nplain_http = true\nrooms = {{ store = \"{}\" }}\n",
            store.display()
        ),
    )
    .await;
    for (room, text) in [("one", "first doc"), ("two", "second doc")] {
        let mut c = client(&single, room).await;
        c.edit(text).await;
        assert!(c.until(|c| c.updates >= 1).await, "applied by the server");
    }
    assert!(single.shutdown().await);

    let redis = Redis::start(free_port());
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\nadmin = \"off\"\n\
             [redis]\nurl = \"{}\"\n[[route]]\npath = \"/collab\"\nrooms = {{ cluster = \"replicate\" }}\n",
            redis.url()
        ),
    )
    .unwrap();
    let run = |route: &str| {
        std::process::Command::new(common::process::BIN)
            .args(["rooms", "import", "-c"])
            .arg(&config)
            .arg("--store")
            .arg(&store)
            .args(["--route", route])
            .output()
            .unwrap()
    };
    let out = run("/collab");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 2 rooms"));
    let out = run("/nowhere");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rooms route with path \"/nowhere\""));

    let a = node(&redis, "a").await;
    assert_eq!(client(&a, "one").await.text(), "first doc");
    assert_eq!(client(&a, "two").await.text(), "second doc");
}

#[tokio::test]
async fn one_node_sends_a_replicated_rooms_callback() {
    let (hook, mut calls) = common::hooks::http_endpoint(|_| (200, None)).await;
    let redis = Redis::start(free_port());
    let routes = format!(
        "[[route]]\npath = \"/collab\"\nplain_http = true\nrooms = {{ cluster = \"replicate\", \
         callback = {{ url = \"http://{hook}/cb\", debounce_wait = \"100ms\", debounce_maxwait = \"300ms\" }} }}\n"
    );
    let start = |id: &'static str| {
        let routes = routes.clone();
        let url = redis.url();
        async move {
            Edge::start(
                &format!("[redis]\nurl = \"{url}\"\n[cluster]\nnode_id = \"{id}\"\n"),
                &routes,
            )
            .await
        }
    };
    let (a, b) = (start("a").await, start("b").await);
    let mut on_a = client(&a, "hooked").await;
    let mut on_b = client(&b, "hooked").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    on_a.edit("x").await;
    assert!(on_b.until(|c| c.text() == "x").await);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut n = 0;
    while let Ok((_, body)) = calls.try_recv() {
        assert!(body.contains("hooked"), "{body}");
        n += 1;
    }
    assert_eq!(n, 1, "both nodes saw the change; one sent the callback");
    on_b.edit("y").await;
    assert!(on_a.until(|c| c.text().len() == 2).await);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut n = 0;
    while calls.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 1, "a change on the other node: still one callback");
}

#[tokio::test]
async fn open_rooms_close_1011_after_the_outage_grace_and_reopen_after() {
    let port = free_port();
    let redis = Redis::start(port);
    let a = Edge::start(
        &format!(
            "[redis]\nurl = \"{}\"\n[cluster]\nnode_id = \"a\"\noutage_grace = \"1s\"\n",
            redis.url()
        ),
        "[[route]]\npath = \"/collab\"\nplain_http = true\nrooms = { cluster = \"replicate\" }\n",
    )
    .await;
    let mut c = client(&a, "outage").await;
    c.edit("before").await;
    assert!(c.until(|c| c.updates >= 1).await);
    drop(redis);
    assert_eq!(
        c.close_code().await,
        Some(1011),
        "closed once the grace passed"
    );
    let r = YClient::connect(&a, "/collab/outage", &[]).await;
    assert_eq!(
        yclient::refused_status(r),
        503,
        "refused while Redis is away"
    );
    // Redis is back (empty: this one keeps nothing): the room loads afresh and works again.
    let _redis = Redis::start(port);
    let mut again = None;
    for _ in 0..100 {
        if let Ok(mut c) = YClient::connect(&a, "/collab/outage", &[]).await
            && c.until(|c| c.synced).await
        {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = again.expect("joins work again once Redis is back");
    c.edit("after").await;
    assert!(
        c.until(|c| c.updates >= 1).await,
        "an edit is acknowledged again"
    );
}

#[tokio::test]
async fn a_paused_redis_refuses_writers_within_the_timeout_and_nothing_piles_up() {
    let redis = Redis::start(free_port());
    let a = Edge::start(
        &format!(
            "[redis]\nurl = \"{}\"\nconnect_timeout = \"1s\"\n[cluster]\nnode_id = \"a\"\n",
            redis.url()
        ),
        "[[route]]\npath = \"/collab\"\nplain_http = true\nrooms = { cluster = \"replicate\" }\n",
    )
    .await;
    let mut writer = client(&a, "paused").await;
    let mut reader = client(&a, "paused").await;
    redis.cli(&["CLIENT", "PAUSE", "3000", "WRITE"]);
    let t = std::time::Instant::now();
    // One frame at a time is in flight per socket; the next waits in the socket's own buffers.
    for i in 0..50 {
        writer.edit(&format!("{i}")).await;
    }
    assert_eq!(
        writer.close_code().await,
        Some(1011),
        "not acknowledged: closed"
    );
    assert!(
        t.elapsed() < Duration::from_millis(2900),
        "refused at the command timeout, not when the pause ends: {:?}",
        t.elapsed()
    );
    reader.drain(300).await;
    assert_eq!(reader.text(), "", "nothing was broadcast");
    let (_, metrics) = common::push::admin(&a, "GET", "/metrics", "").await;
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wsedge_cluster_redis_total{op=\"append_error\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "the refused append is counted: {errors}");
}
