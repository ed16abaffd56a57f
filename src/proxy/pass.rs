//! Requests the cache never sees: other methods, upgrades (WebSocket), a
//! GET with a body, what the route or the request's own directives keep from
//! the cache (the [`Bypass`] reason says which, in `Cache-Status`).
//!
//! They are forwarded with their bodies. A route's `request_buffering` reads
//! the body whole first, except for gRPC, whose messages stream both ways and
//! would never start; the response is read ahead of a slow client. A
//! successful unsafe method invalidates what it changed (RFC 9111 §4.4).

use std::sync::Arc;

use cache_policy::{Bypass, CacheStatus};
use http::Request;
use http::header::{self, HeaderValue};
use http::request::Parts;

use super::buffer::RequestError;
use super::error::ProxyError;
use super::forward::{admit_origin, client_error, forward, request_body};
use super::route::Route;
use super::{Conn, Pipeline};
use crate::cache::Answer;
use crate::http::body::Body;

pub(super) async fn serve(
    p: &Arc<Pipeline>,
    route: &Route,
    conn: &Conn,
    host: Option<&HeaderValue>,
    parts: Parts,
    body: Body,
    reason: Bypass,
) -> Result<Answer, ProxyError> {
    admit_origin(p, route, conn, &parts).await?;
    let method = parts.method.clone();
    // Only what an unsafe method may invalidate needs its canonical URL.
    let url = (!method.is_safe()).then(|| super::target::url_of(conn, host, &parts));
    let mut body = request_body(p, &parts, body);
    if route.request_buffering && !http_body::Body::is_end_stream(&body) && !is_grpc(&parts.headers) {
        body = p.buffering.read_request(body).await.map_err(|e| match e {
            RequestError::Body(e) => client_error(&e),
            RequestError::NoRoom { ever: true } => ProxyError::BodyTooLarge,
            RequestError::NoRoom { ever: false } => ProxyError::NoRoomForBody,
        })?;
    }
    let fwd = forward(p, route, conn, host, Request::from_parts(parts, body)).await?;
    if let Some(url) = url {
        // Each URL as its route keys it: this request's by its own route, the
        // Location's and Content-Location's by the routes they would take.
        let no_headers = http::HeaderMap::new();
        let key_url = |u: String| match &route.key {
            Some(rules) if u == url => crate::cache::key::shape_url(rules, u),
            _ if u == url => u,
            _ => p.router.key_url(u, &no_headers).0,
        };
        p.cache.invalidate_after(&method, fwd.response.status(), &url, fwd.response.headers(), key_url).await;
    }
    Ok(Answer {
        response: p.buffering.apply(fwd.response),
        upstream: fwd.upstream,
        cache: Some(CacheStatus::bypass(reason)),
    })
}

/// A gRPC call (`application/grpc`, `application/grpc+proto`, …).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
