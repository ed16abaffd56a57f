//! Reading the whole index fast, for a purge by prefix: two threads, each
//! bucket's last line only, and no line checksum (a torn last line does not
//! parse and the line before it counts, as cacache reads it). About ten times
//! faster than listing through cacache, which parses every line of every
//! bucket and checks each one.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::layout::{INDEX_DIR, for_each_file, unwrap};

/// Threads reading at once.
const THREADS: usize = 2;

#[derive(Deserialize)]
struct Line {
    key: String,
    integrity: Option<String>,
    #[serde(default)]
    metadata: Value,
}

/// What `f` makes of each live entry's key and metadata.
pub(super) fn scan<T: Send>(dir: &Path, f: &(dyn Fn(String, Value) -> Option<T> + Sync)) -> Vec<T> {
    let Ok(listing) = std::fs::read_dir(dir.join(INDEX_DIR)) else {
        return Vec::new();
    };
    let tops: Vec<PathBuf> = listing.flatten().map(|e| e.path()).collect();
    let per_thread = tops.len().div_ceil(THREADS).max(1);
    std::thread::scope(|s| {
        let readers: Vec<_> = tops
            .chunks(per_thread)
            .map(|part| {
                s.spawn(move || {
                    let (mut found, mut text) = (Vec::new(), String::new());
                    for top in part {
                        for_each_file(top, 1, &mut |path| {
                            if let Some((key, meta)) = last_line(path, &mut text)
                                && let Some(t) = f(key, meta)
                            {
                                found.push(t);
                            }
                        });
                    }
                    found
                })
            })
            .collect();
        readers.into_iter().flat_map(|r| r.join().unwrap_or_default()).collect()
    })
}

/// A bucket's entry: its last line that parses, unless that deletes it.
fn last_line(path: &Path, text: &mut String) -> Option<(String, Value)> {
    text.clear();
    std::fs::File::open(path).ok()?.read_to_string(text).ok()?;
    for line in text.rsplit('\n') {
        let Some((_, json)) = line.split_once('\t') else { continue };
        let Ok(line) = serde_json::from_str::<Line>(json) else { continue };
        return line.integrity.is_some().then(|| (line.key, unwrap(line.metadata).meta));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testing::open;
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    #[tokio::test]
    async fn a_scan_sees_what_a_listing_sees() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        for i in 0..50 {
            tier.put(&format!("k{i}"), json!({"i": i}), Bytes::from(vec![b'x'; i * 40])).await.unwrap();
        }
        tier.update_meta("k3", json!({"i": 300})).await.unwrap();
        tier.remove("k7").await.unwrap();
        let mut listed = tier.list().await.unwrap();
        let mut scanned = scan(tmp.path(), &|key, meta| Some((key, meta)));
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        scanned.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(scanned.len(), 49);
        assert_eq!(scanned, listed);
    }
}
