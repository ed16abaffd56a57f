//! Why a request is not served from the cache, or a response not stored in it.
//!
//! Every refusal in this crate is one of these reasons; `as_str()` is a short,
//! stable kebab-case word used as `Cache-Status` `detail=`, log field and metric
//! label, so the strings must not change once released.

use std::fmt;

/// The reason a request or response bypasses the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bypass {
    /// The route is configured with `bypass`.
    Route,
    /// The method is not cacheable (only GET is stored; GET and HEAD are looked up).
    Method,
    /// The request carries `Cache-Control: no-store`.
    RequestNoStore,
    /// The request carries `If-Match` or `If-Unmodified-Since`, left to the origin.
    Precondition,
    /// The response carries `Cache-Control: no-store`.
    NoStore,
    /// The response carries `Cache-Control: private`.
    Private,
    /// The request carries `Authorization` and the response does not allow sharing it
    /// (`public`, `s-maxage` or `must-revalidate`).
    Authorization,
    /// The response carries `Set-Cookie` and the route does not store such responses.
    SetCookie,
    /// The status code is not cacheable, or only with explicit freshness it lacks.
    Status,
    /// The response varies on `*` (or on something that is not a header name).
    VaryStar,
    /// The response would be stale at once, with no validator and no stale window:
    /// storing it could never save an origin fetch.
    ZeroTtl,
    /// http-cache-semantics refused to store it for a reason not listed above.
    NotStorable,
    /// The body exceeds the maximum object size (decided by the caller).
    TooLarge,
    /// The request carries `Cookie` and the route bypasses such requests.
    Cookie,
    /// A GET or HEAD with a body: forwarded with its body, answer not shared
    /// (decided by the caller, which sees the body).
    RequestBody,
    /// The memory for bodies being stored is taken by other fetches (decided by the caller).
    FillMemory,
    /// A request to switch protocols (WebSocket): tunnelled, never stored
    /// (decided by the caller).
    Upgrade,
    /// A sliced route's file is empty: no slice exists to store (decided by the caller).
    SliceEmpty,
}

impl Bypass {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [Bypass; 18] = [
        Bypass::Route,
        Bypass::Method,
        Bypass::RequestNoStore,
        Bypass::Precondition,
        Bypass::NoStore,
        Bypass::Private,
        Bypass::Authorization,
        Bypass::SetCookie,
        Bypass::Status,
        Bypass::VaryStar,
        Bypass::ZeroTtl,
        Bypass::NotStorable,
        Bypass::TooLarge,
        Bypass::Cookie,
        Bypass::RequestBody,
        Bypass::FillMemory,
        Bypass::Upgrade,
        Bypass::SliceEmpty,
    ];

    /// A short kebab-case word for `Cache-Status` `detail=`, logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Bypass::Route => "route",
            Bypass::Method => "method",
            Bypass::RequestNoStore => "request-no-store",
            Bypass::Precondition => "precondition",
            Bypass::NoStore => "no-store",
            Bypass::Private => "private",
            Bypass::Authorization => "authorization",
            Bypass::SetCookie => "set-cookie",
            Bypass::Status => "status",
            Bypass::VaryStar => "vary-star",
            Bypass::ZeroTtl => "zero-ttl",
            Bypass::NotStorable => "not-storable",
            Bypass::TooLarge => "too-large",
            Bypass::Cookie => "cookie",
            Bypass::RequestBody => "request-body",
            Bypass::FillMemory => "fill-memory",
            Bypass::Upgrade => "upgrade",
            Bypass::SliceEmpty => "slice-empty",
        }
    }
}

impl fmt::Display for Bypass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_unique_kebab_tokens() {
        let mut seen = std::collections::HashSet::new();
        for reason in Bypass::ALL {
            let word = reason.as_str();
            assert!(seen.insert(word), "duplicate {word}");
            assert!(word.starts_with(|c: char| c.is_ascii_lowercase()));
            assert!(word.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
            assert_eq!(reason.to_string(), word);
        }
    }
}
