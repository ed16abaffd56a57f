//! Passive health: a server that fails `max_fails` times in a row (connect
//! error or timeout) is skipped for `fail_timeout`, as nginx does. A success
//! clears the count. Lock-free: two atomics per server.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Default)]
pub(super) struct Health {
    fails: AtomicU32,
    /// Milliseconds since [`epoch`] until which the server is skipped; 0 = up.
    down_until: AtomicU64,
    /// Outlier ejection: 5xx answers (or timeouts) in a row, ejections so far,
    /// and until when the current one lasts (ms since [`epoch`]).
    bad_answers: AtomicU32,
    ejections: AtomicU32,
    ejected_until: AtomicU64,
    /// When an active check last brought the server back, or a success ended
    /// a passive down time early (ms since [`epoch`]), for `slow_start`.
    back_at: AtomicU64,
}

impl Health {
    pub(super) fn is_up(&self) -> bool {
        let until = self.down_until.load(Ordering::Relaxed);
        (until == 0 || now_ms() >= until) && !self.is_ejected()
    }

    pub(super) fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Counts an answer for outlier ejection; true when this one should eject
    /// the server (the caller checks the pool's share first, then calls [`Health::eject`]).
    pub(super) fn answered(&self, bad: bool, threshold: u32) -> bool {
        if !bad {
            if self.bad_answers.load(Ordering::Relaxed) != 0 {
                self.bad_answers.store(0, Ordering::Relaxed);
            }
            return false;
        }
        self.bad_answers.fetch_add(1, Ordering::Relaxed) + 1 >= threshold && !self.is_ejected()
    }

    /// Ejects for `base` times the number of ejections so far (capped); returns how long.
    pub(super) fn eject(&self, base: Duration, max: Duration) -> Duration {
        self.bad_answers.store(0, Ordering::Relaxed);
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = base.saturating_mul(n).min(max);
        let until = now_ms().saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until.store(until.max(1), Ordering::Relaxed);
        length
    }

    pub(super) fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// When a down server is due back (ms since epoch); 0 if up.
    pub(super) fn down_until(&self) -> u64 {
        self.down_until.load(Ordering::Relaxed)
    }

    /// Records a success; true if it ended a passive down time.
    pub(super) fn success(&self) -> bool {
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
        let until = self.down_until.load(Ordering::Relaxed);
        if until != 0 {
            self.down_until.store(0, Ordering::Relaxed);
            self.back_at.fetch_max(until.min(now_ms()), Ordering::Relaxed);
            return true;
        }
        false
    }

    /// An active check brought the server back.
    pub(super) fn came_back(&self) {
        self.back_at.fetch_max(now_ms(), Ordering::Relaxed);
    }

    /// The share of its weight a server that came back has regained within
    /// `slow_start` (nginx's `slow_start`): from near 0 to 1, linearly.
    pub(super) fn ramp(&self, slow_start: Duration) -> f64 {
        let now = now_ms();
        let past = |t: u64| if t <= now { t } else { 0 };
        let back = self
            .back_at
            .load(Ordering::Relaxed)
            .max(past(self.down_until.load(Ordering::Relaxed)))
            .max(past(self.ejected_until.load(Ordering::Relaxed)));
        let window = slow_start.as_millis() as u64;
        if back == 0 || window == 0 || now - back >= window {
            return 1.0;
        }
        (now - back) as f64 / window as f64
    }

    /// Records a failure; true if this one took the server down.
    pub(super) fn failure(&self, max_fails: u32, fail_timeout: Duration) -> bool {
        let fails = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= max_fails {
            self.fails.store(0, Ordering::Relaxed);
            let until = now_ms().saturating_add(u64::try_from(fail_timeout.as_millis()).unwrap_or(u64::MAX));
            self.down_until.store(until.max(1), Ordering::Relaxed);
            return true;
        }
        false
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_max_fails_then_back() {
        let h = Health::default();
        assert!(!h.failure(2, Duration::from_millis(30)));
        assert!(h.is_up());
        assert!(h.failure(2, Duration::from_millis(30)));
        assert!(!h.is_up());
        std::thread::sleep(Duration::from_millis(40));
        assert!(h.is_up());
    }

    #[test]
    fn success_clears() {
        let h = Health::default();
        h.failure(1, Duration::from_secs(60));
        assert!(!h.is_up());
        h.success();
        assert!(h.is_up());
    }

    #[test]
    fn a_server_back_regains_its_weight_over_slow_start() {
        let h = Health::default();
        assert_eq!(h.ramp(Duration::from_secs(10)), 1.0, "never down: whole weight");
        h.failure(1, Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        let early = h.ramp(Duration::from_millis(200));
        assert!(early > 0.0 && early < 0.5, "just back: {early}");
        h.success();
        assert!(h.ramp(Duration::from_millis(200)) < 0.5, "a success keeps the time it came back");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(h.ramp(Duration::from_millis(200)), 1.0);
        h.came_back();
        assert!(h.ramp(Duration::from_millis(200)) < 0.5);
    }

    #[test]
    fn ejections_grow_and_are_capped() {
        let h = Health::default();
        assert!(!h.answered(true, 3));
        assert!(!h.answered(false, 3), "a good answer resets the run");
        assert!(!h.answered(true, 3) && !h.answered(true, 3));
        assert!(h.answered(true, 3));
        let (base, max) = (Duration::from_millis(20), Duration::from_millis(50));
        assert_eq!(h.eject(base, max), base);
        assert!(h.is_ejected() && !h.is_up());
        assert_eq!(h.eject(base, max), Duration::from_millis(40));
        assert_eq!(h.eject(base, max), max, "capped");
        std::thread::sleep(Duration::from_millis(60));
        assert!(h.is_up());
    }
}
