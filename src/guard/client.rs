//! The client's real address behind trusted proxies (nginx's realip module
//! with `real_ip_recursive on`).
//!
//! Only a peer inside `trusted` is believed. From `X-Forwarded-For` the
//! client is the rightmost address that is not itself trusted (every value
//! of every such header, read right to left); when all are trusted, the
//! leftmost. A value that is not an address ends the walk at the last one
//! that was. From another header (`X-Real-IP`), its one address. Addresses
//! may carry a port (`1.2.3.4:5678`, `[::1]:80`), as some balancers send them.
//!
//! The `X-Forwarded-For` relais then sends keeps the chain up to the client
//! and drops the trusted hops after it (they are relais's own side): its
//! rightmost address is the one relais used, for an origin that trusts relais.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::access::Access;
use crate::config::RealIp as RealIpConfig;

pub(super) struct RealIp {
    trusted: Access,
    header: HeaderName,
    xff: bool,
}

/// Who the client is, as relais will say it upstream.
pub struct Client {
    pub ip: IpAddr,
    /// The `X-Forwarded-For` to send instead of appending the peer (None: append).
    pub forwarded_for: Option<HeaderValue>,
}

impl RealIp {
    pub(super) fn new(c: &RealIpConfig) -> RealIp {
        RealIp {
            trusted: Access::new(&c.trusted.0, &[]),
            xff: c.header.0 == crate::http::names::X_FORWARDED_FOR,
            header: c.header.0.clone(),
        }
    }

    pub(super) fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.contains(peer)
    }

    /// The client of a request from `peer`; None when the peer is not trusted
    /// or says nothing usable (the peer is the client).
    pub(super) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<Client> {
        if !self.trusts(peer) {
            return None;
        }
        if !self.xff {
            let ip = parse(headers.get(&self.header)?.to_str().ok()?)?;
            return Some(Client { ip, forwarded_for: None });
        }
        let mut entries: Vec<&str> = Vec::new();
        for v in headers.get_all(&self.header) {
            entries.extend(v.to_str().ok()?.split(',').map(str::trim).filter(|e| !e.is_empty()));
        }
        let mut client = None;
        for (i, e) in entries.iter().enumerate().rev() {
            let Some(ip) = parse(e) else { break };
            client = Some((i, ip));
            if !self.trusted.contains(ip) {
                break;
            }
        }
        let (i, ip) = client?;
        let forwarded_for = HeaderValue::try_from(entries[..=i].join(", ")).ok();
        Some(Client { ip, forwarded_for })
    }
}

/// An address, with or without a port.
fn parse(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real(trusted: &[&str], header: &str) -> RealIp {
        let trusted = crate::config::Cidrs(trusted.iter().map(|s| s.parse().unwrap()).collect());
        let header = crate::config::FieldName(HeaderName::try_from(header).unwrap());
        RealIp::new(&RealIpConfig { trusted, header })
    }

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(HeaderName::try_from(*k).unwrap(), HeaderValue::try_from(*v).unwrap());
        }
        h
    }

    #[test]
    fn rightmost_untrusted_address_is_the_client() {
        let r = real(&["10.0.0.0/8", "127.0.0.1/32"], "x-forwarded-for");
        let peer = "127.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7"), ("x-forwarded-for", "10.0.0.2:4711")]);
        let c = r.client(peer, &h).unwrap();
        assert_eq!(c.ip.to_string(), "203.0.113.7");
        assert_eq!(c.forwarded_for.unwrap(), "6.6.6.6, 203.0.113.7");
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.2")]);
        assert_eq!(r.client(peer, &all_trusted).unwrap().ip.to_string(), "10.0.0.9");
        let garbage = headers(&[("x-forwarded-for", "203.0.113.7, junk, 10.0.0.2")]);
        assert_eq!(r.client(peer, &garbage).unwrap().ip.to_string(), "10.0.0.2", "the walk stops at junk");
        assert!(r.client("192.0.2.1".parse().unwrap(), &h).is_none(), "an untrusted peer is the client");
        assert!(r.client(peer, &HeaderMap::new()).is_none());
        let v6 = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        assert_eq!(r.client(peer, &v6).unwrap().ip.to_string(), "2001:db8::1");
    }

    #[test]
    fn a_named_header_holds_one_address() {
        let r = real(&["127.0.0.0/8"], "x-real-ip");
        let peer = "127.0.0.1".parse().unwrap();
        assert_eq!(r.client(peer, &headers(&[("x-real-ip", "198.51.100.4")])).unwrap().ip.to_string(), "198.51.100.4");
        assert!(r.client(peer, &headers(&[("x-real-ip", "nope")])).is_none());
    }
}
