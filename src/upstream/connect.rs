//! Opening a connection to one server: TCP (no delay, keepalive probes), TLS
//! over it for `https://` servers, or a unix domain socket.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Where a server listens.
#[derive(Clone, Debug)]
pub(super) enum Endpoint {
    /// A host (an address, or a name resolved at connect) and port, and the
    /// name the TLS handshake uses (none for a cleartext host that is not one).
    Tcp {
        host: Arc<str>,
        port: u16,
        name: Option<ServerName<'static>>,
    },
    Unix(PathBuf),
}

/// A connected stream of any kind.
pub(super) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl Stream {
    /// The server chose HTTP/2 by ALPN.
    pub(super) fn alpn_h2(&self) -> bool {
        match self {
            Stream::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
            _ => false,
        }
    }
}

/// What every connection of a pool shares.
pub(super) struct Connector {
    /// For `https://` servers.
    pub tls: Option<TlsConnector>,
    pub timeout: Duration,
}

impl Connector {
    pub(super) fn new(tls: Option<Arc<rustls::ClientConfig>>, timeout: Duration) -> Connector {
        Connector { tls: tls.map(TlsConnector::from), timeout }
    }

    /// Connects within the connect timeout (TLS handshake included).
    pub(super) async fn connect(&self, endpoint: &Endpoint, tls: bool) -> io::Result<Stream> {
        let connecting = async {
            match endpoint {
                Endpoint::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
                Endpoint::Tcp { host, port, name } => {
                    let tcp = TcpStream::connect((&**host, *port)).await?;
                    tcp.set_nodelay(true)?;
                    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
                    socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
                    match (&self.tls, tls) {
                        (Some(connector), true) => {
                            let name = name.clone().ok_or_else(|| io::Error::other("no TLS name for this server"))?;
                            Ok(Stream::Tls(Box::new(connector.connect(name, tcp).await?)))
                        }
                        _ => Ok(Stream::Tcp(tcp)),
                    }
                }
            }
        };
        tokio::time::timeout(self.timeout, connecting)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout")))
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
