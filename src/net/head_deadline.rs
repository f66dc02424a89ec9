//! The request-head deadline of a connection: from accept (and again after each response), a
//! client has `header_timeout` to send a complete request head, or the connection is closed.
//! A client that connects and sends nothing, or only part of a head, or an HTTP/2 preface,
//! cannot hold a slot under the connection limit. An upgraded connection (a WebSocket) leaves
//! the deadline behind: its session has an idle timeout of its own.
//!
//! The connection's service tells the deadline when hyper has parsed a head (the service is
//! called), when the answer is ready, and when the connection was upgraded; the I/O wrapper
//! enforces it on reads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the service side of a connection tells its deadline.
#[derive(Debug, Default)]
pub struct HeadProgress {
    /// A head is awaited and the deadline runs.
    waiting_for_head: AtomicBool,
    /// Requests whose answer is not ready yet.
    in_flight: AtomicUsize,
    /// The connection was upgraded: no more heads will come.
    upgraded: AtomicBool,
}

impl HeadProgress {
    /// A head was parsed and its request reaches the service.
    pub fn request_started(&self) {
        self.waiting_for_head.store(false, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// The answer to a request is ready; `upgraded` when it switches protocols.
    pub fn request_answered(&self, upgraded: bool) {
        if upgraded {
            self.upgraded.store(true, Ordering::Release);
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An I/O stream whose reads fail with `TimedOut` once a head is overdue.
pub struct HeadDeadline<S> {
    inner: S,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    progress: Arc<HeadProgress>,
}

impl<S> HeadDeadline<S> {
    /// The first head is due `timeout` after `accepted_at`.
    pub fn new(inner: S, timeout: Duration, accepted_at: Instant) -> (Self, Arc<HeadProgress>) {
        let progress = Arc::new(HeadProgress {
            waiting_for_head: AtomicBool::new(true),
            ..HeadProgress::default()
        });
        let stream = HeadDeadline {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep_until(accepted_at + timeout)),
            progress: progress.clone(),
        };
        (stream, progress)
    }

    /// After an answer is written, the next head is due within the timeout.
    fn arm_after_answer(&mut self) {
        let p = &self.progress;
        if p.upgraded.load(Ordering::Acquire) || p.in_flight.load(Ordering::Acquire) > 0 {
            return;
        }
        if !p.waiting_for_head.swap(true, Ordering::AcqRel) {
            self.sleep.as_mut().reset(Instant::now() + self.timeout);
        }
    }

    fn overdue(&mut self, cx: &mut Context<'_>) -> bool {
        let p = &self.progress;
        p.waiting_for_head.load(Ordering::Acquire)
            && !p.upgraded.load(Ordering::Acquire)
            && self.sleep.as_mut().poll(cx).is_ready()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.overdue(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete request head within the header timeout",
            )));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.arm_after_answer();
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.arm_after_answer();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out_and_an_answered_one_gets_a_new_deadline() {
        let (client, server) = tokio::io::duplex(64);
        let (mut stream, progress) =
            HeadDeadline::new(server, Duration::from_secs(10), Instant::now());
        let mut client = client;
        let mut buf = [0u8; 8];

        // A head arrives in time: the service is called and answers.
        client.write_all(b"GET").await.unwrap();
        assert_eq!(stream.read(&mut buf).await.unwrap(), 3);
        progress.request_started();
        tokio::time::advance(Duration::from_secs(30)).await;
        progress.request_answered(false);
        stream.write_all(b"200").await.unwrap();

        // Then nothing: the next head is overdue ten seconds after the answer.
        tokio::time::advance(Duration::from_secs(9)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_connection_has_no_head_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut stream, progress) =
            HeadDeadline::new(server, Duration::from_secs(10), Instant::now());
        progress.request_started();
        progress.request_answered(true);
        stream.write_all(b"101").await.unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        client.write_all(b"frame").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 5);
    }
}
