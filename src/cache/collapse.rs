//! One origin fetch per key: who leads a key's fill, who waits for it, and
//! which keys skip the wait (hit-for-pass).
//!
//! [`HttpCache::join`] gives a [`Miss`] its [`Role`]. The leader's fetch runs
//! in a task the proxy spawns ([`Lead::run`]): it publishes the response head,
//! hands its own client the response, and pumps a shareable body into the fill
//! (see [`super::fill`]) to its end, or, once the body will not be stored, for
//! as long as someone reads it. A waiter ([`Wait::answer`]) reads the shared
//! body, or fetches on its own when the fill is released, failed, abandoned or
//! too slow (`cache.lock_timeout`).
//!
//! Hit-for-pass lives here alone: a leader whose response was refused (a
//! [`cache_policy::Bypass`] reason) or proved too large to store marks the key, and for
//! [`PASS_TTL`] requests for it fetch on their own at once instead of waiting
//! on a fill that would release them; a response being stored clears the mark.

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use http::request::Parts;
use tokio::sync::oneshot;

use super::fill::{Fill, Head, Leader};
use super::origin::{Answer, Origin};
use super::phase::{HttpCache, Miss};
use super::revalidate;
use super::tee::Storing;
use super::ticket::{Fetched, Kept};
use super::{Cache, fill};
use crate::http::body::Body;
use crate::metrics::WaitEnd;

/// How long a key stays known as uncacheable (Varnish's hit-for-miss).
const PASS_TTL: Duration = Duration::from_secs(30);

/// The keys known uncacheable, for [`PASS_TTL`].
pub(super) struct Pass(moka::sync::Cache<String, ()>);

impl Default for Pass {
    fn default() -> Pass {
        Pass(moka::sync::Cache::builder().max_capacity(100_000).time_to_live(PASS_TTL).build())
    }
}

impl Pass {
    fn holds(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    fn mark(&self, key: String) {
        self.0.insert(key, ());
    }

    fn clear(&self, key: &str) {
        if self.0.contains_key(key) {
            self.0.invalidate(key);
        }
    }
}

/// A miss's part in its key's fill.
pub(crate) enum Role {
    /// Fetch, in a task of its own ([`Lead::run`]), and share the answer.
    Leader(Lead),
    /// Wait for the leader's answer ([`Wait::answer`]).
    Waiter(Wait),
    /// The key is known uncacheable: fetch alone, at once ([`HttpCache::fetch`]).
    Alone(Miss),
}

/// The one fetch of a key, to be run in a task of its own.
pub(crate) struct Lead {
    cache: Arc<Cache>,
    miss: Miss,
    leader: Leader,
}

/// A request waiting for another's fetch of its key.
pub(crate) struct Wait {
    cache: Arc<Cache>,
    miss: Miss,
    fill: Arc<Fill>,
}

/// Where a leader sends its own client's answer.
pub(crate) type Reply<E> = oneshot::Sender<Result<Answer, E>>;

impl HttpCache<'_> {
    /// Whether `miss` leads its key's fill, waits for it, or fetches alone.
    pub(crate) fn join(&self, miss: Miss) -> Role {
        if self.cache.pass.holds(&miss.slot.key) {
            // Known uncacheable: waiting for someone else's fetch would only delay us.
            return Role::Alone(miss);
        }
        let cache = self.cache.clone();
        match self.cache.fills.join(&miss.slot.key) {
            fill::Role::Leader(leader) => Role::Leader(Lead { cache, miss, leader }),
            fill::Role::Waiter(fill) => Role::Waiter(Wait { cache, miss, fill }),
        }
    }

    /// Within stale-while-revalidate: one background revalidation, unless one is running.
    pub(crate) fn revalidate_behind<O: Origin>(&self, miss: Miss, origin: O, head: Arc<Parts>) {
        if let fill::Role::Leader(leader) = self.cache.fills.join(&miss.slot.key) {
            let lead = Lead { cache: self.cache.clone(), miss, leader };
            tokio::spawn(lead.run(origin, head, None));
        }
    }

    /// Asks the origin for `miss` alone, sharing nothing.
    pub(crate) async fn fetch<O: Origin>(&self, miss: Miss, origin: O, head: Arc<Parts>) -> Result<Answer, O::Error> {
        let key = miss.slot.key.clone();
        ask(self.cache, &origin, &head, miss, &key).await.map(|f| f.answer)
    }
}

/// Asks the origin for `miss` (stored under `key`): the only way a fill
/// reaches it. A response being stored clears the mark.
async fn ask<O: Origin>(
    cache: &Arc<Cache>,
    origin: &O,
    head: &Parts,
    miss: Miss,
    key: &str,
) -> Result<Fetched, O::Error> {
    let fetched = revalidate::ask(cache, origin, head, miss).await?;
    if matches!(fetched.kept, Kept::Storing(_)) {
        cache.pass.clear(key);
    }
    Ok(fetched)
}

impl Lead {
    /// The leader's fetch: publish the head, send the leader's client (if it
    /// has one) its answer, and pump a shareable body into the fill.
    /// However this ends, dropping the leader tells the waiters.
    pub(crate) async fn run<O: Origin>(self, origin: O, head: Arc<Parts>, client: Option<Reply<O::Error>>) {
        let Lead { cache, miss, leader } = self;
        let key = miss.slot.key.clone();
        let fill = leader.fill();
        match ask(&cache, &origin, &head, miss, &key).await {
            Err(e) => {
                fill.publish(Head::Failed(O::status_of(&e)));
                leader.close();
                if let Some(tx) = client {
                    let _ = tx.send(Err(e));
                }
            }
            Ok(Fetched { answer, kept }) if !kept.shareable() => {
                fill.publish(Head::Released);
                leader.close();
                // A 425 says the request came too early (0-RTT), not that the key is uncacheable.
                if let Kept::Refused(reason) = kept
                    && answer.response.status() != http::StatusCode::TOO_EARLY
                {
                    tracing::debug!(key, %reason, "not stored; the key skips the wait for a while");
                    cache.pass.mark(key);
                }
                if let Some(tx) = client {
                    let _ = tx.send(Ok(answer));
                }
            }
            Ok(Fetched { answer, kept }) => {
                let (parts, mut body) = answer.response.into_parts();
                fill.publish(Head::Shared {
                    status: parts.status,
                    headers: parts.headers.clone(),
                    cache_status: answer.cache.clone(),
                });
                if let Some(tx) = client
                    && let Some(reader) = fill.body()
                {
                    let response = Response::from_parts(parts, Body::boxed(reader));
                    let _ = tx.send(Ok(Answer { response, ..answer }));
                }
                let storing = match kept {
                    Kept::Storing(s) => Some(s),
                    _ => None,
                };
                let not_stored = || {
                    leader.close();
                    cache.pass.mark(key);
                };
                let kept = storing.clone();
                let complete = pump(&mut body, fill, storing, || leader.close(), not_stored).await;
                if complete && let Some(kept) = kept {
                    in_memory(&kept).await;
                }
                fill.finish(complete);
            }
        }
    }
}

/// Reads `body` into the fill; true if it ended cleanly. Once the body is
/// known not to be stored (too large, or no memory left for it) the fill
/// streams only (`not_stored` is called once), and reading waits for the
/// slowest reader or stops when none is left. A body going to disk streams
/// only too (the fill is `close`d to new readers), but is read to its end.
async fn pump(
    body: &mut Body,
    fill: &Fill,
    storing: Option<Storing>,
    close: impl Fn(),
    not_stored: impl FnOnce(),
) -> bool {
    use http_body_util::BodyExt;
    let mut not_stored = Some(not_stored);
    let mut streaming = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else { continue };
                if http_body::Body::is_end_stream(body)
                    && let Some(kept) = &storing
                {
                    // A client reading by Content-Length is done at the last byte, not
                    // at the fill's end: it gets that byte once the copy is in memory.
                    let ended = body.frame().await.is_none_or(|end| end.is_ok()); // the copy is committed
                    in_memory(kept).await;
                    fill.push(data);
                    return ended;
                }
                fill.push(data);
                let on_disk = storing.as_ref().is_some_and(Storing::on_disk);
                if on_disk && !streaming {
                    // Going to disk: memory keeps only what readers have yet to read,
                    // and the fetch goes on without them.
                    streaming = true;
                    fill.stream_only();
                    close();
                }
                if storing.as_ref().is_some_and(|s| !s.still()) {
                    if let Some(f) = not_stored.take() {
                        fill.stream_only();
                        f();
                    }
                    if !fill.room().await {
                        tracing::debug!("every reader of a body too large to store left; fetch stopped");
                        return false;
                    }
                } else if on_disk {
                    fill.room().await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "origin body broke off; nothing stored");
                return false;
            }
        }
    }
    true
}

/// Waits until a body kept in memory is there, so that its clients' next
/// request finds it (and does not fetch and store it a second time). It takes
/// a moment; the cap is for a machine too starved to run the insert's task.
async fn in_memory(kept: &Storing) {
    if kept.still() && !kept.on_disk() {
        kept.remembered().wait(Duration::from_secs(2)).await;
    }
}

impl Wait {
    /// The leader's answer, read from the shared fill; or, when the fill will
    /// not share it, this request's own fetch.
    pub(crate) async fn answer<O: Origin>(self, origin: O, head: Arc<Parts>) -> Result<Answer, O::Error> {
        let Wait { cache, miss, fill } = self;
        let metrics = &cache.metrics;
        let head_of_fill = fill.head(cache.lock_timeout).await;
        let end = match &head_of_fill {
            Some(Head::Shared { .. } | Head::Pending) => WaitEnd::Shared,
            Some(Head::Released) => WaitEnd::Released,
            Some(Head::Failed(_)) => WaitEnd::Failed,
            Some(Head::Abandoned) => WaitEnd::Abandoned,
            None => WaitEnd::TimedOut,
        };
        let reader = match head_of_fill {
            Some(Head::Shared { status: code, headers, cache_status }) => {
                fill.body().map(|b| (code, headers, cache_status, b))
            }
            Some(Head::Failed(code)) => {
                metrics.collapsed_wait(end);
                return Err(O::collapsed(code));
            }
            _ => None,
        };
        let Some((code, headers, cache_status, body)) = reader else {
            // Released, timed out, abandoned, or too large to store (the start of its body is gone).
            metrics.collapsed_wait(if end == WaitEnd::Shared { WaitEnd::Released } else { end });
            let key = miss.slot.key.clone();
            return ask(&cache, &origin, &head, miss, &key).await.map(|f| f.answer);
        };
        metrics.collapsed_wait(end);
        let mut res = Response::new(Body::boxed(body));
        *res.status_mut() = code;
        *res.headers_mut() = headers;
        Ok(Answer { response: res, upstream: None, cache: cache_status.map(|s| s.collapsed()) })
    }
}
