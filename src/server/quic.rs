//! HTTP/3: QUIC on UDP beside each TLS listener (same ip:port), on quinn and
//! h3. A request enters the same pipeline as HTTP/1.1 and HTTP/2 ones, with
//! `Version::HTTP_3`; its body is read from its stream as the pipeline asks
//! (QUIC flow control bounds what a client sends ahead), and the response is
//! written frame by frame, each write waiting for the client's window.
//!
//! Each handshake takes the current configuration's certificates (a reload
//! applies to the next one) and a place under the same [`Handshakes`] caps as
//! a TLS listener has (each listener its own); once half of `max_handshakes`
//! are in progress on the listener, a client whose
//! address is not yet validated is sent a Retry first, so a flood of Initial
//! packets from forged addresses costs one stateless packet each.
//!
//! On stop: no new connections, a GOAWAY on each open one, its requests in
//! flight finished within `server.grace_period`, then the connection closed.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use futures_util::future::Shared;
use http::{HeaderMap, Request, Response, Version, header};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::handshakes::Handshakes;
use super::{ConnSettings, Listener, Settings};
use crate::http::body::{Body, BoxError};
use crate::metrics::{EarlyOutcome, Metrics};
use crate::proxy::{self, Conn, Pipeline};

/// Binds the UDP socket for the QUIC listener beside a TLS listener bound at `addr`.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    // A burst of datagrams waits in the socket's receive buffer until quinn
    // reads it; the kernel's default (about 208 KiB) drops packets under load.
    // The kernel caps what is asked at net.core.rmem_max / wmem_max.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    // Linux reports twice what it grants (the rest is its bookkeeping).
    let granted = socket.recv_buffer_size().unwrap_or(0) / 2;
    if granted < UDP_BUFFER {
        tracing::warn!(
            %addr,
            receive_buffer_kib = granted / 1024,
            "the kernel caps HTTP/3's UDP receive buffer below {} MiB; raise it with \
             sysctl -w net.core.rmem_max={UDP_BUFFER} net.core.wmem_max={UDP_BUFFER}",
            UDP_BUFFER >> 20
        );
    }
    Ok(socket.into())
}

/// The UDP socket buffers asked for, each way.
const UDP_BUFFER: usize = 8 << 20;

/// quinn's settings for one configuration: its certificates and the limits of `[server]`.
pub(super) fn config(tls: &crate::tls::Tls, s: &Settings) -> Option<Arc<quinn::ServerConfig>> {
    let mut config = quinn::ServerConfig::with_crypto(tls.quic.clone()?);
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(s.max_streams.into())
        // The client's control and QPACK streams, and room for the grease ones
        // clients send (RFC 9114, 6.2.3); a server push is never asked for.
        .max_concurrent_uni_streams(8u8.into())
        .max_idle_timeout(quinn::IdleTimeout::try_from(s.idle_timeout).ok());
    config.transport_config(Arc::new(transport));
    Some(Arc::new(config))
}

/// The QUIC endpoint on `socket`, with the configuration in force (HTTP/3 on).
pub(crate) fn endpoint(socket: std::net::UdpSocket, conns: &ConnSettings) -> io::Result<quinn::Endpoint> {
    let config = conns.quic.as_deref().cloned().ok_or_else(|| io::Error::other("HTTP/3 is off"))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(config), socket, Arc::new(quinn::TokioRuntime))
}

/// Serves HTTP/3 on `endpoint` until `stop` changes, then drains within `server.grace_period`.
pub(crate) async fn serve(
    endpoint: quinn::Endpoint,
    pipelines: Arc<ArcSwap<Pipeline>>,
    conns: Arc<ArcSwap<ConnSettings>>,
    mut stop: watch::Receiver<bool>,
) {
    let (places, busy) = {
        let (all, per_source) = conns.load().handshakes;
        (Handshakes::new(all, per_source), all.div_ceil(2))
    };
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            _ = stop.changed() => break,
        };
        let now = conns.load();
        let (Some(config), Some(tls)) = (now.quic.clone(), now.tls.clone()) else {
            incoming.refuse();
            continue;
        };
        if !incoming.remote_address_validated() && places.in_progress() >= busy && incoming.may_retry() {
            let _ = incoming.retry();
            continue;
        }
        let handler = {
            let pipelines = pipelines.clone();
            move |info: Arc<Conn>| {
                let pipelines = pipelines.clone();
                move |req| proxy::handle(pipelines.load_full(), info.clone(), req)
            }
        };
        let opened = Opened {
            settings: now.settings(Listener::Tls),
            metrics: now.metrics.clone(),
            tls,
            config,
            places: places.clone(),
            stop: stop.clone(),
        };
        connections.spawn(connection(incoming, opened, handler));
    }
    endpoint.set_server_config(None);
    let grace = conns.load().grace_period;
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(?grace, left = connections.len(), "grace period over; closing remaining HTTP/3 connections");
        connections.shutdown().await;
    }
    endpoint.close(h3::error::Code::H3_NO_ERROR.value().try_into().unwrap_or_default(), b"");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// What a QUIC connection needs from its listener.
struct Opened {
    settings: Settings,
    metrics: Arc<Metrics>,
    tls: Arc<crate::tls::Tls>,
    config: Arc<quinn::ServerConfig>,
    places: Arc<Handshakes>,
    stop: watch::Receiver<bool>,
}

/// One QUIC connection: its handshake under the caps and the timeout, then
/// its requests, each on a task of its own.
async fn connection<M, H, F, B>(incoming: quinn::Incoming, opened: Opened, make: M)
where
    M: Fn(Arc<Conn>) -> H,
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let Opened { settings, metrics, tls, config, places, mut stop } = opened;
    let peer = incoming.remote_address();
    let deadline = tokio::time::Instant::now() + tls.handshake_timeout;
    let shaken = tokio::time::timeout_at(deadline, async {
        let place = places.enter(peer.ip()).await;
        let mut connecting = incoming.accept_with(config)?;
        if tls.early_data {
            // Requests may come before the handshake ends; its ClientHello
            // (and the SNI) has been read.
            connecting.handshake_data().await?;
            // Always Ok on a server: it may take 0-RTT and send 0.5-RTT data.
            match connecting.into_0rtt() {
                Ok((quic, done)) => return Ok((quic, Some((place, done)))),
                Err(still) => connecting = still,
            }
        }
        Ok::<_, quinn::ConnectionError>((connecting.await?, None))
    })
    .await;
    let (quic, early) = match shaken {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "QUIC handshake not done within the handshake timeout; closed");
            return;
        }
    };
    // The handshake's end: a request read before it came in 0-RTT.
    let handshake = early.map(|(place, done)| {
        let done = done.shared();
        let (closing, watched) = (quic.clone(), done.clone());
        tokio::spawn(async move {
            let _place = place;
            if tokio::time::timeout_at(deadline, watched).await.is_err() {
                tracing::debug!(%peer, "QUIC handshake not done within the handshake timeout; closed");
                closing.close(h3::error::Code::H3_NO_ERROR.value().try_into().unwrap_or_default(), b"");
            }
        });
        Handshake { done, deadline, quic: quic.clone(), metrics: metrics.clone() }
    });
    let sni = quic
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.server_name);
    let client_subject = quic
        .peer_identity()
        .and_then(|i| i.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().and_then(crate::tls::subject_of));
    let mut conn = Conn::new(peer, "https", client_subject.map(Arc::from));
    conn.served_names = tls.served_names(sni.as_deref());
    let handler = make(Arc::new(conn));
    let mut h3 = match h3::server::builder()
        .max_field_section_size(settings.max_header_size)
        .build::<_, Bytes>(h3_quinn::Connection::new(quic.clone()))
        .await
    {
        Ok(h3) => h3,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "HTTP/3 connection failed to start");
            return;
        }
    };
    let _open = metrics.connection_open_h3();
    let mut requests = JoinSet::new();
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let early = handshake.clone().filter(Handshake::going_on);
                    // Boxed: the future is large (about 9 KB), and a task cell of that
                    // size is an aligned allocation that faulted in fresh pages each time.
                    requests.spawn(Box::pin(request(resolver, handler.clone(), settings.send_timeout, early)));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                    break;
                }
            },
            _ = stop.changed() => {
                // GOAWAY: no request after those accepted; they are finished below.
                let _ = h3.shutdown(0).await;
                break;
            }
        }
    }
    while requests.join_next().await.is_some() {}
    quic.close(h3::error::Code::H3_NO_ERROR.value().try_into().unwrap_or_default(), b"");
}

/// One request: read its head, answer through the pipeline, write the answer.
async fn request<H, F, B>(
    resolver: h3::server::RequestResolver<h3_quinn::Connection, Bytes>,
    handler: H,
    send_timeout: Duration,
    early: Option<Handshake>,
) where
    H: Fn(Request<Body>) -> F,
    F: Future<Output = Result<Response<B>, Infallible>>,
    B: http_body::Body<Data = Bytes, Error = BoxError>,
{
    let (req, stream) = match resolver.resolve_request().await {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/3 request not read");
            return;
        }
    };
    let (mut send, mut recv) = stream.split();
    let (mut parts, ()) = req.into_parts();
    parts.version = Version::HTTP_3;
    let body = match crate::http::body::content_length(&parts.headers) {
        Some(0) => Body::empty(),
        Some(n) => Body::boxed(Recv { stream: std::sync::Mutex::new(recv), length: Some(n), trailers: false }),
        // No length: the first read tells an empty body (a GET's) from one that
        // streams, so the pipeline never forwards an empty one as chunked.
        None => match recv.recv_data().await {
            Ok(None) => Body::empty(),
            Ok(Some(mut first)) => crate::http::body::chain(
                Body::full(first.copy_to_bytes(first.remaining())),
                Body::boxed(Recv { stream: std::sync::Mutex::new(recv), length: None, trailers: false }),
            ),
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/3 request body not read");
                return;
            }
        },
    };
    let mut first = None;
    if let Some(early) = &early {
        if parts.method.is_safe() && parts.method != http::Method::TRACE && http_body::Body::is_end_stream(&body) {
            // RFC 8470: the origin learns the request is replayable, and may answer 425.
            if !parts.headers.contains_key(EARLY_DATA) {
                first = Some((parts.method.clone(), parts.uri.clone(), parts.headers.clone()));
                parts.headers.insert(EARLY_DATA, http::HeaderValue::from_static("1"));
            }
            early.metrics.early_request(EarlyOutcome::Answered);
        } else {
            early.metrics.early_request(EarlyOutcome::Waited);
            if !early.ended().await {
                return;
            }
        }
    }
    let Ok(mut res) = handler(Request::from_parts(parts, body)).await;
    if res.status() == http::StatusCode::TOO_EARLY
        && let (Some((method, uri, headers)), Some(early)) = (first, &early)
    {
        // Too early for the origin: sent again once the handshake has ended
        // (the client did not ask to see a 425 by sending Early-Data itself).
        if !early.ended().await {
            return;
        }
        early.metrics.early_request(EarlyOutcome::Retried);
        let mut again = Request::new(Body::empty());
        *again.method_mut() = method;
        *again.uri_mut() = uri;
        *again.version_mut() = Version::HTTP_3;
        *again.headers_mut() = headers;
        let Ok(retried) = handler(again).await;
        res = retried;
    }
    let (mut parts, body) = res.into_parts();
    strip_connection_headers(&mut parts.headers);
    if let Err(e) = send.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!(error = %e, "HTTP/3 response head not sent");
        return;
    }
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let sent = match frame.map(Frame::into_data) {
            Ok(Ok(data)) => tokio::time::timeout(send_timeout, send.send_data(data)).await,
            Ok(Err(frame)) => match frame.into_trailers() {
                Ok(trailers) => tokio::time::timeout(send_timeout, send.send_trailers(trailers)).await,
                Err(_) => continue,
            },
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/3 response body failed; stream reset");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "HTTP/3 response not sent");
                return;
            }
            Err(_) => {
                tracing::debug!("HTTP/3 client read nothing within send_timeout; stream reset");
                send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                return;
            }
        }
    }
    let _ = send.finish().await;
}

const EARLY_DATA: http::HeaderName = http::HeaderName::from_static("early-data");

/// The handshake of a connection that takes 0-RTT, which a request read
/// before its end came in early.
#[derive(Clone)]
struct Handshake {
    /// Resolves when the handshake ends. Polled when a request's stream is
    /// accepted: quinn marks the handshake done before it hands over what came after.
    done: Shared<quinn::ZeroRttAccepted>,
    deadline: tokio::time::Instant,
    quic: quinn::Connection,
    metrics: Arc<Metrics>,
}

impl Handshake {
    /// Whether the handshake has not ended yet.
    fn going_on(&self) -> bool {
        self.done.clone().now_or_never().is_none()
    }

    /// Waits for the handshake to end; false if it did not, in time.
    async fn ended(&self) -> bool {
        tokio::time::timeout_at(self.deadline, self.done.clone()).await.is_ok() && self.quic.close_reason().is_none()
    }
}

/// HTTP/3 has no connection-specific fields (RFC 9114, 4.2): a response carrying one is malformed.
fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in [header::CONNECTION, header::TRANSFER_ENCODING, header::UPGRADE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// A request body read from its QUIC stream as the pipeline polls it.
struct Recv {
    /// Only ever used through `&mut` (the lock makes the body `Sync`, never waits).
    stream: std::sync::Mutex<h3::server::RequestStream<h3_quinn::RecvStream, Bytes>>,
    length: Option<u64>,
    /// The data is done; trailers (or the end) are next.
    trailers: bool,
}

impl http_body::Body for Recv {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let stream = this.stream.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !this.trailers {
            match ready!(stream.poll_recv_data(cx)) {
                Ok(Some(mut data)) => return Poll::Ready(Some(Ok(Frame::data(data.copy_to_bytes(data.remaining()))))),
                Ok(None) => this.trailers = true,
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
        match ready!(stream.poll_recv_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.length {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}
