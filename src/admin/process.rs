//! The process's own figures, named as Prometheus's client libraries name
//! them (`process_resident_memory_bytes`, `process_open_fds`,
//! `process_cpu_seconds_total`, `process_start_time_seconds`), read from
//! `/proc/self` at scrape time. Linux only: elsewhere, or when `/proc` is not
//! mounted, they are left out.

use std::fmt::Write;

/// Clock ticks per second in `/proc/<pid>/stat`: the kernel's `USER_HZ`,
/// 100 on every architecture Linux exposes to user space that relais builds for.
const TICKS: f64 = 100.0;

/// Appends the process families to `out`, those that could be read.
pub(super) fn render(out: &mut String) {
    let mut figure = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
    };
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // Field numbers as proc(5) counts them, from 1: the state (3) is fields[0].
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let cpu = field(14).zip(field(15)).map(|(user, system)| (user + system) / TICKS);
    figure("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.", cpu);
    figure("process_open_fds", "gauge", "Open file descriptors.", open_fds());
    figure("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", resident_bytes());
    let start = boot_time().zip(field(22)).map(|(boot, ticks)| boot + ticks / TICKS);
    figure("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.", start);
}

fn open_fds() -> Option<f64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64)
}

/// `VmRSS` of `/proc/self/status`, given in kB.
fn resident_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: f64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024.0)
}

/// When the machine booted, Unix seconds (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn figures_are_read_and_plausible() {
        let mut out = String::new();
        super::render(&mut out);
        let value = |name: &str| -> f64 {
            let line = out.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{out}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e5, "{out}");
        assert!(value("process_open_fds") >= 3.0, "{out}");
        assert!(value("process_cpu_seconds_total") >= 0.0, "{out}");
        let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(start <= now + 1.0 && start > now - 86_400.0, "{start} vs {now}");
    }
}
