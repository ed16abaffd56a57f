//! `Vary` (RFC 9110 §12.5.5): which request headers select a stored variant.
//!
//! The proxy keys a variant by the sorted `Vary` names and, for each, the request's
//! normalised value. Normalisation must map equivalent requests to one string (so
//! `en-US, fr` and `en-us,fr` share a variant) and never merge different ones; an
//! absent header (`None`) is distinct from an empty one (`Some("")`). Every value of
//! a header counts, unlike http-cache-semantics, which compares the first only.

use http::header::{HeaderName, HeaderValue, VARY};
use http::{HeaderMap, header};

use crate::Bypass;

/// Request headers whose values are case-insensitive tokens, so lower-casing them
/// cannot merge requests the origin would answer differently.
const CASE_INSENSITIVE: [HeaderName; 4] =
    [header::ACCEPT, header::ACCEPT_CHARSET, header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE];

/// The header names a response varies on: lower-case, sorted, deduplicated.
///
/// `Vary: *`, or a member that is not a valid header name, means no request can be
/// matched to the response: `Err(Bypass::VaryStar)`.
pub fn vary_names(res: &HeaderMap) -> Result<Vec<HeaderName>, Bypass> {
    let mut names = Vec::new();
    for value in res.get_all(VARY) {
        let value = value.to_str().map_err(|_| Bypass::VaryStar)?;
        for member in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            if member == "*" {
                return Err(Bypass::VaryStar);
            }
            // HeaderName::from_bytes lower-cases.
            names.push(HeaderName::from_bytes(member.as_bytes()).map_err(|_| Bypass::VaryStar)?);
        }
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Ok(names)
}

/// The request's value for one `Vary` header, normalised for the variant key.
///
/// `value` holds every line of the header in order; `None` (or no line) means the
/// header is absent, which yields `None`. Lines are joined with `,`, list members
/// trimmed, empty members dropped (RFC 9110 §5.6.1), and the whitespace around `,`
/// removed. For the `Accept*` headers the value is also lower-cased and the
/// whitespace around `;` removed (parameters such as `;q=0.8`).
///
/// `Accept-Language` and `Accept-Encoding` are compared by meaning: members are
/// ordered by q-value (highest first; `q=1.0`, `q=1` and none are one value,
/// `q=0.50` is `q=0.5`), members of equal q-value sorted (`en, de` is
/// `de, en`: RFC 9110 gives a tie no order, and browsers write distinct
/// weights), and `x-gzip` is `gzip`.
pub fn normalize_vary_value(name: &HeaderName, value: Option<&[&HeaderValue]>) -> Option<String> {
    let lines = value.filter(|lines| !lines.is_empty())?;
    let token_header = CASE_INSENSITIVE.contains(name);
    let mut members: Vec<String> = lines
        .iter()
        .flat_map(|line| split_members(line.as_bytes()))
        .map(escape)
        .map(|m| if token_header { normalize_token_member(&m) } else { m })
        .collect();
    let encoding = *name == header::ACCEPT_ENCODING;
    if encoding || *name == header::ACCEPT_LANGUAGE {
        let mut weighted: Vec<(u16, String)> = Vec::with_capacity(members.len());
        for m in &members {
            // A member whose q-value cannot be read keeps the value as it is.
            let Some(w) = weigh(m, encoding) else { return Some(members.join(",")) };
            weighted.push(w);
        }
        weighted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        members =
            weighted.into_iter().map(|(q, m)| if q == 1000 { m } else { format!("{m};q={}", q_text(q)) }).collect();
    }
    Some(members.join(","))
}

/// `gzip;q=0.50` → (500, "gzip"); None if the q-value is not one, or the member
/// has other parameters.
fn weigh(member: &str, encoding: bool) -> Option<(u16, String)> {
    let mut parts = member.split(';');
    let token = parts.next()?;
    let q = match parts.next() {
        None => 1000,
        Some(p) => parse_q(p.strip_prefix("q=")?)?,
    };
    if parts.next().is_some() {
        return None;
    }
    let token = if encoding && token == "x-gzip" { "gzip" } else { token };
    Some((q, token.to_string()))
}

/// A qvalue (RFC 9110 §12.4.2) in thousandths.
fn parse_q(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// 500 → `0.5`.
fn q_text(q: u16) -> String {
    let text = format!("0.{q:03}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Splits a line into trimmed, non-empty comma-separated members.
fn split_members(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|m| !m.is_empty())
}

/// Text of a member; bytes outside visible ASCII (and `%` itself) are written as
/// `%XX`, so distinct raw values never collapse into one string.
fn escape(member: &[u8]) -> String {
    let mut out = String::with_capacity(member.len());
    for &b in member {
        if (b == b' ' || b == b'\t' || b.is_ascii_graphic()) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `en-US; q=0.8` → `en-us;q=0.8`.
fn normalize_token_member(member: &str) -> String {
    member.split(';').map(|p| p.trim().to_ascii_lowercase()).collect::<Vec<_>>().join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(name: &str, lines: &[&str]) -> Option<String> {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        let values: Vec<HeaderValue> = lines.iter().map(|l| l.parse().unwrap()).collect();
        let refs: Vec<&HeaderValue> = values.iter().collect();
        normalize_vary_value(&name, Some(&refs))
    }

    #[test]
    fn equivalent_values_normalise_alike() {
        let table: &[(&str, &[&str], &[&str])] = &[
            ("accept-language", &["en-US, fr"], &["en-us,fr"]),
            ("accept-language", &["en-US", "fr"], &["en-us ,  fr"]),
            ("accept-language", &["en-US;q=0.8, fr; Q=0.5"], &["en-us; q=0.8,fr;q=0.5"]),
            ("accept-encoding", &["GZIP, br,"], &["gzip,br"]),
            ("accept-encoding", &["gzip, br"], &["br, gzip"]),
            ("accept-encoding", &["gzip;q=1.0, br;q=0.50"], &["br;q=0.5 , gzip"]),
            ("accept-encoding", &["x-gzip, deflate"], &["deflate, gzip"]),
            ("accept-encoding", &["identity;q=0, gzip"], &["gzip, identity;q=0.000"]),
            ("accept-language", &["fr;q=0.5, en"], &["en, fr;q=0.5"]),
            ("accept-language", &["en;q=1, de;q=0.3, fr;q=0.7"], &["en, fr;q=0.7, de;q=0.3"]),
            ("accept-language", &["en, de"], &["de, en"]),
            ("accept-language", &["en-US, fr;q=0.5, de;q=0.5"], &["de;q=0.5, en-us, fr;q=0.50"]),
            ("accept", &["Text/HTML, */*;q=0.1"], &["text/html,*/*; q=0.1"]),
            ("x-custom", &["a ,b", "c"], &["a,b,c"]),
            ("x-custom", &["a, , b"], &["a,b"]),
        ];
        for (name, a, b) in table {
            assert_eq!(norm(name, a), norm(name, b), "{name}: {a:?} vs {b:?}");
        }
    }

    #[test]
    fn different_values_stay_different() {
        let table: &[(&str, &[&str], &[&str])] = &[
            ("x-custom", &["Token"], &["token"]),
            ("cookie", &["a=B"], &["a=b"]),
            ("accept-language", &["en, fr;q=0.9"], &["fr, en;q=0.9"]),
            ("accept-encoding", &["gzip"], &["br"]),
            ("accept-encoding", &["gzip;q=0.5, br"], &["gzip, br;q=0.5"]),
            ("accept-encoding", &["gzip;q=2"], &["gzip"]),
            ("accept-language", &["en;q=0.5"], &["en"]),
            ("user-agent", &["Mozilla/5.0 (X11)"], &["Mozilla/5.0  (X11)"]),
        ];
        for (name, a, b) in table {
            assert_ne!(norm(name, a), norm(name, b), "{name}: {a:?} vs {b:?}");
        }
    }

    #[test]
    fn non_ascii_bytes_are_escaped_not_merged() {
        let name = HeaderName::from_static("x-custom");
        let a = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        let b = HeaderValue::from_bytes(b"caf\xe8").unwrap();
        let c = HeaderValue::from_static("caf%E9");
        let norm = |v: &HeaderValue| normalize_vary_value(&name, Some(&[v]));
        assert_eq!(norm(&a).as_deref(), Some("caf%E9"));
        assert_ne!(norm(&a), norm(&b));
        assert_eq!(norm(&c).as_deref(), Some("caf%25E9"));
    }

    #[test]
    fn absent_is_not_empty() {
        let name = header::ACCEPT_ENCODING;
        assert_eq!(normalize_vary_value(&name, None), None);
        assert_eq!(normalize_vary_value(&name, Some(&[])), None);
        assert_eq!(norm("accept-encoding", &[""]), Some(String::new()));
    }

    #[test]
    fn vary_names_sorted_lowercase_dedup() {
        let mut res = HeaderMap::new();
        res.append(VARY, "Accept-Encoding, Origin".parse().unwrap());
        res.append(VARY, "accept-encoding,,Accept-Language".parse().unwrap());
        let names = vary_names(&res).unwrap();
        let names: Vec<_> = names.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept-encoding", "accept-language", "origin"]);
        assert_eq!(vary_names(&HeaderMap::new()), Ok(vec![]));
    }

    #[test]
    fn vary_star_and_garbage() {
        for value in ["*", "accept, *", "bad name"] {
            let mut res = HeaderMap::new();
            res.insert(VARY, value.parse().unwrap());
            assert_eq!(vary_names(&res), Err(Bypass::VaryStar), "{value}");
        }
    }
}
