//! What the cache stores under a key, and its on-disk metadata form.
//!
//! A key holds either a response ([`Entry`]) or, at a primary key whose
//! response varies, a [`VaryRecord`] naming the headers that select the variant.
//! Entries are immutable and shared as `Arc`s: a hit clones pointers, never a body.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cache_policy::Policy;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::disk::{BodyFile, DiskBody};

/// A stored response.
#[derive(Clone, Debug)]
pub struct Entry {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// A body too large for memory, left in its disk file (`body` is then empty).
    pub file: Option<BodyFile>,
    pub policy: Policy,
    pub url: String,
    /// Surrogate keys (`Surrogate-Key`, `Cache-Tag`), for purging by tag.
    pub tags: Vec<String>,
    pub stored_at: SystemTime,
}

/// The Vary names of a URL's responses. Variants are keyed with `generation`, so
/// replacing or removing the record makes every older variant unreachable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaryRecord {
    pub names: Vec<HeaderName>,
    pub generation: u64,
    pub url: String,
}

#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // always behind an Arc; entries are the common case
pub enum Stored {
    Entry(Entry),
    Vary(VaryRecord),
}

impl Stored {
    /// Bytes it costs in memory: body, headers (a `HeaderMap` slot is about 112
    /// bytes besides the text) and the entry itself, its policy (which keeps the
    /// request it was stored for) and moka's bookkeeping: 1,280 bytes, measured
    /// with `benches/flood.sh` (512 made RSS outgrow `memory_capacity` by a
    /// third with small entries).
    pub fn weight(&self) -> u32 {
        let size = match self {
            Stored::Entry(e) => {
                let headers: usize = e.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 112).sum();
                e.body.len() + headers + e.url.len() + 1280
            }
            Stored::Vary(v) => v.url.len() + 64 * v.names.len() + 128,
        };
        u32::try_from(size + 64).unwrap_or(u32::MAX)
    }

    /// The same value with its header values packed into one buffer: a hit clones
    /// and writes them from a few cache lines instead of one allocation per value.
    pub fn compacted(self) -> Stored {
        match self {
            Stored::Entry(e) => Stored::Entry(Entry { headers: compact(&e.headers), ..e }),
            vary => vary,
        }
    }
}

fn compact(headers: &HeaderMap) -> HeaderMap {
    let mut buf = bytes::BytesMut::with_capacity(headers.iter().map(|(_, v)| v.len()).sum());
    for v in headers.values() {
        buf.extend_from_slice(v.as_bytes());
    }
    let buf = buf.freeze();
    let mut out = HeaderMap::with_capacity(headers.len());
    let mut at = 0;
    for (name, v) in headers {
        let len = v.len();
        // Same bytes as a valid value, so this cannot fail; keep the original if it did.
        let mut packed = HeaderValue::from_maybe_shared(buf.slice(at..at + len)).unwrap_or_else(|_| v.clone());
        packed.set_sensitive(v.is_sensitive());
        out.append(name.clone(), packed);
        at += len;
    }
    out
}

impl Entry {
    /// Its body to send: the bytes held, or read from its disk file.
    pub(crate) fn send_body(&self) -> crate::http::body::Body {
        match &self.file {
            Some(file) => file.body(),
            None => crate::http::body::Body::full(self.body.clone()),
        }
    }

    /// What a stored part lacks when it is one piece short of the whole (it
    /// starts at 0 or ends at the last byte), and the strong ETag that lets the
    /// two be combined (RFC 9111 §3.4); `None` if it cannot be completed so.
    pub fn missing_piece(&self) -> Option<(cache_policy::ByteRange, HeaderValue)> {
        let part = cache_policy::content_range(&self.headers)?;
        let etag = self.headers.get(http::header::ETAG).filter(|e| e.as_bytes().starts_with(b"\""))?.clone();
        let (start, end) = match part {
            p if p.start == 0 && p.end + 1 < p.total => (p.end + 1, p.total - 1),
            p if p.start > 0 && p.end + 1 == p.total => (0, p.start - 1),
            _ => return None,
        };
        Some((cache_policy::ByteRange { start, end, total: part.total }, etag))
    }

    /// The tags an origin attached: `Surrogate-Key` is space-separated, `Cache-Tag` comma-separated.
    pub fn tags_of(headers: &HeaderMap) -> Vec<String> {
        let mut tags: Vec<String> = Vec::new();
        for (name, sep) in [("surrogate-key", ' '), ("cache-tag", ',')] {
            for v in headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
                tags.extend(v.split(sep).map(str::trim).filter(|t| !t.is_empty()).map(String::from));
            }
        }
        tags.sort();
        tags.dedup();
        tags
    }
}

/// Metadata as written to the disk tier's index.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Meta {
    Entry {
        status: u16,
        headers: Vec<(String, HeaderText)>,
        policy: Policy,
        url: String,
        tags: Vec<String>,
        stored_at: u64,
    },
    Vary {
        names: Vec<String>,
        generation: u64,
        url: String,
    },
}

/// What the purge index needs of a disk entry's metadata, read without the
/// rest (headers, policy): the same fields [`Meta`] writes.
#[derive(Deserialize)]
pub struct Listing {
    pub url: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(skip)]
    pub vary: bool,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum ListedMeta {
    Entry(Listing),
    Vary(Listing),
}

/// A header value: text when it is, bytes otherwise.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum HeaderText {
    Text(String),
    Bytes(Vec<u8>),
}

impl Stored {
    /// The canonical URL it was stored for.
    pub fn url(&self) -> &str {
        match self {
            Stored::Entry(e) => &e.url,
            Stored::Vary(v) => &v.url,
        }
    }

    /// Its tags (a Vary record has none).
    pub fn tags(&self) -> &[String] {
        match self {
            Stored::Entry(e) => &e.tags,
            Stored::Vary(_) => &[],
        }
    }
}

impl Stored {
    /// Metadata JSON and body for the disk tier.
    pub fn to_disk(&self) -> (Value, Bytes) {
        let (meta, body) = match self {
            Stored::Entry(e) => (
                Meta::Entry {
                    status: e.status.as_u16(),
                    headers: e
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            let text = match v.to_str() {
                                Ok(s) => HeaderText::Text(s.to_string()),
                                Err(_) => HeaderText::Bytes(v.as_bytes().to_vec()),
                            };
                            (k.as_str().to_string(), text)
                        })
                        .collect(),
                    policy: e.policy.clone(),
                    url: e.url.clone(),
                    tags: e.tags.clone(),
                    stored_at: e.stored_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                },
                e.body.clone(),
            ),
            Stored::Vary(v) => (
                Meta::Vary {
                    names: v.names.iter().map(|n| n.as_str().to_string()).collect(),
                    generation: v.generation,
                    url: v.url.clone(),
                },
                Bytes::new(),
            ),
        };
        (serde_json::to_value(meta).unwrap_or(Value::Null), body)
    }

    /// Rebuilds from the disk tier; `None` if the metadata does not make sense
    /// (written by another version, or damaged): the caller treats it as a miss.
    pub fn from_disk(meta: Value, body: Bytes) -> Option<Stored> {
        Self::from_meta(meta, Some(DiskBody::Whole(body)))
    }

    /// Rebuilds from the disk tier, with a body left in its file or read whole.
    pub(crate) fn from_disk_body(meta: Value, body: DiskBody) -> Option<Stored> {
        Self::from_meta(meta, Some(body))
    }

    /// Whether its body is left in a disk file (it never enters the memory tier).
    pub(crate) fn in_file(&self) -> bool {
        matches!(self, Stored::Entry(Entry { file: Some(_), .. }))
    }

    /// The URL and tags of a disk entry's metadata; `None` if it does not make sense.
    pub fn listing(meta: Value) -> Option<Listing> {
        match serde_json::from_value::<ListedMeta>(meta).ok()? {
            ListedMeta::Entry(l) => Some(l),
            ListedMeta::Vary(l) => Some(Listing { vary: true, ..l }),
        }
    }

    /// The metadata alone, with an empty body, for looking at what is stored.
    pub fn from_disk_meta(meta: Value) -> Option<Stored> {
        Self::from_meta(meta, None)
    }

    fn from_meta(meta: Value, body: Option<DiskBody>) -> Option<Stored> {
        match serde_json::from_value::<Meta>(meta).ok()? {
            Meta::Entry { status, headers, policy, url, tags, stored_at } => {
                let mut map = HeaderMap::with_capacity(headers.len());
                for (k, v) in headers {
                    let name = HeaderName::try_from(k).ok()?;
                    let value = match v {
                        HeaderText::Text(s) => HeaderValue::try_from(s).ok()?,
                        HeaderText::Bytes(b) => HeaderValue::from_bytes(&b).ok()?,
                    };
                    map.append(name, value);
                }
                // A Content-Length that disagrees with the body would be a wrong answer.
                let len = match &body {
                    Some(DiskBody::Whole(b)) => Some(b.len() as u64),
                    Some(DiskBody::File(f)) => Some(f.len()),
                    None => None,
                };
                if let Some(len) = len
                    && map.contains_key(http::header::CONTENT_LENGTH)
                    && crate::http::body::content_length(&map)? != len
                {
                    return None;
                }
                let (body, file) = match body {
                    Some(DiskBody::Whole(b)) => (b, None),
                    Some(DiskBody::File(f)) => (Bytes::new(), Some(f)),
                    None => (Bytes::new(), None),
                };
                Some(Stored::Entry(Entry {
                    status: StatusCode::from_u16(status).ok()?,
                    headers: compact(&map),
                    body,
                    file,
                    policy,
                    url,
                    tags,
                    // Not past year 9999: dates are formatted as HTTP dates.
                    stored_at: Some(stored_at)
                        .filter(|s| *s < 253_402_300_800)
                        .and_then(|s| UNIX_EPOCH.checked_add(std::time::Duration::from_secs(s)))?,
                }))
            }
            Meta::Vary { names, generation, url } => Some(Stored::Vary(VaryRecord {
                names: names.into_iter().map(HeaderName::try_from).collect::<Result<_, _>>().ok()?,
                generation,
                url,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacting_keeps_every_header_in_order() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("set-thing", HeaderValue::from_static("two"));
        h.append("x-a", HeaderValue::from_static("three"));
        h.append("etag", HeaderValue::from_static("\"v\""));
        let c = compact(&h);
        assert_eq!(c, h);
        assert_eq!(c.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "three"]);
    }
}
