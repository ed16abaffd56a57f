//! One server's connections: idle HTTP/1.1 connections kept for reuse, or
//! shared HTTP/2 connections carrying up to `max_streams` requests each.
//!
//! An HTTP/1.1 connection has no task of its own. While a request is on it,
//! the request's own task drives it: first while the response head is
//! awaited, then from the response body, which polls the connection whenever
//! it has no data. Once the body has ended the connection goes back to the
//! idle list, where nothing polls it until the next checkout; a periodic
//! sweep closes the ones past `idle_timeout` and those the server closed.
//! So a proxied request costs no wake-up of another task and no lock but
//! this server's own, held for a push or a pop. HTTP/2 connections
//! multiplex, so each runs as a task of its own.
//!
//! `server.engine` says whose HTTP/1.1 code the connections run: relais's
//! own ([`super::h1`]) or hyper's; HTTP/2 is hyper's either way.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::connect::{Connector, Endpoint, Stream};
use super::h1;
use crate::config::Engine;
use crate::http::body::{Body, BoxError};
use crate::http::upgrade::OnUpgrade;

type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send + Sync>>;

/// An HTTP/1.1 connection and the future that drives it.
struct H1 {
    send: http1::SendRequest<Body>,
    conn: Driver,
    idle_since: Instant,
}

impl H1 {
    /// Drives the connection as far as it goes now; false once it has ended.
    fn poll_conn(&mut self, cx: &mut Context<'_>) -> bool {
        self.conn.as_mut().poll(cx).is_pending()
    }

    /// Still open and ready for another request. Polls with a waker that does
    /// nothing: whoever checks it out next polls it with theirs.
    fn reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.poll_conn(&mut cx) && self.send.is_ready()
    }
}

/// An idle HTTP/1.1 connection of either engine.
enum Idle {
    Hyper(H1),
    Own(h1::Conn),
}

impl Idle {
    fn idle_since(&self) -> Instant {
        match self {
            Idle::Hyper(h1) => h1.idle_since,
            Idle::Own(c) => c.idle_since,
        }
    }

    fn reusable(&mut self) -> bool {
        match self {
            Idle::Hyper(h1) => h1.reusable(),
            Idle::Own(c) => c.reusable(),
        }
    }
}

struct H2 {
    send: http2::SendRequest<Body>,
    streams: Arc<AtomicUsize>,
}

pub(super) struct Settings {
    pub h2: bool,
    pub max_idle: usize,
    pub idle_timeout: Duration,
    pub max_streams: usize,
    pub engine: Engine,
}

/// How a request went wrong before a response head came back.
pub(super) enum SendError {
    /// No connection could be made: the server never saw the request.
    Connect(String),
    /// The connection failed once the request was handed to it.
    Request(RequestError),
}

/// A request that failed on its connection, by either engine.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    Own(#[from] h1::Error),
}

impl RequestError {
    /// The request body failed (the client's side), not the origin.
    pub(super) fn body_failed(&self) -> bool {
        match self {
            RequestError::Hyper(e) => e.is_user(),
            RequestError::Own(e) => matches!(e, h1::Error::Body(_)),
        }
    }
}

pub(super) struct Pool {
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Vec<H2>>,
    /// Held while an HTTP/2 connection is being opened, so a burst of
    /// requests waits for one connection to share instead of opening one each.
    /// It keeps the last open's error: those that waited for an open that
    /// failed fail with it, rather than each trying in turn (a silent server
    /// would make the last of a burst wait a connect timeout per request).
    h2_opening: tokio::sync::Mutex<Option<String>>,
    /// Opens finished under `h2_opening`, so a waiter can tell one happened while it waited.
    h2_opens: AtomicUsize,
    settings: Arc<Settings>,
}

impl Pool {
    pub(super) fn new(settings: Arc<Settings>) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::default(),
            h2: Mutex::default(),
            h2_opening: Default::default(),
            h2_opens: AtomicUsize::new(0),
            settings,
        })
    }

    /// Sends `req` on a pooled connection or a new one; also says whether the connection was reused.
    pub(super) async fn send(
        self: &Arc<Self>,
        connector: &Connector,
        endpoint: &Endpoint,
        tls: bool,
        req: Request<Body>,
    ) -> Result<(Response<Body>, bool), SendError> {
        if self.settings.h2 {
            return self.send_h2(connector, endpoint, tls, req).await;
        }
        let mut req = req;
        loop {
            let (conn, reused) = match self.checkout() {
                Some(idle) => (idle, true),
                None => match open(connector, endpoint, tls, false, self.settings.engine).await? {
                    Opened::H1(h1) => (Idle::Hyper(h1), false),
                    Opened::Own(c) => (Idle::Own(c), false),
                    // The server chose h2 by ALPN although not offered: cannot happen.
                    Opened::H2(_) => return Err(SendError::Connect("unexpected h2".into())),
                },
            };
            // A pooled connection the server had closed, found before the request was written: try another.
            match conn {
                Idle::Own(c) => match h1::send(c, req, Some(self.clone())).await {
                    Ok(res) => return Ok((res, reused)),
                    Err(h1::Failed::Unsent(back, e)) if reused => {
                        tracing::debug!(error = %e, "pooled connection was closed; trying another");
                        req = *back;
                    }
                    Err(h1::Failed::Unsent(_, e) | h1::Failed::Sent(e)) => return Err(SendError::Request(e.into())),
                },
                Idle::Hyper(h1) => match self.send_on(h1, req, true).await {
                    Ok(res) => return Ok((res, reused)),
                    Err(mut e) if reused && e.message().is_some() => {
                        tracing::debug!(error = %e.error(), "pooled connection was closed; trying another");
                        req = e.take_message().expect("checked");
                    }
                    Err(e) => return Err(SendError::Request(e.into_error().into())),
                },
            }
        }
    }

    /// Sends `req` on `h1`, driving the connection until the response head. With `keep`, the
    /// response body drives it on and returns it to the pool; otherwise it finishes on its own task.
    async fn send_on(
        self: &Arc<Self>,
        mut h1: H1,
        req: Request<Body>,
        keep: bool,
    ) -> Result<Response<Body>, TrySendError<Request<Body>>> {
        let mut response = std::pin::pin!(h1.send.try_send_request(req));
        let mut driving = true;
        let res = std::future::poll_fn(|cx| {
            if driving {
                driving = h1.poll_conn(cx);
            }
            response.as_mut().poll(cx)
        })
        .await?;
        let (mut parts, body) = res.into_parts();
        if let Some(on) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
            parts.extensions.insert(OnUpgrade::Hyper(on));
        }
        // An upgraded connection (101) is finished by its own task, which hands it over.
        let body = if keep && parts.status != StatusCode::SWITCHING_PROTOCOLS {
            Body::boxed(Leased { body, h1: driving.then_some(h1), pool: self.clone(), ended: false })
        } else {
            if driving {
                tokio::spawn(h1.conn);
            }
            Body::from(body)
        };
        Ok(Response::from_parts(parts, body))
    }

    async fn send_h2(
        self: &Arc<Self>,
        connector: &Connector,
        endpoint: &Endpoint,
        tls: bool,
        req: Request<Body>,
    ) -> Result<(Response<Body>, bool), SendError> {
        let mut free = self.h2_stream();
        let mut opening = None;
        if free.is_none() {
            let opens = self.h2_opens.load(Ordering::Acquire);
            let guard = self.h2_opening.lock().await;
            if self.h2_opens.load(Ordering::Acquire) != opens
                && let Some(e) = guard.as_ref()
            {
                return Err(SendError::Connect(e.clone()));
            }
            // Whoever held it may have opened a connection with room for this stream.
            free = self.h2_stream();
            opening = Some(guard);
        }
        let (mut send, streams, reused) = match free {
            Some((send, streams)) => (send, streams, true),
            None => {
                let opened = open(connector, endpoint, tls, true, self.settings.engine).await;
                if let Some(last) = opening.as_mut() {
                    **last = match &opened {
                        Err(SendError::Connect(e)) => Some(e.clone()),
                        _ => None,
                    };
                    self.h2_opens.fetch_add(1, Ordering::Release);
                }
                let h2 = match opened? {
                    Opened::H2(h2) => h2,
                    // An https server that did not choose h2 by ALPN: HTTP/1.1 on this connection.
                    Opened::H1(h1) => {
                        drop(opening);
                        let res = self.send_on(h1, req, false).await;
                        return Ok((res.map_err(|e| SendError::Request(e.into_error().into()))?, false));
                    }
                    Opened::Own(c) => {
                        drop(opening);
                        let res = h1::send(c, req, None).await;
                        let e = |(h1::Failed::Unsent(_, e) | h1::Failed::Sent(e))| SendError::Request(e.into());
                        return Ok((res.map_err(e)?, false));
                    }
                };
                h2.streams.fetch_add(1, Ordering::Relaxed);
                let mut list = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
                let taken = (h2.send.clone(), h2.streams.clone());
                list.push(h2);
                (taken.0, taken.1, false)
            }
        };
        drop(opening);
        let stream = StreamSlot(streams);
        let res = send.send_request(req).await.map_err(|e| SendError::Request(e.into()))?;
        Ok((res.map(|body| Body::boxed(Counted { body, _stream: stream })), reused))
    }

    /// A live h2 connection with a free stream, that stream counted taken.
    fn h2_stream(&self) -> Option<(http2::SendRequest<Body>, Arc<AtomicUsize>)> {
        let mut list = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|c| !c.send.is_closed());
        let c = list.iter().find(|c| c.streams.load(Ordering::Relaxed) < self.settings.max_streams)?;
        c.streams.fetch_add(1, Ordering::Relaxed);
        Some((c.send.clone(), c.streams.clone()))
    }

    /// The most recently used idle connection still open and fresh.
    fn checkout(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(mut c) = idle.pop() {
            if c.idle_since().elapsed() < self.settings.idle_timeout && c.reusable() {
                return Some(c);
            }
        }
        None
    }

    pub(super) fn idle_timeout(&self) -> Duration {
        self.settings.idle_timeout
    }

    /// Returns a connection of relais's own whose response has ended whole.
    pub(super) fn checkin_own(&self, conn: h1::Conn) {
        self.push(Idle::Own(conn));
    }

    /// Returns a connection whose response has ended. One still sending its
    /// request body (the server answered early) is driven on by a task of its
    /// own until it is ready again, as long as an idle one may live.
    fn checkin(self: &Arc<Self>, mut h1: H1) {
        if !h1.reusable() {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
            if h1.send.is_closed() {
                return;
            }
            let pool = self.clone();
            runtime.spawn(async move {
                let ready = std::future::poll_fn(|cx| {
                    if !h1.poll_conn(cx) {
                        return Poll::Ready(false);
                    }
                    h1.send.poll_ready(cx).map(|r| r.is_ok())
                });
                if let Ok(true) = tokio::time::timeout(pool.settings.idle_timeout, ready).await {
                    pool.push(Idle::Hyper(h1));
                }
            });
            return;
        }
        self.push(Idle::Hyper(h1));
    }

    fn push(&self, mut conn: Idle) {
        match &mut conn {
            Idle::Hyper(h1) => h1.idle_since = Instant::now(),
            Idle::Own(c) => c.idle_since = Instant::now(),
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() >= self.settings.max_idle {
            // Past the cap the oldest goes: it is the likeliest to have been closed.
            if self.settings.max_idle == 0 {
                return;
            }
            idle.remove(0);
        }
        idle.push(conn);
    }

    /// Closes idle connections past `idle_timeout` or closed by the server.
    pub(super) fn sweep(&self) {
        let timeout = self.settings.idle_timeout;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain_mut(|c| c.idle_since().elapsed() < timeout && c.reusable());
        drop(idle);
        self.h2.lock().unwrap_or_else(PoisonError::into_inner).retain(|c| !c.send.is_closed());
    }

    /// Idle HTTP/1.1 connections and open HTTP/2 ones.
    pub(super) fn open_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
            + self.h2.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

enum Opened {
    H1(H1),
    Own(h1::Conn),
    H2(H2),
}

/// A new connection: HTTP/2 if asked (prior knowledge in cleartext, ALPN over TLS), else HTTP/1.1.
async fn open(
    connector: &Connector,
    endpoint: &Endpoint,
    tls: bool,
    h2: bool,
    engine: Engine,
) -> Result<Opened, SendError> {
    let stream = connector.connect(endpoint, tls).await.map_err(|e| SendError::Connect(e.to_string()))?;
    if h2 && (!tls || stream.alpn_h2()) {
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "h2 upstream connection ended");
            }
        });
        return Ok(Opened::H2(H2 { send, streams: Arc::new(AtomicUsize::new(0)) }));
    }
    if engine == Engine::Relais {
        return Ok(Opened::Own(h1::Conn::new(stream)));
    }
    let (send, conn) = http1::Builder::new()
        .max_buf_size(256 * 1024)
        .handshake::<TokioIo<Stream>, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Connect(e.to_string()))?;
    Ok(Opened::H1(H1 { send, conn: Box::pin(conn.with_upgrades()), idle_since: Instant::now() }))
}

pin_project_lite::pin_project! {
    /// A response body that drives its connection and returns it to the pool once it has ended.
    struct Leased {
        #[pin]
        body: Incoming,
        h1: Option<H1>,
        pool: Arc<Pool>,
        ended: bool,
    }

    impl PinnedDrop for Leased {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Dropped before its end, the connection is mid-response: it closes.
            if (*this.ended || http_body::Body::is_end_stream(&*this.body))
                && let Some(h1) = this.h1.take()
            {
                this.pool.checkin(h1);
            }
        }
    }
}

impl http_body::Body for Leased {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let mut polled = this.body.as_mut().poll_frame(cx);
        if polled.is_pending()
            && let Some(h1) = this.h1.as_mut()
        {
            if !h1.poll_conn(cx) {
                // Ended (closed after this response, or failed): the body says which.
                *this.h1 = None;
            }
            polled = this.body.as_mut().poll_frame(cx);
        }
        if let Poll::Ready(None) = polled {
            *this.ended = true;
            if let Some(h1) = this.h1.take() {
                this.pool.checkin(h1);
            }
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An h2 stream counted taken until its response body is dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    struct Counted {
        #[pin]
        body: Incoming,
        _stream: StreamSlot,
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().body.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
