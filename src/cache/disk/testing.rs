//! Helpers shared by the disk tier's tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cacache::Integrity;

use super::DiskTier;
use super::accounting::{charge, json_len};
use super::layout::*;

/// Opens the tier at `dir`. A tier just dropped may still hold the directory's
/// lock for an operation in flight (a sweep, a write): it is waited for.
pub(super) async fn open(dir: &Path, capacity: u64) -> Arc<DiskTier> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let tier = loop {
        match DiskTier::open(dir.to_owned(), capacity).await {
            Err(super::DiskError::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            opened => break opened.unwrap(),
        }
    };
    tier.loaded().await;
    tier
}

/// A body too large to be kept inline: it gets a content file.
pub(super) fn filed(text: &str) -> bytes::Bytes {
    bytes::Bytes::from(text.repeat(INLINE_MAX / text.len().max(1) + 1))
}

pub(super) fn body_path(dir: &Path, body: &[u8]) -> PathBuf {
    content_path(dir, &Integrity::from(body))
}

pub(super) fn buckets(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for_each_file(&dir.join(INDEX_DIR), 2, &mut |p| found.push(p.to_owned()));
    found
}

pub(super) fn content_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for_each_file(&dir.join(CONTENT_DIR), 3, &mut |p| found.push(p.to_owned()));
    found
}

pub(super) fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().filter(|l| !l.is_empty()).count()
}

/// Recomputes the accounting from what is on disk and compares.
pub(super) async fn assert_accounting_matches_disk(tier: &DiskTier) {
    let mut expected = 0;
    let listed = tier.list().await.unwrap();
    for (key, meta) in &listed {
        let (_, body) = tier.get(key).await.unwrap().expect("listed key reads");
        expected += charge(key.len(), json_len(meta), body.len() as u64);
    }
    assert_eq!(tier.entries(), listed.len());
    assert_eq!(tier.used_bytes(), expected);
}
