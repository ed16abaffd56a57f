//! Forwarding: turn the client's request into the origin's, send it through
//! the route's pool, and turn the origin's response into the client's.
//! Bodies are streamed in both directions, never collected.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{LengthLimitError, Limited};
use hyper::body::Incoming;
use std::sync::Arc;

use super::error::ProxyError;
use super::headers::{add_forwarded, add_via, strip_hop_by_hop};
use super::route::Route;
use super::{Conn, Pipeline};
use crate::body::Body;
use crate::upstream::{Outgoing, UpstreamError};

/// The forwarded response and the server that answered.
pub struct Forwarded {
    pub response: Response<Body>,
    pub server: Arc<str>,
}

pub async fn forward(
    pipeline: &Pipeline,
    route: &Route,
    conn: &Conn,
    host: Option<&HeaderValue>,
    req: Request<Body>,
) -> Result<Forwarded, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let upgrade = strip_hop_by_hop(&mut parts.headers);
    let client_upgrade = upgrade.as_ref().and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
    let path = upstream_path(route, &parts)?;
    prepare_request_headers(pipeline, route, conn, host, &mut parts);
    if let Some(protocol) = &upgrade {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }

    let retryable = parts.method.is_idempotent() && body.is_end_stream();
    let out =
        Outgoing { method: parts.method, path, headers: parts.headers, server_host: !route.pass_host, body, retryable };
    let (res, server) = route.upstream.send(out).await.map_err(|e| match e {
        UpstreamError::Failed { source, .. } if is_body_limit(&source) => ProxyError::BodyTooLarge,
        e => ProxyError::Upstream(e),
    })?;

    let (mut res_parts, res_body) = res.into_parts();
    let tunnel = res_parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let protocol = tunnel.then(|| res_parts.headers.get(header::UPGRADE).cloned()).flatten();
    strip_hop_by_hop(&mut res_parts.headers);
    for name in &pipeline.hide_headers {
        res_parts.headers.remove(name);
    }
    res_parts.version = Version::HTTP_11;
    if tunnel {
        let (Some(client), Some(origin), Some(protocol)) =
            (client_upgrade, res_parts.extensions.remove::<hyper::upgrade::OnUpgrade>(), protocol)
        else {
            tracing::warn!(server = %server, "origin switched protocols without an upgrade request");
            return Err(ProxyError::Upstream(UpstreamError::Protocol(server)));
        };
        res_parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        res_parts.headers.insert(header::UPGRADE, protocol);
        super::upgrade::tunnel(client, origin);
    }
    Ok(Forwarded { response: Response::from_parts(res_parts, Body::from(res_body)), server })
}

/// The path and query to send: the route's prefix stripped if it says so.
fn upstream_path(route: &Route, parts: &Parts) -> Result<PathAndQuery, ProxyError> {
    let original = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = route.upstream_path(original);
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
    add_forwarded(headers, conn.peer.ip(), conn.proto, host);
    if pipeline.config.server.via {
        add_via(headers, parts.version);
    }
    // HTTP/2 carries the host in :authority; HTTP/1.1 origins need Host.
    if let Some(host) = host
        && !headers.contains_key(header::HOST)
    {
        headers.insert(header::HOST, host.clone());
    }
    route.request_headers.apply(headers);
}

/// The client's request body, capped by `server.max_request_body`.
pub fn request_body(pipeline: &Pipeline, body: Incoming) -> Body {
    match pipeline.config.server.max_request_body {
        Some(limit) => Body::boxed(Limited::new(body, limit.bytes() as usize)),
        None => Body::from(body),
    }
}

fn is_body_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.is::<LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}
