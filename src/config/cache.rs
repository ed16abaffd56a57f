//! `[cache]`: the two tiers.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Dur, FieldName, Size};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory tier budget (bodies + headers). Default 256MiB.
    pub memory_capacity: Size,
    /// Directory of the disk tier (relative: to the configuration file's folder).
    /// Default `relais-cache`.
    pub disk_path: PathBuf,
    /// Disk tier budget. Default 4GiB.
    pub disk_capacity: Size,
    /// Larger bodies are streamed through and not stored. Default 1GiB (bodies
    /// over 8MiB, or over what `fill_memory` has free, are stored on disk only,
    /// streamed in and out).
    pub max_object_size: Size,
    /// A request waiting for another's fetch of the same URL goes to the origin
    /// itself after this. Default 10s.
    pub lock_timeout: Dur,
    /// Bodies waiting to be written to disk, at most; past that a new entry is kept in
    /// memory only, so a slow disk cannot grow memory without bound. Default 32MiB.
    pub disk_write_backlog: Size,
    /// Pass the origin's `Surrogate-Key` and `Cache-Tag` headers on to clients. Default false.
    pub expose_tag_headers: bool,
    /// The disk tier's garbage collection (index buckets compacted, orphaned
    /// content deleted) runs this often. Default 10m.
    pub sweep_interval: Dur,
    /// ... and after this many index writes (0: by time only). Default 10000.
    pub sweep_after_writes: u64,
    /// Bodies being fetched to be stored in memory are held up to this in total
    /// (at most 4GiB); one that does not fit goes to the disk tier as it streams,
    /// or without one streams through unstored. Default 128MiB.
    pub fill_memory: Size,
    /// relais's own targeted cache-control field (RFC 9213): it replaces
    /// `Cache-Control` and `Expires` for relais. Default `relais-cache-control`.
    pub targeted_field: FieldName,
    /// Honour `CDN-Cache-Control` (after `targeted_field`). Default true.
    pub cdn_cache_control: bool,
    /// Pass the targeted fields relais honours on to clients. Default false
    /// (they are stored with the entry, for revalidation, and removed on the way out).
    pub expose_targeted: bool,
}

impl CacheConfig {
    /// The targeted fields honoured, in order of precedence.
    pub fn targeted(&self) -> Vec<http::HeaderName> {
        let mut names = vec![self.targeted_field.0.clone()];
        if self.cdn_cache_control && self.targeted_field.0 != CDN_CACHE_CONTROL {
            names.push(http::HeaderName::from_static(CDN_CACHE_CONTROL));
        }
        names
    }
}

const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory_capacity: Size::mib(256),
            disk_path: PathBuf::from("./relais-cache"),
            disk_capacity: Size::mib(4096),
            max_object_size: Size::mib(1024),
            lock_timeout: Dur::secs(10),
            disk_write_backlog: Size::mib(32),
            expose_tag_headers: false,
            fill_memory: Size::mib(128),
            sweep_interval: Dur::secs(600),
            sweep_after_writes: 10_000,
            targeted_field: FieldName(http::HeaderName::from_static("relais-cache-control")),
            cdn_cache_control: true,
            expose_targeted: false,
        }
    }
}
