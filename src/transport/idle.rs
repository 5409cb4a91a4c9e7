//! Connection timers hyper does not have (A12). hyper bounds the wait for an HTTP/1 request
//! head (`header_read_timeout`, also between keep-alive requests) and pings HTTP/2 peers, but an
//! HTTP/2 connection that opens no stream, or a client that stops taking a response, would hold
//! its connection (and the upstream response behind it) forever. Here:
//! - [`SendDeadline`], under every client connection: a write or flush that stays blocked for
//!   `send_timeout` (the client reads nothing) fails, which ends the connection;
//! - [`Activity`] + [`watch`], per HTTP/2 connection: no open stream for `http2_idle_timeout`
//!   closes it with GOAWAY; a stream whose client grants no flow-control window for
//!   `send_timeout` (hyper then stops asking for the body, and the socket is not blocked, so
//!   the deadline above never sees it) drops the connection. Response bodies report to it
//!   through [`Watched`].

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

pin_project! {
    /// An IO whose writes (and flushes, and the shutdown) may stay blocked for `timeout` at
    /// most: then they fail with `TimedOut` and hyper ends the connection.
    pub struct SendDeadline<I> {
        #[pin]
        inner: I,
        timeout: Duration,
        // Made the first time a write blocks (most connections never do).
        sleep: Option<Pin<Box<Sleep>>>,
        // A write is blocked and `sleep` is armed for it.
        blocked: bool,
        // The deadline passed (counted once; every later blocked write fails at once).
        expired: bool,
    }
}

impl<I> SendDeadline<I> {
    pub fn new(inner: I, timeout: Duration) -> Self {
        SendDeadline {
            inner,
            timeout,
            sleep: None,
            blocked: false,
            expired: false,
        }
    }

    /// The connection itself, once it no longer carries HTTP (after an upgrade: the WebSocket
    /// guard has its own slow-reader deadline).
    pub fn into_inner(self) -> I {
        self.inner
    }
}

/// The deadline's verdict on one write attempt's result.
fn deadline<T>(
    r: Poll<std::io::Result<T>>,
    cx: &mut Context<'_>,
    timeout: Duration,
    sleep: &mut Option<Pin<Box<Sleep>>>,
    blocked: &mut bool,
    expired: &mut bool,
) -> Poll<std::io::Result<T>> {
    if r.is_ready() {
        *blocked = false;
        return r;
    }
    let timed_out = || {
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client took no bytes for send_timeout",
        )))
    };
    if *expired {
        return timed_out();
    }
    if !*blocked {
        *blocked = true;
        let at = crate::clock::deadline(Instant::now(), timeout);
        match sleep {
            Some(s) => s.as_mut().reset(at),
            None => *sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }
    let fired = sleep
        .as_mut()
        .is_some_and(|s| s.as_mut().poll(cx).is_ready());
    if !fired {
        return Poll::Pending;
    }
    *expired = true;
    crate::metrics::http_timeout("send");
    timed_out()
}

impl<I: AsyncRead> AsyncRead for SendDeadline<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for SendDeadline<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, data);
        deadline(r, cx, *this.timeout, this.sleep, this.blocked, this.expired)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let r = this.inner.poll_flush(cx);
        deadline(r, cx, *this.timeout, this.sleep, this.blocked, this.expired)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let r = this.inner.poll_shutdown(cx);
        deadline(r, cx, *this.timeout, this.sleep, this.blocked, this.expired)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        deadline(r, cx, *this.timeout, this.sleep, this.blocked, this.expired)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What an HTTP/2 connection is doing, as its streams report it.
pub struct Activity {
    /// Streams open now: from the request reaching the service to the response body's end.
    open: AtomicUsize,
    /// Woken when a stream opens or closes.
    changed: Notify,
    /// Response bodies that have handed out data, to find one its client stopped taking.
    sending: Mutex<Vec<Weak<Sending>>>,
    /// Time zero of the millisecond stamps in [`Sending`].
    epoch: Instant,
}

/// One response body's last hand-out.
#[derive(Default)]
struct Sending {
    /// Milliseconds since `epoch` + 1 at which hyper took a data frame and has not asked for
    /// the next one yet (it waits for the client's flow-control window); 0: it is asking.
    waiting_since: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            changed: Notify::new(),
            sending: Mutex::new(Vec::new()),
            epoch: Instant::now(),
        })
    }

    /// A stream starts (the service got a request); it ends when the guard is dropped.
    pub fn stream(self: &Arc<Self>) -> Stream {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
        Stream {
            activity: self.clone(),
            sending: None,
        }
    }

    fn stamp(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// When the longest-waiting response body started waiting for its client, if one does.
    fn oldest_wait(&self) -> Option<Instant> {
        let mut list = self.sending.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        let oldest = list
            .iter()
            .filter_map(Weak::upgrade)
            .map(|s| s.waiting_since.load(Ordering::Relaxed))
            .filter(|&t| t > 0)
            .min()?;
        Some(self.epoch + Duration::from_millis(oldest - 1))
    }
}

/// One open stream; dropping it closes it.
pub struct Stream {
    activity: Arc<Activity>,
    sending: Option<Arc<Sending>>,
}

impl Stream {
    /// hyper took a data frame of the response (`true`), or asks for the next (`false`).
    fn handed_out(&mut self, frame: bool) {
        if !frame {
            if let Some(s) = &self.sending {
                s.waiting_since.store(0, Ordering::Relaxed);
            }
            return;
        }
        let stamp = self.activity.stamp();
        let s = self.sending.get_or_insert_with(|| {
            let s = Arc::new(Sending::default());
            self.activity
                .sending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::downgrade(&s));
            s
        });
        s.waiting_since.store(stamp, Ordering::Relaxed);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.activity.open.fetch_sub(1, Ordering::Relaxed);
        self.activity.changed.notify_waiters();
    }
}

pin_project! {
    /// A response body that reports to its connection's [`Activity`] (HTTP/2; `None` on
    /// HTTP/1, where it only passes frames through).
    pub struct Watched<B> {
        #[pin]
        inner: B,
        stream: Option<Stream>,
    }
}

impl<B> Watched<B> {
    pub fn new(inner: B, stream: Option<Stream>) -> Self {
        Watched { inner, stream }
    }
}

impl<B: Body<Data = Bytes>> Body for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Some(s) = this.stream {
            s.handed_out(matches!(&r, Poll::Ready(Some(Ok(f))) if f.is_data()));
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

/// Why [`watch`] gave up on a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No open stream for the idle timeout: close it gracefully (GOAWAY).
    Idle,
    /// A response waited for its client's window for `send_timeout`: drop the connection.
    Stalled,
}

/// Watch an HTTP/2 connection's streams; returns when it should end. Stalls are checked when a
/// stream opens or closes and at least every half `send_timeout`, so a stalled client is
/// dropped between `send_timeout` and 1.5 times it.
pub async fn watch(activity: &Activity, idle: Option<Duration>, send_timeout: Duration) -> Verdict {
    loop {
        let changed = activity.changed.notified();
        tokio::pin!(changed);
        // Registered before the state is read: a change after the read still wakes us.
        changed.as_mut().enable();
        let now = Instant::now();
        let open = activity.open.load(Ordering::Relaxed);
        let wake = if open == 0 {
            idle.map(|d| crate::clock::deadline(now, d))
        } else {
            let check = crate::clock::deadline(now, send_timeout / 2);
            match activity.oldest_wait() {
                Some(since) => {
                    let at = crate::clock::deadline(since, send_timeout);
                    if at <= now {
                        return Verdict::Stalled;
                    }
                    Some(at.min(check))
                }
                None => Some(check),
            }
        };
        let Some(at) = wake else {
            changed.await;
            continue;
        };
        tokio::select! {
            _ = &mut changed => {}
            _ = tokio::time::sleep_until(at) => {
                if open == 0 {
                    return Verdict::Idle; // nothing opened (that would have been a change)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn idle_only_without_streams() {
        let a = Activity::new();
        let idle = Some(Duration::from_secs(60));
        let send = Duration::from_secs(30);
        let started = Instant::now();
        assert_eq!(watch(&a, idle, send).await, Verdict::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        // A stream open for longer than the idle timeout keeps the connection; the idle time
        // counts from when it closes.
        let s = a.stream();
        let w = tokio::spawn({
            let a = a.clone();
            async move { watch(&a, idle, send).await }
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!w.is_finished());
        let closed = Instant::now();
        drop(s);
        assert_eq!(w.await.unwrap(), Verdict::Idle);
        assert_eq!(closed.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_its_client_stops_taking_stalls_the_connection() {
        let a = Activity::new();
        let send = Duration::from_secs(30);
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
        let mut body = Watched::new(StreamBody::new(tokio_stream_from(rx)), Some(a.stream()));
        let w = tokio::spawn({
            let a = a.clone();
            async move { watch(&a, None, send).await }
        });
        // The response is on its way (an open stream, nothing handed out yet): not a stall.
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!w.is_finished());
        // A frame is taken, and the next one is never asked for.
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        let took = Instant::now();
        assert!(body.frame().await.is_some());
        assert_eq!(w.await.unwrap(), Verdict::Stalled);
        let waited = took.elapsed();
        assert!(waited >= send && waited <= send * 3 / 2, "{waited:?}");
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_fails_after_the_deadline() {
        // A duplex pipe nobody reads: writes block once its 64 bytes are full.
        let (a, _b) = tokio::io::duplex(64);
        let mut io = SendDeadline::new(a, Duration::from_secs(5));
        use tokio::io::AsyncWriteExt;
        let started = Instant::now();
        let e = io.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
