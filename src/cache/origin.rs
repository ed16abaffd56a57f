//! What the HTTP cache needs of the layer above it, and what it hands back.
//!
//! The cache never builds an upstream connection nor knows a route: the proxy
//! gives it an [`Origin`], a way to send one request and to shape a response
//! the cache will not keep, together with the route's storage rules. Whatever
//! comes back up, from the origin, the store or another request's fill, is an
//! [`Answer`].

use std::future::Future;
use std::sync::Arc;

use cache_policy::{CacheStatus, Rules};
use http::{Request, Response, StatusCode};

use crate::http::body::Body;

/// A response on its way back to the client, and how it was made: the one
/// carrier from the origin through the cache and the proxy to the log.
pub(crate) struct Answer {
    pub response: Response<Body>,
    /// The server that answered, when the origin was asked.
    pub upstream: Option<Arc<str>>,
    /// What the cache did; None when the request never reached it.
    pub cache: Option<CacheStatus>,
}

impl Answer {
    /// A response made here, that no origin and no cache had a part in.
    pub(crate) fn local(response: Response<Body>) -> Answer {
        Answer { response, upstream: None, cache: None }
    }
}

/// The way to the origin for one request's route. A fill runs in a task of
/// its own and may outlive the client, so an `Origin` is owned and cheap to clone.
pub(crate) trait Origin: Clone + Send + Sync + 'static {
    type Error: std::fmt::Display + Send + 'static;

    /// Sends `req` (a body-less GET or HEAD, in origin form, with the client's
    /// headers) to the origin; the answer's `cache` is None.
    fn fetch(&self, req: Request<Body>) -> impl Future<Output = Result<Answer, Self::Error>> + Send;

    /// A response the cache does not keep, as the client should get it (the
    /// proxy may read it ahead of a slow client).
    fn pass(&self, res: Response<Body>) -> Response<Body>;

    /// The route's storage rules.
    fn rules(&self) -> &Rules;

    /// Whether the proxy encodes this route's responses itself: then
    /// `Vary: Accept-Encoding` is its own, and one stored copy serves every client.
    fn encodes(&self) -> bool;

    /// The status a failed fetch is answered with, to waiters of the fill too.
    fn status_of(e: &Self::Error) -> StatusCode;

    /// The error of a request whose shared fetch failed with `status`.
    fn collapsed(status: StatusCode) -> Self::Error;
}

/// In a response's extensions: it came from the key's owner in a cluster, not
/// from the origin. It is kept at most `keep` (None: not at all, and the key is
/// not marked uncacheable either: the owner keeps it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FromOwner {
    pub keep: Option<std::time::Duration>,
}
