//! `relais upgrade`: the binary upgrade (`SIGUSR2`) from the command line,
//! answering with its result. The admin API names the running process's pid;
//! the signal goes to it, and the command waits until another pid answers
//! (done), or until that process has no new child left (failed: its log says
//! why). It works on the machine relais runs on, and only on a process whose
//! name is relais's.

use std::time::{Duration, Instant};

use http::Method;

use super::{Admin, Failure};

/// Longer than the running process waits on each step of its new one (60 s).
const WAIT: Duration = Duration::from_secs(130);
/// A process that has started no new one after this did not take the signal.
const START: Duration = Duration::from_secs(5);

pub(super) async fn run(admin: &Admin) -> Result<String, Failure> {
    let old = pid(admin).await?;
    let comm = std::fs::read_to_string(format!("/proc/{old}/comm")).unwrap_or_default();
    if !comm.trim_end().starts_with("relais") {
        return Err(Failure::Usage(format!(
            "process {old} named by the admin API at {} is no relais of this machine; run relais upgrade where relais runs",
            admin.addr
        )));
    }
    let target = rustix::process::Pid::from_raw(old as i32).ok_or_else(|| Failure::Other(format!("pid {old}")))?;
    rustix::process::kill_process(target, rustix::process::Signal::USR2)
        .map_err(|e| Failure::Usage(format!("cannot signal process {old}: {e}")))?;
    let (sent, mut seen_child) = (Instant::now(), false);
    while sent.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = pid(admin).await?;
        if now != old {
            return Ok(format!("upgraded: process {now} serves; process {old} finishes its requests and exits\n"));
        }
        let children = has_children(old);
        seen_child |= children;
        if (seen_child && !children) || (!seen_child && sent.elapsed() > START) {
            return Err(Failure::Refused(format!(
                "upgrade failed: process {old} serves on; its log says why (binary upgrade failed)"
            )));
        }
    }
    Err(Failure::Refused(format!("upgrade not done after {}s: process {old} serves on", WAIT.as_secs())))
}

async fn pid(admin: &Admin) -> Result<u64, Failure> {
    let stats = admin.call(Method::GET, "/stats", None).await?;
    stats["relais"]["pid"].as_u64().ok_or_else(|| Failure::Other("the admin API names no pid".into()))
}

/// Whether any thread of `pid` has a child process.
fn has_children(pid: u64) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|t| std::fs::read_to_string(t.path().join("children")).is_ok_and(|c| !c.trim().is_empty()))
}
