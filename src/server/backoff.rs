//! Pausing accepts while they fail.

use std::io;
use std::time::Duration;

/// Accept errors (out of descriptors, mostly) are waited out with a doubling
/// pause, logged once per run of failures rather than at every retry.
#[derive(Default)]
pub(super) struct Backoff {
    pause: Duration,
    failures: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MOST: Duration = Duration::from_secs(1);

    pub(super) async fn wait(&mut self, e: &io::Error) {
        self.failures += 1;
        if self.failures == 1 {
            tracing::warn!(error = %e, "accept failed; pausing accepts until it passes");
        }
        self.pause = (self.pause * 2).clamp(Self::FIRST, Self::MOST);
        tokio::time::sleep(self.pause).await;
    }

    pub(super) fn reset(&mut self) {
        if self.failures > 0 {
            tracing::warn!(failures = self.failures, "accepting again");
        }
        *self = Backoff::default();
    }
}
