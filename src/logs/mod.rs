//! The logs: the error log (everything relais says through `tracing`) and the
//! access log (one line per request, formatted in [`access`](mod@access)).
//!
//! Both are written through a [`writer::Writer`]: a bounded buffer and a
//! thread per destination, so a reader that is slow, stalled or gone costs
//! lines (counted in `relais_log_dropped_total`), never a request's time, and
//! a failed write never panics. One destination has one writer: with neither
//! `log.file` nor `log.error_file`, both logs share stderr's, in order.
//!
//! The binary calls [`init`] once; it installs the `tracing` subscriber with a
//! reloadable level. A reload [`prepare`]s the new settings (opening new
//! files, so a bad path refuses the reload) and commits them once the rest of
//! the configuration is accepted. Without [`init`] (relais embedded as a
//! library), access lines are `tracing` events on target `relais::access`.

pub mod access;
mod writer;

use std::io;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{ConfigError, LogColor, LogConfig, LogFormat};
pub use writer::Target;
use writer::Writer;

static LOGS: OnceLock<Logs> = OnceLock::new();

struct Logs {
    access: ArcSwap<Writer>,
    error: ArcSwap<Writer>,
    /// Every writer in use, one per destination.
    writers: Mutex<Vec<Arc<Writer>>>,
    /// The error log carries colour codes (decided at start, from `color`).
    ansi: bool,
    color: LogColor,
    json: bool,
    /// `RUST_LOG` was set and valid: it, not `log.level`, filters the error log.
    from_env: bool,
    level: Mutex<String>,
    filter: reload::Handle<EnvFilter, Registry>,
}

/// Opens the log destinations `log` names and makes them the process's logs
/// (the `tracing` subscriber included). Errors name the file and the key.
pub fn init(log: &LogConfig) -> Result<(), ConfigError> {
    let (access, error) = open(log, &[])?;
    let error_on_stderr = *error.target() == Target::Stderr;
    let ansi = match log.color {
        LogColor::Auto => error_on_stderr && io::IsTerminal::is_terminal(&io::stderr()),
        LogColor::Always => true,
        LogColor::Never => false,
    };
    let rust_log = std::env::var("RUST_LOG").ok();
    let env = rust_log.as_ref().and_then(|v| EnvFilter::builder().parse(v).ok());
    let from_env = env.is_some();
    let (filter, handle) = reload::Layer::new(env.unwrap_or_else(|| filter(log)));
    let json = log.format == LogFormat::Json;
    let fmt = tracing_subscriber::fmt::layer().with_writer(ErrorLog).with_ansi(ansi).log_internal_errors(false);
    let fmt = match json {
        true => Box::new(fmt.json().flatten_event(true)) as Box<dyn tracing_subscriber::Layer<_> + Send + Sync>,
        false => Box::new(fmt.with_target(true)),
    };
    let logs = Logs {
        access: ArcSwap::new(access.clone()),
        error: ArcSwap::new(error.clone()),
        writers: Mutex::new(distinct(&[access, error])),
        ansi,
        color: log.color,
        json,
        from_env,
        level: Mutex::new(log.level.as_str().to_string()),
        filter: handle,
    };
    if LOGS.set(logs).is_err() {
        return Err(ConfigError::Parse("the logs were set up already".into()));
    }
    // Another subscriber may be in place (a test's): then it gets the error log.
    let _ = Registry::default().with(filter).with(fmt).try_init();
    if let (Some(value), false) = (rust_log, from_env) {
        tracing::warn!(RUST_LOG = %value, "RUST_LOG is not a filter; log.level is used");
    }
    Ok(())
}

/// The level filter `log` asks for.
fn filter(log: &LogConfig) -> EnvFilter {
    EnvFilter::builder().parse(log.level.as_str()).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The access and error writers for `log`: kept from `current` when the
/// destination is the same, else opened.
fn open(log: &LogConfig, current: &[Arc<Writer>]) -> Result<(Arc<Writer>, Arc<Writer>), ConfigError> {
    let mut made: Vec<Arc<Writer>> = Vec::new();
    let mut writer = |file: Option<&std::path::Path>, key: &str| -> Result<Arc<Writer>, ConfigError> {
        let target = Target::new(file);
        if let Some(w) = current.iter().chain(&made).find(|w| *w.target() == target) {
            return Ok(w.clone());
        }
        let failed = |e: io::Error| ConfigError::File {
            file: file.map_or_else(|| "stderr".into(), |f| f.to_path_buf()),
            key: key.into(),
            reason: format!("cannot open it: {e}"),
        };
        let w = Arc::new(Writer::start(target.clone(), target.open().map_err(failed)?).map_err(failed)?);
        made.push(w.clone());
        Ok(w)
    };
    let access = writer(log.file.as_deref(), "log.file")?;
    let error = writer(log.error_file.as_deref(), "log.error_file")?;
    Ok((access, error))
}

fn distinct(writers: &[Arc<Writer>]) -> Vec<Arc<Writer>> {
    let mut out: Vec<Arc<Writer>> = Vec::new();
    for w in writers {
        if !out.iter().any(|o| Arc::ptr_eq(o, w)) {
            out.push(w.clone());
        }
    }
    out
}

/// What `relais check` does for `[log]`: the files can be opened for appending
/// (and are created, as `nginx -t` creates its logs).
pub fn check(log: &LogConfig) -> Result<(), ConfigError> {
    for (file, key) in [(&log.file, "log.file"), (&log.error_file, "log.error_file")] {
        if let Some(file) = file {
            Target::File(file.clone()).open().map_err(|e| ConfigError::File {
                file: file.clone(),
                key: key.into(),
                reason: format!("cannot open it: {e}"),
            })?;
        }
    }
    Ok(())
}

/// New log settings, their files open, waiting for the rest of a reload.
pub struct Prepared {
    change: Option<(Arc<Writer>, Arc<Writer>, String)>,
}

/// Opens what `log` names that is not open yet; an error refuses the reload.
/// Without [`init`] there is nothing to change.
pub fn prepare(log: &LogConfig) -> Result<Prepared, ConfigError> {
    let Some(logs) = LOGS.get() else { return Ok(Prepared { change: None }) };
    let current = logs.writers.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let (access, mut error) = open(log, &current)?;
    if logs.ansi && *error.target() != Target::Stderr && *error.target() != *logs.error.load().target() {
        tracing::warn!("log.error_file changed while the error log is in colour: restart relais to apply it");
        error = logs.error.load_full();
    }
    if log.color != logs.color {
        tracing::warn!("log.color changed: restart relais to apply it");
    }
    if (log.format == LogFormat::Json) != logs.json {
        tracing::warn!(
            "log.format changed between json and text: the access log follows now, the error log after a restart"
        );
    }
    Ok(Prepared { change: Some((access, error, log.level.as_str().to_string())) })
}

impl Prepared {
    /// Puts the settings in force: new lines go to the new destinations, the
    /// error log filters by the new level.
    pub fn commit(self) {
        let (Some(logs), Some((access, error, level))) = (LOGS.get(), self.change) else { return };
        logs.access.store(access.clone());
        logs.error.store(error.clone());
        // Writers no longer used end once they have written what they hold.
        *logs.writers.lock().unwrap_or_else(PoisonError::into_inner) = distinct(&[access, error]);
        let mut current = logs.level.lock().unwrap_or_else(PoisonError::into_inner);
        if *current == level {
            return;
        }
        if logs.from_env {
            tracing::warn!("log.level changed, but RUST_LOG is set and decides");
            return;
        }
        let parsed = EnvFilter::builder().parse(&level).unwrap_or_else(|_| EnvFilter::new("info"));
        match logs.filter.reload(parsed) {
            Ok(()) => *current = level,
            Err(e) => tracing::warn!(error = %e, "cannot change the log level"),
        }
    }
}

/// Reopens the log files by name (SIGUSR1, after logrotate renamed them).
pub fn reopen() {
    if let Some(logs) = LOGS.get() {
        for w in logs.writers.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            w.reopen();
        }
        tracing::info!("log files reopened");
    }
}

/// Waits until every queued line is written, for at most `timeout` (a stalled
/// reader is not waited for); true if all were.
pub fn flush(timeout: Duration) -> bool {
    let Some(logs) = LOGS.get() else { return true };
    let deadline = Instant::now() + timeout;
    let writers = logs.writers.lock().unwrap_or_else(PoisonError::into_inner).clone();
    writers.iter().all(|w| w.flush(deadline))
}

/// Whether access lines go anywhere: always once [`init`]ed; embedded, when
/// the application's subscriber listens to `relais::access`.
pub fn access_enabled() -> bool {
    LOGS.get().is_some() || tracing::enabled!(target: "relais::access", tracing::Level::INFO)
}

/// Writes one access line in `format`.
pub fn access(line: &access::Line, format: LogFormat) {
    match LOGS.get() {
        Some(logs) => logs.access.load().line(line.format(format).as_bytes()),
        None => tracing::info!(target: "relais::access", "{}", line.fields()),
    }
}

/// The `tracing` subscriber's writer: each event, formatted, is one line for
/// the error log's writer.
struct ErrorLog;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ErrorLog {
    type Writer = ErrorLine;
    fn make_writer(&'a self) -> ErrorLine {
        ErrorLine
    }
}

struct ErrorLine;

impl io::Write for ErrorLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(logs) = LOGS.get() {
            logs.error.load().line(&one_line(buf, logs.ansi, logs.json));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An event as one line: control bytes in it (a newline an origin's error
/// message carried, a terminal escape) become `\xHH`, as in the access log
/// (in JSON, which has no `\x`, `\u00HH`: the JSON formatter has escaped all
/// but DEL and the C1 controls); the colour codes relais adds itself stay when
/// the log is in colour.
fn one_line(event: &[u8], ansi: bool, json: bool) -> Vec<u8> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    let mut out = Vec::with_capacity(body.len() + 1);
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        // U+0080..U+009F, the C1 controls some terminals act on.
        let c1 = b == 0xc2 && body.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n));
        if (b < 0x20 && !(b == 0x1b && ansi) && b != b'\t') || b == 0x7f || c1 {
            let n = if c1 { 2 } else { 1 };
            if json {
                // The character, not its UTF-8 bytes: C2 9B is U+009B.
                let c = if c1 { u32::from(body[i + 1]) } else { u32::from(b) };
                out.extend_from_slice(format!("\\u{c:04X}").as_bytes());
            } else {
                for &x in &body[i..i + n] {
                    out.extend_from_slice(format!("\\x{x:02X}").as_bytes());
                }
            }
            i += n;
        } else {
            out.push(b);
            i += 1;
        }
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_event_stays_one_line() {
        let out = one_line(b"origin said \"a\nb\r\" \x1b[2J \xc2\x9b done\n", false, false);
        assert_eq!(out, b"origin said \"a\\x0Ab\\x0D\" \\x1B[2J \\xC2\\x9B done\n");
        let coloured = one_line(b"\x1b[2mtime\x1b[0m a\nb\n", true, false);
        assert_eq!(coloured, b"\x1b[2mtime\x1b[0m a\\x0Ab\n");
        assert_eq!(one_line("d\u{e9}j\u{e0} vu\n".as_bytes(), false, false), "d\u{e9}j\u{e0} vu\n".as_bytes());
    }

    #[test]
    fn a_json_event_stays_json() {
        // What tracing's JSON formatter leaves: DEL and the C1 controls as they are.
        let event = "{\"fields\":{\"message\":\"a\u{7f}b\u{9b}c\u{e9}\"}}\n";
        let out = one_line(event.as_bytes(), false, true);
        let line = std::str::from_utf8(&out).unwrap();
        assert!(line.ends_with('\n') && line.bytes().all(|b| b != 0x7f), "{line:?}");
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(parsed["fields"]["message"], "a\u{7f}b\u{9b}c\u{e9}");
    }
}
