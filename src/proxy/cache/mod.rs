//! The cache stage, between routing and forwarding: it drives the HTTP
//! cache's phases ([`crate::cache::HttpCache`]) for one request.
//!
//! A request the cache does not admit goes to [`super::pass`]. Otherwise a
//! fresh hit is served at once; a stale one within stale-while-revalidate is
//! served while one background revalidation runs; a HEAD goes to the origin
//! as HEAD, alone; anything else goes to the
//! origin through the key's shared fill, which this stage spawns in a task of
//! its own so that the leader's client hanging up cancels nothing. Each
//! client's HEAD, conditional or Range is cut from the full response
//! afterwards ([`super::present`]). Every response says what happened in
//! `Cache-Status`, and on a route with `cache.key` which key it was looked up
//! by (made here, by [`key::shape`]). Below a route's `cache.min_uses`, a
//! miss goes to the origin unstored ([`uses`]).

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use tokio::sync::oneshot;

use super::error::ProxyError;
use super::forward::{admit_origin, forward};
use super::headers::Upgrade;
use super::present::{self, present};
use super::route::Route;
use super::shard::FromPeer;
use super::target::url_of;
use super::{Conn, Pipeline};
use crate::cache::{Answer, Asked, Hit, HttpCache, Miss, Origin, Phase, Role, fill_head, fill_head_of, key};
use crate::http::body::Body;
use crate::http::interim::Interim;

mod slice;
mod uses;

pub(super) use uses::MinUses;

pub(super) async fn serve(
    p: Arc<Pipeline>,
    route: Arc<Route>,
    conn: Arc<Conn>,
    host: Option<HeaderValue>,
    req: Request<Body>,
) -> Result<Answer, ProxyError> {
    let (parts, body) = req.into_parts();
    let cache = HttpCache::new(&p.cache);
    let upgrade = parts.extensions.get::<Upgrade>().is_some();
    let asked = Asked { rules: &route.cache, with_body: !http_body::Body::is_end_stream(&body), upgrade };
    if let Err(reason) = cache.admit(&parts, asked) {
        // Boxed: a hit's future stays small, and hyper moves it at least once
        // per request (into its task, for HTTP/2).
        return Box::pin(super::pass::serve(&p, &route, &conn, host.as_ref(), parts, body, reason)).await;
    }
    drop(body);
    let keyed = key::shape(route.key.as_ref(), url_of(&conn, host.as_ref(), &parts), &parts.headers);
    // Where the route shapes its key, the response says what it was.
    let shown = route.key.as_ref().map(|rules| ShownKey(key::shown(rules, &keyed.url)));
    if let Some(size) = route.slice {
        // Boxed too: its state is 5 KiB, which every request's future would
        // carry, and hyper copies that future twice per request.
        let answer = Box::pin(slice::serve(&p, &route, &conn, host, parts, keyed, size)).await;
        return answer.map(|a| with_key(a, shown));
    }
    // The origin and an owned request head are only made when the origin is
    // asked: a fresh hit clones no headers.
    // A miss goes to the key's owner, unless a peer sent it here (then this node owns it).
    let ask_owner = p.shard.is_some() && parts.extensions.get::<FromPeer>().is_none();
    let interim = conn.interim.as_ref().map(Interim::current);
    let origin = || ToOrigin {
        p: p.clone(),
        route: route.clone(),
        conn: conn.clone(),
        host: host.clone(),
        ask_owner,
        interim: interim.clone(),
    };
    let counted = route.min_uses.as_ref().map(|uses| (uses, uses.hash(&keyed)));
    let miss = match cache.lookup(&parts, keyed).await {
        Phase::Fresh(hit) => return Ok(with_key(hit_answer(&p, &route, &parts, hit), shown)),
        Phase::StaleWhileRevalidate(hit, miss) => {
            cache.revalidate_behind(miss, origin(), fill_head_of(&parts));
            return Ok(with_key(hit_answer(&p, &route, &parts, hit), shown));
        }
        Phase::Miss(_) if counted.is_some_and(|(uses, hash)| !uses.count(hash)) => {
            if cache_policy::only_if_cached(&parts) {
                return Err(ProxyError::NotCached);
            }
            return Box::pin(unstored(&p, &route, &conn, host, parts)).await.map(|a| with_key(a, shown));
        }
        Phase::Stale(miss) | Phase::Part(miss) | Phase::Miss(miss) => miss,
    };
    if cache_policy::only_if_cached(&parts) {
        return Err(ProxyError::NotCached);
    }
    admit_origin(&p, &route, &conn, &parts).await?;
    let method = parts.method.clone();
    let head = fill_head(parts);
    if method == Method::HEAD {
        // Forwarded as HEAD: the body is not fetched for a client that will not read it.
        let answer = Box::pin(cache.head(miss, origin(), &head)).await?;
        return Ok(client_view(&method, &head, answer));
    }
    let answer = Box::pin(fill(cache, miss, origin(), head.clone())).await?;
    Ok(with_key(client_view(&method, &head, answer), shown))
}

/// The key a response was looked up by, as `Cache-Status` shows it (`key`,
/// RFC 9211 §2.7), on routes that set `cache.key`.
#[derive(Clone)]
pub(crate) struct ShownKey(pub String);

/// The `Cache-Status` value, with `key` when the route shapes its key.
pub(super) fn status_with_key(status: &cache_policy::CacheStatus, key: Option<ShownKey>) -> String {
    let mut value = status.header_value();
    if let Some(ShownKey(key)) = key {
        // An sf-string: the URL and names are printable ASCII; quote and backslash escaped.
        value.push_str("; key=\"");
        for c in key.chars().filter(|c| (' '..='~').contains(c)) {
            if c == '"' || c == '\\' {
                value.push('\\');
            }
            value.push(c);
        }
        value.push('"');
    }
    value
}

fn with_key(mut answer: Answer, shown: Option<ShownKey>) -> Answer {
    if let Some(shown) = shown {
        answer.response.extensions_mut().insert(shown);
    }
    answer
}

/// A miss below the route's `cache.min_uses`: the request goes to the origin
/// as the client sent it, and the answer is not stored.
async fn unstored(
    p: &Arc<Pipeline>,
    route: &Arc<Route>,
    conn: &Arc<Conn>,
    host: Option<HeaderValue>,
    parts: Parts,
) -> Result<Answer, ProxyError> {
    admit_origin(p, route, conn, &parts).await?;
    let fwd = forward(p, route, conn, host.as_ref(), Request::from_parts(parts, Body::empty())).await?;
    let status = cache_policy::CacheStatus::new(cache_policy::CacheOutcome::Miss).detail("min-uses");
    Ok(Answer { response: p.buffering.apply(fwd.response), upstream: fwd.upstream, cache: Some(status) })
}

/// Goes to the origin through the key's shared fill: lead it (in a task of
/// its own), wait for it, or, for a key known uncacheable, fetch alone.
async fn fill(cache: HttpCache<'_>, miss: Miss, origin: ToOrigin, head: Arc<Parts>) -> Result<Answer, ProxyError> {
    match cache.join(miss) {
        Role::Leader(lead) => {
            let (tx, rx) = oneshot::channel();
            tokio::spawn(lead.run(origin, head, Some(tx)));
            rx.await.unwrap_or(Err(ProxyError::Collapsed(StatusCode::BAD_GATEWAY)))
        }
        Role::Waiter(wait) => wait.answer(origin, head).await,
        // A key known uncacheable is not the owner's either.
        Role::Alone(miss) => cache.fetch(miss, ToOrigin { ask_owner: false, ..origin }, head).await,
    }
}

/// A client's own view of a full response (HEAD, conditionals, Range).
fn client_view(method: &Method, head: &Parts, answer: Answer) -> Answer {
    Answer { response: present(method, &head.headers, answer.response), ..answer }
}

/// A hit, as this client asked for it. On a route relais compresses, the
/// response names the stored body, so compression sends the copy it made once;
/// elsewhere a hit carries nothing extra.
fn hit_answer(p: &Pipeline, route: &Route, parts: &Parts, hit: Hit) -> Answer {
    let entry = hit.entry();
    let source = p
        .compression
        .for_route(&route.compress)
        .and_then(|plan| plan.stored_source(entry.status, &entry.url, entry.stored_at, &entry.body));
    let mut answer = hit.into_answer();
    if let Some(source) = source {
        answer.response.extensions_mut().insert(source);
    }
    Answer { response: present(&parts.method, &parts.headers, answer.response), ..answer }
}

/// The origin as the cache sees it: the route's pool, through [`forward`].
#[derive(Clone)]
struct ToOrigin {
    p: Arc<Pipeline>,
    route: Arc<Route>,
    conn: Arc<Conn>,
    host: Option<HeaderValue>,
    /// Send a miss to the key's owner in the cluster, when another node owns it.
    ask_owner: bool,
    /// The client's way for informational responses (103) of the fetch it leads.
    interim: Option<Interim>,
}

impl Origin for ToOrigin {
    type Error = ProxyError;

    fn fetch(&self, mut req: Request<Body>) -> impl Future<Output = Result<Answer, ProxyError>> + Send {
        if let Some(plan) = self.p.compression.for_route(&self.route.compress) {
            // The request head the origin is asked with, for a stored response.
            plan.ask_identity(req.headers_mut());
        }
        if let Some(interim) = &self.interim {
            req.extensions_mut().insert(interim.clone());
        }
        async move {
            if self.ask_owner
                && let Some(shard) = &self.p.shard
            {
                let (parts, body) = req.into_parts();
                if let Some(answer) =
                    shard.ask_owner(self.host.as_ref(), &self.conn, &parts, self.route.key.as_ref()).await
                {
                    return Ok(answer);
                }
                req = Request::from_parts(parts, body);
            }
            forward(&self.p, &self.route, &self.conn, self.host.as_ref(), req).await
        }
    }

    fn pass(&self, res: Response<Body>) -> Response<Body> {
        self.p.buffering.apply(res)
    }

    fn rules(&self) -> &cache_policy::Rules {
        &self.route.cache
    }

    fn encodes(&self) -> bool {
        self.p.compression.for_route(&self.route.compress).is_some()
    }

    fn status_of(e: &ProxyError) -> StatusCode {
        e.status()
    }

    fn collapsed(status: StatusCode) -> ProxyError {
        ProxyError::Collapsed(status)
    }
}
