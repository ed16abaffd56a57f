//! The `relais` command: parse arguments, load the configuration, run the
//! proxy, and turn signals into reloads (SIGHUP) and graceful stops
//! (SIGTERM, SIGINT).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use relais::Config;
use relais::config::{LogColor, LogConfig, LogFormat};
use tokio::signal::unix::{SignalKind, signal};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "relais",
    version,
    about = "A caching reverse proxy",
    after_help = "Examples:\n  relais demo                         slow demo origin + relais on 127.0.0.1:8080\n  relais check -c /etc/relais.toml    validate a configuration (like nginx -t)\n  relais run -c /etc/relais.toml      run; SIGHUP reloads, SIGTERM stops gracefully"
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config).map_err(|e| e.to_string()).and_then(|c| {
            let certificates = relais::tls::check(&c).map_err(|e| e.to_string())?;
            Ok((c, certificates))
        }) {
            Ok((c, certificates)) => {
                print!("{}", summary(&config, &c));
                // An expired or not yet valid one was refused, as `run` refuses it.
                let now = std::time::SystemTime::now();
                for cert in &certificates {
                    let date = httpdate::fmt_http_date(cert.not_after);
                    let left = cert.days_left(now);
                    println!("  tls      {}: valid until {date} ({left} days)", cert.names.join(", "));
                }
                println!("configuration {} is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("relais: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("relais: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(&config.log);
            raise_open_files_limit();
            runtime(config.workers()).block_on(run(path, config))
        }
        Command::Demo { port } => {
            init_logging(&LogConfig::default());
            runtime(2).block_on(demo(port))
        }
    }
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("tokio runtime")
}

async fn run(path: PathBuf, config: Config) -> ExitCode {
    let handle = match relais::start(config).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in handle.addrs() {
        tracing::info!(%addr, config = %path.display(), "relais listening");
    }
    let (mut hup, mut term, mut int) =
        match (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(h), Ok(t), Ok(i)) => (h, t, i),
            _ => {
                tracing::error!("cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
    loop {
        tokio::select! {
            _ = hup.recv() => { let _ = handle.reload_from_source(); }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping: finishing in-flight requests");
    handle.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn demo(port: u16) -> ExitCode {
    let origin = match relais::demo::start_origin().await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("relais: cannot start the demo origin: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listen = SocketAddr::from(([127, 0, 0, 1], relais::demo::free_port(port)));
    let admin = SocketAddr::from(([127, 0, 0, 1], relais::demo::free_port(9090)));
    let handle = match relais::start(relais::demo::config(origin, listen, admin)).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("relais: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = handle.addrs()[0];
    println!(
        "\nrelais demo: a slow origin ({} ms per response) on {origin}, relais in front on {addr}.\n\
         Try:\n  \
         curl -si http://{addr}/               # cacheable page: first slow, then fast\n  \
         curl -si http://{addr}/static/app.js  # cacheable for an hour\n  \
         curl -si http://{addr}/api/time       # no-store: always goes to the origin\n  \
         curl -s -o /dev/null -w '%{{time_total}}s\\n' http://{addr}/   # time it\n\
         Ctrl-C stops.\n",
        relais::demo::DELAY.as_millis()
    );
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

fn init_logging(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    // Colour codes only for a terminal: a file or a pipe gets plain text.
    let ansi = match log.color {
        LogColor::Auto => std::io::IsTerminal::is_terminal(&std::io::stderr()),
        LogColor::Always => true,
        LogColor::Never => false,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.with_target(true).try_init(),
    };
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
        let _ = writeln!(
            s,
            "  tls      {} (HTTP/1.1 + h2 by ALPN), {} certificate(s)",
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
            z.encodings.join(", "),
            z.min_length,
            z.stored_memory
        ),
        false => "off".into(),
    };
    let _ = writeln!(s, "  compress {compression}");
    let b = &c.buffering;
    let buffering = match b.response {
        true => format!(
            "responses read ahead: {} each in memory, then up to {} on disk",
            b.response_memory, b.response_file
        ),
        false => "responses not read ahead".into(),
    };
    let _ = writeln!(s, "  buffer   {buffering}");
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
            extra.push_str(&format!(" · retry on {}", u.retry_on.join(", ")));
        }
        let _ = writeln!(s, "    {name:<12} {:?}: {}{extra}", u.balance, servers.join(", "));
    }
    let _ = writeln!(s, "  routes");
    for (i, r) in c.routes.iter().enumerate() {
        let host = r.host.as_ref().map_or("*".to_string(), ToString::to_string);
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
        if !r.compression && z.enabled {
            plain.push("no compression");
        }
        if r.request_buffering {
            plain.push("uploads read whole");
        }
        let plain: String = plain.iter().map(|p| format!(" · {p}")).collect();
        let _ = writeln!(
            s,
            "    [{i}] {host}{}{headers} → {}{strip}{cache}{slice}{limits}{guard}{plain}",
            r.path, r.upstream
        );
    }
    s
}
