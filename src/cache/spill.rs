//! Bodies stored on disk as they arrive, never held whole.
//!
//! A body that memory will not hold while it is fetched goes to the disk tier
//! instead, when there is one: one whose `Content-Length` is over
//! [`STREAM_ABOVE`] or more than `cache.fill_memory` has free, from its first
//! byte; one of unknown length once it grows past [`SPILL_UNKNOWN_ABOVE`] or
//! what `fill_memory` has free (what was kept so far goes first). Up to `cache.max_object_size`. The tee ([`super::tee`])
//! hands each piece to a [`Sink`]; a task of its own writes it to a temp file
//! ([`DiskWriter`]), at most [`QUEUE`] pieces behind, so the fetch goes at the
//! disk's pace when the disk is the slower. The entry is committed only when
//! the body ended cleanly with the length it declared; an origin or client that
//! went away, an error, or an overrun leaves nothing behind. Such an entry never
//! enters the memory tier: a hit reads it from its file ([`super::disk::BodyFile`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_util::sync::PollSender;

use super::disk::{DiskTier, DiskWriter};
use super::{Cache, Stored};

/// Bodies larger than this are stored on disk only, streamed in and out.
pub(super) const STREAM_ABOVE: u64 = 8 << 20;

/// A body of unknown length is kept in memory up to this, then goes to disk.
pub(super) const SPILL_UNKNOWN_ABOVE: u64 = 1 << 20;

/// Pieces waiting for the disk, at most.
const QUEUE: usize = 4;

/// What to do with a body written whole: commit it, under its key.
pub(super) type FileCommit = Box<dyn FnOnce(DiskWriter) + Send + Sync>;

/// The way to disk for one body, not taken yet.
pub(super) struct Spill {
    pub(super) disk: Arc<DiskTier>,
    /// The body's declared length, if any.
    pub(super) expected: Option<u64>,
    pub(super) limit: u64,
    pub(super) commit: FileCommit,
}

/// A body on its way to disk.
pub(crate) struct Sink {
    tx: PollSender<Bytes>,
    /// Pieces not sent yet: one, or what memory kept before the body spilled.
    pending: VecDeque<Bytes>,
    end: Option<oneshot::Sender<()>>,
}

impl Spill {
    /// Starts the writer.
    pub(super) fn start(self) -> Sink {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
        let (end_tx, end) = oneshot::channel();
        let Spill { disk, expected, limit, commit } = self;
        tokio::spawn(async move {
            let mut writer = match disk.writer().await {
                Ok(w) => w,
                Err(e) => return tracing::warn!(error = %e, "disk cache: cannot start a body's file"),
            };
            while let Some(piece) = rx.recv().await {
                if let Err(e) = writer.write(&piece).await {
                    return tracing::warn!(error = %e, "disk cache: a body's file failed; not stored");
                }
                if writer.len() > limit {
                    return;
                }
            }
            // Told only when the body ended whole; dropped otherwise (its temp file goes).
            if end.await.is_ok() && expected.is_none_or(|n| n == writer.len()) {
                commit(writer);
            }
        });
        Sink { tx: PollSender::new(tx), pending: VecDeque::new(), end: Some(end_tx) }
    }
}

impl Sink {
    /// Queues `pieces` (sent by [`Sink::poll_flush`]).
    pub(super) fn push(&mut self, pieces: impl IntoIterator<Item = Bytes>) {
        self.pending.extend(pieces);
    }

    /// Sends what is queued as the writer makes room; false if it is gone (it failed).
    pub(super) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        while !self.pending.is_empty() {
            match self.tx.poll_reserve(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Ready(Ok(())) => {
                    let sent = self.pending.pop_front().is_some_and(|p| self.tx.send_item(p).is_ok());
                    if !sent {
                        return Poll::Ready(false);
                    }
                }
            }
        }
        Poll::Ready(!self.tx.is_closed())
    }

    /// The body ended: committed if `complete`, once what is queued is written.
    /// (Dropping the sink instead discards the body.)
    pub(super) fn finish(mut self, complete: bool) {
        let (Some(tx), Some(end)) = (self.tx.get_ref().cloned(), self.end.take()) else { return };
        if !complete {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        drop(self);
        // The end may come from a drop, which cannot wait for the writer to make room.
        tokio::spawn(async move {
            for piece in pending {
                if tx.send(piece).await.is_err() {
                    return;
                }
            }
            let _ = end.send(());
        });
    }
}

impl Cache {
    /// Stores `value` (whose body is `file`, written whole) under `key`, with
    /// the Vary `record` at `primary` if new. Nothing a purge since `epoch`
    /// covers stays stored; an older copy of `key` in memory goes.
    pub(super) async fn put_file(
        &self,
        epoch: u64,
        (key, value): (String, Stored),
        file: DiskWriter,
        record: Option<(String, Stored)>,
    ) {
        let Some(disk) = &self.disk else { return };
        self.hidden.writing(&key);
        let (meta, _) = value.to_disk();
        let value = Arc::new(value);
        let tagged = !value.tags().is_empty();
        let clean = match file.commit(&key, (super::index::url_label(value.url()), tagged), meta).await {
            Err(e) => {
                tracing::warn!(key, error = %e, "disk cache write failed");
                false
            }
            Ok(()) if self.purged(epoch, &value) => disk.remove(&key).await.is_ok(),
            Ok(()) => {
                self.memory.remove(&key).await;
                // Found by its URL's label; by the index only for its tags.
                match tagged {
                    true => self.index_value(&key, &value),
                    false => self.index.remove(&key),
                }
                true
            }
        };
        self.hidden.written(&key, clean);
        if clean && let Some((primary, record)) = record {
            self.put_all(epoch, vec![(primary, record)]).await;
        }
    }
}
