//! `[compression]`: which responses relais compresses, with what.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Size;

/// `[compression]` (nginx's `gzip`, `gzip_types`, `gzip_min_length`,
/// `gzip_comp_level`, and the brotli module's equivalents).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Off by default, as in nginx.
    pub enabled: bool,
    /// Preference order among `zstd`, `br`, `gzip`; others are never produced.
    pub encodings: Vec<String>,
    /// Bodies shorter than this are sent as they are.
    pub min_length: Size,
    /// Media types compressed: exact (`application/json`) or a family (`text/*`).
    pub types: Vec<String>,
    /// Level per encoding: gzip 1–9, br 0–11, zstd 1–22.
    pub levels: BTreeMap<String, i32>,
    /// Decode what the origin sent compressed for clients that do not accept its coding.
    pub decode: bool,
    /// Levels of the copies made once for cached bodies (same ranges).
    pub stored_levels: BTreeMap<String, i32>,
    /// Memory for encoded copies of cached bodies, made once and served many times.
    pub stored_memory: Size,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: false,
            encodings: ["zstd", "br", "gzip"].map(String::from).to_vec(),
            min_length: Size(1024),
            types: [
                "text/*",
                "application/json",
                "application/*+json",
                "application/javascript",
                "application/xml",
                "application/*+xml",
                "application/wasm",
                "image/svg+xml",
                "application/manifest+json",
            ]
            .map(String::from)
            .to_vec(),
            levels: BTreeMap::new(),
            stored_levels: BTreeMap::new(),
            decode: true,
            stored_memory: Size::mib(64),
        }
    }
}

/// The encodings relais can produce, and the level range of each.
pub const ENCODINGS: [(&str, std::ops::RangeInclusive<i32>); 3] = [("zstd", 1..=22), ("br", 0..=11), ("gzip", 1..=9)];

impl CompressionConfig {
    /// What is wrong, as (key, message).
    pub fn problem(&self) -> Option<(String, String)> {
        for (i, e) in self.encodings.iter().enumerate() {
            if !ENCODINGS.iter().any(|(name, _)| name == e) {
                return Some((format!("compression.encodings[{i}]"), format!("{e:?} is not one of zstd, br, gzip")));
            }
        }
        for (table, levels) in [("levels", &self.levels), ("stored_levels", &self.stored_levels)] {
            for (name, level) in levels {
                let key = format!("compression.{table}.{name}");
                match ENCODINGS.iter().find(|(n, _)| n == name) {
                    None => return Some((key, "is not one of zstd, br, gzip".into())),
                    Some((_, range)) if !range.contains(level) => {
                        let (lo, hi) = (range.start(), range.end());
                        return Some((key, format!("{level} is not within {lo}..{hi}")));
                    }
                    Some(_) => {}
                }
            }
        }
        // zstd's ultra levels use windows of up to 128 MiB: per response being
        // compressed as it streams, that is memory no budget accounts for.
        if let Some(level) = self.levels.get("zstd").filter(|&&l| l > 19) {
            let msg = format!(
                "{level} is an ultra level (windows up to 128 MiB per response); at most 19 here, use stored_levels for more"
            );
            return Some(("compression.levels.zstd".into(), msg));
        }
        for (i, t) in self.types.iter().enumerate() {
            if t.split_once('/').is_none_or(|(a, b)| a.is_empty() || b.is_empty()) {
                return Some((format!("compression.types[{i}]"), format!("{t:?} is not a media type like text/html")));
            }
        }
        None
    }
}
