//! The access log and request metrics: one line per request on target
//! `relais::access` and one count in the metrics, made when the response body
//! has ended (or was abandoned), so both carry the bytes actually sent and the
//! whole duration, as nginx's log does.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Frame, SizeHint};

use crate::body::{Body, BoxError};
use crate::metrics::{CacheOutcome, Metrics, Reason};

/// Request body bytes read so far, shared by the body being forwarded and the
/// record that reports them.
#[derive(Clone, Default)]
pub struct Received(Arc<std::sync::atomic::AtomicU64>);

impl Received {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub struct AccessRecord {
    pub start: Instant,
    pub method: Method,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The client's address (after `real_ip`).
    pub client: std::net::IpAddr,
    pub host: String,
    pub path: String,
    pub status: StatusCode,
    pub upstream: Option<Arc<str>>,
    /// What the cache did; None when the request never reached it.
    pub cache: Option<CacheOutcome>,
    pub route: Option<usize>,
    pub route_label: Option<Arc<str>>,
    /// Why the guard refused the request.
    pub refused: Option<Reason>,
    /// The rule that refused it, when one did.
    pub rule: Option<Arc<str>>,
    /// Places in `[[limit_conn]]` zones, given back when the response is done.
    pub permits: Vec<crate::guard::ConnPermit>,
    /// Request body bytes read from the client, counted as they are read
    /// (None: the request had no body).
    pub bytes_in: Option<Received>,
    /// Write the access log line (metrics are always counted).
    pub log: bool,
    pub metrics: Arc<Metrics>,
}

impl AccessRecord {
    fn emit(&self, bytes: u64, complete: bool) {
        let route = self.route_label.as_deref().unwrap_or("none");
        let bytes_in = self.bytes_in.as_ref().map_or(0, Received::get);
        self.metrics.request(route, self.status.as_u16(), self.cache, bytes_in, bytes);
        if !self.log {
            return;
        }
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "relais::access",
            client = %self.client,
            method = %self.method,
            scheme = self.scheme,
            host = %self.host,
            path = %self.path,
            status = self.status.as_u16(),
            bytes,
            ms = (ms * 1000.0).round() / 1000.0,
            upstream = self.upstream.as_deref().unwrap_or("-"),
            cache = crate::metrics::word(self.cache),
            route = self.route.map_or(-1, |r| r as i64),
            refused = self.refused.map_or("-", Reason::as_str),
            rule = self.rule.as_deref().unwrap_or("-"),
            complete,
        );
    }
}

pin_project_lite::pin_project! {
    /// The response body, counting bytes for the access log when there is one.
    pub struct LoggedBody {
        #[pin]
        inner: Body,
        record: Option<Box<AccessRecord>>,
        bytes: u64,
    }

    impl PinnedDrop for LoggedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(rec) = this.record.take() {
                // A body hyper never polled (empty, HEAD, 304) still ended cleanly.
                let complete = http_body::Body::is_end_stream(&*this.inner);
                rec.emit(*this.bytes, complete);
            }
        }
    }
}

impl LoggedBody {
    pub fn new(inner: Body, record: Option<Box<AccessRecord>>) -> LoggedBody {
        LoggedBody { inner, record, bytes: 0 }
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if this.record.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        *this.bytes += d.len() as u64;
                    }
                }
                Poll::Ready(None) => {
                    if let Some(rec) = this.record.take() {
                        rec.emit(*this.bytes, true);
                    }
                }
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
