//! Pure HTTP caching decisions for relais, a shared cache (RFC 9111, RFC 9110
//! conditionals, RFC 5861 `stale-*` extensions, RFC 9211 `Cache-Status`).
//!
//! Nothing here does I/O or reads a clock: every time-dependent call takes `now`,
//! so the proxy and the tests drive time. The crate answers four questions:
//!
//! - before lookup: may this request use the cache at all? ([`lookup_allowed`]),
//!   which variant does it select? ([`vary_names`], [`normalize_vary_value`]);
//! - after a fetch: may the response be stored, and for how long? ([`Policy::new`],
//!   [`storable_headers`]);
//! - on a hit: fresh, stale within a window, or must it be revalidated?
//!   ([`Policy::evaluate`], [`not_modified`], [`Policy::response_headers`]);
//! - after revalidation or an unsafe request: what changes? ([`Policy::revalidate`],
//!   [`invalidations`]).
//!
//! Storability is cross-checked with `http-cache-semantics` in shared mode, but the
//! freshness lifetime, `Age`, stale windows, 304 merging and `Vary` handling are done
//! here, because that crate gets them wrong for a shared cache or does not have them
//! and because the per-route [`Rules`] must govern the lifetime. Every refusal carries
//! a [`Bypass`] reason, visible in `Cache-Status` ([`CacheStatus`]) and in logs.

mod cache_control;
mod conditional;
mod date;
mod etag;
mod freshness;
mod headers;
mod invalidate;
mod policy;
mod range;
mod reason;
mod request;
mod revalidate;
mod rules;
mod status;
mod vary;

pub use conditional::{not_modified, precondition_failed};
pub use headers::{HOP_BY_HOP, connection_named, storable_headers};
pub use invalidate::invalidations;
pub use policy::{Freshness, Policy};
pub use range::{ByteRange, Ranged, asked, content_range, part_covers, resolve};
pub use reason::Bypass;
pub use request::{lookup_allowed, only_if_cached};
pub use revalidate::Revalidation;
pub use rules::Rules;
pub use status::{CacheOutcome, CacheStatus};
pub use vary::{normalize_vary_value, vary_names};
