//! Helpers for room hooks: a small HTTP endpoint (forward auth, callbacks) and signed tokens.

use super::empty;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

/// A tiny HTTP endpoint: answers with `answer(headers)` (status, `X-Wsedge-Access`) and reports
/// each request.
pub async fn http_endpoint(
    answer: fn(&http::HeaderMap) -> (u16, Option<&'static str>),
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<(http::HeaderMap, String)>,
) {
    http_endpoint_with(move |h| {
        let (status, access) = answer(h);
        (
            status,
            access
                .map(|a| ("x-wsedge-access", a.to_string()))
                .into_iter()
                .collect(),
        )
    })
    .await
}

/// Answer header, as (name, value).
pub type AnswerHeader = (&'static str, String);

/// [`http_endpoint`] whose answer carries any headers: `answer(headers)` is (status, headers).
pub async fn http_endpoint_with(
    answer: impl Fn(&http::HeaderMap) -> (u16, Vec<AnswerHeader>) + Send + Sync + Copy + 'static,
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<(http::HeaderMap, String)>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let (status, headers) = answer(&parts.headers);
                            let _ = tx
                                .send((parts.headers, String::from_utf8_lossy(&body).into_owned()));
                            let mut resp = http::Response::builder().status(status);
                            for (k, v) in headers {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, std::convert::Infallible>(resp.body(empty()).unwrap())
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

pub const SECRET: &str = "an HS256 secret of at least 32 bytes!";

pub fn jwt(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn exp(secs: i64) -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + secs
}
