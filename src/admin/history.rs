//! The last minutes of traffic (`GET /stats/history`), so that the
//! dashboard's charts are full when it opens: one sample every [`EVERY`] of
//! what changed since the one before, the last [`KEPT`] of them in a ring.
//! Sampled by a task that runs as long as the admin listener.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::metrics::{BUCKETS, Metrics};

/// How often a sample is taken.
pub(super) const EVERY: Duration = Duration::from_secs(5);
/// Samples kept: 15 minutes.
pub(super) const KEPT: usize = 180;

/// Counters since start, as one sample's difference is taken from.
#[derive(Clone, Default)]
struct Totals {
    requests: u64,
    hits: u64,
    lookups: u64,
    /// 1xx to 5xx.
    classes: [u64; 5],
    bytes_in: u64,
    bytes_out: u64,
    /// Request durations of every route, method and outcome, cumulative per bucket.
    durations: [u64; BUCKETS.len() + 1],
}

impl Totals {
    fn read(m: &Metrics) -> Totals {
        let requests = m.requests();
        let (hits, lookups) = super::render::hits_and_lookups(&requests);
        let mut t = Totals { hits, lookups, ..Totals::default() };
        for r in &requests {
            t.requests += r.count;
            if let Some(c) = t.classes.get_mut(usize::from(r.status / 100).wrapping_sub(1)) {
                *c += r.count;
            }
        }
        (t.bytes_in, t.bytes_out) = m.bytes();
        for (_, _, _, h) in m.durations() {
            for (sum, n) in t.durations.iter_mut().zip(h.cumulative) {
                *sum += n;
            }
        }
        t
    }
}

/// What happened during one interval.
struct Sample {
    /// When it ended, Unix seconds.
    at: u64,
    secs: f64,
    change: Totals,
}

#[derive(Default)]
pub(super) struct History {
    inner: Mutex<Ring>,
}

/// The samples, and the totals the next one is taken against.
#[derive(Default)]
struct Ring {
    samples: VecDeque<Sample>,
    last: Option<(Instant, Totals)>,
}

impl History {
    /// Takes a sample of `m` now (the first call only sets the baseline).
    pub(super) fn sample(&self, m: &Metrics) {
        self.record(Totals::read(m), Instant::now(), SystemTime::now());
    }

    fn record(&self, now: Totals, at: Instant, wall: SystemTime) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Ring { samples: ring, last } = &mut *inner;
        if let Some((then, before)) = last.replace((at, now.clone())) {
            let d = |a: u64, b: u64| a.saturating_sub(b);
            let mut change = Totals {
                requests: d(now.requests, before.requests),
                hits: d(now.hits, before.hits),
                lookups: d(now.lookups, before.lookups),
                bytes_in: d(now.bytes_in, before.bytes_in),
                bytes_out: d(now.bytes_out, before.bytes_out),
                ..Totals::default()
            };
            for (i, c) in change.classes.iter_mut().enumerate() {
                *c = d(now.classes[i], before.classes[i]);
            }
            for (i, c) in change.durations.iter_mut().enumerate() {
                *c = d(now.durations[i], before.durations[i]);
            }
            if ring.len() == KEPT {
                ring.pop_front();
            }
            let secs = at.saturating_duration_since(then).as_secs_f64();
            ring.push_back(Sample { at: wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()), secs, change });
        }
    }

    /// The samples, oldest first.
    pub(super) fn json(&self) -> Value {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let samples: Vec<Value> = inner
            .samples
            .iter()
            .map(|s| {
                let c = &s.change;
                json!({
                    "at": s.at, "secs": s.secs, "requests": c.requests, "hits": c.hits, "lookups": c.lookups,
                    "status": {"1xx": c.classes[0], "2xx": c.classes[1], "3xx": c.classes[2], "4xx": c.classes[3], "5xx": c.classes[4]},
                    "bytes_in": c.bytes_in, "bytes_out": c.bytes_out,
                    "p50": quantile(&c.durations, 0.5), "p99": quantile(&c.durations, 0.99),
                })
            })
            .collect();
        json!({"every_secs": EVERY.as_secs(), "kept": KEPT, "samples": samples})
    }
}

/// Samples `metrics` into `history` every [`EVERY`] until `stop` changes.
pub(super) async fn run(history: Arc<History>, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => history.sample(&metrics),
            _ = stop.changed() => return,
        }
    }
}

/// The `q` quantile of a cumulative histogram over [`BUCKETS`], interpolated
/// within its bucket as Prometheus's `histogram_quantile` does; None when empty.
/// Past the last bound, the last bound.
pub(super) fn quantile(cumulative: &[u64; BUCKETS.len() + 1], q: f64) -> Option<f64> {
    let count = cumulative[BUCKETS.len()];
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let i = cumulative.iter().position(|&c| c as f64 >= rank)?;
    let Some(&upper) = BUCKETS.get(i) else { return Some(BUCKETS[BUCKETS.len() - 1]) };
    let (lower, below) = if i == 0 { (0.0, 0) } else { (BUCKETS[i - 1], cumulative[i - 1]) };
    let inside = (cumulative[i] - below) as f64;
    Some(lower + (upper - lower) * (rank - below as f64) / inside.max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{CacheOutcome, MethodClass};

    #[test]
    fn samples_are_what_changed_and_the_ring_is_bounded() {
        let (m, h) = (Metrics::new(), History::default());
        let (start, wall) = (Instant::now(), SystemTime::now());
        m.request("api", 200, Some(CacheOutcome::Hit), 1, 10);
        h.record(Totals::read(&m), start, wall);
        assert_eq!(h.json()["samples"].as_array().unwrap().len(), 0, "the first call is the baseline");
        m.request("api", 200, Some(CacheOutcome::Hit), 1, 10);
        m.request("api", 503, Some(CacheOutcome::UriMiss), 2, 20);
        m.request_duration("api", MethodClass::Get, Some(CacheOutcome::Hit), 0.003);
        h.record(Totals::read(&m), start + EVERY, wall);
        let s = &h.json()["samples"][0];
        assert_eq!((s["requests"].as_u64(), s["hits"].as_u64(), s["lookups"].as_u64()), (Some(2), Some(1), Some(2)));
        assert_eq!((s["status"]["2xx"].as_u64(), s["status"]["5xx"].as_u64()), (Some(1), Some(1)));
        assert_eq!((s["bytes_in"].as_u64(), s["bytes_out"].as_u64()), (Some(3), Some(30)));
        assert_eq!(s["secs"], 5.0);
        let p50 = s["p50"].as_f64().unwrap();
        assert!((0.0025..=0.005).contains(&p50), "{p50}");
        for i in 2..KEPT as u32 + 10 {
            h.record(Totals::read(&m), start + EVERY * i, wall);
        }
        let samples = h.json()["samples"].as_array().unwrap().clone();
        assert_eq!(samples.len(), KEPT);
        assert_eq!(samples[0]["requests"], 0);
        assert!(samples[0]["p50"].is_null(), "no request, no percentile");
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut c = [0; BUCKETS.len() + 1];
        assert_eq!(quantile(&c, 0.5), None);
        // 10 observations in (0.005, 0.01].
        let i = BUCKETS.iter().position(|&b| b == 0.01).unwrap();
        for n in &mut c[i..] {
            *n = 10;
        }
        assert_eq!(quantile(&c, 0.5), Some(0.0075));
        assert_eq!(quantile(&c, 1.0), Some(0.01));
        c[BUCKETS.len()] = 1000;
        assert_eq!(quantile(&c, 0.99), Some(BUCKETS[BUCKETS.len() - 1]), "past the last bound");
    }
}
