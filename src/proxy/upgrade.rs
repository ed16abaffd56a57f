//! Protocol upgrades (WebSocket): once the origin answers 101, the two
//! connections are joined byte for byte until either side closes, or until
//! no byte has passed either way for `server.tunnel_idle_timeout`. The tunnel
//! keeps the client connection's place under `server.max_connections`, and
//! the request's places in `[[limit_conn]]` zones ([`Held`]).
//!
//! Idleness is sampled, not timed per read: the tunnel looks four times per
//! timeout and closes once five looks in a row saw nothing pass, that is after
//! between one and one and a quarter timeouts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::upgrade::OnUpgrade;

/// Looks taken per idle timeout.
const LOOKS: u32 = 4;

/// What a tunnel keeps until it closes, given to it once the 101 is answered
/// (a response extension): the request's places in `[[limit_conn]]` zones.
#[derive(Clone, Default)]
pub(super) struct Held(Arc<std::sync::Mutex<Vec<crate::guard::ConnPermit>>>);

impl Held {
    pub(super) fn keep(&self, permits: Vec<crate::guard::ConnPermit>) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(permits);
    }
}

/// Joins `client` and `origin` once both are upgraded; the tunnel keeps
/// `slot` and what `Held` is given. Returns the `Held`.
pub(super) fn tunnel(
    client: OnUpgrade,
    origin: OnUpgrade,
    idle: Duration,
    slot: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
) -> Held {
    let held = Held::default();
    let kept = (slot, held.clone());
    tokio::spawn(async move {
        let _kept = kept;
        let (client, origin) = match tokio::try_join!(client.upgraded(), origin.upgraded()) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let passed = Arc::new(AtomicU64::new(0));
        let mut client = Counting { io: client, passed: passed.clone() };
        let mut origin = Counting { io: origin, passed: passed.clone() };
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut origin) => {
                if let Err(e) = copied {
                    tracing::debug!(error = %e, "tunnel closed with an error");
                }
            }
            () = quiet(&passed, idle) => {
                tracing::debug!(?idle, "tunnel idle for server.tunnel_idle_timeout; closed");
            }
        }
    });
    held
}

/// Resolves once nothing has passed for `idle` (to `idle` × 5/4).
async fn quiet(passed: &AtomicU64, idle: Duration) {
    let mut tick = tokio::time::interval(idle / LOOKS);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let (mut seen, mut still) = (passed.load(Ordering::Relaxed), 0);
    loop {
        tick.tick().await;
        let now = passed.load(Ordering::Relaxed);
        if now != seen {
            (seen, still) = (now, 0);
        } else {
            still += 1;
            if still > LOOKS {
                return;
            }
        }
    }
}

/// One side of a tunnel, adding what it reads to the tunnel's count.
struct Counting<T> {
    io: T,
    passed: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.passed.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
