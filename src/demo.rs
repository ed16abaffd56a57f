//! `relais demo`: a deliberately slow origin and a configuration that puts
//! relais in front of it, so a fresh checkout shows what relais does with
//! nothing else installed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::Config;

/// How long the demo origin takes to answer.
pub const DELAY: Duration = Duration::from_millis(300);

/// Starts the slow origin on an ephemeral port; returns its address.
pub async fn start_origin() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service_fn(origin))
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn origin(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    tokio::time::sleep(DELAY).await;
    let now = httpdate::fmt_http_date(SystemTime::now());
    let (status, cache_control, content_type, body): (_, _, _, String) = match req.uri().path() {
        "/" => (
            StatusCode::OK,
            "public, max-age=60",
            "text/html; charset=utf-8",
            format!("<!doctype html><h1>relais demo</h1><p>rendered by the slow origin at {now}</p>\n"),
        ),
        "/static/app.js" => {
            (StatusCode::OK, "public, max-age=3600", "text/javascript", "console.log('hello from relais');\n".into())
        }
        "/api/time" => (StatusCode::OK, "no-store", "application/json", format!("{{\"time\":\"{now}\"}}\n")),
        _ => (StatusCode::NOT_FOUND, "max-age=10", "text/plain", "not found\n".into()),
    };
    let res = Response::builder()
        .status(status)
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::SERVER, "demo-origin/1.0")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response");
    Ok(res)
}

/// The configuration that fronts the demo origin, listening on `listen`.
pub fn config(origin: SocketAddr, listen: SocketAddr, admin: SocketAddr) -> Config {
    let cache_dir = std::env::temp_dir().join("relais-demo-cache");
    let toml = format!(
        r#"
[server]
listen = ["{listen}"]

[admin]
listen = "{admin}"

[cache]
memory_capacity = "64MiB"
disk_path = "{}"
disk_capacity = "256MiB"
max_object_size = "64MiB"

[upstreams.demo]
servers = ["{origin}"]

[[routes]]
path = "/"
upstream = "demo"
cache = {{ default_ttl = "30s" }}
"#,
        cache_dir.display()
    );
    Config::from_toml(&toml, "demo").expect("demo config is valid")
}

/// The first free port at or after `port` on 127.0.0.1.
pub fn free_port(port: u16) -> u16 {
    (port..port.saturating_add(100)).find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()).unwrap_or(0)
}
