//! Room persistence with the real binary: SIGTERM loses nothing, SIGKILL loses at most the last
//! flush interval and leaves a readable store, `YPERSISTENCE` is honoured, memory mode says so.

mod common;
use common::process::*;
use common::yclient::YClient;
use std::time::{Duration, Instant};

fn config(rooms: &str) -> String {
    format!(
        "[server]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\ncertdir = \"CERTDIR\"\n\n[[route]]\npath = \"/wss\"\nplain_http = true\n[route.rooms]\n{rooms}\n"
    )
}

/// The text a fresh client gets from room `r`.
async fn text_of(addr: std::net::SocketAddr, expect_len: usize) -> String {
    let mut c = YClient::connect_addr(addr, "/wss/r", &[]).await.unwrap();
    c.until(|c| c.text().len() >= expect_len).await;
    c.drain(100).await;
    c.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_every_acknowledged_update_to_ypersistence() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().display().to_string();
    // No store in the file: YPERSISTENCE decides. A long flush interval: only shutdown's flush
    // can have saved the updates.
    let cfg = config("flush_interval = \"60s\"");
    let env = [("YPERSISTENCE", dir.as_str())];
    let mut child = spawn_wsedge_env(&cfg, |_| {}, &env);
    let mut w = YClient::connect_addr(child.addr, "/wss/r", &[])
        .await
        .unwrap();
    let mut expected = String::new();
    for i in 0..200 {
        let part = format!("{i},");
        w.edit(&part).await;
        expected.push_str(&part);
    }
    // Acknowledged: another client sees all of it.
    assert_eq!(text_of(child.addr, expected.len()).await, expected);
    child.signal("TERM");
    assert!(child.wait_exit().success());
    assert!(state.path().join("rooms.redb").exists());

    let child = spawn_wsedge_env(&cfg, |_| {}, &env);
    assert_eq!(text_of(child.addr, expected.len()).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_at_most_the_last_flush_interval_and_the_store_stays_readable() {
    let state = tempfile::tempdir().unwrap();
    let store = state.path().join("rooms.redb");
    let cfg = config(&format!(
        "store = \"{}\"\nflush_interval = \"200ms\"",
        store.display()
    ));
    let mut child = spawn_wsedge(&cfg);
    let mut w = YClient::connect_addr(child.addr, "/wss/r", &[])
        .await
        .unwrap();
    // Phase 1: acknowledged, then more than a flush interval passes: all of it survives.
    let mut sent = String::new();
    for i in 0..100 {
        let part = format!("{i},");
        w.edit(&part).await;
        sent.push_str(&part);
    }
    assert_eq!(text_of(child.addr, sent.len()).await, sent);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Phase 2: keep writing while the process is killed.
    let mut log: Vec<(Instant, usize)> = Vec::new();
    let start = Instant::now();
    let kill_at = start + Duration::from_millis(700);
    let mut i = 100;
    while Instant::now() < kill_at {
        let part = format!("{i},");
        w.edit(&part).await;
        sent.push_str(&part);
        log.push((Instant::now(), sent.len()));
        i += 1;
        w.drain(3).await;
    }
    child.signal("KILL");
    let killed = Instant::now();
    child.wait_exit();
    drop(w);

    let child = spawn_wsedge(&cfg);
    let mut c = YClient::connect_addr(child.addr, "/wss/r", &[])
        .await
        .unwrap();
    c.until(|c| !c.text().is_empty()).await;
    c.drain(200).await;
    let got = c.text();
    assert!(
        sent.starts_with(&got),
        "the store holds a prefix of what was written"
    );
    // Everything written more than one flush interval (plus scheduling slack) before the kill.
    let safe = log
        .iter()
        .take_while(|(t, _)| *t + Duration::from_millis(200 + 150) < killed)
        .last()
        .map_or(0, |(_, len)| *len);
    assert!(
        got.len() >= safe,
        "lost more than the last flush interval: kept {} of {} bytes, {} were older than 350 ms",
        got.len(),
        sent.len(),
        safe
    );
    eprintln!(
        "SIGKILL: kept {} of {} bytes written; {} bytes were older than 350 ms",
        got.len(),
        sent.len(),
        safe
    );
}

#[test]
fn memory_mode_says_nothing_is_kept() {
    let child = spawn_wsedge(&config("store = \"memory\""));
    child.wait_line(&["WARN", "memory only", "nothing survives a restart"]);
}
