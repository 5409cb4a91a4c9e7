//! Body wrappers: streaming with a size cap (request bodies), an idle timeout (both directions),
//! and counting for the access log. Nothing here buffers: frames pass through one at a time.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;
/// A client's request body on its way to the upstream: capped at `max_body`, cut after
/// `body_timeout` without a byte.
pub type RequestBody = IdleBody<CappedBody<hyper::body::Incoming>>;

/// Raised by [`CappedBody`] when the client sends more than the route's `max_body`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// Raised by [`IdleBody`] when its producer sends nothing for the route's `body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("body stalled: nothing for {0:?}")]
pub struct BodyStalled(pub Duration);

/// Shared between a request body and the code that maps errors to statuses.
#[derive(Debug, Default)]
pub struct BodyStats {
    pub bytes: AtomicU64,
    pub too_large: AtomicBool,
    /// The body stalled ([`IdleBody`]): the client's fault, 408.
    pub stalled: AtomicBool,
}

pin_project! {
    /// Fails a body whose producer (the client for a request body, the upstream for a response
    /// body) gives nothing for `timeout` while its consumer waits for the next frame. The clock
    /// runs only while the consumer waits: a consumer that does not ask (backpressure, a request
    /// waiting for `100 Continue`) is not the producer's fault (`send_timeout` watches a client
    /// that stops taking a response).
    pub struct IdleBody<B> {
        #[pin]
        inner: B,
        // Made the first time the consumer has to wait (many bodies never do); boxed so the
        // body stays `Unpin`, as hyper's client wants.
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        timeout: Duration,
        // The consumer asked and got nothing yet: `sleep` is armed.
        waiting: bool,
        stats: Option<Arc<BodyStats>>,
        // The `http_timeouts` reason counted when it fires.
        reason: &'static str,
    }
}

impl<B> IdleBody<B> {
    pub fn new(
        inner: B,
        timeout: Duration,
        stats: Option<Arc<BodyStats>>,
        reason: &'static str,
    ) -> Self {
        IdleBody {
            inner,
            sleep: None,
            timeout,
            waiting: false,
            stats,
            reason,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Pending => {
                if !*this.waiting {
                    *this.waiting = true;
                    let deadline =
                        crate::clock::deadline(tokio::time::Instant::now(), *this.timeout);
                    match this.sleep {
                        Some(s) => s.as_mut().reset(deadline),
                        None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let Some(sleep) = this.sleep.as_mut() else {
                    return Poll::Pending; // armed just above
                };
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Some(s) = this.stats {
                    s.stalled.store(true, Ordering::Relaxed);
                }
                crate::metrics::http_timeout(this.reason);
                Poll::Ready(Some(Err(Box::new(BodyStalled(*this.timeout)))))
            }
            Poll::Ready(r) => {
                *this.waiting = false;
                Poll::Ready(r.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// Streams the inner body, counting bytes; errors once more than `max` bytes have passed.
    pub struct CappedBody<B> {
        #[pin]
        inner: B,
        max: Option<u64>,
        stats: Arc<BodyStats>,
    }
}

impl<B> CappedBody<B> {
    pub fn new(inner: B, max: Option<u64>, stats: Arc<BodyStats>) -> Self {
        CappedBody { inner, max, stats }
    }
}

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let total = this
                        .stats
                        .bytes
                        .fetch_add(d.len() as u64, Ordering::Relaxed)
                        + d.len() as u64;
                    if let Some(max) = *this.max
                        && total > max
                    {
                        this.stats.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(max)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// Counts response bytes and runs `on_done` (the access-log line) when the body is finished
    /// or dropped (client went away mid-download).
    pub struct LoggedBody<B, F: FnOnce(u64)> {
        #[pin]
        inner: B,
        bytes: u64,
        on_done: Option<F>,
    }

    impl<B, F: FnOnce(u64)> PinnedDrop for LoggedBody<B, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_done.take() {
                f(*this.bytes);
            }
        }
    }
}

impl<B, F: FnOnce(u64)> LoggedBody<B, F> {
    pub fn new(inner: B, on_done: F) -> Self {
        LoggedBody {
            inner,
            bytes: 0,
            on_done: Some(on_done),
        }
    }
}

impl<B, F> Body for LoggedBody<B, F>
where
    B: Body<Data = Bytes>,
    F: FnOnce(u64),
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            *this.bytes += d.len() as u64;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
