//! The one place where a failure becomes a response.
//!
//! Clients get a status and a one-line plain body; the detail (which server,
//! which error) goes to the log only.

use http::{HeaderValue, Response, StatusCode, header};

use crate::guard::Rejection;
use crate::http::body::Body;
use crate::metrics::Reason;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no route")]
    NoRoute,
    /// A host outside the connection's certificate (`server.tls.strict_host`).
    #[error("host not served on this connection")]
    Misdirected,
    /// CONNECT: relais is a reverse proxy, not a tunnel.
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large")]
    BodyTooLarge,
    /// A buffered upload finds `buffering.request_disk` spent by others.
    #[error("no room to buffer the request body (buffering.request_disk)")]
    NoRoomForBody,
    /// The client stopped sending its body (`guard.body_timeout`).
    #[error("request body timed out")]
    BodyTimeout,
    #[error("request not satisfiable from cache (only-if-cached)")]
    NotCached,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The shared fetch this request waited for failed with this status.
    #[error("the shared origin fetch failed ({0})")]
    Collapsed(StatusCode),
    /// The guard refused the request.
    #[error("refused by the guard ({})", .0.reason.as_str())]
    Rejected(Box<Rejection>),
    /// A route's `return` of an error status without a body.
    #[error("returned {0}")]
    Returned(StatusCode),
    /// Rewrites kept routing the request again.
    #[error("rewrite loop")]
    RewriteLoop,
    /// Maintenance mode is on; `Retry-After` in seconds.
    #[error("in maintenance")]
    Maintenance(u64),
    /// Authentication refused the request (`auth_basic`, `auth_request`).
    #[error("refused by authentication ({})", .0.reason.as_str())]
    Auth(Box<crate::auth::Refusal>),
}

impl From<crate::auth::Refusal> for ProxyError {
    fn from(r: crate::auth::Refusal) -> Self {
        ProxyError::Auth(Box::new(r))
    }
}

impl From<Rejection> for ProxyError {
    fn from(r: Rejection) -> Self {
        ProxyError::Rejected(Box::new(r))
    }
}

impl ProxyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoRoomForBody => StatusCode::INSUFFICIENT_STORAGE,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NotCached => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(UpstreamError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Collapsed(status) => *status,
            ProxyError::Rejected(r) => r.status,
            ProxyError::Returned(status) => *status,
            ProxyError::RewriteLoop => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Maintenance(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Auth(r) => r.status,
        }
    }

    /// The guard's reason, when the guard (or a guard limit on the body) refused.
    pub(crate) fn guard_reason(&self) -> Option<Reason> {
        match self {
            ProxyError::Rejected(r) => Some(r.reason),
            ProxyError::Auth(r) => Some(r.reason),
            ProxyError::BodyTimeout => Some(Reason::BodyTimeout),
            ProxyError::BodyTooLarge => Some(Reason::BodySize),
            _ => None,
        }
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        match self {
            ProxyError::Rejected(r) => rejection_response(&r),
            ProxyError::Auth(r) => {
                let mut res = error_response(r.status);
                if let Some(challenge) = r.challenge {
                    res.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
                }
                if let Some(s) = r.retry_after {
                    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
                }
                res
            }
            ProxyError::NoRoomForBody => {
                let mut res = error_response(StatusCode::INSUFFICIENT_STORAGE);
                *res.body_mut() =
                    Body::full("507 Insufficient Storage: no room to hold this upload now; try again later\n");
                res
            }
            ProxyError::Maintenance(retry_after) => {
                let mut res = error_response(StatusCode::SERVICE_UNAVAILABLE);
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                res
            }
            e => error_response(e.status()),
        }
    }
}

/// What a client refused by the guard gets: the rule's body, or the status line.
fn rejection_response(r: &Rejection) -> Response<Body> {
    let mut res = error_response(r.status);
    if let Some(body) = &r.body {
        let mut text = body.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        *res.body_mut() = Body::full(text);
    }
    let h = res.headers_mut();
    if let Some(s) = r.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if let Some(allow) = &r.allow {
        h.insert(header::ALLOW, allow.clone());
    }
    res
}

/// A short plain-text response for `status`.
pub(crate) fn error_response(status: StatusCode) -> Response<Body> {
    let text = format!("{} {}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let mut res = Response::new(Body::full(text));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
