//! The `Cache-Status` response header (RFC 9211) and the one-word cache outcome
//! used in logs and metrics.
//!
//! Every response relais sends says what the cache did: `relais; hit; ttl=42`,
//! `relais; fwd=uri-miss; stored`, `relais; fwd=bypass; detail=no-store`. The
//! outcome words are stable labels and must not change once released.

use std::fmt::Write as _;

use crate::Bypass;

/// What the cache did with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheOutcome {
    /// Served a fresh stored response: `hit`.
    Hit,
    /// Served a stale stored response without waiting for the origin
    /// (stale-while-revalidate or the request's `max-stale`): `hit`, negative `ttl`.
    Stale,
    /// The entry was stale, revalidation failed, and the stale response was served
    /// (stale-if-error): `fwd=stale` with the failed `fwd-status`, if any.
    StaleIfError,
    /// The entry was stale and the origin answered 304: `fwd=stale; fwd-status=304`.
    Revalidated,
    /// The entry was stale and the origin sent a new response: `fwd=stale`.
    Expired,
    /// No usable entry (URI or variant unknown): `fwd=miss`.
    Miss,
    /// Nothing stored for this URI: `fwd=uri-miss`.
    UriMiss,
    /// A stored part, fresh, that the request goes past: completed from the
    /// origin, or fetched whole when it cannot be: `fwd=partial`.
    Partial,
    /// The URI is stored, but not the variant this request selects: `fwd=vary-miss`.
    VaryMiss,
    /// A usable entry existed but request directives (`no-cache`, `max-age`,
    /// `min-fresh`) sent the request to the origin: `fwd=request`.
    Request,
    /// The method cannot be served from the cache: `fwd=method`.
    Method,
    /// The cache was not used (see `detail`): `fwd=bypass`.
    Bypass,
}

impl CacheOutcome {
    /// Every outcome, for pre-registering metric labels.
    pub const ALL: [CacheOutcome; 12] = [
        CacheOutcome::Hit,
        CacheOutcome::Stale,
        CacheOutcome::StaleIfError,
        CacheOutcome::Revalidated,
        CacheOutcome::Expired,
        CacheOutcome::Miss,
        CacheOutcome::UriMiss,
        CacheOutcome::Partial,
        CacheOutcome::VaryMiss,
        CacheOutcome::Request,
        CacheOutcome::Method,
        CacheOutcome::Bypass,
    ];

    /// One word for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Stale => "stale",
            CacheOutcome::StaleIfError => "stale-if-error",
            CacheOutcome::Revalidated => "revalidated",
            CacheOutcome::Expired => "expired",
            CacheOutcome::Miss => "miss",
            CacheOutcome::UriMiss => "uri-miss",
            CacheOutcome::Partial => "partial",
            CacheOutcome::VaryMiss => "vary-miss",
            CacheOutcome::Request => "request",
            CacheOutcome::Method => "method",
            CacheOutcome::Bypass => "bypass",
        }
    }

    /// The RFC 9211 `fwd` reason, or `None` for a hit.
    fn fwd(&self) -> Option<&'static str> {
        match self {
            CacheOutcome::Hit | CacheOutcome::Stale => None,
            CacheOutcome::StaleIfError | CacheOutcome::Revalidated | CacheOutcome::Expired => Some("stale"),
            CacheOutcome::Miss => Some("miss"),
            CacheOutcome::UriMiss => Some("uri-miss"),
            CacheOutcome::Partial => Some("partial"),
            CacheOutcome::VaryMiss => Some("vary-miss"),
            CacheOutcome::Request => Some("request"),
            CacheOutcome::Method => Some("method"),
            CacheOutcome::Bypass => Some("bypass"),
        }
    }
}

/// One `Cache-Status` entry, built by the proxy as the request goes through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheStatus {
    pub outcome: CacheOutcome,
    /// Status of the forwarded response (`fwd-status`), e.g. 304 after revalidation.
    pub fwd_status: Option<u16>,
    /// The forwarded response was stored (or the entry updated): `stored`.
    pub stored: bool,
    /// Remaining freshness in seconds, negative when stale (see `Policy::ttl_secs`).
    pub ttl: Option<i64>,
    /// Extra detail, normally a [`Bypass::as_str`] word.
    pub detail: Option<&'static str>,
    /// The request waited for another request's origin fetch: `collapsed`.
    pub collapsed: bool,
}

impl CacheStatus {
    /// The cache name in the header.
    pub const NAME: &'static str = "relais";

    /// An entry with nothing but the outcome.
    pub fn new(outcome: CacheOutcome) -> Self {
        CacheStatus { outcome, fwd_status: None, stored: false, ttl: None, detail: None, collapsed: false }
    }

    /// A bypass for `reason` (`fwd=method` for a method, else `fwd=bypass`), with
    /// the reason as `detail`.
    pub fn bypass(reason: Bypass) -> Self {
        let outcome = match reason {
            Bypass::Method => CacheOutcome::Method,
            _ => CacheOutcome::Bypass,
        };
        CacheStatus::new(outcome).detail(reason.as_str())
    }

    #[must_use]
    pub fn ttl(mut self, secs: i64) -> Self {
        self.ttl = Some(secs);
        self
    }

    #[must_use]
    pub fn fwd_status(mut self, status: u16) -> Self {
        self.fwd_status = Some(status);
        self
    }

    #[must_use]
    pub fn stored(mut self) -> Self {
        self.stored = true;
        self
    }

    #[must_use]
    pub fn collapsed(mut self) -> Self {
        self.collapsed = true;
        self
    }

    #[must_use]
    pub fn detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }

    /// One word for logs and metrics: the outcome's.
    pub fn as_str(&self) -> &'static str {
        self.outcome.as_str()
    }

    /// The `Cache-Status` field value, e.g. `relais; fwd=stale; fwd-status=304; ttl=60`.
    pub fn header_value(&self) -> String {
        let mut out = String::from(Self::NAME);
        // Writing to a String cannot fail.
        match self.outcome.fwd() {
            None => out.push_str("; hit"),
            Some(fwd) => {
                let _ = write!(out, "; fwd={fwd}");
                if let Some(status) = self.fwd_status {
                    let _ = write!(out, "; fwd-status={status}");
                }
            }
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(out, "; ttl={ttl}");
        }
        if self.stored {
            out.push_str("; stored");
        }
        if self.collapsed {
            out.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            out.push_str("; detail=");
            push_token_or_string(&mut out, detail);
        }
        out
    }
}

/// Writes a structured-field token if `s` is one, else a quoted sf-string.
fn push_token_or_string(out: &mut String, s: &str) {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c);
    let token = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '*') && s.chars().all(is_tchar);
    if token {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        let table = [
            (CacheStatus::new(CacheOutcome::Hit).ttl(42), "relais; hit; ttl=42"),
            (CacheStatus::new(CacheOutcome::Stale).ttl(-3), "relais; hit; ttl=-3"),
            (CacheStatus::new(CacheOutcome::Miss).stored(), "relais; fwd=miss; stored"),
            (CacheStatus::new(CacheOutcome::UriMiss).stored(), "relais; fwd=uri-miss; stored"),
            (CacheStatus::new(CacheOutcome::VaryMiss).collapsed(), "relais; fwd=vary-miss; collapsed"),
            (
                CacheStatus::new(CacheOutcome::Revalidated).fwd_status(304).ttl(60),
                "relais; fwd=stale; fwd-status=304; ttl=60",
            ),
            (
                CacheStatus::new(CacheOutcome::StaleIfError).fwd_status(503).ttl(-10),
                "relais; fwd=stale; fwd-status=503; ttl=-10",
            ),
            (CacheStatus::bypass(Bypass::NoStore), "relais; fwd=bypass; detail=no-store"),
            (CacheStatus::bypass(Bypass::Method), "relais; fwd=method; detail=method"),
            (CacheStatus::new(CacheOutcome::Request), "relais; fwd=request"),
            (CacheStatus::new(CacheOutcome::Miss).detail("odd \"one\""), r#"relais; fwd=miss; detail="odd \"one\"""#),
        ];
        for (status, expected) in table {
            assert_eq!(status.header_value(), expected);
        }
    }

    #[test]
    fn words_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for outcome in CacheOutcome::ALL {
            assert!(seen.insert(outcome.as_str()));
            assert_eq!(CacheStatus::new(outcome).as_str(), outcome.as_str());
        }
    }
}
