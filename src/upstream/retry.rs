//! The retry budget: retries on answers (statuses, resets) may add at most a
//! share of requests. Each request deposits that share of a token, a retry
//! takes a whole one; the bucket holds ten, so a quiet pool can still retry a
//! few at once, and a failing one retries at most `retry_budget` of its traffic.

use std::sync::atomic::{AtomicU64, Ordering};

const MILLI: u64 = 1000;
const CAP: u64 = 10 * MILLI;

pub(super) struct Budget {
    per_request: u64,
    tokens: AtomicU64,
}

impl Budget {
    pub(super) fn new(ratio: f64) -> Budget {
        Budget { per_request: (ratio.clamp(0.0, 1.0) * MILLI as f64) as u64, tokens: AtomicU64::new(CAP) }
    }

    pub(super) fn deposit(&self) {
        let _ =
            self.tokens.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| Some((t + self.per_request).min(CAP)));
    }

    /// Takes one retry's token, if there is one.
    pub(super) fn withdraw(&self) -> bool {
        self.tokens.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(MILLI)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_their_share() {
        let b = Budget::new(0.2);
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.withdraw() {
                retries += 1;
            }
        }
        assert!((200..=211).contains(&retries), "{retries} retries for 1000 requests");
    }
}
