//! Forwarding: turn the client's request into the origin's, send it through
//! the route's pool, and turn the origin's response into the client's.
//! Bodies are streamed in both directions, never collected.
//!
//! The upstream request head is rebuilt, not copied: its Host is the one the
//! router saw, and its framing headers (Content-Length, Transfer-Encoding)
//! describe the body actually sent, whatever the client's said. A client's
//! `Expect` is answered by relais and not passed on. Its hop-by-hop headers
//! were removed as it arrived (`proxy::respond`); an upgrade the route allows
//! travels as a [`Upgrade`] extension, and the origin's 101 is tunnelled only
//! when it switches to a protocol asked for.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;

use super::error::ProxyError;
use super::headers::{Upgrade, add_forwarded, add_via, strip_hop_by_hop};
use super::route::Route;
use super::upload::{ClientBodyError, Upload};
use super::{Conn, Pipeline, Received};
use crate::cache::Answer;
use crate::http::body::Body;
use crate::http::interim::Interim;
use crate::http::upgrade::OnUpgrade;
use crate::upstream::{Outgoing, UpstreamError};

pub(super) async fn forward(
    pipeline: &Pipeline,
    route: &Route,
    conn: &Conn,
    host: Option<&HeaderValue>,
    req: Request<Body>,
) -> Result<Answer, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let upgrade = parts.extensions.remove::<Upgrade>().map(|u| u.0);
    let client_upgrade = upgrade.as_ref().and_then(|_| {
        let own = parts.extensions.remove::<OnUpgrade>();
        own.or_else(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>().map(OnUpgrade::Hyper))
    });
    // A fill's own (taken when its request came), else the client's now.
    let interim = parts.extensions.remove::<Interim>().or_else(|| conn.interim.as_ref().map(Interim::current));
    let path = upstream_path(route, &parts)?;
    prepare_request_headers(pipeline, route, conn, host, &mut parts);
    set_framing(&mut parts.headers, &parts.method, &body);
    if let Some(protocol) = &upgrade {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }

    let retryable = parts.method.is_idempotent() && body.is_end_stream();
    let out = Outgoing {
        method: parts.method,
        path,
        headers: parts.headers,
        server_host: !route.pass_host,
        body,
        retryable,
        client: conn.client,
        interim,
    };
    // A route without an upstream answers before anything is forwarded.
    let upstream = route.upstream.as_ref().ok_or(ProxyError::NoRoute)?;
    let (res, server) = upstream.send(out).await.map_err(|e| client_fault(&e).unwrap_or(ProxyError::Upstream(e)))?;

    let (mut res_parts, res_body) = res.into_parts();
    let tunnel = res_parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let protocol = tunnel.then(|| res_parts.headers.get(header::UPGRADE).cloned()).flatten();
    strip_hop_by_hop(&mut res_parts.headers);
    for name in &pipeline.hide_headers {
        res_parts.headers.remove(name);
    }
    if let Some(name) = &pipeline.request_id {
        // The client gets its request's own id (`finish`); an origin's echo is never stored.
        res_parts.headers.remove(name);
    }
    res_parts.version = Version::HTTP_11;
    if tunnel {
        let (Some(client), Some(origin), Some(protocol)) =
            (client_upgrade, res_parts.extensions.remove::<OnUpgrade>(), protocol)
        else {
            tracing::warn!(server = %server, "origin switched protocols without an upgrade request");
            return Err(ProxyError::Upstream(UpstreamError::Protocol(server)));
        };
        if !upgrade.as_ref().is_some_and(|asked| switches_to_asked(asked, &protocol)) {
            tracing::warn!(server = %server, ?protocol, "origin switched to a protocol that was not asked for");
            return Err(ProxyError::Upstream(UpstreamError::Protocol(server)));
        }
        res_parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        res_parts.headers.insert(header::UPGRADE, protocol);
        let held =
            super::upgrade::tunnel(client, origin, pipeline.config.server.tunnel_idle_timeout.get(), conn.slot.clone());
        res_parts.extensions.insert(held);
    }
    Ok(Answer { response: Response::from_parts(res_parts, res_body), upstream: Some(server), cache: None })
}

/// Whether every protocol of the origin's `Upgrade` is one the request
/// named (by name, case-insensitive; a version, if given, must agree).
fn switches_to_asked(asked: &HeaderValue, answered: &HeaderValue) -> bool {
    let list = |v: &HeaderValue| -> Vec<String> {
        v.to_str().unwrap_or("").split(',').map(|p| p.trim().to_ascii_lowercase()).filter(|p| !p.is_empty()).collect()
    };
    let (asked, answered) = (list(asked), list(answered));
    let name = |p: &str| p.split('/').next().unwrap_or("").to_string();
    !answered.is_empty() && answered.iter().all(|a| asked.iter().any(|q| q == a || name(q) == *a || name(a) == *q))
}

/// The path and query to send: the route's prefix stripped if it says so.
fn upstream_path(route: &Route, parts: &Parts) -> Result<PathAndQuery, ProxyError> {
    let original = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = route.upstream_path(original).map_err(|e| ProxyError::BadRequest(e.message()))?;
    if path.len() == original.len() {
        return Ok(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    }
    path.parse().map_err(|_| ProxyError::BadRequest("invalid path"))
}

fn prepare_request_headers(
    pipeline: &Pipeline,
    route: &Route,
    conn: &Conn,
    host: Option<&HeaderValue>,
    parts: &mut Parts,
) {
    let headers = &mut parts.headers;
    forwarding(conn, host, headers);
    if route.auth.as_ref().is_some_and(|a| !a.keeps_authorization()) {
        // Only now: the cache saw it, and treats the request as authorized.
        headers.remove(header::AUTHORIZATION);
    }
    if pipeline.config.server.via {
        add_via(headers, parts.version);
    }
    // The host the router saw (HTTP/2 carries it in :authority; HTTP/1.1 origins need Host).
    match host {
        Some(host) => headers.insert(header::HOST, host.clone()),
        None => headers.remove(header::HOST),
    };
    // The client certificate's subject, verified by relais, and never a client's own claim of it.
    if let Some(name) = pipeline.tls.as_ref().and_then(|t| t.client_subject_header.as_ref()) {
        headers.remove(&name.0);
        if let Some(subject) = conn.client_subject.as_deref().and_then(|s| HeaderValue::try_from(s).ok()) {
            headers.insert(name.0.clone(), subject);
        }
    }
    route.request_headers.apply(headers);
}

/// `X-Forwarded-For` (the client appended, or the chain `real_ip` read),
/// `-Proto` and `-Host`, as the request to the origin (or to an auth
/// upstream) gets them.
pub(super) fn forwarding(conn: &Conn, host: Option<&HeaderValue>, headers: &mut HeaderMap) {
    match &conn.forwarded_for {
        // The chain `real_ip` read, ending with the client.
        Some(chain) => {
            headers.insert(crate::http::names::X_FORWARDED_FOR.clone(), chain.clone());
            add_forwarded(headers, None, conn.proto, host);
        }
        None => add_forwarded(headers, Some(conn.client), conn.proto, host),
    }
}

/// Framing headers for the body actually sent: its length when known, else
/// chunked; `Content-Length: 0` for an empty body only where the method
/// expects content.
fn set_framing(headers: &mut HeaderMap, method: &Method, body: &Body) {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::EXPECT);
    if body.is_end_stream() {
        if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        }
    } else if let Some(n) = body.size_hint().exact() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    } else {
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
}

/// A failure that was the client's body's, not the origin's.
fn client_fault(e: &UpstreamError) -> Option<ProxyError> {
    let UpstreamError::Failed { source, .. } = e else { return None };
    Some(body_error(ClientBodyError::find(source)?))
}

fn body_error(e: &ClientBodyError) -> ProxyError {
    match e {
        ClientBodyError::TooLarge => ProxyError::BodyTooLarge,
        ClientBodyError::Timeout => ProxyError::BodyTimeout,
        ClientBodyError::Broken(_) => ProxyError::BadRequest("malformed or truncated request body"),
    }
}

/// A failure while reading the client's body in relais (request buffering):
/// the client's, or relais's own temp file's.
pub(super) fn client_error(e: &crate::http::body::BoxError) -> ProxyError {
    match ClientBodyError::find(e.as_ref()) {
        Some(e) => body_error(e),
        None => {
            tracing::warn!(error = %e, "cannot buffer a request body");
            ProxyError::Collapsed(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// The client's request body as sent upstream (see [`Upload`]), counted into
/// the request's [`Received`]; none if it is empty.
pub(super) fn request_body(pipeline: &Pipeline, parts: &Parts, body: Body) -> Body {
    if body.is_end_stream() {
        return Body::empty();
    }
    let limit = pipeline.config.server.max_request_body.map(|l| l.bytes());
    let received = parts.extensions.get::<Received>().cloned().unwrap_or_default();
    let guard = &pipeline.config.guard;
    let min_rate = Some(guard.body_min_rate.bytes()).filter(|&r| r > 0);
    Body::boxed(Upload::new(body, limit, guard.body_timeout.get(), min_rate, received))
}

/// The route's zones that count only what goes to the origin (`count_hits = false`).
pub(super) async fn admit_origin(
    p: &Pipeline,
    route: &Route,
    conn: &Conn,
    parts: &http::request::Parts,
) -> Result<(), ProxyError> {
    if route.guard.limits_origin() {
        let subject = crate::guard::Subject::new(conn.client, parts, &route.label);
        route.guard.admit_origin(&subject, &p.metrics).await?;
    }
    Ok(())
}
