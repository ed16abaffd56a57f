//! Header names more than one layer reads or writes, spelled once.

use http::HeaderName;

/// The chain of client addresses; `guard/` reads it (`real_ip`), `proxy/` extends it.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// An origin's tags for purging, space-separated; stored with the entry, hidden
/// from clients unless `cache.expose_tag_headers`.
pub(crate) static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
/// The same, comma-separated.
pub(crate) static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");
