//! Places for TLS handshakes in progress: `server.tls.max_handshakes` in all,
//! and at most `max_handshakes_per_source` of them for one source, so that one
//! address holding handshakes open cannot starve everyone else. A source is
//! an IPv4 address or an IPv6 /64 (what one subscriber usually has). A
//! connection waits for both places, within its handshake timeout.
//!
//! Sources are kept only while they hold or wait for a place: the map's size
//! is bounded by the connections open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(super) struct Handshakes {
    all: Arc<Semaphore>,
    all_places: usize,
    per_source: usize,
    sources: Mutex<HashMap<Source, Arc<Semaphore>>>,
}

/// The address a handshake is counted against.
#[derive(Clone, Copy, Hash, PartialEq, Eq, Debug)]
enum Source {
    V4(u32),
    /// The first 64 bits.
    V6(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4.to_bits()),
            IpAddr::V6(v6) => Source::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

impl Handshakes {
    pub(super) fn new(all: usize, per_source: usize) -> Arc<Handshakes> {
        Arc::new(Handshakes {
            all: Arc::new(Semaphore::new(all.max(1))),
            all_places: all.max(1),
            per_source: per_source.max(1),
            sources: Mutex::default(),
        })
    }

    /// Waits for a place for a handshake from `ip`; it is held until the
    /// returned value is dropped.
    pub(super) async fn enter(self: &Arc<Self>, ip: IpAddr) -> Place {
        let source = Source::of(ip);
        let own = {
            let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
            sources.entry(source).or_insert_with(|| Arc::new(Semaphore::new(self.per_source))).clone()
        };
        let mut place = Place { handshakes: self.clone(), source, own: Some(own.clone()), permits: None };
        // Neither semaphore is ever closed.
        if let (Ok(mine), Ok(all)) = (own.acquire_owned().await, self.all.clone().acquire_owned().await) {
            place.permits = Some((mine, all));
        }
        place
    }

    /// Handshakes holding a place now.
    pub(super) fn in_progress(&self) -> usize {
        self.all_places - self.all.available_permits()
    }

    #[cfg(test)]
    fn sources(&self) -> usize {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A handshake's place (or its wait for one); dropping it frees the place and
/// forgets a source that nobody else holds or waits for.
pub(super) struct Place {
    handshakes: Arc<Handshakes>,
    source: Source,
    own: Option<Arc<Semaphore>>,
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.permits = None;
        self.own = None;
        let mut sources = self.handshakes.sources.lock().unwrap_or_else(PoisonError::into_inner);
        // Every other holder of the semaphore took its clone under this lock.
        if sources.get(&self.source).is_some_and(|s| Arc::strong_count(s) == 1) {
            sources.remove(&self.source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_source_gets_its_share_and_others_still_get_in() {
        let h = Handshakes::new(3, 2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let waits = |h: &Arc<Handshakes>, s: &str| {
            let h = h.clone();
            let s = ip(s);
            async move { tokio::time::timeout(Duration::from_millis(50), h.enter(s)).await.is_err() }
        };
        let a = [h.enter(ip("192.0.2.1")).await, h.enter(ip("192.0.2.1")).await];
        assert!(waits(&h, "192.0.2.1").await, "a third from the same source waits");
        let b = h.enter(ip("192.0.2.2")).await;
        assert!(waits(&h, "192.0.2.3").await, "three places in all, three taken");
        drop((a, b));
        assert_eq!(h.sources(), 0, "sources nobody holds or waits for are forgotten");
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64() {
        let of = |s: &str| Source::of(s.parse().unwrap());
        assert_eq!(of("2001:db8::1"), of("2001:db8::ffff:2"));
        assert_ne!(of("2001:db8::1"), of("2001:db8:0:1::1"));
        assert_eq!(of("::ffff:192.0.2.1"), of("192.0.2.1"));
        assert_ne!(of("192.0.2.1"), of("192.0.2.2"));
    }
}
