//! Choosing a content coding from `Accept-Encoding` (RFC 9110 §12.5.3).

use http::HeaderMap;
use http::header::ACCEPT_ENCODING;

pub(crate) use crate::config::Encoding;

/// The coding to send: the acceptable one with the highest q-value, ties broken
/// by `preference` (relais's order). `None` is identity: no `Accept-Encoding`
/// at all (nginx and most servers read that as "identity"), nothing acceptable,
/// or identity listed with a higher q than any coding. When even identity is
/// refused (`identity;q=0`, or `*;q=0` without identity) and no coding fits,
/// identity is sent anyway, as RFC 9110 allows instead of a 406.
pub(crate) fn choose(request: &HeaderMap, preference: &[Encoding]) -> Option<Encoding> {
    let mut listed = false;
    let (mut star, mut identity) = (None, None);
    let mut q_of: [Option<u16>; 3] = [None; 3];
    for value in request.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            listed = true;
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let q =
                parts.find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))).map_or(Some(1000), qvalue);
            let Some(q) = q else { continue };
            match coding {
                "*" => star = Some(q),
                c if c.eq_ignore_ascii_case("identity") => identity = Some(q),
                c => {
                    if let Some(e) = Encoding::parse(c) {
                        q_of[e as usize] = Some(q);
                    }
                }
            }
        }
    }
    if !listed {
        return None;
    }
    let q = |e: Encoding| q_of[e as usize].or(star).unwrap_or(0);
    let best = preference.iter().copied().filter(|e| q(*e) > 0).max_by_key(|e| {
        // Higher q first; among equals the earlier in `preference`.
        let rank = preference.iter().position(|p| p == e).unwrap_or(usize::MAX);
        (q(*e), std::cmp::Reverse(rank))
    })?;
    match identity {
        Some(i) if i > q(best) => None,
        _ => Some(best),
    }
}

/// Whether the client accepts content coded with `e`: listed (or `*`) with a
/// q above zero. No `Accept-Encoding` counts as identity only, as for `choose`.
pub(crate) fn accepts(request: &HeaderMap, e: Encoding) -> bool {
    let (mut own, mut star) = (None, None);
    for value in request.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()) {
        for item in value.split(',').map(str::trim) {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let q =
                parts.find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))).map_or(Some(1000), qvalue);
            match coding {
                "*" => star = q.or(star),
                c if Encoding::parse(c) == Some(e) => own = q.or(own),
                _ => {}
            }
        }
    }
    own.or(star).is_some_and(|q| q > 0)
}

/// A q-value in thousandths; `None` when it is not one.
fn qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::*;

    fn pick(accept: &[&str]) -> Option<Encoding> {
        let mut h = HeaderMap::new();
        for a in accept {
            h.append(ACCEPT_ENCODING, a.parse().unwrap());
        }
        choose(&h, &[Zstd, Br, Gzip])
    }

    #[test]
    fn what_a_client_accepts() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(ACCEPT_ENCODING, v.parse().unwrap());
            m
        };
        assert!(accepts(&h("gzip, br"), Gzip));
        assert!(!accepts(&h("br"), Gzip));
        assert!(!accepts(&h("gzip;q=0"), Gzip));
        assert!(accepts(&h("*"), Zstd));
        assert!(!accepts(&h("*, zstd;q=0"), Zstd));
        assert!(!accepts(&HeaderMap::new(), Gzip), "no header: identity only");
    }

    #[test]
    fn every_negotiation_case() {
        assert_eq!(pick(&[]), None, "no header: identity");
        assert_eq!(pick(&[""]), None, "empty: identity only");
        assert_eq!(pick(&["gzip"]), Some(Gzip));
        assert_eq!(pick(&["gzip, deflate, br"]), Some(Br), "ties go to relais's order");
        assert_eq!(pick(&["gzip, deflate, br, zstd"]), Some(Zstd));
        assert_eq!(pick(&["gzip;q=1.0, br;q=0.5"]), Some(Gzip), "the client's q wins over our order");
        assert_eq!(pick(&["br;q=0, gzip"]), Some(Gzip));
        assert_eq!(pick(&["*"]), Some(Zstd));
        assert_eq!(pick(&["*;q=0.5, gzip;q=0.8"]), Some(Gzip));
        assert_eq!(pick(&["*, zstd;q=0"]), Some(Br));
        assert_eq!(pick(&["identity;q=1, gzip;q=0.5"]), None, "identity preferred");
        assert_eq!(pick(&["identity;q=0, gzip"]), Some(Gzip));
        assert_eq!(pick(&["identity;q=0"]), None, "nothing fits: identity anyway");
        assert_eq!(pick(&["deflate, compress"]), None);
        assert_eq!(pick(&["GZIP", "Br;Q=0.1"]), Some(Gzip), "case and several lines");
        assert_eq!(pick(&["x-gzip"]), Some(Gzip));
        assert_eq!(pick(&["gzip;q=2, br;q=0.1234, zstd;q=abc"]), None, "invalid q-values are ignored");
        assert_eq!(pick(&["gzip ; q=0.001"]), Some(Gzip));
    }
}
