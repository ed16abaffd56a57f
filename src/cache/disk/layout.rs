//! cacache's on-disk layout and bucket format, which garbage collection
//! walks itself (cacache has none).

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cacache::{Algorithm, Integrity};

use super::accounting::ContentId;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::warn;

/// cacache 13.1 on-disk layout (`index-v5/aa/bb/<sha1(key) rest>`,
/// `content-v2/<algo>/aa/bb/<hex rest>`). Sweep and compaction walk these folders themselves
/// because cacache offers no garbage collection; a test checks the layout against cacache.
pub(super) const INDEX_DIR: &str = "index-v5";
pub(super) const CONTENT_DIR: &str = "content-v2";
/// cacache's folder for content being written.
pub(super) const TMP_DIR: &str = "tmp";
/// `open` renames a previous run's `tmp` to this prefix; the startup load deletes it.
pub(super) const STALE_TMP_PREFIX: &str = "tmp.stale-";

/// Bodies up to this size are kept in their index line (base64, beside the caller's
/// metadata) instead of a content file: a small entry costs one file, not two, and
/// creating files (ext4's inode allocation) is most of what a fill of small entries
/// costs. The line's integrity is still the body's SHA-256, checked on every read.
pub(super) const INLINE_MAX: usize = 1024;
const INLINE_BODY: &str = "relais-inline";
const LABEL: &str = "relais-label";
const LISTED: &str = "relais-listed";
const INLINE_META: &str = "meta";

/// The metadata written in an index line: the caller's, wrapped with a body kept
/// inline and the entry's label when there are any.
pub(super) fn wrap(meta: Value, inline: Option<&[u8]>, label: u64, listed: bool) -> Value {
    use base64::Engine;
    if inline.is_none() && label == 0 && !listed {
        return meta;
    }
    let mut wrapped = serde_json::Map::new();
    if let Some(body) = inline {
        wrapped.insert(INLINE_BODY.into(), Value::String(base64::engine::general_purpose::STANDARD.encode(body)));
    }
    if label != 0 {
        wrapped.insert(LABEL.into(), Value::String(label.to_string()));
    }
    if listed {
        wrapped.insert(LISTED.into(), Value::Bool(true));
    }
    wrapped.insert(INLINE_META.into(), meta);
    Value::Object(wrapped)
}

/// The metadata written for an inline body.
#[cfg(test)]
pub(super) fn with_inline(meta: Value, body: &[u8]) -> Value {
    wrap(meta, Some(body), 0, false)
}

/// An index line's metadata, unwrapped.
pub(super) struct Unwrapped {
    pub(super) meta: Value,
    /// `None` when the body is in a content file, `Some(None)` when it does not decode.
    pub(super) inline: Option<Option<Vec<u8>>>,
    pub(super) label: u64,
    pub(super) listed: bool,
}

pub(super) fn unwrap(meta: Value) -> Unwrapped {
    use base64::Engine;
    let wrapped = |m: &serde_json::Map<String, Value>| {
        m.contains_key(INLINE_META)
            && m.len() >= 2
            && m.keys().all(|k| k == INLINE_META || k == INLINE_BODY || k == LABEL || k == LISTED)
    };
    match meta {
        Value::Object(mut m) if wrapped(&m) => {
            let inline = m.remove(INLINE_BODY).map(|b| match b {
                Value::String(b) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
                _ => None,
            });
            let label = m.remove(LABEL).and_then(|l| l.as_str()?.parse().ok()).unwrap_or(0);
            let listed = m.remove(LISTED) == Some(Value::Bool(true));
            Unwrapped { meta: m.remove(INLINE_META).unwrap_or(Value::Null), inline, label, listed }
        }
        other => Unwrapped { meta: other, inline: None, label: 0, listed: false },
    }
}

/// An index line's metadata split into the caller's and the body kept in it:
/// `None` when the body is in a content file, `Some(None)` when it does not decode.
pub(super) fn split_inline(meta: Value) -> (Value, Option<Option<Vec<u8>>>) {
    let u = unwrap(meta);
    (u.meta, u.inline)
}

/// Content id of an integrity: the digest of its first hash, a SHA-256 (the only
/// algorithm this tier writes; `None` for any other).
pub(super) fn content_id(sri: &Integrity) -> Option<ContentId> {
    use base64::Engine;
    let hash = sri.hashes.first()?;
    if hash.algorithm != Algorithm::Sha256 {
        return None;
    }
    let digest = base64::engine::general_purpose::STANDARD.decode(&hash.digest).ok()?;
    digest.try_into().ok()
}

pub(super) fn id_of_integrity_str(integrity: &str) -> Option<ContentId> {
    integrity.parse::<Integrity>().ok().as_ref().and_then(content_id)
}

/// The integrity a content id stands for.
pub(super) fn integrity_of(id: &ContentId) -> Option<Integrity> {
    Integrity::from_hex(hex::encode(id), Algorithm::Sha256).ok()
}

/// cacache's content path for `sri` (`content-v2/<algo>/<hex[0..2]>/<hex[2..4]>/<hex[4..]>`).
pub(super) fn content_path(dir: &Path, sri: &Integrity) -> PathBuf {
    let (algorithm, hex) = sri.to_hex();
    dir.join(CONTENT_DIR).join(algorithm.to_string()).join(&hex[0..2]).join(&hex[2..4]).join(&hex[4..])
}

/// [`content_path`] of a content id.
pub(super) fn content_path_of(dir: &Path, id: &ContentId) -> PathBuf {
    let hex = hex::encode(id);
    dir.join(CONTENT_DIR).join("sha256").join(&hex[0..2]).join(&hex[2..4]).join(&hex[4..])
}

/// Inverse of [`content_path`]: the content id of a file under `root` (= `content-v2`).
pub(super) fn id_of_content_path(root: &Path, path: &Path) -> Option<ContentId> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<&str> = rel.iter().map(|p| p.to_str()).collect::<Option<_>>()?;
    let ["sha256", a, b, rest] = parts.as_slice() else {
        return None;
    };
    let mut id = [0u8; 32];
    hex::decode_to_slice(format!("{a}{b}{rest}"), &mut id).ok()?;
    Some(id)
}

/// Deletes a file; returns its size, or 0 if it was already gone or could not be deleted.
pub(super) fn remove_file_counted(path: &Path) -> u64 {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match std::fs::remove_file(path) {
        Ok(()) => len,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "disk cache: cannot delete file");
            0
        }
    }
}

pub(super) fn is_older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// Calls `f` on every regular file `depth` directory levels below `root` (cacache's fan-out
/// folders). Unreadable folders are skipped.
pub(super) fn for_each_file(root: &Path, depth: usize, f: &mut dyn FnMut(&Path)) {
    let Ok(listing) = std::fs::read_dir(root) else {
        return;
    };
    for dirent in listing.flatten() {
        let Ok(file_type) = dirent.file_type() else {
            continue;
        };
        let path = dirent.path();
        if depth == 0 {
            if file_type.is_file() {
                f(&path);
            }
        } else if file_type.is_dir() {
            for_each_file(&path, depth - 1, f);
        }
    }
}

/// An index line as cacache 13.1 accepts it: same fields and types as its
/// `SerializableMetadata`, so exactly the same lines parse here and in `index::find`/`ls`.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // the fields are there to be validated like cacache does, not read
pub(super) struct IndexLine {
    pub(super) key: String,
    pub(super) integrity: Option<String>,
    pub(super) time: u128,
    pub(super) size: usize,
    pub(super) metadata: serde::de::IgnoredAny,
    pub(super) raw_metadata: Option<Vec<u8>>,
}

/// A bucket file as cacache reads it: lines `\n<sha256 hex of json>\t<json>`, reading stops at
/// the first non-UTF-8 line, the last valid line per key wins, a `null` integrity is a delete.
pub(super) struct Bucket {
    pub(super) len: u64,
    /// Per key (first-seen order): effective integrity and the raw effective line.
    pub(super) entries: Vec<(String, Option<String>, String)>,
}

impl Bucket {
    /// Holds nothing but its effective lines (what a rewrite would produce).
    pub(super) fn is_compact(&self) -> bool {
        let needed: u64 = self
            .entries
            .iter()
            .filter(|(_, integrity, _)| integrity.is_some())
            .map(|(_, _, line)| 1 + line.len() as u64)
            .sum();
        self.entries.iter().all(|(_, integrity, _)| integrity.is_some()) && self.len == needed
    }
}

pub(super) fn read_bucket(path: &Path) -> io::Result<Bucket> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut entries: Vec<(String, Option<String>, String)> = Vec::new();
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        let Some(parsed) = parse_index_line(&line) else {
            continue;
        };
        match entries.iter_mut().find(|(key, _, _)| *key == parsed.key) {
            Some(slot) => {
                slot.1 = parsed.integrity;
                slot.2 = line;
            }
            None => entries.push((parsed.key, parsed.integrity, line)),
        }
    }
    Ok(Bucket { len, entries })
}

pub(super) fn parse_index_line(line: &str) -> Option<IndexLine> {
    let mut parts = line.split('\t');
    let (Some(hash), Some(json), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    if format!("{:x}", Sha256::digest(json.as_bytes())) != hash {
        return None;
    }
    serde_json::from_str(json).ok()
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    #[allow(unused_imports)]
    use cacache::{Integrity, WriteOpts};
    use serde_json::json;
    #[allow(unused_imports)]
    use sha2::{Digest, Sha256};
    #[allow(unused_imports)]
    use std::io::Write as _;

    #[test]
    fn layout_and_line_format_match_cacache() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let sri = cacache::write_sync(dir, "key", b"payload").unwrap();
        assert!(content_path(dir, &sri).exists());
        assert_eq!(id_of_content_path(&dir.join(CONTENT_DIR), &content_path(dir, &sri)), content_id(&sri));
        cacache::index::insert(dir, "key", WriteOpts::new().integrity(sri.clone()).metadata(json!({"a": 1}))).unwrap();
        cacache::index::delete(dir, "key").unwrap();
        cacache::index::insert(dir, "key", WriteOpts::new().integrity(sri.clone()).size(7)).unwrap();
        let [bucket] = buckets(dir).try_into().unwrap();
        let parsed = read_bucket(&bucket).unwrap();
        assert_eq!(parsed.entries.len(), 1);
        assert_eq!(parsed.entries[0].0, "key");
        assert_eq!(parsed.entries[0].1.as_deref(), Some(sri.to_string().as_str()));
        assert!(!parsed.is_compact());
        // The rewritten form is what cacache writes for a single insert, and reads back.
        std::fs::write(&bucket, format!("\n{}", parsed.entries[0].2)).unwrap();
        assert!(read_bucket(&bucket).unwrap().is_compact());
        let m = cacache::index::find(dir, "key").unwrap().unwrap();
        assert_eq!((m.integrity, m.size), (sri, 7));
    }
}
