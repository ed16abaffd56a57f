//! One log destination (stderr or a file) and the thread that writes to it.
//!
//! Whoever logs appends a whole line to a buffer under a short lock and goes
//! on: it never waits for the reader. The buffer holds at most [`BUDGET`]
//! bytes (or one longer line); a line that does not fit is dropped and counted. The thread takes
//! the whole buffer at once and writes it out; a write that fails (a reader
//! gone: EPIPE; a full disk) loses that batch's lines, counted too, and the
//! thread goes on. Once a write succeeds again the drops are reported in the
//! error log, at most once a second. Nothing here panics on a failed write.
//!
//! A file is opened for appending, created `0640` (less what the umask
//! takes); [`Writer::reopen`] opens its path again (after logrotate renamed it).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Bytes of lines waiting for one destination, at most (about a thousand
/// access lines; more than one more line is never held).
pub(super) const BUDGET: usize = 256 << 10;
/// Drops are reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Where a writer writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stderr,
    File(PathBuf),
}

impl Target {
    pub fn new(file: Option<&Path>) -> Target {
        file.map_or(Target::Stderr, |f| Target::File(f.to_path_buf()))
    }

    /// Opens the destination (a file is created if missing).
    pub fn open(&self) -> io::Result<File> {
        match self {
            // A descriptor of our own: std's stderr lock is never held by a stalled write.
            Target::Stderr => {
                use std::os::fd::AsFd;
                Ok(File::from(io::stderr().as_fd().try_clone_to_owned()?))
            }
            Target::File(path) => std::fs::OpenOptions::new().append(true).create(true).mode(0o640).open(path),
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Stderr => "stderr".into(),
            Target::File(path) => path.display().to_string(),
        }
    }
}

/// Lines for one destination, written by a thread of its own; the thread
/// ends (after writing what is left) when the writer is dropped.
pub(super) struct Writer {
    target: Target,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Lines, a reopen or the end are waiting.
    wake: Condvar,
    /// The thread has nothing left to write.
    idle: Condvar,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    reopen: bool,
    closed: bool,
    /// The thread holds a batch it has not finished writing.
    writing: bool,
    /// Lines dropped and not yet reported.
    dropped: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Writer {
    /// Starts the thread writing to `file`, which `target` names.
    pub(super) fn start(target: Target, file: File) -> io::Result<Writer> {
        let shared = Arc::new(Shared { state: Mutex::default(), wake: Condvar::new(), idle: Condvar::new() });
        let thread = Thread { shared: shared.clone(), target: target.clone(), file, healthy: true };
        std::thread::Builder::new().name("relais-log".into()).spawn(move || thread.run())?;
        Ok(Writer { target, shared })
    }

    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    /// Queues `line` (ending with a newline) unless the buffer is full; never waits.
    pub(super) fn line(&self, line: &[u8]) {
        let mut s = self.shared.lock();
        // One line of any length fits an empty buffer: memory stays within
        // the budget and one line, and no request is left out for its size.
        if !s.buf.is_empty() && s.buf.len() + line.len() > BUDGET {
            s.dropped += 1;
            drop(s);
            crate::metrics::log_lines_dropped(1);
            return;
        }
        let was_empty = s.buf.is_empty();
        s.buf.extend_from_slice(line);
        drop(s);
        if was_empty {
            self.shared.wake.notify_one();
        }
    }

    /// Opens the file again by its name (logrotate renamed the old one).
    pub(super) fn reopen(&self) {
        if matches!(self.target, Target::File(_)) {
            self.shared.lock().reopen = true;
            self.shared.wake.notify_one();
        }
    }

    /// Waits until everything queued is written, or `deadline` passes; true if written.
    pub(super) fn flush(&self, deadline: Instant) -> bool {
        let mut s = self.shared.lock();
        while !s.buf.is_empty() || s.writing {
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                return false;
            };
            s = self.shared.idle.wait_timeout(s, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

struct Thread {
    shared: Arc<Shared>,
    target: Target,
    file: File,
    /// The last write succeeded.
    healthy: bool,
}

impl Thread {
    fn run(mut self) {
        let mut reported = Instant::now() - REPORT_EVERY;
        loop {
            let (batch, reopen, closed, dropped) = {
                let mut s = self.shared.lock();
                loop {
                    if !s.buf.is_empty() || s.reopen || s.closed {
                        break;
                    }
                    s.writing = false;
                    self.shared.idle.notify_all();
                    // Drops wait for a healthy writer and the next report time.
                    let report_in =
                        (s.dropped > 0 && self.healthy).then(|| REPORT_EVERY.saturating_sub(reported.elapsed()));
                    s = match report_in {
                        Some(d) if d.is_zero() => break,
                        Some(d) => self.shared.wake.wait_timeout(s, d).unwrap_or_else(PoisonError::into_inner).0,
                        None => self.shared.wake.wait(s).unwrap_or_else(PoisonError::into_inner),
                    };
                }
                s.writing = true;
                let batch = std::mem::take(&mut s.buf);
                let due = self.healthy && reported.elapsed() >= REPORT_EVERY;
                let dropped = if due { std::mem::take(&mut s.dropped) } else { 0 };
                (batch, std::mem::take(&mut s.reopen), s.closed, dropped)
            };
            if reopen {
                self.reopen();
            }
            // Reported before the batch: the report is a line of its own, queued behind it.
            if dropped > 0 {
                reported = Instant::now();
                tracing::warn!(target: "relais::logs", log = %self.target.describe(), lines = dropped,
                    "log lines dropped: the log's reader was too slow or gone, or the file could not be written");
            }
            if !batch.is_empty() {
                self.write(&batch);
            }
            if closed {
                let mut s = self.shared.lock();
                if s.buf.is_empty() {
                    s.writing = false;
                    self.shared.idle.notify_all();
                    return;
                }
            }
        }
    }

    fn write(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            match self.file.write(buf) {
                Ok(n) if n > 0 => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => {
                    // What was not written is lost; a line cut in two counts as lost.
                    let lost = buf.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
                    crate::metrics::log_lines_dropped(lost);
                    self.shared.lock().dropped += lost;
                    self.healthy = false;
                    return;
                }
            }
        }
        self.healthy = true;
    }

    fn reopen(&mut self) {
        match self.target.open() {
            Ok(file) => self.file = file,
            Err(e) => tracing::error!(target: "relais::logs", file = %self.target.describe(), error = %e,
                "cannot reopen the log file; writing on to the old one"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &Path) -> (Writer, PathBuf) {
        let path = dir.join("a.log");
        let target = Target::File(path.clone());
        (Writer::start(target.clone(), target.open().unwrap()).unwrap(), path)
    }

    #[test]
    fn lines_reach_the_file_and_a_reopen_follows_a_rename() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (w, path) = writer(dir.path());
        w.line(b"one\n");
        assert!(w.flush(Instant::now() + Duration::from_secs(5)));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "created {mode:o}");
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        w.reopen();
        w.line(b"two\n");
        assert!(w.flush(Instant::now() + Duration::from_secs(5)));
        assert_eq!(std::fs::read_to_string(dir.path().join("a.log.1")).unwrap(), "one\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
    }

    #[test]
    fn a_stalled_reader_costs_lines_not_waits() {
        // A pipe nobody reads: the thread blocks in its first large write.
        let (reader, pipe) = std::io::pipe().unwrap();
        let w = Writer::start(Target::Stderr, File::from(std::os::fd::OwnedFd::from(pipe))).unwrap();
        let before = crate::metrics::Metrics::new().logs_dropped();
        let line: Vec<u8> = [b'x'; 1023].into_iter().chain([b'\n']).collect();
        for _ in 0..(4 * BUDGET / line.len()) {
            w.line(&line);
        }
        assert!(crate::metrics::Metrics::new().logs_dropped() >= before + (BUDGET / line.len()) as u64);
        assert!(!w.flush(Instant::now() + Duration::from_millis(50)), "a stalled reader cannot be flushed to");
        drop(reader);
    }
}
