//! Push over Redis PubSub against a real `redis-server` (Debian's package, started here on a free
//! loopback port and ended by its PID): pushes published with `redis-cli` and with a Redis
//! client reach the sockets; two nodes on one Redis each deliver once; a Redis restart is
//! survived by resubscribing, with `/readyz` saying the push service is degraded meanwhile.

mod common;

use common::push::*;
use common::redis::{Redis, free_port};
use common::*;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn node(redis_url: &str) -> Edge {
    let e = Edge::start(
        &format!("[limits]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[redis]\nurl = \"{redis_url}\"\n"),
        "[[route]]\npath = \"/server_notifications\"\nplain_http = true\npush = {}\n",
    )
    .await;
    subscribed(&e, 1).await;
    e
}

/// Wait until the node has subscribed `n` times in all.
async fn subscribed(e: &Edge, n: u64) {
    let link = e
        .running
        .as_ref()
        .unwrap()
        .proxy
        .push_link
        .get()
        .unwrap()
        .clone();
    for _ in 0..200 {
        if link.subscriptions.load(Ordering::Relaxed) >= n && link.connected.load(Ordering::Relaxed)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node did not subscribe");
}

/// A push socket as `user` (the header a trusted proxy sets).
async fn as_user(edge: &Edge, user: &str) -> Ws {
    connect(edge, &[("x-auth-user", user)]).await.0
}

#[tokio::test]
async fn pushes_published_on_redis_reach_every_node_once() {
    let redis = Redis::start(free_port());
    let (a, b) = (node(&redis.url()).await, node(&redis.url()).await);
    let mut on_a = as_user(&a, "alice").await;
    let mut on_b = as_user(&b, "alice").await;
    let mut bob = as_user(&b, "bob").await;

    // redis-cli, as a backend would: both nodes deliver, each once.
    let n = redis.cli(&[
        "PUBLISH",
        "BackgroundPush",
        r#"{"payload":{"from":"cli"},"pushToUser":"alice"}"#,
    ]);
    assert_eq!(n, "2", "two nodes subscribed");
    assert_eq!(
        next_text(&mut on_a).await.as_deref(),
        Some(r#"{"from":"cli"}"#)
    );
    assert_eq!(
        next_text(&mut on_b).await.as_deref(),
        Some(r#"{"from":"cli"}"#)
    );
    assert!(silent(&mut on_a).await && silent(&mut on_b).await && silent(&mut bob).await);

    // The npm `redis` client, exactly as the original's README publishes from JavaScript.
    let js = js_modules(&["redis"]);
    let out = Command::new("node")
        .arg(js.join("publish.mjs"))
        .args([
            redis.url().as_str(),
            "BackgroundPush",
            r#"{"pushToUser":"alice","payload":{"some":"info"}}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    assert_eq!(
        next_text(&mut on_a).await.as_deref(),
        Some(r#"{"some":"info"}"#)
    );
    assert_eq!(
        next_text(&mut on_b).await.as_deref(),
        Some(r#"{"some":"info"}"#)
    );

    // A Redis client library (redis-rs here).
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let n: u64 = ::redis::cmd("PUBLISH")
        .arg("BackgroundPush")
        .arg(r#"{"payload":"hi bob","pushToUser":"bob"}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(next_text(&mut bob).await.as_deref(), Some(r#""hi bob""#));
    assert!(silent(&mut on_a).await);

    // A node's admin endpoint publishes on Redis: every node delivers.
    let (st, body) = admin(
        &a,
        "POST",
        "/push/BackgroundPush",
        r#"{"payload":3,"pushToUser":"alice"}"#,
    )
    .await;
    assert_eq!((st, body.trim()), (202, "published to 2 nodes"));
    assert_eq!(next_text(&mut on_a).await.as_deref(), Some("3"));
    assert_eq!(next_text(&mut on_b).await.as_deref(), Some("3"));
    // Refused locally, never published.
    let (st, _) = admin(
        &a,
        "POST",
        "/push/BackgroundPush",
        r#"{"payload":0,"pushToUser":"alice"}"#,
    )
    .await;
    assert_eq!(st, 400);

    // An AuthEvent for a guest with no tab on a node changes nothing there; where the guest
    // has one, it is added to the user's.
    let mut guest_on_a = {
        let (mut ws, _) = ws_connect(
            &a,
            "/server_notifications/connect",
            &[("x-auth-guest", "g1")],
        )
        .await
        .unwrap();
        next_text(&mut ws).await.unwrap();
        ws
    };
    redis.cli(&[
        "PUBLISH",
        "AuthEvent",
        r#"{"guestId":"g1","authUserId":"alice"}"#,
    ]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.cli(&[
        "PUBLISH",
        "BackgroundPush",
        r#"{"payload":4,"pushToUser":"alice"}"#,
    ]);
    assert_eq!(next_text(&mut on_a).await.as_deref(), Some("4"));
    assert_eq!(next_text(&mut guest_on_a).await.as_deref(), Some("4"));
    assert_eq!(next_text(&mut on_b).await.as_deref(), Some("4"));
    assert!(silent(&mut on_b).await, "once on b");
}

#[tokio::test]
async fn a_redis_restart_is_survived_by_resubscribing() {
    let port = free_port();
    let redis = Redis::start(port);
    let edge = node(&redis.url()).await;
    let mut ws = as_user(&edge, "u").await;
    drop(redis); // Redis goes away
    let link = edge
        .running
        .as_ref()
        .unwrap()
        .proxy
        .push_link
        .get()
        .unwrap()
        .clone();
    for _ in 0..100 {
        if !link.connected.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !link.connected.load(Ordering::Relaxed),
        "the loss was noticed"
    );
    let (st, body) = admin(&edge, "GET", "/readyz", "").await;
    assert_eq!(
        st, 200,
        "Redis down does not take the edge out of a load balancer"
    );
    assert!(body.contains("push degraded"), "{body}");
    let (_, m) = admin(&edge, "GET", "/metrics", "").await;
    assert!(m.contains("wsedge_push_redis_connected 0"), "{m}");

    let redis = Redis::start(port);
    subscribed(&edge, 2).await;
    redis.cli(&[
        "PUBLISH",
        "BackgroundPush",
        r#"{"payload":"back","pushToUser":"u"}"#,
    ]);
    assert_eq!(next_text(&mut ws).await.as_deref(), Some(r#""back""#));
    let (_, body) = admin(&edge, "GET", "/readyz", "").await;
    assert_eq!(body.trim(), "ready");
    let (_, m) = admin(&edge, "GET", "/metrics", "").await;
    assert!(m.contains("wsedge_push_redis_connected 1"), "{m}");
}
