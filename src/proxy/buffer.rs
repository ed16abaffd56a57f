//! Response buffering for pass-through responses (nginx's `proxy_buffering`):
//! a task reads the origin's body ahead of the client, into memory up to
//! `buffering.response_memory` (and the shared `buffering.memory`), then into
//! a temp file up to `buffering.response_file` (all responses' temp files
//! together within `buffering.response_disk`), so the origin's connection is
//! done and back in its pool while a slow client drains the rest. Past both,
//! reading waits for the client, as without buffering. Stored responses need
//! none of this: their fill reads the origin on its own.
//!
//! Request bodies read whole first (a route's `request_buffering`) keep
//! `request_memory` in memory, taken from the shared `buffering.memory`, and
//! the rest (all of it when that is spent) in temp files, all of whose bytes
//! together stay within `buffering.request_disk` ([`TempFiles`], one per
//! process): an upload that would pass it is refused before anything goes
//! upstream, so one client cannot fill the disk; slow readers cannot either.
//!
//! `buffering.memory` ([`MemoryBudget`]) and the temp-file budgets belong to
//! the process, not to one configuration: a reload changes their limits, and
//! what requests of the old configuration hold still counts.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::Response;
use http_body::Frame;
use http_body_util::BodyExt;
use std::os::unix::fs::FileExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::config::BufferingConfig;
use crate::http::body::{Body, BoxError};

/// A body known to be at most this long fits the sockets' own buffers: not worth a task.
const SMALL: u64 = 64 * 1024;

pub(super) struct Buffering {
    enabled: bool,
    /// A request body read whole before it goes upstream keeps this much in memory.
    request_memory: usize,
    /// ... and the rest in temp files, within this for all of them.
    request_disk: u64,
    disk: Arc<TempFiles>,
    per_response: u32,
    file_max: u64,
    /// All responses' temp files together, at most.
    response_disk: u64,
    dir: PathBuf,
    shared: Arc<Semaphore>,
    memory: Arc<MemoryBudget>,
}

/// `buffering.memory`, for the whole process: read-ahead, decoders and
/// uploads read whole take their bytes from it as permits.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    permits: Arc<Semaphore>,
    /// The limit the permits add up to (once any owed by a shrink are taken back).
    limit: Mutex<usize>,
}

/// No memory until a configuration sets its limit.
impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget { permits: Arc::new(Semaphore::new(0)), limit: Mutex::new(0) }
    }
}

impl MemoryBudget {
    /// Sets the limit to `limit` bytes. A larger one adds permits at once; a
    /// smaller one takes back what is free now and the rest as it is given
    /// back, before anyone waiting for memory gets it (the semaphore is fair).
    pub(crate) fn resize(&self, limit: usize) {
        let mut current = self.limit.lock().unwrap_or_else(PoisonError::into_inner);
        if limit > *current {
            self.permits.add_permits(limit - *current);
        } else if limit < *current {
            let owed = (*current - limit) - self.permits.forget_permits(*current - limit);
            if owed > 0
                && let (Ok(runtime), Ok(owed)) = (tokio::runtime::Handle::try_current(), u32::try_from(owed))
            {
                let permits = self.permits.clone();
                runtime.spawn(async move {
                    if let Ok(taken) = permits.acquire_many_owned(owed).await {
                        taken.forget();
                    }
                });
            }
        }
        *current = limit;
    }
}

/// One piece of a body on its way to the client, in order.
enum Piece {
    /// In memory, holding its share of the budgets.
    Memory(Bytes, [OwnedSemaphorePermit; 2]),
    /// This many bytes appended to the response's temp file.
    File(usize),
    /// The origin's trailers, which end the body.
    Trailers(http::HeaderMap),
    Failed(BoxError),
}

/// Bytes in temp files, for the whole process (kept across reloads: a new
/// configuration does not get a fresh disk).
#[derive(Debug, Default)]
pub(crate) struct DiskBudget {
    used: AtomicU64,
}

/// The process's temp-file budgets: buffered uploads', read-ahead responses'.
#[derive(Debug, Default)]
pub(crate) struct TempFiles {
    requests: Arc<DiskBudget>,
    responses: Arc<DiskBudget>,
}

impl DiskBudget {
    /// Takes `n` bytes if the total stays within `limit`.
    fn take(&self, n: u64, limit: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_add(n).filter(|&t| t <= limit))
            .is_ok()
    }
}

/// Bytes of [`DiskBudget`] held by one upload's temp file, given back when it is dropped
/// (with the file: the body has been sent, or abandoned).
struct Held {
    budget: Arc<DiskBudget>,
    bytes: u64,
}

impl Held {
    fn more(&mut self, n: u64, limit: u64) -> bool {
        let ok = self.budget.take(n, limit);
        self.bytes += if ok { n } else { 0 };
        ok
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why a request body was not read whole.
#[derive(Debug)]
pub(super) enum RequestError {
    /// The client's body failed (its limits, its framing), or the temp file did.
    Body(BoxError),
    /// Its temp file does not fit `buffering.request_disk`: now (`ever` false:
    /// other uploads hold it), or ever (a declared length larger than it all).
    NoRoom { ever: bool },
}

impl Buffering {
    /// `disk` and `memory` are the process's budgets; `memory` takes this
    /// configuration's `buffering.memory` as its limit.
    pub(super) fn new(c: &BufferingConfig, disk: Arc<TempFiles>, memory: Arc<MemoryBudget>) -> Buffering {
        let per_response = u32::try_from(c.response_memory.bytes()).unwrap_or(u32::MAX).max(1);
        memory.resize(usize::try_from(c.memory.bytes()).unwrap_or(usize::MAX).max(1));
        Buffering {
            enabled: c.response,
            request_memory: usize::try_from(c.request_memory.bytes()).unwrap_or(usize::MAX),
            request_disk: c.request_disk.bytes(),
            disk,
            per_response,
            file_max: c.response_file.bytes(),
            response_disk: c.response_disk.bytes(),
            dir: c.temp_path.clone().unwrap_or_else(std::env::temp_dir),
            shared: memory.permits.clone(),
            memory,
        }
    }

    /// `bytes` of `buffering.memory` for a decoder (`compression.decode`), held
    /// until dropped; none unless one response's read-ahead (`response_memory`)
    /// stays free beside it. Decoders so never hold the whole budget: a
    /// decoder's own read-ahead, waiting for memory, waits only for other
    /// responses' pieces, which their clients drain, and not for decoders
    /// that wait on it in turn.
    pub(super) fn for_decoder(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes).ok()?;
        let mut permit = self.shared.clone().try_acquire_many_owned(bytes.checked_add(self.per_response)?).ok()?;
        drop(permit.split(self.per_response as usize));
        Some(permit)
    }

    /// The process's temp-file budgets, for the next configuration.
    pub(super) fn temp_files(&self) -> Arc<TempFiles> {
        self.disk.clone()
    }

    /// The process's `buffering.memory`, for the next configuration.
    pub(super) fn memory(&self) -> Arc<MemoryBudget> {
        self.memory.clone()
    }

    /// `res` with its body read ahead, when it is worth it.
    pub(super) fn apply(&self, res: Response<Body>) -> Response<Body> {
        let small = http_body::Body::size_hint(res.body()).upper().is_some_and(|n| n <= SMALL);
        if !self.enabled || small || http_body::Body::is_end_stream(res.body()) {
            return res;
        }
        let (parts, body) = res.into_parts();
        let (pieces_tx, pieces_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::channel(2);
        let file = match self.file_max {
            0 => None,
            _ => Spill::create(&self.dir).map_err(|e| tracing::warn!(dir = %self.dir.display(), error = %e, "no temp file for buffering; memory only")).ok(),
        };
        let (writer, reader) = (file.clone(), file);
        let disk = Arc::new(std::sync::Mutex::new(Held { budget: self.disk.responses.clone(), bytes: 0 }));
        let ahead = ReadAhead {
            own: Arc::new(Semaphore::new(self.per_response as usize)),
            own_cap: self.per_response,
            shared: self.shared.clone(),
            file_max: self.file_max,
            disk: disk.clone(),
            disk_limit: self.response_disk,
        };
        tokio::spawn(ahead.read(body, writer, pieces_tx));
        tokio::spawn(drain(pieces_rx, reader, out_tx, disk));
        Response::from_parts(parts, Body::channel(out_rx))
    }
}

impl Buffering {
    /// The whole request body, read before anything goes upstream (nginx's
    /// `proxy_request_buffering`): up to `request_memory` in memory while
    /// `buffering.memory` has room, the rest in a temp file. The body it
    /// returns has an exact length, so the request upstream carries
    /// `Content-Length`. The client's limits (size, time, rate) apply while it
    /// is read, through `body` itself.
    ///
    /// What goes to the temp file is taken from the process's `request_disk`
    /// first: a declared length that cannot fit is refused before a byte is
    /// read, and a body that finds the budget spent is refused when it does.
    pub(super) async fn read_request(&self, mut body: Body) -> Result<Body, RequestError> {
        let mut room = Held { budget: self.disk.requests.clone(), bytes: 0 };
        if let Some(len) = http_body::Body::size_hint(&body).exact() {
            let to_file = len.saturating_sub(self.request_memory as u64);
            if to_file > self.request_disk {
                return Err(RequestError::NoRoom { ever: true });
            }
            if !room.more(to_file, self.request_disk) {
                return Err(RequestError::NoRoom { ever: false });
            }
        }
        let (mut memory, mut held) = (Vec::new(), 0usize);
        // `held` bytes of `buffering.memory`, given back when the body has been sent.
        let mut permits: Option<OwnedSemaphorePermit> = None;
        let mut file: Option<Spill> = None;
        let mut filed = 0u64;
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let data = match frame.map_err(RequestError::Body)?.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    continue;
                }
            };
            if file.is_none() && held + data.len() <= self.request_memory && self.take_memory(&mut permits, data.len())
            {
                held += data.len();
                memory.push(data);
                continue;
            }
            let to_file = filed + data.len() as u64;
            if to_file > room.bytes && !room.more(to_file - room.bytes, self.request_disk) {
                return Err(RequestError::NoRoom { ever: to_file > self.request_disk });
            }
            if file.is_none() {
                file = Some(Spill::create(&self.dir).map_err(|e| RequestError::Body(e.into()))?);
            }
            let n = data.len() as u64;
            if let Some(spill) = file.as_mut() {
                spill.append(data).await.map_err(|e| RequestError::Body(e.into()))?;
            }
            filed += n;
        }
        let len = held as u64 + filed;
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            // The file's share of the budget goes when the file does, the memory's with the task.
            let _held = (room, permits);
            for data in memory {
                if tx.send(Ok(Frame::data(data))).await.is_err() {
                    return;
                }
            }
            if let Some(mut spill) = file {
                let mut left = filed;
                while left > 0 {
                    let n = left.min(64 * 1024);
                    let read = spill.read(n as usize).await.map_err(|e| Box::new(e) as BoxError);
                    let failed = read.is_err();
                    left -= n;
                    if tx.send(read.map(Frame::data)).await.is_err() || failed {
                        return;
                    }
                }
            }
            // Sent on where the upstream protocol carries them (HTTP/2; HTTP/1.1 with a length cannot).
            if let Some(trailers) = trailers {
                let _ = tx.send(Ok(Frame::trailers(trailers))).await;
            }
        });
        Ok(Body::boxed(Known { inner: Body::channel(rx), len }))
    }

    /// `n` more bytes of `buffering.memory` into `permits`, if it has them.
    fn take_memory(&self, permits: &mut Option<OwnedSemaphorePermit>, n: usize) -> bool {
        let Ok(taken) = self.shared.clone().try_acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX)) else {
            return false;
        };
        match permits {
            Some(all) => all.merge(taken),
            None => *permits = Some(taken),
        }
        true
    }
}

pin_project_lite::pin_project! {
    /// A body of a length known in advance.
    struct Known {
        #[pin]
        inner: Body,
        len: u64,
    }
}

impl http_body::Body for Known {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.len == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len)
    }
}

struct ReadAhead {
    own: Arc<Semaphore>,
    /// `own`'s size: a frame larger than the budget takes all of it, and as
    /// much of the shared budget (which config keeps at least as large), so no
    /// acquire can wait for more permits than exist.
    own_cap: u32,
    shared: Arc<Semaphore>,
    file_max: u64,
    /// This response's share of `response_disk`, given back when both the
    /// reading and the draining task are done with its file.
    disk: Arc<std::sync::Mutex<Held>>,
    disk_limit: u64,
}

impl ReadAhead {
    /// Reads the origin's body to its end, or until the client is gone (at
    /// once, not at the origin's next piece, which may never come).
    async fn read(self, mut body: Body, mut file: Option<Spill>, tx: mpsc::UnboundedSender<Piece>) {
        let mut filed_total = 0u64;
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                () = tx.closed() => return,
            };
            let Some(frame) = frame else { break };
            let data = match frame.map(|f| f.into_data()) {
                Ok(Ok(data)) => data,
                Ok(Err(frame)) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = tx.send(Piece::Trailers(trailers));
                    }
                    continue;
                }
                Err(e) => {
                    let _ = tx.send(Piece::Failed(e));
                    return;
                }
            };
            if tx.is_closed() {
                return;
            }
            let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
            let permits = (
                self.own.clone().try_acquire_many_owned(n.min(self.own_cap)),
                self.shared.clone().try_acquire_many_owned(n.min(self.own_cap)),
            );
            let piece = match permits {
                (Ok(a), Ok(b)) => Piece::Memory(data, [a, b]),
                // Memory full: to the file while it has room.
                _ if file.is_some()
                    && filed_total + data.len() as u64 <= self.file_max
                    && self
                        .disk
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .more(data.len() as u64, self.disk_limit) =>
                {
                    let Some(spill) = file.as_mut() else { return };
                    let n = data.len();
                    if let Err(e) = spill.append(data).await {
                        let _ = tx.send(Piece::Failed(Box::new(e)));
                        return;
                    }
                    filed_total += n as u64;
                    Piece::File(n)
                }
                // Both full: wait for the client, as without buffering.
                _ => {
                    let own = self.own.clone().acquire_many_owned(n.min(self.own_cap)).await;
                    let shared = self.shared.clone().acquire_many_owned(n.min(self.own_cap)).await;
                    match (own, shared) {
                        (Ok(a), Ok(b)) => Piece::Memory(data, [a, b]),
                        _ => return,
                    }
                }
            };
            if tx.send(piece).is_err() {
                return;
            }
        }
    }
}

/// Passes the pieces on to the client in order, reading filed ones back.
async fn drain(
    mut pieces: mpsc::UnboundedReceiver<Piece>,
    mut file: Option<Spill>,
    out: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    // The file's share of `response_disk`, given back once it is read back or abandoned.
    _disk: Arc<std::sync::Mutex<Held>>,
) {
    loop {
        // A client gone while nothing comes (a stalled origin) ends this at once.
        let piece = tokio::select! {
            piece = pieces.recv() => piece,
            () = out.closed() => return,
        };
        let Some(piece) = piece else { return };
        let next = match piece {
            Piece::Memory(data, _permits) => Ok(Frame::data(data)),
            Piece::Trailers(trailers) => Ok(Frame::trailers(trailers)),
            Piece::File(n) => {
                let read = match file.as_mut() {
                    Some(spill) => spill.read(n).await,
                    None => Err(io::Error::other("no temp file")),
                };
                read.map(Frame::data).map_err(|e| Box::new(e) as BoxError)
            }
            Piece::Failed(e) => Err(e),
        };
        let failed = next.is_err();
        if out.send(next).await.is_err() || failed {
            return;
        }
    }
}

/// A temp file already unlinked, written at its end and read back from its
/// start on a blocking thread, straight from and into the pieces themselves:
/// tokio's `File` would copy each piece and keep a buffer of its size for the
/// file's life (about 100 KiB for each paused upload).
#[derive(Clone)]
struct Spill {
    file: Arc<std::fs::File>,
    written: u64,
    read: u64,
}

impl Spill {
    fn create(dir: &std::path::Path) -> io::Result<Spill> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = dir.join(format!("relais-buffer-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        let _ = std::fs::remove_file(&path);
        Ok(Spill { file: Arc::new(file), written: 0, read: 0 })
    }

    async fn append(&mut self, data: Bytes) -> io::Result<()> {
        let (file, at, n) = (self.file.clone(), self.written, data.len() as u64);
        blocking(move || file.write_all_at(&data, at)).await?;
        self.written += n;
        Ok(())
    }

    /// The next `n` bytes written.
    async fn read(&mut self, n: usize) -> io::Result<Bytes> {
        let (file, at) = (self.file.clone(), self.read);
        let data = blocking(move || {
            let mut buf = vec![0u8; n];
            file.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf))
        })
        .await?;
        self.read += n as u64;
        Ok(data)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_limit_counts_what_is_held() {
        let budget = MemoryBudget::default();
        budget.resize(100);
        let held = budget.permits.clone().try_acquire_many_owned(80).unwrap();
        budget.resize(50);
        assert_eq!(budget.permits.available_permits(), 0, "what is free is taken back at once");
        drop(held);
        tokio::task::yield_now().await;
        assert_eq!(budget.permits.available_permits(), 50, "the rest as it is given back");
        budget.resize(120);
        assert_eq!(budget.permits.available_permits(), 120);
    }
}
