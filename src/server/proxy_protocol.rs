//! The PROXY protocol (v1 text and v2 binary, parsed by `ppp`), sent first on
//! every connection by an L4 load balancer: its source address is the client's.
//! A connection that does not start with a valid header is refused; a `LOCAL`
//! (v2) or `UNKNOWN` (v1) header, the balancer's own health check, keeps the
//! balancer's address.

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use ppp::{HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// v1 is at most 107 bytes; v2 may carry TLVs, which relais does not read.
const MOST: usize = 16 + 4096;

/// Where a connection comes from: with `expected`, the PROXY header's source
/// and the bytes read after the header (None if the peer closed before sending
/// one); else the peer, nothing read.
pub(super) async fn source(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    expected: bool,
) -> io::Result<Option<(SocketAddr, BytesMut)>> {
    if !expected {
        return Ok(Some((peer, BytesMut::new())));
    }
    read(tcp, peer).await
}

async fn read(tcp: &mut TcpStream, peer: SocketAddr) -> io::Result<Option<(SocketAddr, BytesMut)>> {
    let mut buf = BytesMut::with_capacity(512);
    loop {
        if tcp.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
        let parsed = HeaderResult::parse(&buf);
        if parsed.is_incomplete() {
            if buf.len() > MOST {
                return Err(invalid("PROXY protocol header too long"));
            }
            continue;
        }
        let (len, source) = match parsed {
            HeaderResult::V1(Ok(h)) => {
                let source = match h.addresses {
                    ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                    ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                    ppp::v1::Addresses::Unknown => None,
                };
                (h.header.len(), source)
            }
            HeaderResult::V2(Ok(h)) => {
                let source = match (h.command, h.addresses) {
                    (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    _ => None,
                };
                (h.len(), source)
            }
            _ => return Err(invalid("no valid PROXY protocol header")),
        };
        let rest = buf.split_off(len);
        return Ok(Some((source.unwrap_or(peer), rest)));
    }
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}
