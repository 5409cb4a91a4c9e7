//! Admission on hosted rooms routes, against the real server: the per-IP handshake rate and
//! open-socket caps are checked before any auth work (a refused client costs the forward-auth
//! endpoint nothing), the endpoint is asked with its own `Host`, and rooms routes have per-IP
//! defaults that `0` switches off (proxied routes have none).

mod common;
use common::hooks::*;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;

fn rooms_route(guard: &str, rooms: &str) -> String {
    format!(
        "[[route]]\npath = \"/wss\"\nplain_http = true\n{guard}\n[route.rooms]\nstore = \"memory\"\n{rooms}\n"
    )
}

/// `n` handshakes at once.
async fn upgrades(addr: SocketAddr, path: &str, n: usize) -> Vec<(u16, String, TcpStream)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let path = path.to_string();
        set.spawn(async move { upgrade_status(addr, &path).await });
    }
    let mut out = Vec::new();
    while let Some(r) = tokio::time::timeout(WAIT, set.join_next())
        .await
        .expect("handshakes in time")
    {
        out.push(r.unwrap());
    }
    out
}

/// A rate refusal says when to retry; a cap refusal does not.
fn retry_after(head: &str) -> bool {
    head.to_ascii_lowercase().contains("\r\nretry-after:")
}

/// Requests the auth endpoint has answered so far (each is reported before it is answered, so
/// every call behind a handshake response already seen is counted).
fn calls(asked: &mut UnboundedReceiver<(http::HeaderMap, String)>) -> usize {
    std::iter::from_fn(|| asked.try_recv().ok()).count()
}

fn statuses(r: &[(u16, String, TcpStream)]) -> (usize, usize) {
    let ok = r.iter().filter(|(s, ..)| *s == 101).count();
    let limited = r.iter().filter(|(s, ..)| *s == 429).count();
    (ok, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_handshakes_never_reach_the_forward_auth_endpoint() {
    let (auth, mut asked) = http_endpoint(|_| (204, None)).await;
    let edge = Edge::start(
        "",
        &rooms_route(
            "guard = { new_per_ip_per_sec = 1, new_per_ip_burst = 1 }",
            &format!("auth = {{ mode = \"forward\", url = \"http://{auth}/check\" }}"),
        ),
    )
    .await;
    let r = upgrades(edge.http, "/wss/doc", 30).await;
    assert_eq!(statuses(&r), (1, 29), "one 101, the rest 429");
    assert!(
        r.iter()
            .filter(|(s, ..)| *s == 429)
            .all(|(_, h, _)| retry_after(h)),
        "rate refusals carry Retry-After"
    );
    assert_eq!(
        calls(&mut asked),
        1,
        "only the admitted handshake was authorised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_handshakes_never_reach_the_forward_auth_endpoint_and_the_permit_lives_with_the_socket()
 {
    let (auth, mut asked) = http_endpoint(|_| (204, None)).await;
    let edge = Edge::start(
        "",
        &rooms_route(
            "guard = { concurrent_per_ip = 1, new_per_ip_per_sec = 0 }",
            &format!("auth = {{ mode = \"forward\", url = \"http://{auth}/check\" }}"),
        ),
    )
    .await;
    let (status, _, first) = upgrade_status(edge.http, "/wss/doc").await;
    assert_eq!(status, 101);
    let r = upgrades(edge.http, "/wss/doc", 29).await;
    assert_eq!(statuses(&r), (0, 29), "the open socket holds the only slot");
    assert!(
        r.iter().all(|(_, h, _)| !retry_after(h)),
        "a cap refusal is not a rate refusal"
    );
    assert_eq!(
        calls(&mut asked),
        1,
        "refused handshakes were not authorised"
    );
    drop(r);
    // The slot is freed when the admitted socket closes, not before.
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    let again = loop {
        let (status, _, tcp) = upgrade_status(edge.http, "/wss/doc").await;
        if status == 101 {
            break tcp;
        }
        assert_eq!(status, 429);
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(again);
    assert_eq!(calls(&mut asked), 1, "one more call: the one admitted");
}

/// JWT: a bad token spends the client's handshake budget (admission ran first), so a good token
/// right after is 429, not 101.
#[tokio::test]
async fn jwt_is_verified_only_after_admission() {
    let edge = Edge::start(
        "",
        &rooms_route(
            "guard = { new_per_ip_per_sec = 1, new_per_ip_burst = 1 }",
            &format!("auth = {{ mode = \"jwt\", secret = \"{SECRET}\" }}"),
        ),
    )
    .await;
    let good = jwt(
        serde_json::json!({ "exp": exp(60), "rooms": ["*"] }),
        SECRET,
    );
    assert_eq!(upgrade_status(edge.http, "/wss/doc?token=bad").await.0, 401);
    let (status, head, _) = upgrade_status(edge.http, &format!("/wss/doc?token={good}")).await;
    assert_eq!(status, 429, "{head}");
}

#[tokio::test]
async fn the_forward_auth_endpoint_gets_its_own_host_and_the_clients_in_x_forwarded_host() {
    let (auth, mut asked) = http_endpoint(|_| (204, None)).await;
    let edge = Edge::start(
        "",
        &rooms_route(
            "",
            &format!("auth = {{ mode = \"forward\", url = \"http://{auth}/check\" }}"),
        ),
    )
    .await;
    let _ws = ws_connect(&edge, "/wss/doc?x=1", &[("cookie", "session=1")])
        .await
        .unwrap();
    let (h, _) = asked.try_recv().expect("the endpoint was asked");
    assert_eq!(h["host"], auth.to_string(), "the auth URL's authority");
    assert_eq!(h.get_all("host").iter().count(), 1);
    assert_eq!(h["x-forwarded-host"], "a.test", "the client's Host");
    // What it got before is still there.
    assert_eq!(h["cookie"], "session=1");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-original-uri"], "/wss/doc?x=1");
    assert_eq!(h["x-wsedge-room"], "doc");
}

/// No caps configured: a rooms route admits a burst of 40 handshakes, then 20 a second, and at
/// most 64 open sockets per client; the 65th is refused until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_routes_have_per_ip_defaults() {
    let edge = Edge::start("", &rooms_route("", "")).await;
    let started = std::time::Instant::now();
    let mut open: Vec<TcpStream> = Vec::new();
    for (status, head, tcp) in upgrades(edge.http, "/wss/doc", 64).await {
        match status {
            101 => open.push(tcp),
            429 => assert!(retry_after(&head), "{head}"),
            s => panic!("{s}: {head}"),
        }
    }
    // Tokens refill at 20/s while the burst is being spent.
    let refilled = (started.elapsed().as_secs_f64() * 20.0).ceil() as usize;
    assert!(
        open.len() >= 40 && open.len() <= 40 + refilled,
        "{} admitted of 64 (burst 40, {refilled} refilled)",
        open.len()
    );
    // Fill up to 64 at the default rate, then the cap refuses (no Retry-After).
    let deadline = tokio::time::Instant::now() + WAIT;
    let capped = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} open",
            open.len()
        );
        let (status, head, tcp) = upgrade_status(edge.http, "/wss/doc").await;
        match status {
            101 => open.push(tcp),
            429 if retry_after(&head) => tokio::time::sleep(Duration::from_millis(50)).await,
            429 => break head,
            s => panic!("{s}: {head}"),
        }
    };
    assert_eq!(open.len(), 64, "{capped}");
    open.pop();
    let again = loop {
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        let (status, _, tcp) = upgrade_status(edge.http, "/wss/doc").await;
        if status == 101 {
            break tcp;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop((again, open));
}

/// `0` switches the rooms defaults off; proxied routes have none to begin with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_switches_the_rooms_defaults_off_and_proxied_routes_have_none() {
    let up = Upstream::start().await;
    let edge = Edge::start(
        "",
        &format!(
            "{}{}",
            rooms_route(
                "guard = { concurrent_per_ip = 0, new_per_ip_per_sec = 0 }",
                ""
            ),
            route("/", up.addr, "")
        ),
    )
    .await;
    let rooms = upgrades(edge.http, "/wss/doc", 100).await;
    assert_eq!(statuses(&rooms), (100, 0));
    let proxied = upgrades(edge.http, "/ws", 100).await;
    assert_eq!(statuses(&proxied), (100, 0));
}
