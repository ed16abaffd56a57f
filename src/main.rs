//! The `relais` command: parse arguments, load the configuration, run the
//! proxy, and turn signals into reloads (SIGHUP), graceful stops (SIGTERM,
//! SIGINT, SIGQUIT), reopened log files (SIGUSR1) and binary upgrades
//! (SIGUSR2: this binary's path started again, handed the listeners).
//!
//! Nothing here prints with `println!`/`eprintln!`, which panic when the
//! reader is gone: the few words said outside the logs go through [`say`],
//! which ignores a failed write.

mod cli;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use relais::Config;
use relais::config::LogConfig;
use tokio::signal::unix::{Signal, SignalKind, signal};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "relais",
    version,
    about = "A caching reverse proxy",
    after_help = "Examples:\n  relais demo                         slow demo origin + relais on 127.0.0.1:8080\n  relais check -c /etc/relais.toml    validate a configuration (like nginx -t)\n  relais run -c /etc/relais.toml      run; SIGHUP reloads, SIGTERM or SIGQUIT stops gracefully, SIGUSR1 reopens the logs,\n                                      SIGUSR2 starts the binary anew and hands it the listeners (upgrade)\n  relais status -c /etc/relais.toml   one screen on the running relais (admin API)\n  relais purge http://shop.test/a     remove one URL from the cache\n\nExit codes of status, top, purge, reload, cache, upgrade: 0 ok, 1 error, 2 usage, 3 admin API unreachable,\n4 token missing or wrong, 5 request or reload refused"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "relais.toml")]
        config: PathBuf,
    },
    /// Validate a configuration and print a summary; exit 1 if invalid.
    Check {
        #[arg(short, long, default_value = "relais.toml")]
        config: PathBuf,
    },
    /// Start a slow demo origin and relais in front of it.
    Demo {
        /// First port to try for the proxy.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    #[command(flatten)]
    Ask(cli::Ask),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config).map_err(|e| e.to_string()).and_then(|c| {
            let certificates = relais::check(&c)?;
            Ok((c, certificates))
        }) {
            Ok((c, certificates)) => {
                say_out(&summary(&config, &c));
                for warning in c.warnings() {
                    say(&format!("warning: {warning}"));
                }
                // An expired or not yet valid one was refused, as `run` refuses it.
                let now = std::time::SystemTime::now();
                for cert in &certificates {
                    let date = httpdate::fmt_http_date(cert.not_after);
                    let left = cert.days_left(now);
                    say_out(&format!("  tls      {}: valid until {date} ({left} days)\n", cert.names.join(", ")));
                }
                say_out(&format!("configuration {} is valid\n", config.display()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                say(&e);
                ExitCode::FAILURE
            }
        },
        Command::Run { config: path } => {
            // Read first: an upgrade started from a path that is replaced since starts the new file.
            let program = std::env::current_exe();
            let successor = match relais::Successor::from_env() {
                Ok(s) => s,
                Err(e) => {
                    say(&format!("binary upgrade: {e}"));
                    return ExitCode::FAILURE;
                }
            };
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    say(&e.to_string());
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = relais::logs::init(&config.log) {
                say(&e.to_string());
                return ExitCode::FAILURE;
            }
            raise_open_files_limit();
            if let Err(e) = relais::notify_systemd() {
                tracing::warn!(error = %e, "systemd will not hear from relais");
            }
            let code = runtime(config.workers()).block_on(run(path, config, program, successor));
            // What is queued is written, unless the reader is stalled.
            relais::logs::flush(std::time::Duration::from_secs(2));
            code
        }
        Command::Demo { port } => {
            if let Err(e) = relais::logs::init(&LogConfig::default()) {
                say(&e.to_string());
                return ExitCode::FAILURE;
            }
            runtime(2).block_on(demo(port))
        }
        Command::Ask(ask) => cli::run(ask),
    }
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("tokio runtime")
}

/// The signals relais answers; installed before anything listens, so that
/// none of them can end the process with its default action once it serves.
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
    quit: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// A binary upgrade in progress: the new process's pid once it serves.
type Upgrading = std::pin::Pin<Box<dyn Future<Output = Result<u32, relais::UpgradeError>> + Send>>;

async fn run(
    path: PathBuf,
    config: Config,
    program: std::io::Result<PathBuf>,
    successor: Option<relais::Successor>,
) -> ExitCode {
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let started = match successor {
        Some(s) => s.start(config).await,
        None => relais::start(config).await,
    };
    let handle = match started {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in handle.addrs() {
        tracing::info!(%addr, config = %path.display(), "relais listening");
    }
    let s = &mut signals;
    let mut upgrading: Option<Upgrading> = None;
    let stop = loop {
        tokio::select! {
            _ = s.hup.recv() => { let _ = handle.reload_from_source(); }
            _ = s.usr1.recv() => relais::logs::reopen(),
            _ = s.usr2.recv() => match (&upgrading, &program) {
                (Some(_), _) => tracing::warn!("SIGUSR2: a binary upgrade is in progress already"),
                (None, Err(e)) => tracing::error!(error = %e, "SIGUSR2: cannot tell which binary to start"),
                (None, Ok(program)) => {
                    tracing::info!(program = %program.display(), "SIGUSR2: binary upgrade");
                    let args = std::env::args_os().skip(1).collect();
                    upgrading = Some(Box::pin(handle.upgrade(program.clone(), args)));
                }
            },
            done = async { upgrading.as_mut().expect("guarded").await }, if upgrading.is_some() => {
                upgrading = None;
                match done {
                    Ok(pid) => break Err(pid),
                    Err(e) => tracing::error!("binary upgrade failed; this process serves on: {e}"),
                }
            }
            _ = s.term.recv() => break Ok("SIGTERM"),
            _ = s.int.recv() => break Ok("SIGINT"),
            _ = s.quit.recv() => break Ok("SIGQUIT"),
        }
    };
    // An upgrade left half-way stops its new process.
    drop(upgrading);
    let shutdown: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match stop {
        Ok(name) => {
            tracing::info!(signal = name, "stopping: finishing in-flight requests");
            Box::pin(handle.shutdown())
        }
        Err(pid) => {
            tracing::info!(pid, "binary upgrade: the new process serves; finishing in-flight requests");
            Box::pin(handle.hand_over(pid))
        }
    };
    // While draining, log files can still be rotated; another stop signal changes nothing.
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = s.usr1.recv() => relais::logs::reopen(),
            _ = s.hup.recv() => tracing::info!("stopping: SIGHUP ignored"),
            _ = s.usr2.recv() => {}
            _ = s.term.recv() => {}
            _ = s.int.recv() => {}
            _ = s.quit.recv() => {}
        }
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// A line on stderr for the operator; a reader that is gone is not an error.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "relais: {text}");
}

/// Text on stdout (`check`'s summary), likewise.
fn say_out(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

async fn demo(port: u16) -> ExitCode {
    let origin = match relais::demo::start_origin().await {
        Ok(a) => a,
        Err(e) => {
            say(&format!("cannot start the demo origin: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let listen = SocketAddr::from(([127, 0, 0, 1], relais::demo::free_port(port)));
    let admin = SocketAddr::from(([127, 0, 0, 1], relais::demo::free_port(9090)));
    let handle = match relais::start(relais::demo::config(origin, listen, admin)).await {
        Ok(h) => h,
        Err(e) => {
            say(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    let addr = handle.addrs()[0];
    say_out(&format!(
        "\nrelais demo: a slow origin ({} ms per response) on {origin}, relais in front on {addr}.\n\
         Try:\n  \
         curl -si http://{addr}/               # cacheable page: first slow, then fast\n  \
         curl -si http://{addr}/static/app.js  # cacheable for an hour\n  \
         curl -si http://{addr}/api/time       # no-store: always goes to the origin\n  \
         curl -s -o /dev/null -w '%{{time_total}}s\\n' http://{addr}/   # time it\n\
         Ctrl-C stops.\n\n",
        relais::demo::DELAY.as_millis()
    ));
    let _ = tokio::signal::ctrl_c().await;
    handle.shutdown().await;
    ExitCode::SUCCESS
}

/// Each connection holds a descriptor (two when proxied): run with the soft
/// limit raised to the hard one, as nginx's `worker_rlimit_nofile` does.
fn raise_open_files_limit() {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(0);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) if now > before => tracing::info!(from = before, to = now, "open files limit raised"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, limit = before, "cannot raise the open files limit"),
    }
}

/// The one-screen summary printed by `relais check`.
fn summary(path: &Path, c: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{}:", path.display());
    let listen: Vec<String> = c.server.listen.iter().map(ToString::to_string).collect();
    let _ = writeln!(s, "  listen   {} (HTTP/1.1 + h2c)", listen.join(", "));
    if let Some(tls) = &c.server.tls {
        let listen: Vec<String> = tls.listen.iter().map(ToString::to_string).collect();
        let quic = match (tls.http3, tls.early_data) {
            (true, true) => " + HTTP/3 on UDP, 0-RTT for safe requests",
            (true, false) => " + HTTP/3 on UDP",
            _ => "",
        };
        let _ = writeln!(
            s,
            "  tls      {} (HTTP/1.1 + h2 by ALPN{quic}), {} certificate(s)",
            listen.join(", "),
            tls.certificates.len()
        );
    }
    let token = if c.admin.token.is_some() { "token set" } else { "no token" };
    let _ = writeln!(s, "  admin    {} ({token})", c.admin.listen);
    let _ = writeln!(
        s,
        "  cache    memory {} · disk {} at {} · max object {}",
        c.cache.memory_capacity,
        c.cache.disk_capacity,
        c.cache.disk_path.display(),
        c.cache.max_object_size
    );
    let g = &c.guard;
    let rules = g.rules.len() + g.file_rules.len();
    let mut guard =
        vec![format!("{} allowed / {} denied blocks", g.allow.0.len(), g.deny.0.len()), format!("{rules} rules")];
    if let Some(real_ip) = &g.real_ip {
        guard.push(format!("real ip from {} behind {} trusted blocks", real_ip.header.0, real_ip.trusted.0.len()));
    }
    for z in &c.limit_req {
        guard.push(format!("limit_req {} {} burst {}", z.name, z.rate, z.burst));
    }
    for z in &c.limit_conn {
        guard.push(format!("limit_conn {} max {}", z.name, z.max));
    }
    let _ = writeln!(s, "  guard    {}", guard.join(" · "));
    let z = &c.compression;
    let compression = match z.enabled {
        true => format!(
            "{} from {} · copies of cached bodies up to {}",
            z.encodings.iter().map(|e| e.token()).collect::<Vec<_>>().join(", "),
            z.min_length,
            z.stored_memory
        ),
        false => "off".into(),
    };
    let _ = writeln!(s, "  compress {compression}");
    let b = &c.buffering;
    let buffering = match b.response {
        true => format!(
            "responses read ahead: {} each in memory, then up to {} on disk ({} for all)",
            b.response_memory, b.response_file, b.response_disk
        ),
        false => "responses not read ahead".into(),
    };
    let uploads = match c.routes.iter().any(|r| r.request_buffering) {
        true => {
            format!(" · uploads read whole: {} each in memory, {} on disk for all", b.request_memory, b.request_disk)
        }
        false => String::new(),
    };
    let _ = writeln!(s, "  buffer   {buffering}{uploads}");
    let l = &c.log;
    let place = |f: &Option<PathBuf>| f.as_ref().map_or("stderr".to_string(), |f| f.display().to_string());
    let access = match l.access {
        true => format!("access log ({}) to {}", format!("{:?}", l.format).to_lowercase(), place(&l.file)),
        false => "no access log".into(),
    };
    let _ = writeln!(s, "  log      {access} · error log at {} to {}", l.level.as_str(), place(&l.error_file));
    s.push_str(&relais::ring(c).unwrap_or_default());
    let _ = writeln!(s, "  upstreams");
    for (name, u) in &c.upstreams {
        let servers: Vec<String> = u
            .servers
            .iter()
            .map(|s| {
                if s.weight() == 1 {
                    s.address().to_string()
                } else {
                    format!("{} (weight {})", s.address(), s.weight())
                }
            })
            .collect();
        let mut extra = String::new();
        if let Some(h) = &u.health {
            extra.push_str(&format!(" · checks {} every {}", h.path, h.interval));
        }
        if u.outlier.is_some() {
            extra.push_str(" · outlier ejection");
        }
        if !u.retry_on.is_empty() {
            let on: Vec<String> = u.retry_on.iter().map(ToString::to_string).collect();
            extra.push_str(&format!(" · retry on {}", on.join(", ")));
        }
        let _ = writeln!(s, "    {name:<12} {}: {}{extra}", u.balance.as_str(), servers.join(", "));
    }
    let _ = writeln!(s, "  routes");
    for ((i, r), name) in c.routes.iter().enumerate().zip(c.route_names()) {
        let host = r.host.as_ref().map_or("*".to_string(), ToString::to_string);
        let regex = r.path_regex.as_ref().map_or(String::new(), |re| format!(" ~ {re}"));
        let headers: String = r.headers.iter().map(|(k, v)| format!(" [{k}: {v}]")).collect();
        let strip = if r.strip_prefix { " (strip prefix)" } else { "" };
        let cache = if r.cache.bypass { " · no cache" } else { "" };
        let zones: Vec<&str> = r.limit_req.iter().chain(&r.limit_conn).map(String::as_str).collect();
        let limits = if zones.is_empty() { String::new() } else { format!(" · limits {}", zones.join(", ")) };
        let own = &r.guard;
        let guarded = !own.allow.is_empty() || !own.deny.is_empty() || !own.rules.is_empty() || !r.methods.0.is_empty();
        let guard = if guarded { " · own guard" } else { "" };
        let slice = r.cache.slice.map_or(String::new(), |sz| format!(" · slices of {sz}"));
        let mut plain = Vec::new();
        if !r.compression.on && z.enabled {
            plain.push("no compression");
        }
        if r.request_buffering {
            plain.push("uploads read whole");
        }
        let users = r.auth_basic.as_ref().map(|b| format!("basic auth ({} user(s))", b.users.len()));
        let asks = r.auth_request.as_ref().map(|a| format!("auth by {}", a.upstream));
        plain.extend(users.as_deref().into_iter().chain(asks.as_deref()));
        let rewrites = (!r.rewrite.is_empty()).then(|| format!("{} rewrite(s)", r.rewrite.len()));
        let pages = (!r.error_pages.is_empty()).then(|| format!("{} error page(s)", r.error_pages.len()));
        plain.extend(rewrites.as_deref().into_iter().chain(pages.as_deref()));
        let plain: String = plain.iter().map(|p| format!(" · {p}")).collect();
        let files =
            r.root.as_ref().or(r.alias.as_ref()).map_or(String::new(), |d| format!(" · files from {}", d.display()));
        // A default name is the host and path shown already.
        let named = if name == format!("{host}{}", r.path) { String::new() } else { format!("{name}: ") };
        let _ = writeln!(
            s,
            "    [{i}] {named}{host}{}{regex}{headers} → {}{strip}{cache}{slice}{limits}{guard}{plain}{files}",
            r.path,
            match (&r.answer, &r.upstream) {
                (Some(ret), _) => format!("return {}", ret.status),
                (None, Some(up)) => up.clone(),
                (None, None) => "(answers itself)".into(),
            }
        );
    }
    s
}
