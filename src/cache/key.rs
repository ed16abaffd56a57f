//! Cache keys: hex SHA-256 strings that name an entry in both tiers.
//!
//! The primary key covers `GET` (HEAD is served from GET), the scheme, the
//! lower-cased host with a non-default port, and path?query. A response with
//! `Vary` adds a variant key over the primary key, the variant generation of
//! its Vary record, and the request's normalised value of each named header
//! in sorted order (an absent header differs from an empty one).
//!
//! In memory (the memory tier, the purge index) a key is held as its 32 bytes,
//! [`Key`].

use std::hash::{BuildHasher, Hash, Hasher};

use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

/// The canonical URL a key stands for: `scheme://host[:port]/path?q` with the
/// host lower-cased and a default port dropped, so that every spelling of one
/// URL (a request's Host, a Location header, a purge) gives one key.
pub fn url(scheme: &str, authority: &str, path_and_query: &str) -> String {
    let authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    let authority = authority.strip_suffix('.').unwrap_or(authority);
    let path = if path_and_query.is_empty() { "/" } else { path_and_query };
    format!("{scheme}://{authority}{path}")
}

/// [`url`] of an absolute URI; `None` for a relative one.
pub fn url_of(uri: &http::Uri) -> Option<String> {
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str();
    Some(url(scheme, authority, uri.path_and_query().map_or("/", |p| p.as_str())))
}

/// Primary key of a canonical URL (from [`url`]).
pub fn primary(url: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"GET\0");
    h.update(url.as_bytes());
    hex::encode(h.finalize())
}

/// Variant key of `primary` for a request, given the Vary record's names and generation.
pub fn variant(primary: &str, generation: u64, names: &[HeaderName], request: &HeaderMap) -> String {
    let mut h = Sha256::new();
    h.update(primary.as_bytes());
    h.update(generation.to_le_bytes());
    for name in names {
        let values: Vec<&HeaderValue> = request.get_all(name).iter().collect();
        let normalised = cache_policy::normalize_vary_value(name, Some(&values));
        h.update(name.as_str().as_bytes());
        match normalised {
            // Absent and empty must differ: tag each.
            None => h.update(b"\0-"),
            Some(v) => {
                h.update(b"\0+");
                h.update(v.as_bytes());
                h.update(b"\0");
            }
        }
    }
    hex::encode(h.finalize())
}

/// A cache key (64 hex digits) as its 32 bytes: compared inline, no string to chase.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    pub fn of(key: &str) -> Key {
        let mut out = [0u8; 32];
        let hex = key.as_bytes();
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if hex.len() == 64 {
            let mut ok = true;
            for (i, pair) in hex.chunks_exact(2).enumerate() {
                match (digit(pair[0]), digit(pair[1])) {
                    (Some(h), Some(l)) => out[i] = h << 4 | l,
                    _ => ok = false,
                }
            }
            if ok {
                return Key(out);
            }
        }
        // Keys are SHA-256 hex; anything else is hashed to the same shape.
        Key(Sha256::digest(key.as_bytes()).into())
    }

    /// The hex form the rest of the cache names keys by.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

/// The key already is a SHA-256: its first 8 bytes are a uniform hash that no
/// client can steer, so hashing it again would only cost time.
#[derive(Clone, Default)]
pub struct KeyHash;

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    // Only `Key` is hashed here; anything else still gets a usable (FNV-1a) hash.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::try_from(*k).unwrap(), HeaderValue::try_from(*v).unwrap())).collect()
    }

    #[test]
    fn primary_is_stable_hex() {
        let k = primary(&url("http", "Example.TEST:80", "/a?b=1"));
        assert_eq!(k.len(), 64);
        assert_eq!(k, primary("http://example.test/a?b=1"));
        assert_eq!(url("http", "h:8080", ""), "http://h:8080/");
        assert_eq!(url_of(&"http://H:80/x".parse().unwrap()).unwrap(), "http://h/x");
        assert_ne!(k, primary("http://example.test/a?b=2"));
    }

    #[test]
    fn variants_normalise_and_distinguish_absent_from_empty() {
        let names = [http::header::ACCEPT_LANGUAGE];
        let p = primary("http://h/");
        let a = variant(&p, 1, &names, &headers(&[("accept-language", "en-US, fr")]));
        let b = variant(&p, 1, &names, &headers(&[("accept-language", "en-us,fr")]));
        assert_eq!(a, b);
        let absent = variant(&p, 1, &names, &HeaderMap::new());
        let empty = variant(&p, 1, &names, &headers(&[("accept-language", "")]));
        assert_ne!(absent, empty);
        assert_ne!(a, variant(&p, 2, &names, &headers(&[("accept-language", "en-US, fr")])));
    }

    #[test]
    fn hex_keys_pack_and_others_hash() {
        let hex = "00ff".repeat(16);
        assert_eq!(Key::of(&hex).0[..2], [0x00, 0xff]);
        assert!(Key::of(&hex) != Key::of(&"00fe".repeat(16)));
        assert!(Key::of("not hex") != Key::of("not hex either"));
        assert!(Key::of(&"zz".repeat(32)) == Key::of(&"zz".repeat(32)));
        let k = format!("{}{}", "0a1b".repeat(8), "ff".repeat(16));
        assert_eq!(Key::of(&k).hex(), k);
    }
}
