//! Listeners and connections: accept, serve HTTP/1.1 and h2c (prior
//! knowledge) on the same port, and shut down gracefully.
//!
//! Each connection reads the current [`Pipeline`] per request, so a reload
//! applies to the next request even on a kept-alive connection, while a request
//! in flight keeps the pipeline it started with.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::proxy::{self, Conn, Pipeline};
use gather::Gather;

mod gather;

/// Binds a listening socket with address reuse and a deep backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Accepts on `listener` until `stop` changes, then gives open connections
/// `grace` to finish their requests.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<ArcSwap<Pipeline>>,
    mut stop: watch::Receiver<bool>,
    proto: &'static str,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let pipeline = shared.load();
                    let builder = builder(&pipeline.config.server);
                    let _ = tcp.set_nodelay(true);
                    let info = Arc::new(Conn { peer, proto });
                    let shared = shared.clone();
                    let service = service_fn(move |req| proxy::handle(shared.load_full(), info.clone(), req));
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(Gather::new(tcp)), service).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let grace = shared.load().config.grace_period();
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
    }
}

/// hyper's connection settings from `[server]`.
fn builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        // Without a timer the header-read timeout is silently off.
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout.get())
        .keep_alive(true)
        .max_buf_size(config.max_header_size.bytes().max(8192) as usize)
        .max_headers(config.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(config.max_header_size.bytes().min(u32::MAX as u64) as u32);
    b
}
