//! Choosing a server of a pool.
//!
//! Weighted round-robin uses nginx's smooth algorithm, computed once when the
//! pool is built into a fixed order (so `5,1,1` gives `a a b a c a a`, not
//! `a a a a a b c`); picking is then one atomic increment. A new algorithm is a
//! new [`Balance`] arm and a match arm in [`Balancer::candidates`].

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::Balance;

pub struct Balancer {
    kind: Balance,
    order: Vec<usize>,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(kind: Balance, weights: &[u32]) -> Balancer {
        Balancer { kind, order: smooth_order(weights), next: AtomicUsize::new(0) }
    }

    /// Server indexes in the order they should be tried for one request.
    /// `load(i)` is the number of requests in flight on server `i`, `weight(i)` its weight.
    pub fn candidates(&self, n: usize, load: impl Fn(usize) -> usize, weight: impl Fn(usize) -> u32) -> Vec<usize> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let first = self.order[start % self.order.len()];
        let mut out = Vec::with_capacity(n);
        out.push(first);
        out.extend((1..n).map(|k| (first + k) % n));
        if self.kind == Balance::LeastConn {
            // Stable sort keeps the round-robin rotation among equals.
            out.sort_by(|&a, &b| {
                let la = load(a) as u64 * weight(b) as u64;
                let lb = load(b) as u64 * weight(a) as u64;
                la.cmp(&lb)
            });
        }
        out
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
        let b = Balancer::new(Balance::RoundRobin, &[3, 1]);
        let firsts: Vec<usize> = (0..8).map(|_| b.candidates(2, |_| 0, |_| 1)[0]).collect();
        assert_eq!(firsts.iter().filter(|&&i| i == 0).count(), 6);
    }

    #[test]
    fn candidates_cover_every_server_once() {
        let b = Balancer::new(Balance::RoundRobin, &[1, 1, 1]);
        let mut c = b.candidates(3, |_| 0, |_| 1);
        c.sort();
        assert_eq!(c, vec![0, 1, 2]);
    }

    #[test]
    fn least_conn_prefers_idle() {
        let b = Balancer::new(Balance::LeastConn, &[1, 1, 1]);
        let c = b.candidates(3, |i| [5, 0, 2][i], |_| 1);
        assert_eq!(c, vec![1, 2, 0]);
    }
}
