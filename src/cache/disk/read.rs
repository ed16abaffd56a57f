//! Reads: an entry's metadata and body, verified, with what a read finds
//! wrong (a broken or missing file) turned into a miss that removes it.

use std::io;
use std::path::Path;

use cacache::Integrity;
use serde_json::Value;
use tokio::task::spawn_blocking;
use tracing::warn;

use super::{DiskError, DiskTier};

impl DiskTier {
    /// Shared lookup for `get` (`with_body`) and `get_meta`. A body larger
    /// than `whole_up_to` is not read: the caller gets its integrity and size.
    pub(super) async fn lookup(
        &self,
        key: &str,
        with_body: bool,
        whole_up_to: u64,
    ) -> Result<Option<Found>, DiskError> {
        let known = {
            let mut st = self.inner.state();
            let known = if with_body { st.touch(key) } else { st.contains(key) };
            // Once loaded, the map holds every key: a miss needs no disk access.
            if !known && st.loaded {
                return Ok(None);
            }
            known
        };
        let (dir, owned_key) = (self.inner.dir.clone(), key.to_owned());
        let looked_up = match spawn_blocking(move || lookup_blocking(&dir, &owned_key, with_body, whole_up_to)).await {
            Ok(looked_up) => looked_up?,
            // cacache panics on an integrity it cannot decode (a hand-edited index line).
            Err(e) if e.is_panic() => Lookup::Broken { sri: None, error: None },
            Err(e) => return Err(e.into()),
        };
        match looked_up {
            Lookup::Hit { meta, body, size, sri, filed, label, listed } => {
                if !known {
                    self.inner.adopt(key, &meta, size, &sri, filed, (label, listed));
                }
                Ok(Some(Found { meta, body, size: size as u64, sri }))
            }
            Lookup::Absent => {
                if known {
                    // The map knew a key the index does not have: re-check under the key lock.
                    self.detached(self.inner.clone().forget_if_absent(key.to_owned())).await?;
                }
                Ok(None)
            }
            Lookup::Broken { sri, error } => {
                let error = error.map_or_else(|| "cacache panicked".to_owned(), |e| e.to_string());
                warn!(key, error, "disk cache: dropping corrupt or unreadable entry");
                self.detached(self.inner.clone().drop_broken(key.to_owned(), sri)).await?;
                Ok(None)
            }
        }
    }
}

/// An entry found: its metadata, its body if it was read, and what names the body.
pub(super) struct Found {
    pub(super) meta: Value,
    pub(super) body: Option<Vec<u8>>,
    pub(super) size: u64,
    pub(super) sri: Integrity,
}

pub(super) enum Lookup {
    Absent,
    Hit {
        meta: Value,
        body: Option<Vec<u8>>,
        size: usize,
        sri: Integrity,
        /// The body has a content file (it is not in the index line).
        filed: bool,
        label: u64,
        listed: bool,
    },
    /// `sri` is `None` when the index bucket itself could not be read.
    Broken {
        sri: Option<Integrity>,
        error: Option<cacache::Error>,
    },
}

pub(super) fn lookup_blocking(dir: &Path, key: &str, with_body: bool, whole_up_to: u64) -> Result<Lookup, DiskError> {
    let m = match cacache::index::find(dir, key) {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(Lookup::Absent),
        Err(e) if is_transient(&e) => return Err(e.into()),
        Err(e) => return Ok(Lookup::Broken { sri: None, error: Some(e) }),
    };
    let super::layout::Unwrapped { meta, inline, label, listed } = super::layout::unwrap(m.metadata);
    if let Some(inline) = inline {
        return Ok(match inline.filter(|b| m.integrity.check(b).is_ok()) {
            Some(body) => Lookup::Hit {
                meta,
                body: with_body.then_some(body),
                size: m.size,
                sri: m.integrity,
                filed: false,
                label,
                listed,
            },
            None => Lookup::Broken { sri: Some(m.integrity), error: None },
        });
    }
    let body = if with_body && m.size as u64 <= whole_up_to {
        // Reads the whole file and checks it against the integrity.
        match cacache::read_hash_sync(dir, &m.integrity) {
            Ok(body) => Some(body),
            Err(e) if is_transient(&e) => return Err(e.into()),
            Err(error) => {
                return Ok(Lookup::Broken { sri: Some(m.integrity), error: Some(error) });
            }
        }
    } else {
        None
    };
    Ok(Lookup::Hit { meta, body, size: m.size, sri: m.integrity, filed: true, label, listed })
}

/// Conditions that say nothing about the entry (the process is short of descriptors or
/// memory): reported as errors, the entry is kept.
pub(super) fn is_transient(e: &cacache::Error) -> bool {
    // EMFILE (24) and ENFILE (23) have these numbers on Linux and macOS.
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    match e {
        cacache::Error::IoError(io, _) => {
            matches!(
                io.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::OutOfMemory
                    | io::ErrorKind::TimedOut
            ) || matches!(io.raw_os_error(), Some(EMFILE | ENFILE))
        }
        _ => false,
    }
}
