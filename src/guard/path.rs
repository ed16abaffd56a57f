//! Path normalisation (RFC 3986 §6.2.2): percent-encoded unreserved
//! characters decoded and the rest upper-cased, repeated slashes merged (as
//! nginx's `merge_slashes on`), dot-segments removed (§5.2.4). Invalid
//! percent-encoding, an encoded NUL, and encoded `/` or `\` are refused: they
//! are how `/x/..%2Fprivate` would slip past a `/private/` rule. A raw `\` is
//! what `%5C` is (origins on Windows read either as `/`): refused with them,
//! or, where encoded slashes are let through, sent on as `%5C`. Servlet
//! containers drop a segment's parameters (`;x`) before they route, so
//! `/private;x/acct` is their `/private/acct`: parameters are refused on any
//! segment but the last (where a session id, `;jsessionid=`, goes), and there
//! the router and the rules read them as part of the segment they follow.
//!
//! The result is what routing, rules, limits and the cache key see, and what
//! the origin is sent: the origin never gets a path the router did not.

use std::borrow::Cow;

#[derive(Clone, Copy, Debug)]
pub struct Paths {
    pub normalize: bool,
    pub merge_slashes: bool,
    pub reject_encoded_slashes: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    BadEncoding,
    EncodedNul,
    EncodedSlash,
    /// A path made by cutting another (`strip_prefix`) that is not in normal form.
    NotNormal,
    /// A `.` or `..` segment with parameters (`/x/..;/private`): Tomcat and
    /// other servlet containers drop the parameters and read a dot-segment
    /// relais did not resolve.
    DotParameters,
    /// Parameters on a segment before the last (`/private;x/acct`), which
    /// servlet containers read without them (`/private/acct`).
    SegmentParameters,
}

impl PathError {
    pub fn message(&self) -> &'static str {
        match self {
            PathError::BadEncoding => "invalid percent-encoding in the path",
            PathError::EncodedNul => "an encoded NUL in the path",
            PathError::EncodedSlash => "an encoded slash or a backslash in the path",
            PathError::NotNormal => "the path left once the route's prefix is stripped is not in normal form",
            PathError::DotParameters => "a dot-segment with parameters in the path",
            PathError::SegmentParameters => "parameters (;) on a segment before the last in the path",
        }
    }
}

impl Paths {
    /// `path` in normal form; borrowed when it already is (the common case).
    pub fn normalize<'a>(&self, path: &'a str) -> Result<Cow<'a, str>, PathError> {
        if !self.normalize {
            if self.reject_encoded_slashes && path.contains(['%', '\\']) {
                scan_escapes(path, true)?;
            }
            return Ok(path.into());
        }
        if !path.starts_with('/') {
            // `*` (OPTIONS) and the like: nothing to normalise.
            if self.reject_encoded_slashes && path.contains('\\') {
                return Err(PathError::EncodedSlash);
            }
            return Ok(path.into());
        }
        if is_normal(path, self.merge_slashes) {
            return Ok(path.into());
        }
        let decoded = decode(path, self.reject_encoded_slashes)?;
        if decoded.split('/').any(|seg| seg.starts_with(".;") || seg.starts_with("..;")) {
            return Err(PathError::DotParameters);
        }
        if parameters_before_last(&decoded) {
            return Err(PathError::SegmentParameters);
        }
        Ok(remove_dots(&decoded, self.merge_slashes).into())
    }
}

/// A `;` with a `/` after it.
fn parameters_before_last(path: &str) -> bool {
    path.find(';').is_some_and(|i| path[i..].contains('/'))
}

/// The path as a servlet container routes it: without the last segment's
/// parameters (a normal path has none before it).
pub(crate) fn without_parameters(path: &str) -> &str {
    path.split_once(';').map_or(path, |(name, _)| name)
}

/// No escapes or backslashes, no `//` (when merging), no `.` or `..` segment
/// (with or without parameters), no parameters before the last segment.
fn is_normal(path: &str, merge: bool) -> bool {
    let b = path.as_bytes();
    if b.contains(&b'%') || b.contains(&b'\\') || parameters_before_last(path) {
        return false;
    }
    // The leading `/` opens the first segment.
    let mut segment_start = false;
    for (i, &c) in b.iter().enumerate() {
        if segment_start {
            let rest = &b[i..];
            let dot = rest.starts_with(b".") && matches!(rest.get(1), None | Some(b'/' | b';'));
            let dots = rest.starts_with(b"..") && matches!(rest.get(2), None | Some(b'/' | b';'));
            if dot || dots || (merge && c == b'/') {
                return false;
            }
        }
        segment_start = c == b'/';
    }
    true
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Checks every escape; with `slashes`, `%2F` and `%5C` are errors.
fn scan_escapes(path: &str, slashes: bool) -> Result<(), PathError> {
    decode(path, slashes).map(|_| ())
}

/// Unreserved characters decoded, other escapes kept in upper case, a raw
/// backslash treated as `%5C`.
fn decode(path: &str, reject_slashes: bool) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if reject_slashes {
                return Err(PathError::EncodedSlash);
            }
            out.push_str("%5C");
            i += 1;
            continue;
        }
        if b[i] != b'%' {
            let next = b[i..].iter().position(|&c| c == b'%' || c == b'\\').map_or(b.len(), |p| i + p);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let (Some(hi), Some(lo)) = (b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c))) else {
            return Err(PathError::BadEncoding);
        };
        let c = hi << 4 | lo;
        match c {
            0 => return Err(PathError::EncodedNul),
            b'/' | b'\\' if reject_slashes => return Err(PathError::EncodedSlash),
            c if unreserved(c) => out.push(c as char),
            c => {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(c >> 4)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(c & 15)]));
            }
        }
        i += 3;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 on an absolute path, merging empty segments when asked.
/// A trailing `.` or `..` leaves a trailing slash (`/a/b/..` is `/a/`).
fn remove_dots(path: &str, merge: bool) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            "" if merge && i != last => {}
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON: Paths = Paths { normalize: true, merge_slashes: true, reject_encoded_slashes: true };

    fn n(p: &str) -> Result<String, PathError> {
        ON.normalize(p).map(Cow::into_owned)
    }

    #[test]
    fn tricks_that_would_slip_past_a_prefix_land_on_it() {
        for (raw, want) in [
            ("/x/../private/", "/private/"),
            ("/%70rivate/", "/private/"),
            ("/./private", "/private"),
            ("//private", "/private"),
            ("/a/./b/../../private/c", "/private/c"),
            ("/%2e%2e/private", "/private"),
            ("/%2E./private", "/private"),
            ("/a/%2e%2E/private", "/private"),
            ("/../../private", "/private"),
            ("/private///x//", "/private/x/"),
        ] {
            assert_eq!(n(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn refused_encodings() {
        assert_eq!(n("/x/..%2Fprivate"), Err(PathError::EncodedSlash));
        assert_eq!(n("/x/..%5cprivate"), Err(PathError::EncodedSlash));
        assert_eq!(n("/a%00b"), Err(PathError::EncodedNul));
        assert_eq!(n("/a%zz"), Err(PathError::BadEncoding));
        assert_eq!(n("/a%4"), Err(PathError::BadEncoding));
        assert_eq!(n("/a%"), Err(PathError::BadEncoding));
        for tomcat in ["/x/..;/private/", "/x/..;jsessionid=1/private", "/.;x/private", "/x/%2e%2e;/private"] {
            assert_eq!(n(tomcat), Err(PathError::DotParameters), "{tomcat}");
        }
        for servlet in ["/private;x/acct", "/a;b/c", "/private/;x/a", "/a;b/../private"] {
            assert_eq!(n(servlet), Err(PathError::SegmentParameters), "{servlet}");
        }
        assert_eq!(
            n("/a/b;jsessionid=1").unwrap(),
            "/a/b;jsessionid=1",
            "the last segment's are the origin's business"
        );
        assert_eq!(without_parameters("/a/b;jsessionid=1"), "/a/b");
        let allow = Paths { reject_encoded_slashes: false, ..ON };
        assert_eq!(allow.normalize("/a%2fb").unwrap(), "/a%2Fb", "kept encoded, upper-cased");
        let off = Paths { normalize: false, ..ON };
        assert_eq!(off.normalize("/x/../a").unwrap(), "/x/../a");
        assert!(off.normalize("/a%2Fb").is_err(), "slashes are still refused");
        assert!(off.normalize("/a\\b").is_err(), "and backslashes");
    }

    #[test]
    fn a_raw_backslash_is_an_encoded_one() {
        for p in ["/x/..\\private/acct", "\\private", "/a\\"] {
            assert_eq!(n(p), Err(PathError::EncodedSlash), "{p}");
        }
        let allow = Paths { reject_encoded_slashes: false, ..ON };
        assert_eq!(allow.normalize("/x/..\\private/./acct").unwrap(), "/x/..%5Cprivate/acct");
        assert_eq!(allow.normalize("/a\\b").unwrap(), allow.normalize("/a%5cb").unwrap());
    }

    #[test]
    fn normal_paths_are_borrowed_and_other_escapes_kept() {
        for p in ["/", "/a/b.c/d", "/a/.hidden/..x", "/a/b/", "*"] {
            assert!(matches!(ON.normalize(p).unwrap(), Cow::Borrowed(_)), "{p}");
        }
        assert_eq!(n("/a%20b/%e2%82%ac").unwrap(), "/a%20b/%E2%82%AC");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/.").unwrap(), "/a/");
        assert_eq!(n("/..").unwrap(), "/");
        let keep = Paths { merge_slashes: false, ..ON };
        assert_eq!(keep.normalize("/a//b/../c").unwrap(), "/a//c");
    }

    /// Seeded random paths from the characters that matter: normalising never
    /// panics, and what it returns has no dot segment or empty segment left
    /// and is its own normal form (so no second pass could route it elsewhere).
    #[test]
    fn random_paths_normalise_to_a_fixed_point() {
        const ALPHABET: &[u8] = b"/./.%2e%2E%2f%5c%70aA0%%zz//\\";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut normalised = 0;
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let mut p = String::from("/");
            for _ in 0..len {
                p.push(ALPHABET[(next() % ALPHABET.len() as u64) as usize] as char);
            }
            let Ok(out) = ON.normalize(&p) else { continue };
            assert!(out.starts_with('/'), "{p} -> {out}");
            assert!(!out.contains("//"), "{p} -> {out}");
            assert!(out.split('/').all(|seg| seg != "." && seg != ".."), "{p} -> {out}");
            assert!(!out.to_ascii_lowercase().contains("%2e"), "{p} -> {out}");
            assert_eq!(ON.normalize(&out).as_deref(), Ok(&*out), "{p} -> {out} is not final");
            normalised += 1;
        }
        assert!(normalised > 2_000, "only {normalised} paths were valid: the alphabet tests little");
    }
}
