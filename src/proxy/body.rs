//! Body wrappers: streaming with a size cap (request bodies), and counting for the access log.
//! Nothing here buffers: frames pass through one at a time.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Raised by [`CappedBody`] when the client sends more than the route's `max_body`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// Shared between a request body and the code that maps errors to statuses.
#[derive(Debug, Default)]
pub struct BodyStats {
    pub bytes: AtomicU64,
    pub too_large: AtomicBool,
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
