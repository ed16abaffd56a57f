//! `balance = "ewma"`: the power of two choices on peak-EWMA latency, as
//! Linkerd and Finagle do. Each server keeps a moving average of its response
//! times that jumps up at once to a slower response and decays with a 10 s time
//! constant; a request picks two servers at random and goes to the one whose
//! average times (requests in flight + 1), divided by its weight, is lower.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The moving average's time constant.
const DECAY: Duration = Duration::from_secs(10);

/// One server's latency average (µs as f64 bits) and when it last moved.
pub(super) struct Latency {
    micros: AtomicU64,
    at: AtomicU64,
}

/// What a server not heard from yet is assumed to take while it is busy.
const UNKNOWN_MICROS: f64 = 1000.0;

impl Default for Latency {
    fn default() -> Self {
        // NaN: nothing observed yet.
        Latency { micros: AtomicU64::new(f64::NAN.to_bits()), at: AtomicU64::new(0) }
    }
}

impl Latency {
    /// Records one response time. Racing updates may lose one sample: harmless.
    pub(super) fn observe(&self, took: Duration) {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64;
        let sample = took.as_micros() as f64;
        let old = f64::from_bits(self.micros.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(self.at.swap(now, Ordering::Relaxed)) as f64;
        let next = if old.is_nan() || sample > old {
            sample // peak: slower responses count at once
        } else {
            let w = (-elapsed / DECAY.as_micros() as f64).exp();
            old * w + sample * (1.0 - w)
        };
        self.micros.store(next.to_bits(), Ordering::Relaxed);
    }

    /// Takes `other`'s average and time (a server kept when its pool's servers change).
    pub(super) fn copy_from(&self, other: &Latency) {
        self.micros.store(other.micros.load(Ordering::Relaxed), Ordering::Relaxed);
        self.at.store(other.at.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub(super) fn micros(&self) -> f64 {
        f64::from_bits(self.micros.load(Ordering::Relaxed))
    }

    /// The cost of one more request with `load` in flight. A server not heard
    /// from yet is free while idle (so it gets tried and learnt), and assumed
    /// at 1 ms once busy (so a burst does not all go to it).
    pub(super) fn cost(&self, load: usize, weight: u32) -> f64 {
        let micros = self.micros();
        let per = match micros.is_nan() {
            true if load == 0 => return 0.0,
            true => UNKNOWN_MICROS,
            false => micros,
        };
        per * (load + 1) as f64 / weight.max(1) as f64
    }
}

/// Two distinct servers out of `n`, from one random number.
pub(super) fn two(n: usize, random: u64) -> (usize, usize) {
    let a = (random % n as u64) as usize;
    let b = ((random >> 32) % (n as u64 - 1).max(1)) as usize;
    (a, if b >= a { (b + 1) % n } else { b })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_response_counts_at_once_and_fades() {
        let l = Latency::default();
        l.observe(Duration::from_millis(200));
        assert!((l.micros() - 200_000.0).abs() < 1.0);
        l.observe(Duration::from_millis(1));
        assert!(l.micros() > 150_000.0, "a moment later it has not faded yet");
    }

    #[test]
    fn two_picks_two_different_servers() {
        for r in 0..1000u64 {
            let (a, b) = two(3, r.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            assert!(a < 3 && b < 3 && a != b);
        }
        assert_eq!(two(1, 7), (0, 0));
    }
}
