//! Eviction to the byte budget, least recently used first, and the release of
//! content no entry references any more.

use std::sync::Arc;

use tokio::task::spawn_blocking;
use tracing::{debug, warn};

use super::*;

/// Entries evicted per round (the state lock is released between rounds).
const EVICT_BATCH: usize = 64;
impl Inner {
    // ---- eviction and content release ----

    /// Evicts least-recently-used entries until `used <= capacity`. Does nothing until loaded.
    pub(super) async fn evict(self: &Arc<Self>) {
        loop {
            let victims: Vec<(String, Option<ContentId>)> = {
                let mut st = self.state();
                if !st.loaded {
                    return;
                }
                let mut victims = Vec::new();
                while st.used > self.capacity && victims.len() < EVICT_BATCH {
                    let Some(victim) = st.pop_lru() else { break };
                    victims.push(victim);
                }
                victims
            };
            if victims.is_empty() {
                return;
            }
            debug!(count = victims.len(), "disk cache: evicting");
            let mut contents = Vec::with_capacity(victims.len());
            for (key, content) in victims {
                contents.extend(content);
                let _key_lock = self.stripe(&key).lock().await;
                // Put again since it was picked: the index now holds the new entry.
                if self.state().contains(&key) {
                    continue;
                }
                if let Some(told) = self.on_evict.get() {
                    told(&key);
                }
                let dir = self.dir.clone();
                let owned_key = key.clone();
                match spawn_blocking(move || cacache::index::delete(&dir, &owned_key)).await {
                    Ok(Ok(())) => {}
                    // Left for `sweep` (it deletes index entries the map does not know).
                    Ok(Err(e)) => warn!(key, error = %e, "disk cache: evicted entry not deleted from index"),
                    Err(e) => warn!(key, error = %e, "disk cache: evicted entry not deleted from index"),
                }
            }
            self.release_content(contents).await;
        }
    }

    pub(super) async fn release_content(self: &Arc<Self>, ids: Vec<ContentId>) {
        let me = self.clone();
        let released = spawn_blocking(move || {
            for id in ids {
                me.release_content_blocking(&id);
            }
        })
        .await;
        if let Err(e) = released {
            warn!(error = %e, "disk cache: content release failed");
        }
    }

    /// Deletes the content file of `id` if nothing references it (checked under the gate).
    /// While loading, only queues it: a key not loaded yet may share it.
    pub(super) fn release_content_blocking(&self, id: &ContentId) -> u64 {
        let _gate = self.gate();
        {
            let mut st = self.state();
            if !st.loaded {
                st.deferred.push(*id);
                return 0;
            }
            if st.is_referenced(id) {
                return 0;
            }
        }
        remove_file_counted(&content_path_of(&self.dir, id))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    #[allow(unused_imports)]
    use cacache::{Integrity, WriteOpts};
    #[allow(unused_imports)]
    use sha2::{Digest, Sha256};
    #[allow(unused_imports)]
    use std::io::Write as _;

    #[allow(unused_imports)]
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[tokio::test]
    async fn eviction_keeps_the_budget_and_drops_the_least_recently_read() {
        let tmp = tempfile::tempdir().unwrap();
        let body = |c: u8| Bytes::from(vec![c; 1000]);
        let one = charge(1, json_len(&json!({})), 1000);
        let tier = open(tmp.path(), 3 * one + 10).await;
        for (key, c) in [("a", b'a'), ("b", b'b'), ("c", b'c')] {
            tier.put(key, json!({}), body(c)).await.unwrap();
        }
        assert_eq!(tier.entries(), 3);
        // Reading `a` makes `b` the least recently used.
        tier.get("a").await.unwrap().unwrap();
        tier.put("d", json!({}), body(b'd')).await.unwrap();

        assert!(tier.used_bytes() <= tier.capacity());
        assert_eq!(tier.entries(), 3);
        assert!(tier.get("b").await.unwrap().is_none(), "b was least recently read");
        for key in ["a", "c", "d"] {
            assert!(tier.get(key).await.unwrap().is_some(), "{key} kept");
        }
        assert!(!body_path(tmp.path(), &body(b'b')).exists(), "evicted content deleted");
        assert_accounting_matches_disk(&tier).await;
    }

    #[tokio::test]
    async fn after_restart_recency_is_the_write_time_and_load_evicts_to_capacity() {
        let tmp = tempfile::tempdir().unwrap();
        let one = charge(1, json_len(&json!({})), 100);
        {
            let tier = open(tmp.path(), 1 << 20).await;
            for key in ["a", "b", "c"] {
                tier.put(key, json!({}), Bytes::from(vec![key.as_bytes()[0]; 100])).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let tier = open(tmp.path(), 2 * one).await;
        assert_eq!(tier.entries(), 2);
        assert!(tier.used_bytes() <= 2 * one);
        assert!(tier.get("a").await.unwrap().is_none(), "oldest write evicted");
        assert!(tier.get("b").await.unwrap().is_some());
        assert!(tier.get("c").await.unwrap().is_some());
    }
}
