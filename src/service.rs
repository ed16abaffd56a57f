//! What relais does for a service manager: tells systemd (`Type=notify`) when
//! it is ready, reloading and stopping, and drops root for `server.user` once
//! its listeners, cache and log files are open.
//!
//! The notifications follow sd_notify(3) without libsystemd: one datagram a
//! message to the unix socket named by `NOTIFY_SOCKET` (a path, or `@name` in
//! the abstract namespace). They are sent only after the binary calls
//! [`notify_from_env`]; a library user is never heard by systemd unasked. The
//! variable stays in the environment (removing it needs `unsafe` since Rust
//! 2024, which the crate forbids); the one child relais starts, the new
//! process of a binary upgrade, needs it. That one's own `READY=1` is not
//! sent: the old process, still the main one, sends `MAINPID=` for it.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;

/// The socket and address, once `notify_from_env` found them.
static NOTIFY: OnceLock<(UnixDatagram, SocketAddr)> = OnceLock::new();

/// Reads `NOTIFY_SOCKET`; from then on relais tells systemd of its state.
/// Unset: nothing to do. A value that is no unix socket address is an error.
pub(crate) fn notify_from_env() -> io::Result<()> {
    let Some(value) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(()) };
    let bytes = value.as_encoded_bytes();
    let addr = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(&value)?,
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])?
        }
        _ => {
            let shown = value.to_string_lossy();
            return Err(io::Error::other(format!("NOTIFY_SOCKET={shown}: not a unix socket path or @name")));
        }
    };
    // Never waited on: a manager that stops reading (its queue holds 10 datagrams
    // by default) would otherwise stall the reload or the stop that notifies it.
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let _ = NOTIFY.set((socket, addr));
    Ok(())
}

/// Sends one message; a lost one (systemd gone, or its queue full) is logged, never fatal.
fn notify(message: &str) {
    let Some((socket, addr)) = NOTIFY.get() else { return };
    if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Every listener is bound and serving.
pub(crate) fn ready(status: &str) {
    notify(&format!("READY=1\nMAINPID={}\nSTATUS={status}\n", std::process::id()));
}

/// A reload begins: systemd waits for the `READY=1` that [`reloaded`] sends.
pub(crate) fn reloading() {
    if NOTIFY.get().is_none() {
        return;
    }
    // CLOCK_MONOTONIC in µs, which systemd compares with when it asked for the reload.
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the configuration\n"));
}

/// The reload ended, applied or refused (the running configuration stays).
pub(crate) fn reloaded<T, E: std::fmt::Display>(result: &Result<T, E>) {
    let status = match result {
        Ok(_) => "configuration reloaded".to_string(),
        Err(e) => format!("reload refused, running the previous configuration: {e}"),
    };
    notify(&format!("READY=1\nSTATUS={}\n", one_line(&status)));
}

/// A binary upgrade's new process serves: it is the main process from now on.
pub(crate) fn handed_over(pid: u32) {
    notify(&format!("MAINPID={pid}\nREADY=1\nSTATUS=binary upgraded: process {pid} serves\n"));
}

/// A graceful stop begins.
pub(crate) fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping: finishing in-flight requests\n");
}

/// STATUS= ends at the newline.
fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

/// `server.user`, looked up: the ids relais runs as after binding.
#[derive(Clone, Debug)]
pub(crate) struct RunAs {
    name: String,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

/// Finds `name`'s ids; an unknown user is an error.
pub(crate) fn lookup(name: &str) -> Result<RunAs, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(RunAs { name: name.to_string(), uid: user.uid, gid: user.gid }),
        Ok(None) => Err(format!("no user named {name:?} on this system")),
        Err(e) => Err(format!("cannot look up user {name:?}: {e}")),
    }
}

impl RunAs {
    /// Whether this process can become that user: it is root, or already them.
    pub(crate) fn allowed(&self) -> Result<(), String> {
        let me = nix::unistd::geteuid();
        if !me.is_root() && me != self.uid {
            return Err(format!(
                "relais runs as uid {me}, not root: it cannot become {:?} (uid {})",
                self.name, self.uid
            ));
        }
        Ok(())
    }
}

/// Becomes that user for good: supplementary groups, group, then user (the
/// C library changes every thread's ids, tokio's workers included). Nothing to
/// do when relais is already that user.
pub(crate) fn drop_privileges(to: &RunAs) -> io::Result<()> {
    if nix::unistd::geteuid() == to.uid && nix::unistd::getuid() == to.uid {
        return Ok(());
    }
    nix::unistd::setgroups(&[to.gid])?;
    nix::unistd::setgid(to.gid)?;
    nix::unistd::setuid(to.uid)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_user_is_named() {
        let e = lookup("no-such-relais-user").unwrap_err();
        assert!(e.contains("no user named \"no-such-relais-user\""), "{e}");
    }

    #[test]
    fn the_current_user_is_always_allowed() {
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid()).unwrap().unwrap();
        let to = lookup(&me.name).unwrap();
        assert_eq!(to.uid, me.uid);
        to.allowed().unwrap();
    }
}
