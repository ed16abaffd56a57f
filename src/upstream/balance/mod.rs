//! Choosing a server of a pool, one file per algorithm beside this one.
//!
//! - `round_robin`: nginx's smooth weighted algorithm, computed once when the
//!   pool is built into a fixed order (`5,1,1` gives `a a b a c a a`); picking
//!   is one atomic increment.
//! - `least_conn`: that rotation sorted by requests in flight over weight.
//! - `ewma` ([`ewma`]): the power of two choices on peak-EWMA latency.
//! - `hash` and `ip_hash` ([`ring`]): a consistent-hash ring over `hash_key`
//!   or the client address; a request without a key goes round-robin.
//!
//! [`Balancer::candidates`] gives every server once, the chosen one first: the
//! rest are where a retry goes.

mod ewma;
mod ring;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::Balance;
pub use ring::hash;

pub struct Balancer {
    kind: Balance,
    order: Vec<usize>,
    next: AtomicUsize,
    ring: Option<ring::Ring>,
    latency: Vec<ewma::Latency>,
    random: AtomicU64,
    /// `hash_balance_factor`: with `hash`/`ip_hash`, a server may hold at most
    /// this many hundredths of the pool's average load before a key passes on.
    bound: Option<u32>,
}

impl Default for Balancer {
    /// Over no servers: what a pool holds only while it is being built.
    fn default() -> Balancer {
        Balancer::new(Balance::default(), &[], &[])
    }
}

impl Balancer {
    pub fn new(kind: Balance, addresses: &[&str], weights: &[u32]) -> Balancer {
        let ring = matches!(kind, Balance::Hash | Balance::IpHash).then(|| ring::Ring::new(addresses, weights));
        Balancer {
            kind,
            order: smooth_order(weights),
            next: AtomicUsize::new(0),
            ring,
            latency: weights.iter().map(|_| ewma::Latency::default()).collect(),
            random: AtomicU64::new(0x853c_49e6_748f_ea9b),
            bound: None,
        }
    }

    /// Consistent hashing with bounded loads (Mirrokni et al.; HAProxy's
    /// `hash-balance-factor`): a key goes to the first server along the ring
    /// whose requests in flight, this one counted, stay within `percent` of
    /// the average. 0 leaves keys where the ring puts them.
    pub fn bounded(mut self, percent: u32) -> Balancer {
        self.bound = (percent > 0).then_some(percent);
        self
    }

    /// Server indexes in the order they should be tried for one request.
    /// `load(i)` is the number of requests in flight on server `i`, `weight(i)`
    /// its weight; `key` the request's hash key, for `hash` and `ip_hash`.
    pub fn candidates(
        &self,
        n: usize,
        load: impl Fn(usize) -> usize,
        weight: impl Fn(usize) -> u32,
        key: Option<u64>,
    ) -> Vec<usize> {
        let mut out = Vec::with_capacity(n);
        if let (Some(ring), Some(key)) = (&self.ring, key) {
            ring.walk(key, n, &mut out);
            if let Some(percent) = self.bound {
                let total: u64 = (0..n).map(|i| load(i) as u64).sum();
                // ceil(percent% of the average, this request included)
                let cap = ((total + 1) * u64::from(percent)).div_ceil(100 * n as u64);
                if let Some(p) = out.iter().position(|&i| (load(i) as u64) < cap) {
                    let chosen = out.remove(p);
                    out.insert(0, chosen);
                }
            }
            return out;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let first = self.order[start % self.order.len()];
        out.push(first);
        out.extend((1..n).map(|k| (first + k) % n));
        match self.kind {
            Balance::LeastConn => {
                // Stable sort keeps the round-robin rotation among equals.
                out.sort_by(|&a, &b| {
                    let la = load(a) as u64 * weight(b) as u64;
                    let lb = load(b) as u64 * weight(a) as u64;
                    la.cmp(&lb)
                });
            }
            Balance::Ewma if n > 1 => {
                let (a, b) = ewma::two(n, self.next_random());
                let cost = |i: usize| self.latency[i].cost(load(i), weight(i));
                let best = if cost(b) < cost(a) { b } else { a };
                out.retain(|&i| i != best);
                out.insert(0, best);
            }
            _ => {}
        }
        out
    }

    /// A response from server `i` took `took` (for `ewma`).
    pub fn observe(&self, i: usize, took: Duration) {
        if self.kind == Balance::Ewma
            && let Some(l) = self.latency.get(i)
        {
            l.observe(took);
        }
    }

    /// Server `i`'s moving average of response times, with `ewma` once it has one.
    pub fn average(&self, i: usize) -> Option<Duration> {
        let micros = self.latency.get(i)?.micros();
        (self.kind == Balance::Ewma && micros.is_finite()).then(|| Duration::from_secs_f64(micros / 1e6))
    }

    /// Server `i` carries on with what `from` learnt of its server `j`.
    pub fn carry(&self, i: usize, from: &Balancer, j: usize) {
        if let (Some(to), Some(was)) = (self.latency.get(i), from.latency.get(j)) {
            to.copy_from(was);
        }
    }

    /// xorshift64*: cheap, and good enough to pick two servers.
    fn next_random(&self) -> u64 {
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// nginx's smooth weighted round-robin, unrolled over one full cycle.
fn smooth_order(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += w as i64;
        }
        let best = (0..weights.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i))).unwrap_or(0);
        current[best] -= total;
        order.push(best);
    }
    if order.is_empty() {
        order.push(0);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_interleaves() {
        assert_eq!(smooth_order(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_order(&[1, 1]), vec![0, 1]);
    }

    #[test]
    fn weights_are_respected_over_a_cycle() {
        let b = Balancer::new(Balance::RoundRobin, &["a", "b"], &[3, 1]);
        let firsts: Vec<usize> = (0..8).map(|_| b.candidates(2, |_| 0, |_| 1, None)[0]).collect();
        assert_eq!(firsts.iter().filter(|&&i| i == 0).count(), 6);
    }

    #[test]
    fn candidates_cover_every_server_once() {
        let b = Balancer::new(Balance::RoundRobin, &["a", "b", "c"], &[1, 1, 1]);
        let mut c = b.candidates(3, |_| 0, |_| 1, None);
        c.sort();
        assert_eq!(c, vec![0, 1, 2]);
    }

    #[test]
    fn least_conn_prefers_idle() {
        let b = Balancer::new(Balance::LeastConn, &["a", "b", "c"], &[1, 1, 1]);
        let c = b.candidates(3, |i| [5, 0, 2][i], |_| 1, None);
        assert_eq!(c, vec![1, 2, 0]);
    }

    #[test]
    fn ewma_sends_new_requests_away_from_a_slow_server() {
        let b = Balancer::new(Balance::Ewma, &["a", "b"], &[1, 1]);
        b.observe(0, Duration::from_millis(300));
        b.observe(1, Duration::from_millis(2));
        let to_fast = (0..100).filter(|_| b.candidates(2, |_| 0, |_| 1, None)[0] == 1).count();
        assert_eq!(to_fast, 100);
    }

    #[test]
    fn bounded_load_passes_a_key_on_from_a_busy_server() {
        let b = Balancer::new(Balance::Hash, &["a:1", "b:1", "c:1"], &[1, 1, 1]).bounded(125);
        let key = Some(hash(&[b"k"]));
        let home = b.candidates(3, |_| 0, |_| 1, key)[0];
        // The key's server holds 6 of 6 requests in flight: over 125% of the average (7/3).
        let busy = |i: usize| if i == home { 6 } else { 0 };
        let moved = b.candidates(3, busy, |_| 1, key);
        assert_ne!(moved[0], home);
        assert_eq!(moved, b.candidates(3, busy, |_| 1, key), "the same next server every time");
        // Within the bound it stays home.
        let light = |_: usize| 1;
        assert_eq!(b.candidates(3, light, |_| 1, key)[0], home);
        let unbounded = Balancer::new(Balance::Hash, &["a:1", "b:1", "c:1"], &[1, 1, 1]);
        assert_eq!(unbounded.candidates(3, busy, |_| 1, key)[0], home);
    }

    #[test]
    fn kept_servers_carry_their_latency_into_a_new_balancer() {
        let old = Balancer::new(Balance::Ewma, &["a", "b"], &[1, 1]);
        old.observe(0, Duration::from_millis(300));
        old.observe(1, Duration::from_millis(2));
        // The pool changed: "b" is now first, "a" second, and "c" is new.
        let new = Balancer::new(Balance::Ewma, &["b", "a", "c"], &[1, 1, 1]);
        new.carry(0, &old, 1);
        new.carry(1, &old, 0);
        let to_a = (0..200).filter(|_| new.candidates(3, |_| 1, |_| 1, None)[0] == 1).count();
        assert_eq!(to_a, 0, "the slow server stays shunned");
    }

    #[test]
    fn a_hash_key_always_lands_on_the_same_server() {
        let b = Balancer::new(Balance::Hash, &["a:1", "b:1", "c:1"], &[1, 1, 1]);
        for k in 0..50u64 {
            let first = b.candidates(3, |_| 0, |_| 1, Some(hash(&[&k.to_le_bytes()])));
            for _ in 0..5 {
                assert_eq!(b.candidates(3, |_| 0, |_| 1, Some(hash(&[&k.to_le_bytes()]))), first);
            }
        }
    }
}
