//! JWT claims beyond `exp` on a real rooms route, with real WebSocket clients: `nbf` is honoured,
//! and a route that names an `audience` and an `issuer` admits only tokens minted for it.

mod common;
use common::hooks::*;
use common::yclient::{YClient, refused_status};
use common::*;

#[tokio::test]
async fn nbf_aud_and_iss_decide_admission() {
    // The guard uses the longest durations `check` accepts, in both forms: the room's timers
    // must run with them (an over-long integer used to pass and panic every socket).
    let edge = Edge::start(
        "",
        &format!(
            "[[route]]\npath = \"/wss\"\nplain_http = true\n\
             guard = {{ idle_timeout = 31536000, heartbeat_interval = \"365d\" }}\n\
             [route.rooms]\nstore = \"memory\"\n\
             auth = {{ mode = \"jwt\", secret = \"{SECRET}\", audience = [\"collab\", \"docs\"], issuer = \"https://id.example.com\" }}\n"
        ),
    )
    .await;
    let iss = "https://id.example.com";
    let token = |extra: serde_json::Value| {
        let mut claims = serde_json::json!({"exp": exp(600), "rooms": ["doc"]});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        jwt(claims, SECRET)
    };
    let refused = async |t: &str| {
        refused_status(YClient::connect(&edge, &format!("/wss/doc?token={t}"), &[]).await)
    };

    let not_yet = token(serde_json::json!({"aud": "collab", "iss": iss, "nbf": exp(3600)}));
    assert_eq!(refused(&not_yet).await, 401, "nbf an hour ahead");
    let wrong_aud = token(serde_json::json!({"aud": "billing", "iss": iss}));
    assert_eq!(refused(&wrong_aud).await, 401, "aud for another service");
    let no_aud = token(serde_json::json!({"iss": iss}));
    assert_eq!(refused(&no_aud).await, 401, "no aud at all");
    let wrong_iss = token(serde_json::json!({"aud": "collab", "iss": "https://evil.example"}));
    assert_eq!(refused(&wrong_iss).await, 401, "iss of another issuer");
    let no_iss = token(serde_json::json!({"aud": "collab"}));
    assert_eq!(refused(&no_iss).await, 401, "no iss at all");

    // Right aud (one of the token's) and iss, nbf already passed: 101, and the room works.
    let good = token(serde_json::json!({"aud": ["other", "docs"], "iss": iss, "nbf": exp(-60)}));
    let (_, resp) = ws_connect(&edge, &format!("/wss/doc?token={good}"), &[])
        .await
        .expect("admitted");
    assert_eq!(resp.status().as_u16(), 101);
    let mut a = YClient::connect(&edge, &format!("/wss/doc?token={good}"), &[])
        .await
        .unwrap();
    let bearer = format!("Bearer {good}");
    let mut b = YClient::connect(&edge, "/wss/doc", &[("authorization", &bearer)])
        .await
        .unwrap();
    a.edit("hello").await;
    assert!(b.until(|c| c.text() == "hello").await, "{}", b.text());
    b.edit(" back").await;
    assert!(a.until(|c| c.text() == "hello back").await, "{}", a.text());
    assert!(a.closed.is_none() && b.closed.is_none());
}
