//! The access log and request metrics: one line per request (formatted and
//! written by [`crate::logs`]) and one count in the metrics, made when the
//! response body has ended, failed or was abandoned, so both carry the bytes
//! actually sent, the whole duration and whether the body was complete, as
//! nginx's log does.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Version};
use http_body::{Frame, SizeHint};

use crate::http::body::{Body, BoxError};
use crate::metrics::{CacheOutcome, MethodClass, Metrics, Reason};

/// Request body bytes read so far, shared by the body being forwarded and the
/// record that reports them.
#[derive(Clone, Default)]
pub(crate) struct Received(Arc<std::sync::atomic::AtomicU64>);

impl Received {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub(crate) struct AccessRecord {
    pub start: Instant,
    pub method: Method,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The client's address (after `real_ip`).
    pub client: std::net::IpAddr,
    pub host: String,
    pub path: String,
    pub status: StatusCode,
    pub version: Version,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub upstream: Option<Arc<str>>,
    /// From sending to the origin to its response head.
    pub upstream_time: Option<Duration>,
    /// What the cache did; None when the request never reached it.
    pub cache: Option<CacheOutcome>,
    /// The route's name.
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
    /// The request's id (`server.request_id`; None: off).
    pub request_id: Option<HeaderValue>,
    /// Write the access log line (metrics are always counted).
    pub log: bool,
    pub format: crate::config::LogFormat,
    pub metrics: Arc<Metrics>,
}

impl AccessRecord {
    fn emit(&self, bytes: u64, complete: bool) {
        let route = self.route_label.as_deref().unwrap_or("none");
        let bytes_in = self.bytes_in.as_ref().map_or(0, Received::get);
        self.metrics.request(route, self.status.as_u16(), self.cache, bytes_in, bytes);
        let duration = self.start.elapsed();
        self.metrics.request_duration(route, MethodClass::of(&self.method), self.cache, duration.as_secs_f64());
        if !self.log {
            return;
        }
        let line = crate::logs::access::Line {
            time: std::time::SystemTime::now(),
            client: self.client,
            method: self.method.as_str(),
            scheme: self.scheme,
            protocol: protocol(self.version),
            host: &self.host,
            target: &self.path,
            status: self.status.as_u16(),
            bytes,
            duration,
            upstream: self.upstream.as_deref(),
            upstream_time: self.upstream_time,
            cache: crate::metrics::word(self.cache),
            route: self.route_label.as_deref(),
            refused: self.refused.map_or("-", Reason::as_str),
            rule: self.rule.as_deref(),
            referer: self.referer.as_ref().map(HeaderValue::as_bytes),
            user_agent: self.user_agent.as_ref().map(HeaderValue::as_bytes),
            request_id: self.request_id.as_ref().map(HeaderValue::as_bytes),
            complete,
        };
        crate::logs::access(&line, self.format);
    }
}

/// The protocol as the request line names it.
fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

pin_project_lite::pin_project! {
    /// The response body, counting bytes for the access log when there is one.
    pub struct LoggedBody {
        #[pin]
        inner: Body,
        record: Option<Box<AccessRecord>>,
        bytes: u64,
        // The response's Content-Length: hyper stops asking once it has sent that
        // many bytes, and drops a body that never said it had ended.
        length: Option<u64>,
    }

    impl PinnedDrop for LoggedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(rec) = this.record.take() {
                // A body hyper never polled (empty, HEAD, 304) still ended cleanly.
                let complete = http_body::Body::is_end_stream(&*this.inner) || *this.length == Some(*this.bytes);
                rec.emit(*this.bytes, complete);
            }
        }
    }
}

impl LoggedBody {
    pub(crate) fn new(inner: Body, length: Option<u64>, record: Option<Box<AccessRecord>>) -> LoggedBody {
        LoggedBody { inner, record, bytes: 0, length }
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
                // Cut short: whatever the body says of itself afterwards.
                Poll::Ready(Some(Err(_))) => {
                    if let Some(rec) = this.record.take() {
                        rec.emit(*this.bytes, false);
                    }
                }
                Poll::Pending => {}
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
