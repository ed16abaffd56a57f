//! Bodies too large to hold in memory: written to the content store as they
//! arrive ([`DiskWriter`]) and read back from their file in pieces ([`BodyFile`]).
//!
//! A streamed write is a cacache temp file until it is committed: dropping the
//! writer (an origin or client that went away) deletes it, and only a commit
//! appends the index line, through the same step as [`DiskTier::put`]
//! (`Inner::commit_entry`), so accounting, eviction and recency are the same
//! for both. A read is verified against the integrity as it goes: the last
//! piece is held back until the whole file has matched, so a body that fails
//! the check ends with an error, never with what looks like a complete
//! response; the entry is then removed.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cacache::{Algorithm, Integrity, WriteOpts};
use http_body::Frame;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tracing::{debug, warn};

use super::*;
use crate::http::body::{Body, BoxError};

/// Bytes read from a body file at a time.
const PIECE: usize = 64 << 10;

/// Pieces read ahead of the client, at most.
const AHEAD: usize = 2;

/// A body being written to the content store, not yet visible.
pub(crate) struct DiskWriter {
    inner: Arc<Inner>,
    writer: cacache::Writer,
    len: u64,
    /// The directory's lock, held until the write ends.
    held: Arc<lock::DirLock>,
}

/// What [`DiskTier::get_up_to`] found: the body, or where to read it.
pub(crate) enum DiskBody {
    Whole(Bytes),
    File(BodyFile),
}

/// A stored body left in its file, read when served.
#[derive(Clone)]
pub struct BodyFile {
    inner: Arc<Inner>,
    key: Arc<str>,
    sri: Integrity,
    size: u64,
}

impl std::fmt::Debug for BodyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyFile").field("key", &self.key).field("size", &self.size).finish()
    }
}

impl DiskTier {
    /// A writer for a new body; commit it with [`DiskWriter::commit`].
    pub(crate) async fn writer(&self) -> Result<DiskWriter, DiskError> {
        let held = self.inner.holding()?;
        // No `.size()`: cacache would map the file in memory.
        let writer = WriteOpts::new().algorithm(Algorithm::Sha256).open_hash(&self.inner.dir).await?;
        Ok(DiskWriter { inner: self.inner.clone(), writer, len: 0, held })
    }

    /// Like [`DiskTier::get`], but a body larger than `whole_up_to` is not read:
    /// it is served from its file when asked ([`BodyFile::body`]).
    pub(crate) async fn get_up_to(&self, key: &str, whole_up_to: u64) -> Result<Option<(Value, DiskBody)>, DiskError> {
        let Some(found) = self.lookup(key, true, whole_up_to).await? else { return Ok(None) };
        let body = match found.body {
            Some(body) => DiskBody::Whole(Bytes::from(body)),
            None => DiskBody::File(BodyFile {
                inner: self.inner.clone(),
                key: Arc::from(key),
                sri: found.sri,
                size: found.size,
            }),
        };
        Ok(Some((found.meta, body)))
    }
}

impl DiskWriter {
    /// Appends `chunk` to the body.
    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), DiskError> {
        self.writer.write_all(chunk).await?;
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Makes the body `key`'s, with `meta`, replacing any previous entry (as
    /// [`DiskTier::put_labelled`] does with `label` and `listed`, evicting to stay
    /// under the capacity). Runs to its end even if the caller is dropped.
    pub(crate) async fn commit(self, key: &str, (label, listed): (u64, bool), meta: Value) -> Result<(), DiskError> {
        let DiskWriter { inner, writer, len, held } = self;
        let key = key.to_owned();
        let op = async move {
            let charge = charge(key.len(), json_len(&meta), len);
            if charge > inner.capacity {
                debug!(key, charge, capacity = inner.capacity, "disk cache: entry larger than capacity, not stored");
                drop(writer);
                inner.remove(key).await?;
                return Ok(());
            }
            let sri = writer.commit().await?;
            let reserve = inner.clone();
            let reserved = spawn_blocking(move || reserve.reserve_written(sri)).await??;
            let size = usize::try_from(len).map_err(io::Error::other)?;
            let (id, sri) = reserved;
            let meta = wrap(meta, None, label, listed);
            inner.commit_entry(key, meta, (Some(id), sri), size, charge, (label, listed)).await
        };
        tokio::spawn(async move {
            let done = op.await;
            drop(held);
            done
        })
        .await?
    }
}

impl Inner {
    /// Reserves content a streamed write has just renamed into place (see
    /// `write_content_blocking`). If a deletion took the file meanwhile, the
    /// write fails: its bytes are gone and cannot be written again.
    fn reserve_written(&self, sri: Integrity) -> Result<(ContentId, Integrity), DiskError> {
        let id = content_id(&sri).ok_or_else(|| io::Error::other("cacache returned an empty integrity"))?;
        {
            let _gate = self.gate();
            self.state().add_ref(&id);
        }
        if !content_path(&self.dir, &sri).exists() {
            if self.state().drop_ref(&id) {
                self.release_content_blocking(&id);
            }
            return Err(io::Error::other("the content was deleted while it was written").into());
        }
        Ok((id, sri))
    }
}

impl BodyFile {
    /// The body's length.
    pub(crate) fn len(&self) -> u64 {
        self.size
    }

    /// The whole body, read from its file in pieces as the client takes them
    /// and verified: a file that does not match ends the body with an error.
    /// Nothing is read before the body is: a HEAD, a 304 or a range leaves the file alone.
    pub(crate) fn body(&self) -> Body {
        Body::boxed(FileBody { file: Some(self.clone()), rx: None })
    }

    /// `len` bytes from `from`: the file is read from there, not from its
    /// start, so this part of it is not verified against the integrity (only
    /// its length is checked).
    pub(crate) fn range(&self, from: u64, len: u64) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
        let path = content_path(&self.inner.dir, &self.sri);
        tokio::spawn(async move {
            let sent = async {
                let mut file = tokio::fs::File::open(&path).await?;
                file.seek(io::SeekFrom::Start(from)).await?;
                let mut left = len;
                while left > 0 {
                    let mut buf = BytesMut::with_capacity(PIECE.min(left as usize));
                    if file.read_buf(&mut buf).await? == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                    }
                    left -= buf.len() as u64;
                    if tx.send(Ok(Frame::data(buf.freeze()))).await.is_err() {
                        break;
                    }
                }
                Ok(())
            };
            if let Err(e) = sent.await {
                let _ = tx.send(Err(Box::new(e) as BoxError)).await;
            }
        });
        Body::channel(rx)
    }

    async fn send(self, tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>) {
        let read = async {
            let mut reader = cacache::Reader::open_hash(&self.inner.dir, self.sri.clone()).await?;
            let mut held: Option<Bytes> = None;
            let mut read = 0u64;
            loop {
                let mut buf = BytesMut::with_capacity(PIECE);
                if reader.read_buf(&mut buf).await? == 0 {
                    break;
                }
                read += buf.len() as u64;
                // The last piece waits for the check.
                if let Some(piece) = held.replace(buf.freeze())
                    && tx.send(Ok(Frame::data(piece))).await.is_err()
                {
                    return Ok(None);
                }
            }
            reader.check()?;
            if read != self.size {
                return Err(io::Error::other(format!("{read} bytes, the index says {}", self.size)).into());
            }
            Ok::<_, DiskError>(held)
        };
        match read.await {
            Ok(Some(last)) => {
                let _ = tx.send(Ok(Frame::data(last))).await;
            }
            Ok(None) => {}
            Err(e) => {
                warn!(key = &*self.key, error = %e, "disk cache: dropping a body that failed its check while served");
                let _ = tx.send(Err(Box::new(e) as BoxError)).await;
                let tier = DiskTier { inner: self.inner.clone() };
                let _ = tier.detached(self.inner.clone().drop_broken(self.key.to_string(), Some(self.sri))).await;
            }
        }
    }
}

/// A [`BodyFile`] being read by a task of its own, started at the first poll.
struct FileBody {
    file: Option<BodyFile>,
    rx: Option<tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>>,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(file) = self.file.take() {
            let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
            tokio::spawn(file.send(tx));
            self.rx = Some(rx);
        }
        match self.rx.as_mut() {
            Some(rx) => rx.poll_recv(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::json;

    use super::super::testing::*;
    use super::*;

    async fn write(tier: &DiskTier, key: &str, body: &[u8]) {
        let mut w = tier.writer().await.unwrap();
        for piece in body.chunks(10_000) {
            w.write(piece).await.unwrap();
        }
        w.commit(key, (0, false), json!({"k": key})).await.unwrap();
    }

    fn file_of(found: Option<(Value, DiskBody)>) -> BodyFile {
        match found {
            Some((_, DiskBody::File(f))) => f,
            _ => panic!("not left in its file"),
        }
    }

    #[tokio::test]
    async fn a_streamed_body_is_committed_whole_and_read_back_in_pieces() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        let body: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        write(&tier, "k", &body).await;
        assert_eq!(tier.entries(), 1);
        assert_accounting_matches_disk(&tier).await;
        // Up to the threshold it is read whole; over it, from its file.
        assert!(matches!(tier.get_up_to("k", 100_000).await.unwrap(), Some((_, DiskBody::Whole(_)))));
        let file = file_of(tier.get_up_to("k", 1000).await.unwrap());
        assert_eq!(file.len(), 100_000);
        assert_eq!(file.body().collect().await.unwrap().to_bytes(), body);
        assert_eq!(file.range(99_990, 10).collect().await.unwrap().to_bytes(), body[99_990..]);
        assert!(file.range(99_990, 20).collect().await.is_err(), "a range past the end is an error");
    }

    #[tokio::test]
    async fn a_writer_dropped_before_its_commit_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        let mut w = tier.writer().await.unwrap();
        w.write(&[1; 50_000]).await.unwrap();
        drop(w);
        assert_eq!(tier.entries(), 0);
        assert!(content_files(tmp.path()).is_empty());
        let tmp_files = std::fs::read_dir(tmp.path().join(TMP_DIR)).map_or(0, |d| d.count());
        assert_eq!(tmp_files, 0, "the temp file is deleted");
    }

    #[tokio::test]
    async fn a_file_that_fails_its_check_ends_the_body_with_an_error_and_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let tier = open(tmp.path(), 1 << 20).await;
        let body = vec![7u8; 300_000];
        write(&tier, "k", &body).await;
        let file = file_of(tier.get_up_to("k", 1000).await.unwrap());
        let path = body_path(tmp.path(), &body);
        let mut damaged = std::fs::read(&path).unwrap();
        damaged[250_000] = 8;
        std::fs::write(&path, damaged).unwrap();
        let mut read = file.body();
        let mut got = 0;
        let ended = loop {
            match read.frame().await {
                Some(Ok(f)) => got += f.into_data().map_or(0, |d| d.len()),
                Some(Err(_)) => break true,
                None => break false,
            }
        };
        assert!(ended, "an error, never a clean end");
        assert!(got < body.len(), "the last piece is held back until the check");
        // The entry is removed.
        for _ in 0..200 {
            if tier.entries() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(tier.get("k").await.unwrap().is_none());
        assert_eq!(tier.entries(), 0);
    }
}
