//! What a node keeps beside its disk tier (`cache.disk_path`): the last stream
//! sequence it applied (`cluster-sequence`) and the purges it could not publish
//! (`cluster-outbox`, JSON lines). Both are replaced whole (write, then rename).
//!
//! A sequence file lost or unreadable reads as 0: the node then replays the
//! whole stream, or empties its disk tier if the stream no longer starts at 1.
//! Safe either way, so it is not synced; the outbox is.

use std::path::{Path, PathBuf};

use super::wire::Purge;

pub(crate) struct Files {
    sequence: PathBuf,
    outbox: PathBuf,
}

impl Files {
    pub(crate) fn new(dir: &Path) -> Files {
        Files { sequence: dir.join("cluster-sequence"), outbox: dir.join("cluster-outbox") }
    }

    pub(crate) fn sequence(&self) -> u64 {
        match std::fs::read_to_string(&self.sequence) {
            Ok(text) => text.trim().parse().unwrap_or_else(|_| {
                tracing::warn!(path = %self.sequence.display(), "unreadable purge sequence; replaying from the start");
                0
            }),
            Err(_) => 0,
        }
    }

    pub(crate) async fn set_sequence(&self, sequence: u64) {
        if let Err(e) = replace(&self.sequence, format!("{sequence}\n").into_bytes(), false).await {
            tracing::warn!(path = %self.sequence.display(), error = %e, "cannot write the purge sequence");
        }
    }

    pub(crate) fn outbox(&self) -> Vec<Purge> {
        let Ok(text) = std::fs::read_to_string(&self.outbox) else { return Vec::new() };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| {
                serde_json::from_str(l)
                    .inspect_err(|e| tracing::warn!(error = %e, "unreadable purge in the outbox, dropped"))
                    .ok()
            })
            .collect()
    }

    pub(crate) async fn set_outbox(&self, purges: &[Purge]) {
        let mut text = Vec::new();
        for p in purges {
            text.extend(serde_json::to_vec(p).unwrap_or_default());
            text.push(b'\n');
        }
        if let Err(e) = replace(&self.outbox, text, true).await {
            tracing::error!(path = %self.outbox.display(), error = %e, "cannot write the purge outbox");
        }
    }
}

/// Writes `path` whole: a reader sees the old content or the new, never a part.
async fn replace(path: &Path, content: Vec<u8>, sync: bool) -> std::io::Result<()> {
    let (path, temp) = (path.to_path_buf(), path.with_extension("tmp"));
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::File::create(&temp)?;
        std::io::Write::write_all(&mut f, &content)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&temp, &path)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::purge::Target;
    use crate::metrics::PurgeMode;

    #[tokio::test]
    async fn what_is_written_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path());
        assert_eq!(files.sequence(), 0);
        files.set_sequence(42).await;
        assert_eq!(files.sequence(), 42);
        std::fs::write(dir.path().join("cluster-sequence"), "garbage").unwrap();
        assert_eq!(files.sequence(), 0);
        let purges =
            vec![Purge::new("a", &Target::All, PurgeMode::Hard), Purge::new("a", &Target::All, PurgeMode::Soft)];
        files.set_outbox(&purges).await;
        assert_eq!(files.outbox(), purges);
        files.set_outbox(&[]).await;
        assert!(files.outbox().is_empty());
    }
}
