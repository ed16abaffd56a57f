//! Listeners and connections: accept, serve HTTP/1.1 and h2c (prior
//! knowledge) on the same port, TLS, and HTTP/3 beside it ([`quic`]), close
//! what is silent or idle, and shut down gracefully.
//!
//! A connection's first bytes are read under `header_read_timeout` to choose
//! the protocol (on a TLS listener, before the handshake takes one of the
//! places in [`handshakes`]), so a socket that sends nothing is closed like a
//! slow header and costs one timer.
//!
//! A connection with no request in flight for `idle_timeout` is closed (HTTP/2
//! with a GOAWAY), whatever PINGs it answers (see [`activity`]). A client that
//! takes nothing of a response for `send_timeout` is cut off: its connection
//! closed ([`gather`]), or on HTTP/2 its stream reset ([`stall`]); a closing
//! HTTP/2 connection with nothing in flight that still does not end within
//! that time is dropped.
//!
//! Each connection reads the current [`Pipeline`] per request, so a reload
//! applies to the next request even on a kept-alive connection, while a
//! request in flight keeps the pipeline it started with. What the listeners
//! themselves read of a configuration (timeouts, limits, certificates) is a
//! [`ConnSettings`], built once with it and swapped beside it.

mod activity;
mod backoff;
mod frames;
mod gather;
mod h1;
mod handshakes;
mod proxy_protocol;
pub(crate) mod quic;
mod stall;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::http::body::{Body, BoxError};
use crate::http::interim::Interim;
use crate::metrics::{Metrics, Reason};
use crate::proxy::{self, Conn, Pipeline};
use crate::tls::Tls;
use activity::{Activity, Counted};
use backoff::Backoff;
use gather::Gather;
use handshakes::Handshakes;

/// Binds a listening socket with address reuse and a deep backlog.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Which protocol a listener speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// HTTP/1.1 and h2c, told apart by the first bytes.
    Plain,
    /// TLS, with HTTP/1.1 or h2 chosen by ALPN (`[server.tls]`).
    Tls,
    /// The admin listener: cleartext, never behind the PROXY protocol.
    Admin,
}

/// Serves the proxy on `listener` until `stop` changes.
pub(crate) async fn serve(
    listener: TcpListener,
    pipelines: Arc<ArcSwap<Pipeline>>,
    conns: Arc<ArcSwap<ConnSettings>>,
    stop: watch::Receiver<bool>,
    kind: Listener,
) {
    let make = move |info: Arc<Conn>| {
        let pipelines = pipelines.clone();
        move |req| proxy::handle(pipelines.load_full(), info.clone(), req)
    };
    accept(listener, conns, stop, kind, make).await;
}

/// Accepts on `listener` until `stop` changes, serving each connection with the
/// handler `make` returns for it; then gives open connections
/// `server.grace_period` to finish their requests and closes the rest. With
/// `server.max_connections` open, it stops accepting until one closes.
pub(crate) async fn accept<M, H, F, B>(
    listener: TcpListener,
    conns: Arc<ArcSwap<ConnSettings>>,
    mut stop: watch::Receiver<bool>,
    kind: Listener,
    make: M,
) where
    M: Fn(Arc<Conn>) -> H + Clone + Send + Sync + 'static,
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut backoff = Backoff::default();
    // Handshakes in progress and the connection cap, for this listener's life.
    let (handshakes, slots) = {
        let now = conns.load();
        let (all, per_source) = now.handshakes;
        (Handshakes::new(all, per_source), Arc::new(Semaphore::new(now.max_connections)))
    };
    let mut full = false;
    loop {
        while connections.try_join_next().is_some() {}
        if slots.available_permits() == 0 && !full {
            tracing::warn!(addr = ?listener.local_addr().ok(), "server.max_connections reached; accepting paused");
        }
        full = slots.available_permits() == 0;
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    backoff.reset();
                    let now = conns.load();
                    let settings = now.settings(kind);
                    let metrics = now.metrics.clone();
                    let opened = Opened { tcp, peer, settings, stop: stop.clone(), metrics, slot };
                    match kind {
                        Listener::Plain | Listener::Admin => {
                            connections.spawn(plain(opened, make.clone()));
                        }
                        Listener::Tls => {
                            // The certificates in force now: a reload applies to the next handshake.
                            let Some(tls) = now.tls.clone() else { continue };
                            let handshake = Handshake { tls, places: handshakes.clone() };
                            connections.spawn(secure(opened, handshake, make.clone()));
                        }
                    }
                }
                Err(e) => backoff.wait(&e).await,
            },
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let grace = conns.load().grace_period;
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(?grace, left = connections.len(), "grace period over; closing remaining connections");
        connections.shutdown().await;
    }
}

/// What the listeners read of one configuration: built once with it, stored
/// beside its pipeline on every reload, read by a connection when accepted.
pub(crate) struct ConnSettings {
    plain: Settings,
    secure: Settings,
    admin: Settings,
    /// The TLS listeners' certificates: a reload applies to the next handshake.
    tls: Option<Arc<Tls>>,
    /// `server.max_connections`, read when a listener starts.
    max_connections: usize,
    /// `server.tls.max_handshakes` and `max_handshakes_per_source`, read when a listener starts.
    handshakes: (usize, usize),
    /// `server.grace_period`, read when the listener stops.
    grace_period: Duration,
    metrics: Arc<Metrics>,
    /// With `server.tls.http3`: the QUIC listeners' settings, taken by each new connection.
    quic: Option<Arc<quinn::ServerConfig>>,
}

impl ConnSettings {
    /// `tls` is the configuration's, as its pipeline built it (files read once).
    pub(crate) fn new(config: &Config, tls: Option<Arc<Tls>>, metrics: Arc<Metrics>) -> ConnSettings {
        let handshakes = config.server.tls.as_ref().map_or((1, 1), |t| (t.max_handshakes, t.max_handshakes_per_source));
        let secure = Settings::of(config, Listener::Tls);
        let quic = tls.as_deref().and_then(|t| quic::config(t, &secure));
        ConnSettings {
            plain: Settings::of(config, Listener::Plain),
            secure,
            quic,
            admin: Settings::of(config, Listener::Admin),
            tls,
            max_connections: config.server.max_connections.max(1),
            handshakes,
            grace_period: config.grace_period(),
            metrics,
        }
    }

    fn settings(&self, kind: Listener) -> Settings {
        match kind {
            Listener::Plain => self.plain,
            Listener::Tls => self.secure,
            Listener::Admin => self.admin,
        }
    }
}

/// What a connection needs of `[server]` and `[guard]`, read when it is accepted.
#[derive(Clone, Copy)]
struct Settings {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    send_timeout: Duration,
    max_header_size: u64,
    max_headers: usize,
    max_requests: usize,
    max_streams: u32,
    /// The connection starts with a PROXY protocol header.
    proxy_protocol: bool,
    /// `http` or `https`, for the access log.
    scheme: &'static str,
    /// The access log's format, when requests on this listener are logged.
    access: Option<crate::config::LogFormat>,
    /// Which listener, as `relais_connections_open` names it.
    listener: usize,
    /// `server.engine`: relais's own HTTP/1.1 server, or hyper's.
    own_h1: bool,
}

impl Settings {
    fn of(config: &Config, kind: Listener) -> Settings {
        let (c, g) = (&config.server, &config.guard);
        Settings {
            header_read_timeout: c.header_read_timeout.get(),
            idle_timeout: c.idle_timeout.get(),
            send_timeout: c.send_timeout.get(),
            max_header_size: c.max_header_size.bytes(),
            max_headers: c.max_headers,
            max_requests: usize::try_from(g.max_requests_per_connection).unwrap_or(usize::MAX),
            max_streams: g.http2_max_concurrent_streams,
            proxy_protocol: match kind {
                Listener::Plain => c.proxy_protocol,
                Listener::Tls => c.tls.as_ref().is_some_and(|t| t.proxy_protocol),
                Listener::Admin => false,
            },
            scheme: if kind == Listener::Tls { "https" } else { "http" },
            access: (kind != Listener::Admin && config.log.access).then_some(config.log.format),
            listener: match kind {
                Listener::Plain => 0,
                Listener::Tls => 1,
                Listener::Admin => 2,
            },
            own_h1: c.engine == crate::config::Engine::Relais,
        }
    }
}

/// A connection just accepted.
struct Opened {
    tcp: TcpStream,
    peer: SocketAddr,
    settings: Settings,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    /// Its place under `server.max_connections` (kept by a tunnel it becomes, see [`Conn::slot`]).
    slot: OwnedSemaphorePermit,
}

/// What a TLS connection needs for its handshake.
struct Handshake {
    tls: Arc<Tls>,
    places: Arc<Handshakes>,
}

/// A cleartext connection: its first bytes, under the header timeout, tell h2c from HTTP/1.
async fn plain<M, H, F, B>(opened: Opened, make: M)
where
    M: Fn(Arc<Conn>) -> H,
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let Opened { mut tcp, peer, settings, stop, metrics, slot } = opened;
    let _ = tcp.set_nodelay(true);
    let opening = async {
        let Some((peer, read)) = proxy_protocol::source(&mut tcp, peer, settings.proxy_protocol).await? else {
            return Ok(None);
        };
        Ok::<_, io::Error>(first_bytes(&mut tcp, read).await?.map(|(http2, first)| (peer, http2, first)))
    };
    let (peer, http2, first) = match tokio::time::timeout(settings.header_read_timeout, opening).await {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection failed before its first request");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no request within the header timeout; closed");
            return;
        }
    };
    let conn = Conn { slot: Some(Arc::new(slot)), ..Conn::plain(peer) };
    let io = Gather::new(tcp, http2, first).send_timeout(settings.send_timeout);
    if !http2 && settings.own_h1 {
        let interim = Interim::default();
        let handler = make(Arc::new(Conn { interim: Some(interim.clone()), ..conn }));
        return h1::serve(io, peer, settings, handler, stop, &metrics, interim).await;
    }
    serve_io(io, http2, peer, settings, make(Arc::new(conn)), stop, &metrics).await;
}

/// A TLS connection: its first bytes under the header timeout (a silent
/// socket holds no handshake place), then the handshake under its timeout and
/// the caps on those in progress, then the protocol ALPN chose. An ACME
/// validation's handshake (`acme-tls/1`) ends there.
async fn secure<M, H, F, B>(opened: Opened, handshake: Handshake, make: M)
where
    M: Fn(Arc<Conn>) -> H,
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let Opened { mut tcp, peer, settings, stop, metrics, slot } = opened;
    let _ = tcp.set_nodelay(true);
    let opening = async {
        // What a PROXY header was followed by is the start of the handshake.
        let Some((peer, mut read)) = proxy_protocol::source(&mut tcp, peer, settings.proxy_protocol).await? else {
            return Ok(None);
        };
        if read.is_empty() && tcp.read_buf(&mut read).await? == 0 {
            return Ok(None);
        }
        Ok::<_, io::Error>(Some((peer, read)))
    };
    let (peer, read) = match tokio::time::timeout(settings.header_read_timeout, opening).await {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection failed before its TLS handshake");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no TLS handshake within the header timeout; closed");
            return;
        }
    };
    let shaken = tokio::time::timeout(handshake.tls.handshake_timeout, async {
        let _place = handshake.places.enter(peer.ip()).await;
        handshake.tls.acceptor.accept(Gather::new(tcp, false, read.freeze())).await
    })
    .await;
    let stream = match shaken {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake not done within the handshake timeout; closed");
            return;
        }
    };
    let session = stream.get_ref().1;
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    if alpn.as_deref() == Some(crate::tls::ACME_TLS_ALPN) {
        return;
    }
    let http2 = alpn.as_deref() == Some(b"h2");
    let client_subject = session.peer_certificates().and_then(|c| c.first()).and_then(crate::tls::subject_of);
    let mut conn = Conn::new(peer, "https", client_subject.map(Arc::from));
    conn.served_names = handshake.tls.served_names(session.server_name());
    conn.slot = Some(Arc::new(slot));
    let io = Gather::new(stream, http2, Bytes::new()).send_timeout(settings.send_timeout);
    if !http2 && settings.own_h1 {
        let interim = Interim::default();
        conn.interim = Some(interim.clone());
        return h1::serve(io, peer, settings, make(Arc::new(conn)), stop, &metrics, interim).await;
    }
    serve_io(io, http2, peer, settings, make(Arc::new(conn)), stop, &metrics).await;
}

/// How long a stopping proxy keeps an idle HTTP/1 connection open for a request already sent.
const LINGER: Duration = Duration::from_millis(200);

/// Serves HTTP on `io` until it ends, the stop signal, or idleness.
async fn serve_io<I, H, F, B>(
    io: Gather<I>,
    http2: bool,
    peer: SocketAddr,
    s: Settings,
    handler: H,
    mut stop: watch::Receiver<bool>,
    metrics: &Metrics,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let _open = metrics.connection_open(s.listener, http2);
    let activity = Arc::new(Activity::new(s.max_requests));
    let flooded = io.flood_alarm();
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            Counted::new(handler(req.map(Body::from)), activity.begin(), http2)
        })
    };
    let io = TokioIo::new(io);
    let builder = builder(&s, http2);
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut idle = std::pin::pin!(activity.idle(s.idle_timeout));
    // HTTP/2, once closing: nothing in flight, yet not ended (a client that
    // leaves the last frames of its answers unread; hyper counts a stream done
    // once they are queued). On HTTP/1 the socket's own timer covers it.
    let mut stuck = std::pin::pin!(activity.idle(s.send_timeout));
    let mut closing = false;
    // HTTP/1 and stopping, nothing in flight: a request the client sends as
    // the connection closes would be lost (reset, with its bytes unread).
    // The next one is answered instead, saying `Connection: close`; or the
    // connection is closed once it has been idle for `LINGER`.
    let mut linger = std::pin::pin!(activity.idle(LINGER));
    let mut stopping = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                let calm = ended.as_ref().err().is_some_and(|e| told_to_calm_down(&**e));
                if calm || flooded.is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed)) {
                    metrics.guard(Reason::H2Flood, "none", false);
                    tracing::info!(%peer, "HTTP/2 flood; connection ended");
                } else if let Err(e) = ended {
                    if let Some(status) = refused_by_parser(&*e) {
                        log_refused(peer, status, &s, metrics);
                    }
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = activity.spent(), if !closing => {
                // guard.max_requests_per_connection: finish what is in flight, then close.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stop.changed(), if !closing && !stopping => {
                if http2 || activity.last_one() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                } else {
                    stopping = true;
                }
            }
            () = &mut linger, if stopping && !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = &mut idle, if !closing => {
                tracing::debug!(%peer, "idle connection closed");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = &mut stuck, if closing && http2 => {
                tracing::debug!(%peer, "closing connection whose client reads nothing dropped");
                return;
            }
        }
    }
}

/// The status hyper answered a request it could not parse with (HTTP/1), if
/// it answered one: these never reach the pipeline, but are requests all the same.
fn refused_by_parser(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let e = e.downcast_ref::<hyper::Error>()?;
    if !e.is_parse() || e.is_parse_version_h2() || e.is_parse_status() {
        return None;
    }
    // hyper says which of its two "too large" answers it sent only in its message.
    Some(match e.is_parse_too_large() {
        true if e.to_string().contains("URI too long") => 414,
        true => 431,
        false => 400,
    })
}

/// An access line and a count for a request hyper refused before relais saw it
/// (nginx logs its 400s too; fail2ban reads them): no method, path or host is known.
fn log_refused(peer: SocketAddr, status: u16, s: &Settings, metrics: &Metrics) {
    metrics.request("none", status, None, 0, 0);
    let Some(format) = s.access else { return };
    let line = crate::logs::access::Line {
        time: std::time::SystemTime::now(),
        client: peer.ip(),
        method: "-",
        scheme: s.scheme,
        protocol: "HTTP/1.1",
        host: "-",
        target: "-",
        status,
        bytes: 0,
        duration: Duration::ZERO,
        upstream: None,
        upstream_time: None,
        cache: "-",
        route: None,
        refused: "-",
        rule: None,
        referer: None,
        user_agent: None,
        request_id: None,
        complete: true,
    };
    crate::logs::access(&line, format);
}

/// Whether h2 ended the connection with ENHANCE_YOUR_CALM: its own flood
/// limits (resets before accept, CONTINUATION, small DATA frames) tripped.
fn told_to_calm_down(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
        }
        source = err.source();
    }
    false
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes tell HTTP/2's preface from anything else, starting
/// with those in `buf`; returns whether it is HTTP/2 and what was read. None
/// if the peer closed first.
async fn first_bytes(tcp: &mut TcpStream, mut buf: BytesMut) -> io::Result<Option<(bool, Bytes)>> {
    buf.reserve(4096);
    loop {
        if buf.is_empty() && tcp.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            return Ok(Some((false, buf.freeze())));
        }
        if n == PREFACE.len() {
            return Ok(Some((true, buf.freeze())));
        }
        if tcp.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// hyper's connection settings from `[server]`, for the protocol the first bytes chose.
fn builder(s: &Settings, http2: bool) -> auto::Builder<stall::Streams> {
    let b = auto::Builder::new(stall::Streams { send_timeout: s.send_timeout });
    let mut b = if http2 { b.http2_only() } else { b.http1_only() };
    b.http1()
        // Without a timer the header-read timeout is silently off.
        .timer(TokioTimer::new())
        .header_read_timeout(s.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(s.max_header_size.max(8192) as usize)
        .max_headers(s.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(s.max_header_size.min(u32::MAX as u64) as u32)
        .max_concurrent_streams(s.max_streams)
        // Streams reset before they were served (rapid reset): past this, GOAWAY.
        .max_pending_accept_reset_streams(20)
        // Streams relais had to reset for the client's errors: past this, GOAWAY.
        .max_local_error_reset_streams(Some(256));
    b
}
