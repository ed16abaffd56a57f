//! The threads that write new small entries to disk, at the lowest CPU priority.
//!
//! Creating files is kernel work that would otherwise take the cores serving
//! requests (on ext4, inode allocation dominates a fill of small entries). At
//! nice 19 these threads get what the request path leaves; when they fall
//! behind, the cache's write backlog fills and new entries stay in memory only
//! (`relais_cache_disk_writes_skipped_total`): a cold fill runs at the speed
//! of misses, and the disk catches up when the load eases. Entries with a content
//! file of their own (over 1KiB) are written at once on tokio's blocking pool, as
//! are reads, removals and purges: a large body waiting would hold its memory.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::sync::oneshot;

use super::DiskError;

type Job = Box<dyn FnOnce() + Send>;

const THREADS: usize = 2;

fn queue() -> &'static mpsc::Sender<Job> {
    static QUEUE: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("relais-disk-writer-{i}")).spawn(move || {
                lower_priority();
                loop {
                    let job = match rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    job();
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "disk cache: cannot start a writer thread");
            }
        }
        tx
    })
}

/// Nice 19 for the calling thread (on Linux a thread's own). Failing is harmless.
fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, 19) {
        tracing::debug!(error = %e, "disk cache: writer thread keeps its priority");
    }
}

/// Runs `f` on a writer thread; a panic in it is an error, not a lost thread.
pub(super) async fn write<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DiskError> + Send + 'static,
) -> Result<T, DiskError> {
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        let result = catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(DiskError::Writer));
        let _ = tx.send(result);
    });
    let sent = queue().send(job);
    if sent.is_err() {
        return Err(DiskError::Writer);
    }
    rx.await.unwrap_or(Err(DiskError::Writer))
}

/// Keeps every writer thread busy until dropped: writes of small entries
/// queue behind it, as they do behind a slow disk.
#[cfg(test)]
pub(crate) fn hold() -> impl Drop {
    struct Held(Vec<std::sync::mpsc::Sender<()>>);
    impl Drop for Held {
        fn drop(&mut self) {
            for tx in &self.0 {
                let _ = tx.send(());
            }
        }
    }
    let (busy_tx, busy_rx) = mpsc::channel();
    let held = Held(
        (0..THREADS)
            .map(|_| {
                let (tx, rx) = mpsc::channel::<()>();
                let busy = busy_tx.clone();
                let job: Job = Box::new(move || {
                    let _ = busy.send(());
                    let _ = rx.recv();
                });
                queue().send(job).expect("the writers run");
                tx
            })
            .collect(),
    );
    for _ in 0..THREADS {
        busy_rx.recv().expect("a writer took its job");
    }
    held
}
