//! Rooms across nodes with separate `wsedge` processes (the real binary) on one real
//! `redis-server` with AOF: the real JavaScript providers spread over three nodes converge, a
//! node killed with SIGKILL loses nothing another client had received, and a Redis restart is
//! survived. Multi-process tests run one at a time (one lock).

mod common;

use common::process::{Child, spawn_wsedge};
use common::redis::{Redis, free_port};
use common::yclient::YClient;
use common::*;
use std::time::Duration;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A node: the real binary with a replicated rooms route at `/collab`.
fn node(redis: &Redis, id: &str) -> Child {
    spawn_wsedge(&format!(
        "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\ncertdir = \"CERTDIR\"\n\
         [redis]\nurl = \"{}\"\n[cluster]\nnode_id = \"{id}\"\n\
         [[route]]\npath = \"/collab\"\nplain_http = true\nrooms = {{ cluster = \"replicate\" }}\n",
        redis.url()
    ))
}

async fn client(node: &Child, room: &str) -> YClient {
    let mut c = YClient::connect_addr(node.addr, &format!("/collab/{room}"), &[])
        .await
        .unwrap();
    assert!(c.until(|c| c.synced).await, "synced");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_providers_on_three_nodes_converge() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start(free_port());
    let nodes = [node(&redis, "a"), node(&redis, "b"), node(&redis, "c")];
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("ws://{}/collab", n.addr))
        .collect();
    // 20 providers round-robin over the nodes, 50 concurrent Y.Text + Y.Map edits each; a late
    // joiner on the third node.
    let r = js_scenario(vec![
        "many".into(),
        urls.join(","),
        "crowd".into(),
        "20".into(),
        "50".into(),
    ])
    .await;
    assert_eq!(r["mapSize"], 1000, "{r}");
    assert_eq!(r["textLen"], r["expectedLen"], "every insert arrived: {r}");
    assert_eq!(r["sameCharacters"], true, "{r}");
    assert_eq!(r["allEqual"], true, "{r}");
    assert_eq!(r["lateEqual"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_its_clients_write_loses_nothing_anyone_received() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = Redis::start(free_port());
    let (a, b, c) = (node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    let mut writer = client(&a, "doc").await;
    let mut reader = client(&b, "doc").await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // b's reader has the room's key
    // 30 acknowledged edits (each echoed to the writer: in Redis, broadcast), then 30 more
    // sent without waiting, and the node dies with them under way.
    let mut sent = String::new();
    for i in 0..60 {
        let s = format!("{i}.");
        if i < 30 {
            assert!(writer.edit_acked(&s).await, "edit {i} acknowledged");
        } else {
            writer.edit(&s).await;
        }
        sent.push_str(&s);
    }
    let acked: String = (0..30).map(|i| format!("{i}.")).collect();
    a.signal("KILL");
    // What the reader on b got: at least every acknowledged edit.
    reader.drain(1500).await;
    let seen = reader.text();
    assert!(
        seen.starts_with(&acked),
        "b has every acknowledged edit: {seen:?}"
    );
    // The writer's provider reconnects to another node: it has everything b saw.
    let on_c = client(&c, "doc").await;
    let recovered = on_c.text();
    assert!(
        recovered.starts_with(&seen) || recovered == seen,
        "every update b received is on c: b {seen:?}, c {recovered:?}"
    );
    assert!(
        sent.starts_with(&recovered),
        "nothing invented: {recovered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_aof_is_survived() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let redis = Redis::start_aof(port, dir.path());
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut on_a = client(&a, "doc").await;
    let mut on_b = client(&b, "doc").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    on_a.edit("before ").await;
    assert!(
        on_b.until(|c| c.text() == "before ").await,
        "{:?}",
        on_b.text()
    );

    drop(redis); // SIGKILL: AOF with appendfsync always has every acknowledged append
    tokio::time::sleep(Duration::from_millis(300)).await;
    let redis = Redis::start_aof(port, dir.path());
    // The nodes reconnect (backoff ≤ 5 s; the outage stays under the 10 s grace) and resume.
    let mut resumed = false;
    for _ in 0..60 {
        on_b.drain(100).await;
        if redis.cli(&["CLIENT", "LIST"]).matches("cmd=xread").count() >= 2 {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        resumed,
        "both nodes' readers are back: {}",
        redis.cli(&["CLIENT", "LIST"])
    );
    on_a.edit("after").await;
    assert!(
        on_b.until(|c| c.text() == "before after").await,
        "{:?}",
        on_b.text()
    );
    // Nothing acknowledged was lost: a node that loads the room now gets it all from Redis.
    let c = node(&redis, "c");
    assert_eq!(client(&c, "doc").await.text(), "before after");
}
