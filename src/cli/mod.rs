//! `relais status`, `top`, `purge`, `reload`, `maintenance`, `cache` and `upgrade`: the commands that ask a
//! running relais over its admin API (`admin.listen`, `admin.token`), as
//! `varnishadm` asks varnishd.
//!
//! The address and token come from `[admin]` of the configuration file
//! (with `RELAIS_ADMIN__*` over it) or from `--admin` and `--token`. The
//! exit code says what went wrong, so that scripts need not read the words:
//! see [`Failure::code`] and the README's "Command line".

mod status;
mod top;
mod upgrade;

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use relais::config::ConfigError;
use serde_json::{Value, json};

/// How long a command waits for the admin API to connect and to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The commands for a running relais.
#[derive(Subcommand)]
pub(crate) enum Ask {
    /// One screen on a running relais: version, uptime, listeners, rates, hit ratio, tiers, upstreams.
    Status {
        #[command(flatten)]
        to: Target,
        /// Print `/stats` as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Remove cached entries: one URL, every URL under a prefix, or every entry with a tag.
    #[command(group = clap::ArgGroup::new("what").required(true).args(["url", "prefix", "tag"]))]
    Purge {
        #[command(flatten)]
        to: Target,
        /// An absolute URL (http://host/path?query); both schemes are purged.
        url: Option<String>,
        /// Every URL that starts with this absolute URL.
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// Every entry the origin tagged so (Cache-Tag, Surrogate-Key); repeat for more.
        #[arg(long, value_name = "T")]
        tag: Vec<String>,
        /// Mark stale instead of removing: served while revalidated.
        #[arg(long)]
        soft: bool,
    },
    /// Re-read the configuration file of the running relais and say whether it was applied.
    Reload {
        #[command(flatten)]
        to: Target,
    },
    /// Every second, the busiest routes and upstreams (like varnishtop); Ctrl-C ends it.
    Top {
        #[command(flatten)]
        to: Target,
        /// Stop after this many screens.
        #[arg(short = 'n', long, value_name = "N")]
        count: Option<u64>,
    },
    /// Start the binary anew in place of the running relais (SIGUSR2) and say whether it took over.
    Upgrade {
        #[command(flatten)]
        to: Target,
    },
    /// Turn maintenance mode on or off (503 with Retry-After except for
    /// `[maintenance] allow`), for every route or one; without on/off, show it.
    Maintenance {
        #[command(flatten)]
        to: Target,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        switch: Option<String>,
        /// Only this route (its name, as `relais check` lists it).
        #[arg(long, value_name = "NAME")]
        route: Option<String>,
    },
    /// Show what is cached for a URL (as `/cache?url=` does).
    Cache {
        #[command(flatten)]
        to: Target,
        /// An absolute URL (http://host/path?query).
        url: String,
    },
}

/// Where the admin API is and how to be let in.
#[derive(Args)]
pub(crate) struct Target {
    /// Configuration file whose `[admin]` gives the address and token.
    #[arg(short, long, default_value = "relais.toml")]
    config: PathBuf,
    /// The admin listener, instead of the file's `admin.listen`.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// The admin token, instead of the file's `admin.token` (or RELAIS_ADMIN__TOKEN).
    #[arg(long, value_name = "T")]
    token: Option<String>,
}

/// Why a command failed; each kind has its own exit code.
enum Failure {
    /// The file or the arguments: 1.
    Usage(String),
    /// Nothing answers at the address, or not in time: 3.
    Unreachable(String),
    /// 401 or 403: the token is missing or wrong (or the address is denied): 4.
    Denied(String),
    /// 400 or 422: the request or the reload was refused: 5.
    Refused(String),
    /// Anything else the admin API answered: 1.
    Other(String),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) | Failure::Other(_) => 1,
            Failure::Unreachable(_) => 3,
            Failure::Denied(_) => 4,
            Failure::Refused(_) => 5,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Usage(m)
            | Failure::Unreachable(m)
            | Failure::Denied(m)
            | Failure::Refused(m)
            | Failure::Other(m) => m,
        }
    }
}

/// Runs one command; what it prints goes to stdout, a failure to stderr.
pub(crate) fn run(ask: Ask) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(answer(ask)) {
        // A reader that is gone is not an error (as main.rs's `say`).
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "relais: {}", f.message());
            ExitCode::from(f.code())
        }
    }
}

async fn answer(ask: Ask) -> Result<String, Failure> {
    match ask {
        Ask::Status { to, json } => {
            let admin = Admin::new(&to)?;
            let first = admin.call(Method::GET, "/stats", None).await?;
            if json {
                return Ok(format!("{first}\n"));
            }
            // A second look a second later gives the rate now, as varnishstat's does.
            let started = std::time::Instant::now();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let second = admin.call(Method::GET, "/stats", None).await?;
            Ok(status::render(&second, &first, started.elapsed(), admin.addr))
        }
        Ask::Purge { to, url, prefix, tag, soft } => {
            let admin = Admin::new(&to)?;
            let body = match (url, prefix) {
                (Some(url), _) => json!({"url": url, "soft": soft}),
                (None, Some(prefix)) => json!({"prefix": prefix, "soft": soft}),
                (None, None) => json!({"tags": tag, "soft": soft}),
            };
            let v = admin.call(Method::POST, "/purge", Some(body)).await?;
            let how = if soft { "marked stale" } else { "purged" };
            let n = v["purged"].as_u64().unwrap_or(0);
            let entries = if n == 1 { "entry" } else { "entries" };
            let mut said = format!("{how} {n} {entries} ({})\n", v["kind"].as_str().unwrap_or("?"));
            // The cluster's bus could not take it: the other nodes do not have it yet.
            if let Some(warning) = v["warning"].as_str() {
                said.push_str(&format!("warning: {warning}\n"));
            }
            Ok(said)
        }
        Ask::Maintenance { to, switch, route } => {
            let admin = Admin::new(&to)?;
            let state = match switch {
                Some(s) => {
                    let body = json!({"on": s == "on", "route": route});
                    admin.call(Method::POST, "/maintenance", Some(body)).await?
                }
                None if route.is_some() => return Err(Failure::Usage("--route needs on or off".into())),
                None => admin.call(Method::GET, "/maintenance", None).await?,
            };
            let routes: Vec<&str> =
                state["routes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            Ok(match (state["all"].as_bool() == Some(true), routes.is_empty()) {
                (true, _) => "maintenance: on for every route\n".to_string(),
                (false, false) => format!("maintenance: on for {}\n", routes.join(", ")),
                (false, true) => "maintenance: off\n".to_string(),
            })
        }
        Ask::Reload { to } => {
            let admin = Admin::new(&to)?;
            admin.call(Method::POST, "/reload", None).await?;
            Ok(format!("configuration reloaded by relais at {}\n", admin.addr))
        }
        Ask::Top { to, count } => {
            let admin = Admin::new(&to)?;
            let mut before = admin.call(Method::GET, "/stats", None).await?;
            let mut at = std::time::Instant::now();
            // On a terminal each screen replaces the last; into a pipe they follow one another.
            let clear = if std::io::stdout().is_terminal() { "\x1b[H\x1b[2J" } else { "" };
            for _ in 0..count.unwrap_or(u64::MAX) {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
                let now = admin.call(Method::GET, "/stats", None).await?;
                let screen = top::frame(&now, &before, at.elapsed(), admin.addr);
                let _ = writeln!(std::io::stdout(), "{clear}{screen}");
                (before, at) = (now, std::time::Instant::now());
            }
            Ok(String::new())
        }
        Ask::Upgrade { to } => upgrade::run(&Admin::new(&to)?).await,
        Ask::Cache { to, url } => {
            let admin = Admin::new(&to)?;
            let v = admin.call(Method::GET, &format!("/cache?url={}", encode(&url)), None).await?;
            Ok(status::entries(&v))
        }
    }
}

/// The admin API of one running relais.
struct Admin {
    addr: SocketAddr,
    token: Option<String>,
}

impl Admin {
    fn new(to: &Target) -> Result<Admin, Failure> {
        let file = match (relais::Config::load_admin(&to.config), to.admin) {
            (Ok(a), _) => Some(a),
            // Flags alone are enough; the token may then come from the environment.
            (Err(ConfigError::Missing(_)), Some(_)) => None,
            (Err(e), _) => return Err(Failure::Usage(e.to_string())),
        };
        let env_token = || std::env::var("RELAIS_ADMIN__TOKEN").ok();
        let token = to.token.clone().or_else(|| file.as_ref().map_or_else(env_token, |f| f.token.clone()));
        let listen = to.admin.or(file.map(|f| f.listen)).expect("an address from the flag or the file");
        Ok(Admin { addr: reachable(listen), token })
    }

    /// Sends one request and returns the JSON answer of a 2xx.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let addr = self.addr;
        let unreachable = |e: String| Failure::Unreachable(format!("admin API at {addr} unreachable: {e}"));
        let (status, bytes) = tokio::time::timeout(TIMEOUT, self.send(method, path, body))
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", TIMEOUT.as_secs())))?
            .map_err(unreachable)?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
        if status.is_success() {
            return Ok(value);
        }
        let why =
            value["error"].as_str().map_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string(), Into::into);
        let said = format!("admin API at {addr}: {status}: {why}");
        Err(match status {
            StatusCode::UNAUTHORIZED => {
                Failure::Denied(format!("{said} (give --token, admin.token or RELAIS_ADMIN__TOKEN)"))
            }
            StatusCode::FORBIDDEN => Failure::Denied(format!("{said} (a wrong token, or admin.deny)")),
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Failure::Refused(said),
            _ => Failure::Other(said),
        })
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Bytes), String> {
        let stream = tokio::net::TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        // The admin API answers only to its own address as Host (admin/browser.rs).
        let mut req = Request::builder().method(method).uri(path).header(header::HOST, self.addr.to_string());
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = Full::new(Bytes::from(body.map_or_else(String::new, |b| b.to_string())));
        let req = req.body(body).map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let bytes = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, bytes))
    }
}

/// A wildcard listen address is reached on loopback of its family.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
        _ => listen,
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
