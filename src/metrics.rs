//! The metrics registry: a leaf every stage writes to and the admin API reads.
//!
//! Inputs are typed: a cache outcome is a [`CacheOutcome`], a tier a [`Tier`],
//! a purge a [`PurgeKind`] and a [`PurgeMode`], a collapsed wait a
//! [`WaitEnd`], so the label words come from one `as_str` each and cannot
//! drift from the code that makes them. Rendering (Prometheus text, JSON) is
//! the admin API's; this module only counts and hands out snapshots.
//!
//! Hand-rolled on atomics. Labelled counters live in a `RwLock<HashMap<..>>`:
//! recording takes the read lock and does a relaxed `fetch_add`; the write
//! lock is taken only to add a new label set. No lock is held across anything
//! but a map lookup, and nothing here awaits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) use cache_policy::CacheOutcome;

/// Upper bounds of the duration histograms, in seconds (`+Inf` is implied):
/// from a hit served from memory (under a millisecond) to a slow origin.
pub(crate) const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A request's method as a label: one of a fixed set, so that no client can
/// make a new series by inventing a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MethodClass {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other,
}

impl MethodClass {
    pub fn of(method: &http::Method) -> MethodClass {
        use http::Method as M;
        match *method {
            M::GET => MethodClass::Get,
            M::HEAD => MethodClass::Head,
            M::POST => MethodClass::Post,
            M::PUT => MethodClass::Put,
            M::DELETE => MethodClass::Delete,
            M::PATCH => MethodClass::Patch,
            M::OPTIONS => MethodClass::Options,
            _ => MethodClass::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MethodClass::Get => "GET",
            MethodClass::Head => "HEAD",
            MethodClass::Post => "POST",
            MethodClass::Put => "PUT",
            MethodClass::Delete => "DELETE",
            MethodClass::Patch => "PATCH",
            MethodClass::Options => "OPTIONS",
            MethodClass::Other => "other",
        }
    }
}

/// A cache tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Memory,
    Disk,
}

impl Tier {
    pub const ALL: [Tier; 2] = [Tier::Memory, Tier::Disk];
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
        }
    }
}

/// What a purge matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PurgeKind {
    Url,
    Prefix,
    Tag,
    All,
}

impl PurgeKind {
    pub const ALL: [PurgeKind; 4] = [PurgeKind::Url, PurgeKind::Prefix, PurgeKind::Tag, PurgeKind::All];
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeKind::Url => "url",
            PurgeKind::Prefix => "prefix",
            PurgeKind::Tag => "tag",
            PurgeKind::All => "all",
        }
    }
}

/// Remove entries (hard) or mark them stale (soft).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PurgeMode {
    Hard,
    Soft,
}

impl PurgeMode {
    pub fn is_soft(self) -> bool {
        self == PurgeMode::Soft
    }
}

/// Why a request collapsed onto another's fetch stopped waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WaitEnd {
    /// The response was shareable: read from the shared fetch.
    Shared,
    /// The response was not cacheable: fetch on your own.
    Released,
    /// The origin could not be reached: the same error.
    Failed,
    /// `cache.lock_timeout` passed: fetch on your own.
    TimedOut,
    /// The fetch was dropped before it answered (cancelled or panicked): fetch on your own.
    Abandoned,
}

impl WaitEnd {
    pub const ALL: [WaitEnd; 5] =
        [WaitEnd::Shared, WaitEnd::Released, WaitEnd::Failed, WaitEnd::TimedOut, WaitEnd::Abandoned];
    pub fn as_str(self) -> &'static str {
        match self {
            WaitEnd::Shared => "shared",
            WaitEnd::Released => "released",
            WaitEnd::Failed => "failed",
            WaitEnd::TimedOut => "timed-out",
            WaitEnd::Abandoned => "abandoned",
        }
    }
}

/// What became of a miss sent to its owner in a cluster (`answered`), or why this
/// node asked the origin itself instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Forwarded {
    Answered,
    /// Health checks say the owner is down: never sent.
    Down,
    /// No response head within `cluster.forward_timeout`.
    Timeout,
    /// The connection failed or broke.
    Error,
}

impl Forwarded {
    pub const ALL: [Forwarded; 4] = [Forwarded::Answered, Forwarded::Down, Forwarded::Timeout, Forwarded::Error];
    pub fn as_str(self) -> &'static str {
        match self {
            Forwarded::Answered => "answered",
            Forwarded::Down => "down",
            Forwarded::Timeout => "timeout",
            Forwarded::Error => "error",
        }
    }
}

/// Why an attempt to a server of an upstream failed, or was tried again elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UpstreamFailure {
    /// No connection could be made.
    Connect,
    /// The connection broke before the response head.
    Reset,
    /// No response head within `response_timeout`.
    Timeout,
    /// A response whose status is in `retry_on` (a retry reason only).
    Status,
}

impl UpstreamFailure {
    pub const ALL: [UpstreamFailure; 4] =
        [UpstreamFailure::Connect, UpstreamFailure::Reset, UpstreamFailure::Timeout, UpstreamFailure::Status];
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Reset => "reset",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Status => "status",
        }
    }
}

/// Per upstream and [`UpstreamFailure`]: attempts that failed, and retries.
#[derive(Default)]
struct FailureCounts {
    errors: [AtomicU64; 4],
    retries: [AtomicU64; 4],
}

/// Why the guard refused a request (or, in a dry run, would have).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// An `allow`/`deny` list.
    Access,
    /// A request rule.
    Rule,
    /// A method the route does not answer.
    Method,
    /// A request target over `max_uri_length`.
    UriLength,
    /// A path that cannot be normalised (bad or forbidden percent-encoding).
    Path,
    /// A `[[limit_req]]` zone.
    LimitReq,
    /// A `[[limit_conn]]` zone.
    LimitConn,
    /// A request body too slow (`body_timeout`, `body_min_rate`).
    BodyTimeout,
    /// A request body over `server.max_request_body`.
    BodySize,
    /// An HTTP/2 client flooding control frames or resets.
    H2Flood,
    /// A route's `auth_basic`: no or wrong credentials, or too many failures.
    AuthBasic,
    /// A route's `auth_request`: the auth upstream said no, or failed.
    AuthRequest,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Access => "access",
            Reason::Rule => "rule",
            Reason::Method => "method",
            Reason::UriLength => "uri_length",
            Reason::Path => "path",
            Reason::LimitReq => "limit_req",
            Reason::LimitConn => "limit_conn",
            Reason::BodyTimeout => "body_timeout",
            Reason::BodySize => "body_size",
            Reason::H2Flood => "h2_flood",
            Reason::AuthBasic => "auth_basic",
            Reason::AuthRequest => "auth_request",
        }
    }
}

/// Guard counts: reason → route label → [refused, dry runs].
type GuardMap = HashMap<Reason, HashMap<String, [AtomicU64; 2]>>;

/// Authentication results: (kind, result) → route → count.
type AuthMap = HashMap<(&'static str, &'static str), HashMap<String, AtomicU64>>;

/// Request counts: route → cache outcome (None: the cache was not reached) → status.
/// Nested so that a lookup borrows and the hot path allocates nothing.
type RequestMap = HashMap<String, HashMap<Option<CacheOutcome>, HashMap<u16, AtomicU64>>>;

/// Request durations: route → (method, cache outcome) → histogram.
type DurationMap = HashMap<String, HashMap<(MethodClass, Option<CacheOutcome>), Histogram>>;

/// Log lines dropped because the log's reader was slow or gone, or its file
/// could not be written: the log writers are the process's, and so is this count.
static LOGS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// `n` log lines dropped (see [`Metrics::logs_dropped`]).
pub(crate) fn log_lines_dropped(n: u64) {
    LOGS_DROPPED.fetch_add(n, Relaxed);
}

/// All counters of one proxy, shared as `Arc<Metrics>` across reloads.
pub struct Metrics {
    requests: RwLock<RequestMap>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    durations: RwLock<DurationMap>,
    /// Upstream response times: upstream → server address → histogram.
    latency: RwLock<HashMap<String, HashMap<String, Histogram>>>,
    /// Per upstream: requests sent on a new connection, and on a reused one.
    connections: RwLock<HashMap<String, [AtomicU64; 2]>>,
    failures: RwLock<HashMap<String, FailureCounts>>,
    purges: Labelled<PurgeKind, PurgeCounts>,
    evictions: Labelled<Tier, AtomicU64>,
    waits: Labelled<WaitEnd, AtomicU64>,
    disk_writes_skipped: AtomicU64,
    /// Answers from a static route's directory, by [`FILE_CODINGS`].
    files: [AtomicU64; 4],
    /// HTTP/3 requests that came in 0-RTT, by [`EARLY_OUTCOMES`].
    early: [AtomicU64; 3],
    /// Misses sent to their owner, by [`Forwarded`] (`Down` is never sent, only a fallback).
    forwarded: [AtomicU64; 4],
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    acme_ok: AtomicU64,
    acme_failed: AtomicU64,
    guard: RwLock<GuardMap>,
    auth: RwLock<AuthMap>,
    /// Client connections open now, per listener (as [`LISTENERS`]) and protocol (HTTP/1, HTTP/2, HTTP/3).
    open: [[AtomicU64; 3]; 3],
}

/// The `coding` label of `relais_files_served_total`, in the order of
/// [`crate::config::Encoding`]'s variants, then the file as it is.
pub(crate) const FILE_CODINGS: [&str; 4] = ["zstd", "br", "gzip", "identity"];

/// What became of an HTTP/3 request that came in 0-RTT
/// (`relais_http3_early_requests_total`'s `outcome`).
#[derive(Clone, Copy)]
pub(crate) enum EarlyOutcome {
    /// Answered at once (sent upstream with `Early-Data: 1` when it goes there).
    Answered,
    /// Held until the handshake ended.
    Waited,
    /// Sent again after the handshake, the origin having answered 425.
    Retried,
}

/// The `outcome` labels, in [`EarlyOutcome`]'s order.
const EARLY_OUTCOMES: [&str; 3] = ["answered", "waited", "retried"];

/// The listeners `relais_connections_open` counts, in its order.
pub(crate) const LISTENERS: [&str; 3] = ["http", "https", "admin"];

/// One open client connection, counted until dropped.
pub(crate) struct OpenConnection<'a>(&'a AtomicU64);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            requests: RwLock::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            durations: RwLock::default(),
            latency: RwLock::default(),
            connections: RwLock::default(),
            failures: RwLock::default(),
            purges: Labelled::new(&PurgeKind::ALL),
            evictions: Labelled::new(&Tier::ALL),
            waits: Labelled::new(&WaitEnd::ALL),
            disk_writes_skipped: AtomicU64::new(0),
            files: Default::default(),
            early: Default::default(),
            forwarded: Default::default(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            acme_ok: AtomicU64::new(0),
            acme_failed: AtomicU64::new(0),
            guard: RwLock::default(),
            auth: RwLock::default(),
            open: Default::default(),
        }
    }

    /// A client connection on listener `listener` (an index into [`LISTENERS`])
    /// now serves HTTP/1 or HTTP/2; counted open until the result is dropped.
    pub(crate) fn connection_open(&self, listener: usize, http2: bool) -> OpenConnection<'_> {
        let open = &self.open[listener.min(LISTENERS.len() - 1)][usize::from(http2)];
        open.fetch_add(1, Relaxed);
        OpenConnection(open)
    }

    /// An HTTP/3 connection (on a TLS listener's QUIC twin), counted until dropped.
    pub(crate) fn connection_open_h3(&self) -> OpenConnection<'_> {
        let open = &self.open[1][2];
        open.fetch_add(1, Relaxed);
        OpenConnection(open)
    }

    /// Open client connections: (listener, protocol, count); HTTP/3 on the TLS listener only.
    pub fn connections_open(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut all = Vec::with_capacity(7);
        for (listener, open) in LISTENERS.iter().zip(&self.open) {
            all.push((*listener, "http1", open[0].load(Relaxed)));
            all.push((*listener, "h2", open[1].load(Relaxed)));
        }
        all.insert(4, (LISTENERS[1], "h3", self.open[1][2].load(Relaxed)));
        all
    }

    /// A request the guard refused (`dry_run`: would have refused, and let pass).
    /// `route` is a route's name, `none` before routing, or `admin`.
    pub fn guard(&self, reason: Reason, route: &str, dry_run: bool) {
        let slot = usize::from(dry_run);
        if let Some(c) = read(&self.guard).get(&reason).and_then(|m| m.get(route)) {
            c[slot].fetch_add(1, Relaxed);
            return;
        }
        write(&self.guard).entry(reason).or_default().entry(route.to_owned()).or_default()[slot].fetch_add(1, Relaxed);
    }

    /// One authentication result on `route`: `kind` is `basic` or `request`.
    pub(crate) fn auth(&self, route: &str, kind: &'static str, result: &'static str) {
        if let Some(c) = read(&self.auth).get(&(kind, result)).and_then(|m| m.get(route)) {
            c.fetch_add(1, Relaxed);
            return;
        }
        write(&self.auth).entry((kind, result)).or_default().entry(route.to_owned()).or_default().fetch_add(1, Relaxed);
    }

    /// Authentication counts, sorted: (route, kind, result, count).
    pub(crate) fn auth_counts(&self) -> Vec<(String, &'static str, &'static str, u64)> {
        let mut all = Vec::new();
        for ((kind, result), by_route) in read(&self.auth).iter() {
            for (route, n) in by_route {
                all.push((route.clone(), *kind, *result, n.load(Relaxed)));
            }
        }
        all.sort_unstable();
        all
    }

    /// Guard counts, sorted: (reason, route, dry run, count), series that happened only.
    pub fn guard_counts(&self) -> Vec<(Reason, String, bool, u64)> {
        let mut all = Vec::new();
        for (reason, by_route) in read(&self.guard).iter() {
            for (route, counts) in by_route {
                for (slot, c) in counts.iter().enumerate() {
                    let n = c.load(Relaxed);
                    if n > 0 {
                        all.push((*reason, route.clone(), slot == 1, n));
                    }
                }
            }
        }
        all.sort_unstable_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
        all
    }

    /// One finished request. `route` is a route's name or `none`;
    /// `bytes_in`/`bytes_out` are body bytes received and sent.
    pub fn request(&self, route: &str, status: u16, cache: Option<CacheOutcome>, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
        if let Some(count) = read(&self.requests).get(route).and_then(|m| m.get(&cache)).and_then(|m| m.get(&status)) {
            count.fetch_add(1, Relaxed);
            return;
        }
        let mut map = write(&self.requests);
        let by_status = map.entry(route.to_owned()).or_default().entry(cache).or_default();
        by_status.entry(status).or_default().fetch_add(1, Relaxed);
    }

    /// How long one request took, from its head to the end of its response.
    pub fn request_duration(&self, route: &str, method: MethodClass, cache: Option<CacheOutcome>, seconds: f64) {
        if let Some(h) = read(&self.durations).get(route).and_then(|m| m.get(&(method, cache))) {
            return h.observe(seconds);
        }
        write(&self.durations)
            .entry(route.to_owned())
            .or_default()
            .entry((method, cache))
            .or_default()
            .observe(seconds);
    }

    /// Time from sending a request to `server` of `upstream` until its response head arrived.
    pub fn upstream_response(&self, upstream: &str, server: &str, seconds: f64) {
        if let Some(h) = read(&self.latency).get(upstream).and_then(|m| m.get(server)) {
            return h.observe(seconds);
        }
        write(&self.latency)
            .entry(upstream.to_owned())
            .or_default()
            .entry(server.to_owned())
            .or_default()
            .observe(seconds);
    }

    /// A request sent upstream on a `reused` pooled connection or a new one.
    pub fn upstream_connection(&self, upstream: &str, reused: bool) {
        let slot = usize::from(reused);
        if let Some(c) = read(&self.connections).get(upstream) {
            c[slot].fetch_add(1, Relaxed);
            return;
        }
        write(&self.connections).entry(upstream.to_owned()).or_default()[slot].fetch_add(1, Relaxed);
    }

    /// An attempt to a server of `upstream` that failed (`retry`: and the
    /// request went on to the next server, which a `status` failure only does).
    pub fn upstream_failure(&self, upstream: &str, why: UpstreamFailure, retry: bool) {
        let bump = |c: &FailureCounts| {
            let counts = if retry { &c.retries } else { &c.errors };
            counts[why as usize].fetch_add(1, Relaxed);
        };
        if let Some(c) = read(&self.failures).get(upstream) {
            return bump(c);
        }
        bump(write(&self.failures).entry(upstream.to_owned()).or_default());
    }

    /// Per upstream: (errors, retries) by [`UpstreamFailure::ALL`], sorted by upstream.
    pub fn upstream_failures(&self) -> Vec<(String, [u64; 4], [u64; 4])> {
        let load = |a: &[AtomicU64; 4]| a.each_ref().map(|c| c.load(Relaxed));
        let mut v: Vec<_> =
            read(&self.failures).iter().map(|(k, c)| (k.clone(), load(&c.errors), load(&c.retries))).collect();
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Per upstream: (requests on new connections, on reused ones).
    pub fn connections(&self) -> Vec<(String, u64, u64)> {
        let mut v: Vec<_> =
            read(&self.connections).iter().map(|(k, c)| (k.clone(), c[0].load(Relaxed), c[1].load(Relaxed))).collect();
        v.sort();
        v
    }

    /// One purge that removed or marked `entries`.
    pub fn purge(&self, kind: PurgeKind, mode: PurgeMode, entries: u64) {
        self.purges.with(kind, |p| {
            let count = if mode.is_soft() { &p.soft } else { &p.hard };
            count.fetch_add(1, Relaxed);
            p.entries.fetch_add(entries, Relaxed);
        });
    }

    /// A request that waited on another request's origin fetch, and how the wait ended.
    pub fn collapsed_wait(&self, end: WaitEnd) {
        self.waits.with(end, |c| {
            c.fetch_add(1, Relaxed);
        });
    }

    /// An entry kept in memory only because the disk was `disk_write_backlog` behind.
    pub fn disk_write_skipped(&self) {
        self.disk_writes_skipped.fetch_add(1, Relaxed);
    }

    pub fn reload(&self, ok: bool) {
        let count = if ok { &self.reloads_ok } else { &self.reloads_failed };
        count.fetch_add(1, Relaxed);
    }

    /// One ACME order that gave a certificate (`ok`) or did not.
    pub fn acme(&self, ok: bool) {
        let count = if ok { &self.acme_ok } else { &self.acme_failed };
        count.fetch_add(1, Relaxed);
    }

    /// ACME orders that gave a certificate, and that failed.
    pub fn acme_orders(&self) -> (u64, u64) {
        (self.acme_ok.load(Relaxed), self.acme_failed.load(Relaxed))
    }

    /// One entry evicted from `tier` to make room.
    pub fn eviction(&self, tier: Tier) {
        self.evictions.with(tier, |c| {
            c.fetch_add(1, Relaxed);
        });
    }

    /// Every request series, sorted so that output is stable between scrapes.
    pub fn requests(&self) -> Vec<RequestSeries> {
        let mut series = Vec::new();
        for (route, by_cache) in read(&self.requests).iter() {
            for (cache, by_status) in by_cache {
                for (status, count) in by_status {
                    let count = count.load(Relaxed);
                    series.push(RequestSeries { route: route.clone(), status: *status, cache: *cache, count });
                }
            }
        }
        series.sort_unstable_by(|a, b| (&a.route, a.status, word(a.cache)).cmp(&(&b.route, b.status, word(b.cache))));
        series
    }

    /// Body bytes received from and sent to clients.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_in.load(Relaxed), self.bytes_out.load(Relaxed))
    }

    /// Request durations: (route, method, cache outcome, histogram), sorted.
    pub fn durations(&self) -> Vec<(String, MethodClass, Option<CacheOutcome>, HistogramSnapshot)> {
        let mut all = Vec::new();
        for (route, by) in read(&self.durations).iter() {
            all.extend(by.iter().map(|((method, cache), h)| (route.clone(), *method, *cache, h.snapshot())));
        }
        all.sort_unstable_by(|a, b| (&a.0, a.1, word(a.2)).cmp(&(&b.0, b.1, word(b.2))));
        all
    }

    /// Upstream response times: (upstream, server, histogram), sorted.
    pub fn latency(&self) -> Vec<(String, String, HistogramSnapshot)> {
        let mut all = Vec::new();
        for (upstream, by_server) in read(&self.latency).iter() {
            all.extend(by_server.iter().map(|(server, h)| (upstream.clone(), server.clone(), h.snapshot())));
        }
        all.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    }

    /// Per purge kind: hard purges, soft purges, entries touched.
    pub fn purges(&self) -> Vec<(PurgeKind, [u64; 3])> {
        self.purges.snapshot(PurgeCounts::load)
    }

    pub fn evictions(&self) -> Vec<(Tier, u64)> {
        self.evictions.snapshot(|c| c.load(Relaxed))
    }

    pub fn waits(&self) -> Vec<(WaitEnd, u64)> {
        self.waits.snapshot(|c| c.load(Relaxed))
    }

    /// A miss sent to its owner, or fetched here instead (every result but `Answered`).
    pub(crate) fn forwarded(&self, result: Forwarded) {
        self.forwarded[result as usize].fetch_add(1, Relaxed);
    }

    /// Misses by what their owner made of them ([`Forwarded::ALL`] order).
    pub fn forwards(&self) -> [(Forwarded, u64); 4] {
        Forwarded::ALL.map(|f| (f, self.forwarded[f as usize].load(Relaxed)))
    }

    /// A request answered from a static route's file (`None`) or its precompressed sibling.
    pub fn file_served(&self, coding: Option<crate::config::Encoding>) {
        self.files[coding.map_or(3, |e| e as usize)].fetch_add(1, Relaxed);
    }

    /// Answers from files, by coding ([`FILE_CODINGS`] order).
    pub fn files_served(&self) -> [(&'static str, u64); 4] {
        std::array::from_fn(|i| (FILE_CODINGS[i], self.files[i].load(Relaxed)))
    }

    /// An HTTP/3 request that came in 0-RTT.
    pub(crate) fn early_request(&self, outcome: EarlyOutcome) {
        self.early[outcome as usize].fetch_add(1, Relaxed);
    }

    /// 0-RTT requests by outcome ([`EARLY_OUTCOMES`] order).
    pub fn early_requests(&self) -> [(&'static str, u64); 3] {
        std::array::from_fn(|i| (EARLY_OUTCOMES[i], self.early[i].load(Relaxed)))
    }

    pub fn disk_writes_skipped(&self) -> u64 {
        self.disk_writes_skipped.load(Relaxed)
    }

    /// Reloads accepted and refused.
    pub fn reloads(&self) -> (u64, u64) {
        (self.reloads_ok.load(Relaxed), self.reloads_failed.load(Relaxed))
    }

    /// Log lines dropped since the process started (every proxy in it shares
    /// the log writers, so this counter is the process's, not this proxy's).
    pub fn logs_dropped(&self) -> u64 {
        LOGS_DROPPED.load(Relaxed)
    }
}

/// The word for a cache outcome in labels: `-` when the cache was not reached.
pub(crate) fn word(cache: Option<CacheOutcome>) -> &'static str {
    cache.map_or("-", |c| c.as_str())
}

pub struct RequestSeries {
    pub route: String,
    pub status: u16,
    pub cache: Option<CacheOutcome>,
    pub count: u64,
}

/// Values keyed by one label. The write lock is taken only to add a key.
struct Labelled<K, V>(RwLock<HashMap<K, V>>);

impl<K: std::hash::Hash + Ord + Copy, V: Default> Labelled<K, V> {
    /// Starts with `keys` present, so their series show up at zero before the first event.
    fn new(keys: &[K]) -> Self {
        Labelled(RwLock::new(keys.iter().map(|k| (*k, V::default())).collect()))
    }

    fn with(&self, key: K, f: impl FnOnce(&V)) {
        if let Some(v) = read(&self.0).get(&key) {
            return f(v);
        }
        f(write(&self.0).entry(key).or_default());
    }

    /// In the order the keys are declared.
    fn snapshot<T>(&self, f: impl Fn(&V) -> T) -> Vec<(K, T)> {
        let mut all: Vec<(K, T)> = read(&self.0).iter().map(|(k, v)| (*k, f(v))).collect();
        all.sort_unstable_by_key(|(k, _)| *k);
        all
    }
}

#[derive(Default)]
struct PurgeCounts {
    hard: AtomicU64,
    soft: AtomicU64,
    entries: AtomicU64,
}

impl PurgeCounts {
    fn load(&self) -> [u64; 3] {
        [self.hard.load(Relaxed), self.soft.load(Relaxed), self.entries.load(Relaxed)]
    }
}

/// One slot per bucket plus `+Inf`, each counting only its own range; the count is their sum, so
/// the `+Inf` bucket and `_count` always agree even when read during an update.
#[derive(Default)]
struct Histogram {
    slots: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

pub struct HistogramSnapshot {
    /// Cumulative counts per bucket of [`BUCKETS`], then `+Inf`.
    pub cumulative: [u64; BUCKETS.len() + 1],
    pub sum: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.cumulative[BUCKETS.len()]
    }
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_finite() { seconds.max(0.0) } else { 0.0 };
        let slot = BUCKETS.iter().position(|&le| seconds <= le).unwrap_or(BUCKETS.len());
        self.slots[slot].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add((seconds * 1e9).round() as u64, Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0; BUCKETS.len() + 1];
        let mut running = 0;
        for (c, slot) in cumulative.iter_mut().zip(&self.slots) {
            running += slot.load(Relaxed);
            *c = running;
        }
        HistogramSnapshot { cumulative, sum: self.sum_nanos.load(Relaxed) as f64 / 1e9 }
    }
}

// The maps hold only atomics, so a panic elsewhere cannot leave them half-updated: ignore poison.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_requests_are_all_counted() {
        let m = Metrics::new();
        std::thread::scope(|scope| {
            for t in 0..8 {
                let m = &m;
                // Threads share some label sets and race to insert others.
                scope.spawn(move || {
                    for i in 0..10_000u16 {
                        m.request(&format!("routes[{}]", t % 3), 200 + i % 4, Some(CacheOutcome::Hit), 1, 2);
                    }
                });
            }
        });
        let requests = m.requests();
        assert_eq!(requests.iter().map(|r| r.count).sum::<u64>(), 80_000);
        assert_eq!(m.bytes(), (80_000, 160_000));
        let route0: u64 = requests.iter().filter(|r| r.route == "routes[0]").map(|r| r.count).sum();
        assert_eq!(route0, 30_000);
    }

    #[test]
    fn label_words_are_distinct() {
        let words: std::collections::HashSet<_> = WaitEnd::ALL.iter().map(|w| w.as_str()).collect();
        assert_eq!(words.len(), WaitEnd::ALL.len());
        let words: std::collections::HashSet<_> = PurgeKind::ALL.iter().map(|w| w.as_str()).collect();
        assert_eq!(words.len(), PurgeKind::ALL.len());
    }
}
