//! One process per cache directory: an exclusive `flock` on `relais.lock` in
//! it, held while the tier is open. Two processes on one directory would each
//! keep their own byte accounting and move each other's temp files aside.
//!
//! The lock belongs to the open file, not the process: the kernel drops it
//! when the last holder closes it or exits, however it exits. A binary upgrade
//! does not pass it on: the old process lets go of it (`DiskTier::unlock`; a
//! write in flight keeps it until it ends) and the new one takes it afresh.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::DiskError;

/// The lock file's name in the cache directory; it holds the owner's pid.
pub(super) const LOCK_FILE: &str = "relais.lock";

pub(super) struct DirLock {
    _file: File,
    /// Runs as the lock is let go, before the kernel drops it.
    before_release: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for DirLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirLock").finish_non_exhaustive()
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if let Some(hook) = self.before_release.get() {
            hook();
        }
    }
}

impl DirLock {
    /// Takes the lock on `dir` (which exists), or says who holds it.
    pub(super) fn take(dir: &Path) -> Result<DirLock, DiskError> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim().parse().ok();
                return Err(DiskError::Locked { dir: dir.to_path_buf(), pid });
            }
            Err(TryLockError::Error(e)) => return Err(DiskError::Io(e)),
        }
        // For the operator who finds the directory in use: who has it.
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(DirLock { _file: file, before_release: std::sync::OnceLock::new() })
    }

    /// Sets what runs as the lock is let go (once; later calls are ignored).
    pub(super) fn before_release(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.before_release.set(Box::new(f));
    }
}

/// The message of [`DiskError::Locked`].
pub(super) fn locked_message(dir: &Path, pid: &Option<u32>) -> String {
    let by = pid.map_or_else(|| "another process".to_string(), |p| format!("process {p}"));
    format!(
        "cache directory {} is in use by {by} (it holds {}): two processes cannot share a disk cache",
        dir.display(),
        dir.join(LOCK_FILE).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::take(dir.path()).unwrap();
        let msg = DirLock::take(dir.path()).unwrap_err().to_string();
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains(&format!("process {}", std::process::id())), "{msg}");
        drop(first);
        DirLock::take(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn a_tier_let_go_refuses_writes_reads_on_and_frees_the_directory() {
        use crate::cache::disk::DiskTier;
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path().to_path_buf(), 1 << 20).await.unwrap();
        tier.put("a", serde_json::json!({}), bytes::Bytes::from_static(b"body")).await.unwrap();
        tier.unlock();
        let refused = tier.put("b", serde_json::json!({}), bytes::Bytes::from_static(b"body")).await;
        assert!(matches!(refused, Err(DiskError::Closed)), "{refused:?}");
        assert!(matches!(tier.remove("a").await, Err(DiskError::Closed)));
        assert_eq!(&tier.get("a").await.unwrap().unwrap().1[..], b"body");
        DirLock::take(dir.path()).unwrap();
    }
}
