#![allow(unreachable_pub)] // shared by every test crate: its items are used across files
//! Test harness: real origins on 127.0.0.1:0 that count their hits, relais
//! started in-process through the library API, and a real HTTP client.
#![allow(dead_code)]

pub mod conf;
pub mod process;
pub mod raw;
pub mod rng;
pub mod tls;
pub mod wait;

#[allow(unused_imports)]
pub use conf::{Conf, proxy_to};
#[allow(unused_imports)]
pub use wait::{settle, until};

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
type Handler = Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|e| match e {}).boxed()
}

/// A response with a text body and the given headers.
pub fn text(status: u16, body: &str, headers: &[(&str, &str)]) -> Response<Body> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full(body.to_string())).unwrap()
}

/// An origin server with per-path handlers and hit counters.
pub struct OriginBuilder {
    routes: Vec<(String, Handler)>,
}

pub struct Origin {
    pub addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

pub fn origin() -> OriginBuilder {
    OriginBuilder { routes: Vec::new() }
}

impl OriginBuilder {
    /// Handles paths starting with `prefix` (longest prefix wins).
    pub fn route<F, Fut>(mut self, prefix: &str, f: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        self.routes.push((prefix.to_string(), Arc::new(move |r| Box::pin(f(r)))));
        self.routes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        self
    }

    /// Handles paths starting with `prefix`, telling `f` how many requests
    /// this route answered before (0 for the first): an origin whose answers
    /// change from one request to the next.
    pub fn numbered<F, Fut>(self, prefix: &str, f: F) -> Self
    where
        F: Fn(usize, Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let seen = std::sync::atomic::AtomicUsize::new(0);
        self.route(prefix, move |req| f(seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst), req))
    }

    /// A fixed text answer.
    pub fn text(self, prefix: &str, body: &'static str) -> Self {
        self.route(prefix, move |_| async move { text(200, body, &[]) })
    }

    /// A fixed text answer, sent after `delay` (a slow origin).
    pub fn late(self, prefix: &str, delay: Duration, body: &'static str) -> Self {
        self.route(prefix, move |_| async move {
            tokio::time::sleep(delay).await;
            text(200, body, &[])
        })
    }

    pub async fn start(self) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.start_on(listener).await
    }

    pub async fn start_on(self, listener: TcpListener) -> Origin {
        let addr = listener.local_addr().unwrap();
        self.serve(addr, Listener::Tcp(listener))
    }

    /// Serves on a unix socket at `path` (its `addr` is then one where nothing listens).
    pub async fn start_unix(self, path: &std::path::Path) -> Origin {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        self.serve(dead_addr(), Listener::Unix(listener))
    }

    fn serve(self, addr: SocketAddr, listener: Listener) -> Origin {
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let routes = Arc::new(self.routes);
        let counter = hits.clone();
        let accepted = connections.clone();
        let stopped: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let stop_flag = stopped.clone();
        let task = tokio::spawn(async move {
            loop {
                let Some(io) = listener.accept().await else { continue };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let routes = routes.clone();
                let counter = counter.clone();
                let stop_flag = stop_flag.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let routes = routes.clone();
                        let counter = counter.clone();
                        let stop_flag = stop_flag.clone();
                        async move {
                            if stop_flag.load(std::sync::atomic::Ordering::SeqCst) {
                                // A stopped origin drops every connection, kept-alive ones too.
                                return Err(std::io::Error::other("origin stopped"));
                            }
                            let path = req.uri().path().to_string();
                            *counter.lock().unwrap().entry(path.clone()).or_default() += 1;
                            let res = match routes.iter().find(|(p, _)| path.starts_with(p.as_str())) {
                                Some((_, h)) => h(req).await,
                                None => text(404, "origin: no such path\n", &[]),
                            };
                            Ok::<_, std::io::Error>(res)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        Origin { addr, hits, connections, stopped, task }
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

enum Listener {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    async fn accept(&self) -> Option<Box<dyn Io>> {
        match self {
            Listener::Tcp(l) => Some(Box::new(l.accept().await.ok()?.0)),
            Listener::Unix(l) => Some(Box::new(l.accept().await.ok()?.0)),
        }
    }
}

impl Origin {
    /// Requests seen for exactly this path.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn total_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }

    /// Stops: no new connections, and kept-alive ones are dropped at their next request.
    pub fn stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.abort();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address where nothing listens.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// relais running in-process, with its disk tier in a temporary directory.
pub struct Relais {
    pub handle: relais::Handle,
    pub addr: SocketAddr,
    pub cache_dir: tempfile::TempDir,
}

/// Starts relais from a configuration (a [`Conf`] or TOML text); `[server]
/// listen` and `[cache] disk_path` (a fresh temporary directory) are added when absent.
pub async fn relais(config: impl std::fmt::Display) -> Relais {
    let cache_dir = tempfile::tempdir().unwrap();
    relais_in(config, cache_dir).await
}

/// Like [`relais`], with the disk tier in `cache_dir` (to restart on the same cache).
pub async fn relais_in(config: impl std::fmt::Display, cache_dir: tempfile::TempDir) -> Relais {
    // RUST_LOG=relais=debug shows relais' log in a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut toml = config.to_string();
    if !toml.contains("[server]") {
        toml = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{toml}");
    }
    // RELAIS_TEST_ENGINE=hyper runs a suite on hyper's HTTP/1.1 engine instead of relais's.
    if let Ok(engine) = std::env::var("RELAIS_TEST_ENGINE")
        && !toml.contains("engine =")
    {
        toml = toml.replacen("[server]\n", &format!("[server]\nengine = \"{engine}\"\n"), 1);
    }
    if !toml.contains("[admin]") {
        toml = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"test-token\"\n{toml}");
    }
    if !toml.contains("[cache]") {
        toml = format!("[cache]\ndisk_path = \"{}\"\n{toml}", cache_dir.path().display());
    }
    let config = relais::Config::from_toml(&toml, "test.toml").expect("valid test config");
    let handle = relais::start(config).await.expect("relais starts");
    let addr = handle.addrs()[0];
    Relais { handle, addr, cache_dir }
}

impl Relais {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.handle.admin_addr(), path)
    }

    /// An admin request with the test token (and, but for GET, a JSON body's type).
    pub async fn admin(&self, method: &str, path: &str, body: &str) -> Reply {
        let mut req =
            Request::builder().method(method).uri(self.admin_url(path)).header("authorization", "Bearer test-token");
        if method != "GET" {
            req = req.header("content-type", "application/json");
        }
        send(req.body(full(body.to_string())).unwrap()).await
    }
}

/// A real HTTP/1.1 client (keep-alive pool).
pub fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A prior-knowledge HTTP/2 client.
pub fn h2_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).http2_only(true).build(HttpConnector::new())
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `req` and reads the whole answer (10 s limit).
pub async fn send(req: Request<Body>) -> Reply {
    send_with(&client(), req).await
}

pub async fn send_with(client: &Client<HttpConnector, Body>, req: Request<Body>) -> Reply {
    let fut = async {
        let res = client.request(req).await.expect("response");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("whole body").to_bytes();
        Reply { status: parts.status, headers: parts.headers, body }
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.expect("answer within 10 s")
}

pub async fn get(url: &str) -> Reply {
    send(Request::get(url).body(full("")).unwrap()).await
}

/// GET with extra headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(full("")).unwrap()).await
}

/// What `tcp` sends until it closes or is quiet for `quiet`, as text.
pub async fn read_until_quiet(tcp: &mut tokio::net::TcpStream, quiet: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One HTTP/1.1 response read from `tcp`: its head and the body its
/// Content-Length announces (none if it announces none), as text. For a
/// kept-alive connection, where waiting for quiet would cost its timeout.
pub async fn read_response(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if out.len() >= end + 4 + len {
                    break;
                }
            }
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("a response within 10 s")
}
