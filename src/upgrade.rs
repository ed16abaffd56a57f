//! Binary upgrade without refusing a connection, as nginx does on SIGUSR2.
//!
//! The running process (the old one) starts its binary again, by the path it
//! was started from (so a file replaced since is the new binary), with the same
//! arguments, and hands it its listening sockets: client, TLS and admin. They
//! are the same sockets, so the kernel's accept queue is shared and a
//! connection waits there for whichever process accepts next; none is refused.
//!
//! The two talk over a unix `SOCK_SEQPACKET` pair, the new process's end given
//! as its standard input, and `HANDED_OVER_BY=<old pid>` says so:
//!
//! 1. old → new: one message naming each listener (`plain 0.0.0.0:80`, by
//!    the address it is configured with), the sockets attached (`SCM_RIGHTS`).
//! 2. new → old `R` (ready): the configuration loaded and checked, each
//!    configured address adopted from those sockets or bound fresh (sockets
//!    for addresses it no longer has are closed).
//! 3. old: lets go of the disk cache (no write starts any more; in-flight and
//!    new requests go on with memory only), then → new `F` (free).
//! 4. new: opens the cache, disk tier included, once the old one's writes in
//!    flight have ended (one writer at a time: the directory's lock passes
//!    from one to the other), starts accepting, → old `S` (serving).
//! 5. old: tells systemd the new main pid, stops accepting, drains within
//!    `server.grace_period`, exits 0.
//!
//! Until step 3 a failed new process (bad configuration, a crash, 60 seconds
//! without an answer) changes nothing: the old one logs why and keeps serving.
//! After it, the old one keeps serving from memory only until restarted.

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Set in the new process's environment to the old one's pid.
const ENV: &str = "HANDED_OVER_BY";
/// How long each step of the new process may take before the old one gives up on it.
const STEP: Duration = Duration::from_secs(60);
/// The most sockets one message carries (the kernel's `SCM_MAX_FD`).
const MOST: usize = 253;

const READY: u8 = b'R';
const FREE: u8 = b'F';
const SERVING: u8 = b'S';

/// Which listener a socket is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Plain,
    Tls,
    Admin,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Tls => "tls",
            Kind::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        [Kind::Plain, Kind::Tls, Kind::Admin].into_iter().find(|k| k.as_str() == s)
    }
}

/// One listening socket, by the address it is configured with (which may say port 0).
#[derive(Debug)]
pub(crate) struct Passed {
    pub(crate) kind: Kind,
    pub(crate) configured: SocketAddr,
    pub(crate) fd: OwnedFd,
}

impl Passed {
    fn try_clone(&self) -> io::Result<Passed> {
        Ok(Passed { kind: self.kind, configured: self.configured, fd: self.fd.try_clone()? })
    }
}

/// Why a binary upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("cannot hand the listeners over: {0}")]
    Pass(io::Error),
    #[error("the new process exited ({0}) before it was {1}")]
    Exited(String, &'static str),
    #[error("the new process was not {0} within {STEP:?}; it was stopped")]
    Late(&'static str),
}

/// The old process's side: starts `program` and hands it `sockets`. Calls
/// `release` (which lets go of the disk cache) once the new process is
/// ready, and returns its pid once it serves.
pub(crate) async fn hand_over(
    program: PathBuf,
    args: Vec<OsString>,
    sockets: Vec<Passed>,
    release: impl Future<Output = ()>,
) -> Result<u32, UpgradeError> {
    let (ours, theirs) =
        rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
            .map_err(|e| UpgradeError::Pass(e.into()))?;
    let child = Command::new(&program)
        .args(&args)
        .env(ENV, std::process::id().to_string())
        .stdin(Stdio::from(theirs))
        .spawn()
        .map_err(|source| UpgradeError::Spawn { program: program.display().to_string(), source })?;
    let pid = child.id();
    tracing::info!(pid, program = %program.display(), "binary upgrade: new process started");
    let mut child = Child(Some(child));
    send(&ours, &sockets).map_err(UpgradeError::Pass)?;
    drop(sockets);
    let ours = std::os::unix::net::UnixStream::from(ours);
    ours.set_nonblocking(true).map_err(UpgradeError::Pass)?;
    let mut ours = tokio::net::UnixStream::from_std(ours).map_err(UpgradeError::Pass)?;
    child.expect(&mut ours, READY, "ready").await?;
    tracing::info!(pid, "binary upgrade: new process ready; letting go of the disk cache");
    release.await;
    ours.write_all(&[FREE]).await.map_err(UpgradeError::Pass)?;
    child.expect(&mut ours, SERVING, "serving").await?;
    // It lives on after this process: never waited on, never killed.
    child.0.take();
    Ok(pid)
}

/// The new process, stopped and reaped if the upgrade fails.
struct Child(Option<std::process::Child>);

impl Child {
    async fn expect(
        &mut self,
        from: &mut tokio::net::UnixStream,
        what: u8,
        step: &'static str,
    ) -> Result<(), UpgradeError> {
        let mut byte = [0u8];
        match tokio::time::timeout(STEP, from.read(&mut byte)).await {
            Ok(Ok(1)) if byte[0] == what => Ok(()),
            Ok(_) => Err(UpgradeError::Exited(self.reap().await, step)),
            Err(_) => {
                self.reap().await;
                Err(UpgradeError::Late(step))
            }
        }
    }

    /// Waits for the process to exit (killing it if it does not within a second): how it ended.
    async fn reap(&mut self) -> String {
        let Some(mut child) = self.0.take() else { return "gone".into() };
        let waited = tokio::task::spawn_blocking(move || {
            for _ in 0..100 {
                if let Ok(Some(status)) = child.try_wait() {
                    return status.to_string();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            child.wait().map_or_else(|e| e.to_string(), |s| s.to_string())
        });
        waited.await.unwrap_or_else(|e| e.to_string())
    }
}

impl Drop for Child {
    /// An upgrade abandoned half-way (the old process stopping) stops the new one.
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn send(to: &OwnedFd, sockets: &[Passed]) -> io::Result<()> {
    if sockets.len() > MOST {
        return Err(io::Error::other(format!("{} listeners, at most {MOST} can be handed over", sockets.len())));
    }
    let text: String = sockets.iter().map(|s| format!("{} {}\n", s.kind.as_str(), s.configured)).collect();
    let fds: Vec<_> = sockets.iter().map(|s| s.fd.as_fd()).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MOST))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("too many listeners for one message"));
    }
    // A message is never empty, so that the new process can tell it from the end of the stream.
    let text = if text.is_empty() { "\n".to_string() } else { text };
    rustix::net::sendmsg(to, &[IoSlice::new(text.as_bytes())], &mut control, SendFlags::empty())?;
    Ok(())
}

/// The new process's side: what the old one handed over, and the way to answer it.
#[derive(Debug)]
pub struct Successor {
    to_old: std::os::unix::net::UnixStream,
    sockets: Vec<Passed>,
}

impl Successor {
    /// When this process was started by a binary upgrade (`HANDED_OVER_BY`
    /// names its parent), receives the listening sockets of the old one from
    /// the socket that is its standard input. `None` otherwise.
    pub fn from_env() -> io::Result<Option<Successor>> {
        let Some(old) = std::env::var_os(ENV) else { return Ok(None) };
        let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
        if old.to_str().and_then(|s| s.parse::<u32>().ok()) != Some(parent) {
            // Inherited from an upgrade long past, not set by our parent.
            return Ok(None);
        }
        let fd = io::stdin().as_fd().try_clone_to_owned()?;
        let mut text = vec![0u8; 64 * 1024];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MOST))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(&fd, &mut [IoSliceMut::new(&mut text)], &mut control, RecvFlags::CMSG_CLOEXEC)
            .map_err(|e| {
            io::Error::other(format!("{ENV} is set but standard input is not the old process's: {e}"))
        })?;
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        let text = String::from_utf8_lossy(&text[..got.bytes]);
        let mut sockets = Vec::new();
        for (line, fd) in text.lines().filter(|l| !l.is_empty()).zip(fds) {
            let parsed = line.split_once(' ').and_then(|(k, a)| Some((Kind::parse(k)?, a.parse().ok()?)));
            let Some((kind, configured)) = parsed else {
                return Err(io::Error::other(format!("unreadable listener from the old process: {line:?}")));
            };
            sockets.push(Passed { kind, configured, fd });
        }
        Ok(Some(Successor { to_old: fd.into(), sockets }))
    }

    /// The old process's listener for `configured`, if it had one.
    pub(crate) fn take(&mut self, kind: Kind, configured: SocketAddr) -> Option<OwnedFd> {
        let i = self.sockets.iter().position(|s| s.kind == kind && s.configured == configured)?;
        Some(self.sockets.swap_remove(i).fd)
    }

    /// Everything but the cache is in place: the old process may let go of it.
    pub(crate) fn ready(&mut self) -> io::Result<()> {
        // Listeners it no longer has are closed here, not held for its life.
        self.sockets.clear();
        self.to_old.write_all(&[READY])
    }

    /// Waits until the old process has let go of the disk cache, or is gone
    /// (the kernel then let go of it).
    pub(crate) async fn wait_free(&self) {
        let Ok(mut from) = self.to_old.try_clone() else { return };
        let _ = tokio::task::spawn_blocking(move || from.read(&mut [0u8])).await;
    }

    /// This process accepts: the old one may stop.
    pub(crate) fn serving(mut self) {
        if let Err(e) = self.to_old.write_all(&[SERVING]) {
            tracing::warn!(error = %e, "cannot tell the old process that this one serves");
        }
    }
}

/// Duplicates of `sockets` to hand over, leaving the originals.
pub(crate) fn copies(sockets: &[Passed]) -> io::Result<Vec<Passed>> {
    sockets.iter().map(Passed::try_clone).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_cross_a_socket_pair_by_kind_and_address() {
        let (a, b) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bound = l.local_addr().unwrap();
        let configured: SocketAddr = "127.0.0.1:0".parse().unwrap();
        send(&a, &[Passed { kind: Kind::Admin, configured, fd: l.into() }]).unwrap();
        let mut text = [0u8; 128];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MOST))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got =
            rustix::net::recvmsg(&b, &mut [IoSliceMut::new(&mut text)], &mut control, RecvFlags::empty()).unwrap();
        assert_eq!(&text[..got.bytes], b"admin 127.0.0.1:0\n");
        let fds: Vec<OwnedFd> = control
            .drain()
            .flat_map(|m| match m {
                RecvAncillaryMessage::ScmRights(fds) => fds.collect(),
                _ => Vec::new(),
            })
            .collect();
        let l = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(l.local_addr().unwrap(), bound);
    }
}
