//! Table-driven decisions: request headers + response headers + rules + clock →
//! expected outcome. See `support` for the `@N` date notation.

mod support;

use std::time::Duration;

use cache_policy::{
    Bypass, Freshness, Policy, Revalidation, Rules, invalidations, lookup_allowed, not_modified, only_if_cached,
    storable_headers,
};
use http::{HeaderMap, Method, StatusCode, Uri};
use support::{URI, at, date, headers, req, req_with, res, secs};

type Headers = &'static [(&'static str, &'static str)];
/// (what, request headers, status, response headers, rules, lifetime in seconds or reason)
type StoreCase<'r> = (&'static str, Headers, u16, Headers, &'r Rules, Result<u64, Bypass>);
/// (what, method, request headers, rules, expected)
type LookupCase<'r> = (&'static str, Method, Headers, &'r Rules, Result<(), Bypass>);

fn policy(req_h: Headers, status: u16, res_h: Headers, rules: &Rules) -> Result<Policy, Bypass> {
    Policy::new(&req(req_h), &res(status, res_h), rules, at(0), at(0))
}

#[test]
fn storability_and_lifetime() {
    let none = Rules::default();
    let default_30 = Rules { default_ttl: secs(30), ..Rules::default() };
    let override_50 = Rules { override_ttl: secs(50), ..Rules::default() };
    let set_cookie = Rules { store_set_cookie: true, ..Rules::default() };
    let swr_30 = Rules { stale_while_revalidate: secs(30), ..Rules::default() };
    let sie_30 = Rules { stale_if_error: secs(30), ..Rules::default() };
    let bypass = Rules { bypass: true, ..Rules::default() };
    let min_60 = Rules { min_ttl: secs(60), ..Rules::default() };
    let max_600 = Rules { max_ttl: secs(600), ..Rules::default() };
    let crossed = Rules { min_ttl: secs(900), max_ttl: secs(600), ..Rules::default() };
    let override_max = Rules { override_ttl: secs(1000), max_ttl: secs(100), ..Rules::default() };
    let targeted = Rules {
        targeted: vec![
            http::HeaderName::from_static("relais-cache-control"),
            http::HeaderName::from_static("cdn-cache-control"),
        ],
        ..Rules::default()
    };

    #[rustfmt::skip]
    let table: &[StoreCase] = &[
        ("s-maxage beats max-age", &[], 200, &[("cache-control", "max-age=60, s-maxage=120")], &none, Ok(120)),
        ("max-age beats Expires", &[], 200, &[("cache-control", "max-age=60"), ("expires", "@300")], &none, Ok(60)),
        ("s-maxage beats Expires", &[], 200, &[("cache-control", "s-maxage=10"), ("expires", "@300")], &none, Ok(10)),
        ("Expires minus Date", &[], 200, &[("expires", "@300")], &none, Ok(300)),
        ("Expires counts from Date", &[], 200, &[("date", "@-100"), ("expires", "@200")], &none, Ok(300)),
        ("Expires before Date", &[], 200, &[("expires", "@-10"), ("etag", "\"v\"")], &none, Ok(0)),
        ("invalid Expires is expired", &[], 200, &[("expires", "0"), ("last-modified", "@-10000")], &none, Ok(0)),
        ("invalid Expires beats default_ttl", &[], 200, &[("expires", "never"), ("etag", "\"v\"")], &default_30, Ok(0)),
        ("invalid Expires, no validator", &[], 200, &[("expires", "0")], &none, Err(Bypass::ZeroTtl)),
        ("heuristic 10% of Last-Modified", &[], 200, &[("last-modified", "@-10000")], &none, Ok(1000)),
        ("heuristic for 404", &[], 404, &[("last-modified", "@-10000")], &none, Ok(1000)),
        ("Last-Modified in the future", &[], 200, &[("last-modified", "@50")], &none, Ok(0)),
        ("default_ttl instead of heuristic", &[], 200, &[("last-modified", "@-10000")], &default_30, Ok(30)),
        ("default_ttl without validator", &[], 200, &[], &default_30, Ok(30)),
        ("default_ttl loses to max-age", &[], 200, &[("cache-control", "max-age=5")], &default_30, Ok(5)),
        ("nothing to go on", &[], 200, &[], &none, Err(Bypass::ZeroTtl)),
        ("max-age=0 without validator", &[], 200, &[("cache-control", "max-age=0")], &none, Err(Bypass::ZeroTtl)),
        ("max-age=0 with validator", &[], 200, &[("cache-control", "max-age=0"), ("etag", "\"v\"")], &none, Ok(0)),
        ("max-age=0 kept for its swr", &[], 200, &[("cache-control", "max-age=0, stale-while-revalidate=30")], &none, Ok(0)),
        ("max-age=0 kept for rule swr", &[], 200, &[("cache-control", "max-age=0")], &swr_30, Ok(0)),
        ("max-age=0 kept for rule sie", &[], 200, &[("cache-control", "max-age=0")], &sie_30, Ok(0)),
        ("must-revalidate voids the windows", &[], 200, &[("cache-control", "max-age=0, must-revalidate")], &swr_30, Err(Bypass::ZeroTtl)),
        ("conflicting max-age is stale", &[], 200, &[("cache-control", "max-age=60, max-age=30"), ("etag", "\"v\"")], &none, Ok(0)),
        ("override beats max-age=0", &[], 200, &[("cache-control", "max-age=0")], &override_50, Ok(50)),
        ("override beats Expires", &[], 200, &[("expires", "@9000")], &override_50, Ok(50)),
        ("override beats no-cache", &[], 200, &[("cache-control", "no-cache")], &override_50, Ok(50)),
        ("override keeps no-store", &[], 200, &[("cache-control", "no-store")], &override_50, Err(Bypass::NoStore)),
        ("override keeps private", &[], 200, &[("cache-control", "private")], &override_50, Err(Bypass::Private)),
        ("override is clamped", &[], 200, &[], &override_max, Ok(100)),
        ("min_ttl raises", &[], 200, &[("cache-control", "max-age=5")], &min_60, Ok(60)),
        ("min_ttl raises no freshness", &[], 200, &[], &min_60, Ok(60)),
        ("max_ttl lowers", &[], 200, &[("cache-control", "max-age=5000")], &max_600, Ok(600)),
        ("max_ttl lowers heuristic", &[], 200, &[("last-modified", "@-100000000")], &max_600, Ok(600)),
        ("max_ttl wins when crossed", &[], 200, &[("cache-control", "max-age=5")], &crossed, Ok(600)),
        ("min_ttl does not cover no-cache", &[], 200, &[("cache-control", "no-cache"), ("etag", "\"v\"")], &min_60, Ok(0)),
        ("no-store", &[], 200, &[("cache-control", "public, max-age=60, no-store")], &none, Err(Bypass::NoStore)),
        ("NO-STORE any case", &[], 200, &[("cache-control", "NO-STORE")], &none, Err(Bypass::NoStore)),
        ("private", &[], 200, &[("cache-control", "private, max-age=60")], &none, Err(Bypass::Private)),
        ("qualified private", &[], 200, &[("cache-control", "private=\"set-cookie\", max-age=60")], &none, Err(Bypass::Private)),
        ("no-cache stored with validator", &[], 200, &[("cache-control", "no-cache, max-age=60"), ("etag", "\"v\"")], &none, Ok(0)),
        ("no-cache without validator", &[], 200, &[("cache-control", "no-cache")], &default_30, Err(Bypass::ZeroTtl)),
        ("Pragma no-cache alone", &[], 200, &[("pragma", "no-cache"), ("expires", "@300"), ("etag", "\"v\"")], &none, Ok(0)),
        ("Pragma no-cache under Cache-Control", &[], 200, &[("pragma", "no-cache"), ("cache-control", "max-age=60")], &none, Ok(60)),
        ("Authorization alone", &[("authorization", "Bearer x")], 200, &[("cache-control", "max-age=60")], &none, Err(Bypass::Authorization)),
        ("Authorization + public", &[("authorization", "Bearer x")], 200, &[("cache-control", "public, max-age=60")], &none, Ok(60)),
        ("Authorization + s-maxage", &[("authorization", "Bearer x")], 200, &[("cache-control", "s-maxage=60")], &none, Ok(60)),
        ("Authorization + must-revalidate", &[("authorization", "Bearer x")], 200, &[("cache-control", "must-revalidate, max-age=60")], &none, Ok(60)),
        ("Set-Cookie", &[], 200, &[("set-cookie", "id=1"), ("cache-control", "max-age=60")], &none, Err(Bypass::SetCookie)),
        ("Set-Cookie even if public", &[], 200, &[("set-cookie", "id=1"), ("cache-control", "public, max-age=60")], &none, Err(Bypass::SetCookie)),
        ("Set-Cookie with store_set_cookie", &[], 200, &[("set-cookie", "id=1"), ("cache-control", "max-age=60")], &set_cookie, Ok(60)),
        ("302 without freshness", &[], 302, &[("last-modified", "@-10000")], &default_30, Err(Bypass::Status)),
        ("302 with max-age", &[], 302, &[("cache-control", "max-age=60")], &none, Ok(60)),
        ("307 with Expires", &[], 307, &[("expires", "@60")], &none, Ok(60)),
        ("302 public alone", &[], 302, &[("cache-control", "public")], &default_30, Err(Bypass::Status)),
        ("500 with max-age", &[], 500, &[("cache-control", "max-age=60")], &none, Ok(60)),
        ("299 with max-age", &[], 299, &[("cache-control", "max-age=60")], &none, Ok(60)),
        ("400 with max-age", &[], 400, &[("cache-control", "max-age=60")], &none, Ok(60)),
        ("499 with max-age", &[], 499, &[("cache-control", "max-age=60")], &none, Ok(60)),
        ("502 with Expires", &[], 502, &[("expires", "@60")], &none, Ok(60)),
        ("503 with s-maxage", &[], 503, &[("cache-control", "s-maxage=60")], &none, Ok(60)),
        ("504 with max-age", &[], 504, &[("cache-control", "max-age=60")], &none, Ok(60)),
        ("599 with max-age", &[], 599, &[("cache-control", "max-age=60")], &none, Ok(60)),
        ("500 without freshness", &[], 500, &[("last-modified", "@-10000")], &none, Err(Bypass::Status)),
        ("must-understand, status unknown", &[], 299, &[("cache-control", "max-age=60, must-understand")], &none, Err(Bypass::Status)),
        ("must-understand, status known", &[], 200, &[("cache-control", "max-age=60, must-understand")], &none, Ok(60)),
        ("must-understand beats no-store", &[], 200, &[("cache-control", "max-age=60, must-understand, no-store")], &none, Ok(60)),
        ("CDN-Cache-Control beats Cache-Control", &[], 200, &[("cache-control", "no-store"), ("cdn-cache-control", "max-age=60")], &targeted, Ok(60)),
        ("relais's field beats CDN's", &[], 200, &[("relais-cache-control", "max-age=30"), ("cdn-cache-control", "max-age=60")], &targeted, Ok(30)),
        ("targeted field ignores Expires", &[], 200, &[("expires", "@300"), ("cdn-cache-control", "max-age=10")], &targeted, Ok(10)),
        ("targeted no-store", &[], 200, &[("cache-control", "max-age=60"), ("cdn-cache-control", "no-store")], &targeted, Err(Bypass::NoStore)),
        ("targeted field: Cache-Control private ignored", &[], 200, &[("cache-control", "private"), ("cdn-cache-control", "s-maxage=60")], &targeted, Ok(60)),
        ("invalid targeted field falls back", &[], 200, &[("cache-control", "max-age=5"), ("cdn-cache-control", "\"x\"")], &targeted, Ok(5)),
        ("empty targeted field falls back", &[], 200, &[("cache-control", "max-age=5"), ("cdn-cache-control", "")], &targeted, Ok(5)),
        ("not targeted: CDN field ignored", &[], 200, &[("cache-control", "max-age=5"), ("cdn-cache-control", "max-age=60")], &none, Ok(5)),
        ("must-understand 599 with no-store", &[], 599, &[("cache-control", "max-age=60, must-understand, no-store")], &none, Err(Bypass::Status)),
        ("503 with override", &[], 503, &[], &override_50, Err(Bypass::Status)),
        ("206 without Content-Range", &[], 206, &[("cache-control", "max-age=60")], &none, Err(Bypass::Status)),
        ("206 of unknown length", &[], 206, &[("cache-control", "max-age=60"), ("content-range", "bytes 0-4/*")], &none, Err(Bypass::Status)),
        ("206 single part", &[], 206, &[("cache-control", "max-age=60"), ("content-range", "bytes 0-4/10")], &none, Ok(60)),
        ("206 heuristic", &[], 206, &[("content-range", "bytes 0-4/10")], &default_30, Ok(30)),
        ("304 is not a stored status", &[], 304, &[("cache-control", "max-age=60")], &none, Err(Bypass::Status)),
        ("301 heuristic status", &[], 301, &[], &default_30, Ok(30)),
        ("Vary: *", &[], 200, &[("vary", "accept, *"), ("cache-control", "max-age=60")], &none, Err(Bypass::VaryStar)),
        ("Vary names", &[], 200, &[("vary", "Accept-Encoding"), ("cache-control", "max-age=60")], &none, Ok(60)),
        ("route bypass", &[], 200, &[("cache-control", "max-age=60")], &bypass, Err(Bypass::Route)),
        ("request no-store", &[("cache-control", "no-store")], 200, &[("cache-control", "max-age=60")], &none, Err(Bypass::RequestNoStore)),
    ];
    for (what, req_h, status, res_h, rules, expected) in table {
        let got = policy(req_h, *status, res_h, rules).map(|p| p.lifetime().as_secs());
        assert_eq!(got, *expected, "{what}");
    }
}

#[test]
fn only_get_responses_are_stored() {
    let res = res(200, &[("cache-control", "max-age=60")]);
    for method in [Method::HEAD, Method::POST, Method::PUT, Method::OPTIONS] {
        let got = Policy::new(&req_with(method.clone(), &[]), &res, &Rules::default(), at(0), at(0));
        assert_eq!(got.unwrap_err(), Bypass::Method, "{method}");
    }
}

#[test]
fn age_follows_rfc9111() {
    // (what, response headers, request sent, response arrived, now, expected age)
    #[rustfmt::skip]
    let table: &[(&str, Headers, i64, i64, i64, u64)] = &[
        ("fresh from origin", &[], 0, 0, 0, 0),
        ("resident time", &[], 0, 0, 25, 25),
        ("origin Age", &[("age", "10")], 0, 0, 0, 10),
        ("origin Age plus response delay", &[("age", "10"), ("date", "@-2")], -2, 0, 5, 17),
        ("apparent age wins", &[("age", "10"), ("date", "@-100")], -2, 0, 0, 100),
        ("Date in the future", &[("date", "@500")], 0, 0, 3, 3),
        ("invalid Age ignored", &[("age", "ten")], 0, 0, 0, 0),
        ("now before arrival", &[("age", "4")], 0, 0, -50, 4),
    ];
    for (what, res_h, sent, arrived, now, expected) in table {
        let p = Policy::new(
            &req(&[]),
            &res(200, &[*res_h, &[("cache-control", "max-age=1000")]].concat()),
            &Rules::default(),
            at(*sent),
            at(*arrived),
        )
        .unwrap();
        assert_eq!(p.age(at(*now)), Duration::from_secs(*expected), "{what}");
        assert_eq!(p.ttl(at(*now)), Duration::from_secs(1000 - expected), "{what}");
    }
}

#[test]
fn evaluate_applies_response_and_request_directives() {
    use Freshness::{Fresh, MustRevalidate, RequestRevalidates, Stale};
    let none = Rules::default();
    let windows = Rules { stale_while_revalidate: secs(30), stale_if_error: secs(300), ..Rules::default() };
    let override_60 = Rules { override_ttl: secs(60), ..Rules::default() };
    let stale = |swr, sie| Stale { within_swr: swr, within_sie: sie };

    // (what, response headers, rules, request headers, now, expected)
    #[rustfmt::skip]
    let table: &[(&str, Headers, &Rules, Headers, i64, Freshness)] = &[
        ("fresh", &[("cache-control", "max-age=60")], &none, &[], 30, Fresh),
        ("stale at lifetime", &[("cache-control", "max-age=60")], &none, &[], 60, stale(false, false)),
        ("origin Age counts", &[("cache-control", "max-age=60"), ("age", "50")], &none, &[], 10, stale(false, false)),
        ("response swr", &[("cache-control", "max-age=60, stale-while-revalidate=30")], &none, &[], 89, stale(true, false)),
        ("response swr over", &[("cache-control", "max-age=60, stale-while-revalidate=30")], &none, &[], 90, stale(false, false)),
        ("rule windows", &[("cache-control", "max-age=60")], &windows, &[], 70, stale(true, true)),
        ("rule sie outlasts swr", &[("cache-control", "max-age=60")], &windows, &[], 200, stale(false, true)),
        ("response swr beats rule", &[("cache-control", "max-age=60, stale-while-revalidate=5")], &windows, &[], 70, stale(false, true)),
        ("response sie beats rule", &[("cache-control", "max-age=60, stale-if-error=5")], &windows, &[], 70, stale(true, false)),
        ("response sie", &[("cache-control", "max-age=60, stale-if-error=100")], &none, &[], 150, stale(false, true)),
        ("request sie", &[("cache-control", "max-age=60")], &none, &[("cache-control", "stale-if-error=100")], 150, stale(false, true)),
        ("request sie expired", &[("cache-control", "max-age=60")], &none, &[("cache-control", "stale-if-error=100")], 170, stale(false, false)),
        ("must-revalidate kills windows", &[("cache-control", "max-age=60, must-revalidate, stale-while-revalidate=30, stale-if-error=30")], &windows, &[("cache-control", "stale-if-error=99")], 61, stale(false, false)),
        ("proxy-revalidate kills windows", &[("cache-control", "max-age=60, proxy-revalidate")], &windows, &[], 61, stale(false, false)),
        ("proxy-revalidate still fresh", &[("cache-control", "max-age=60, proxy-revalidate")], &none, &[], 30, Fresh),
        ("response no-cache", &[("cache-control", "no-cache, max-age=60"), ("etag", "\"v\"")], &windows, &[], 0, MustRevalidate),
        ("response Pragma no-cache", &[("pragma", "no-cache"), ("etag", "\"v\"")], &none, &[], 0, MustRevalidate),
        ("override ignores no-cache", &[("cache-control", "no-cache")], &override_60, &[], 30, Fresh),
        ("request no-cache", &[("cache-control", "max-age=60")], &none, &[("cache-control", "no-cache")], 0, RequestRevalidates),
        ("request Pragma no-cache", &[("cache-control", "max-age=60")], &none, &[("pragma", "no-cache")], 0, RequestRevalidates),
        ("request Pragma under Cache-Control", &[("cache-control", "max-age=60")], &none, &[("pragma", "no-cache"), ("cache-control", "max-stale")], 0, Fresh),
        ("request max-age exceeded", &[("cache-control", "max-age=60")], &none, &[("cache-control", "max-age=10")], 30, RequestRevalidates),
        ("request max-age met", &[("cache-control", "max-age=60")], &none, &[("cache-control", "max-age=30")], 30, Fresh),
        ("request max-age=0 beats swr", &[("cache-control", "max-age=60")], &windows, &[("cache-control", "max-age=0")], 61, MustRevalidate),
        ("request min-fresh unmet", &[("cache-control", "max-age=60")], &none, &[("cache-control", "min-fresh=40")], 30, RequestRevalidates),
        ("request min-fresh met", &[("cache-control", "max-age=60")], &none, &[("cache-control", "min-fresh=20")], 30, Fresh),
        ("request max-stale bare", &[("cache-control", "max-age=60")], &none, &[("cache-control", "max-stale")], 9000, Fresh),
        ("request max-stale within", &[("cache-control", "max-age=60")], &none, &[("cache-control", "max-stale=10")], 70, Fresh),
        ("request max-stale beyond", &[("cache-control", "max-age=60")], &none, &[("cache-control", "max-stale=10")], 71, stale(false, false)),
        ("max-stale vs must-revalidate", &[("cache-control", "max-age=60, must-revalidate")], &none, &[("cache-control", "max-stale")], 70, stale(false, false)),
    ];
    for (what, res_h, rules, req_h, now, expected) in table {
        let p = policy(&[], 200, res_h, rules).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(p.evaluate(&req(req_h), at(*now)), *expected, "{what}");
    }
}

#[test]
fn stale_windows_and_usable_time() {
    let rules = Rules { stale_while_revalidate: secs(30), stale_if_error: secs(300), ..Rules::default() };
    let p = policy(&[], 200, &[("cache-control", "max-age=60")], &rules).unwrap();
    assert_eq!(p.stale_while_revalidate(), Duration::from_secs(30));
    assert_eq!(p.stale_if_error(&req(&[])), Duration::from_secs(300));
    assert_eq!(p.stale_if_error(&req(&[("cache-control", "stale-if-error=7")])), Duration::from_secs(7));
    assert_eq!(p.usable_for(at(10)), Duration::from_secs(350));
    assert_eq!(p.ttl_secs(at(10)), 50);
    assert_eq!(p.ttl_secs(at(75)), -15);

    let strict = policy(&[], 200, &[("cache-control", "max-age=60, must-revalidate")], &rules).unwrap();
    assert_eq!(strict.stale_while_revalidate(), Duration::ZERO);
    assert_eq!(strict.stale_if_error(&req(&[("cache-control", "stale-if-error=7")])), Duration::ZERO);
    assert_eq!(strict.usable_for(at(10)), Duration::from_secs(50));
}

#[test]
fn lookup_checks() {
    let none = Rules::default();
    let bypass = Rules { bypass: true, ..Rules::default() };
    let cookies = Rules { bypass_cookie_requests: true, ..Rules::default() };
    #[rustfmt::skip]
    let table: &[LookupCase] = &[
        ("GET", Method::GET, &[], &none, Ok(())),
        ("HEAD", Method::HEAD, &[], &none, Ok(())),
        ("request no-cache still looks up", Method::GET, &[("cache-control", "no-cache")], &none, Ok(())),
        ("Authorization still looks up", Method::GET, &[("authorization", "Basic x")], &none, Ok(())),
        ("POST", Method::POST, &[], &none, Err(Bypass::Method)),
        ("DELETE", Method::DELETE, &[], &none, Err(Bypass::Method)),
        ("Range is cut from the stored response", Method::GET, &[("range", "bytes=0-10")], &none, Ok(())),
        ("Range with If-Match", Method::GET, &[("range", "bytes=0-10"), ("if-match", "\"a\"")], &none, Err(Bypass::Precondition)),
        ("Range with If-Unmodified-Since", Method::GET, &[("range", "bytes=0-1"), ("if-unmodified-since", "@0")], &none, Err(Bypass::Precondition)),
        ("request no-store", Method::GET, &[("cache-control", "max-age=5, No-Store")], &none, Err(Bypass::RequestNoStore)),
        ("If-Match", Method::GET, &[("if-match", "\"a\"")], &none, Err(Bypass::Precondition)),
        ("If-Unmodified-Since", Method::GET, &[("if-unmodified-since", "@0")], &none, Err(Bypass::Precondition)),
        ("route bypass first", Method::POST, &[], &bypass, Err(Bypass::Route)),
        ("Cookie looks up by default", Method::GET, &[("cookie", "id=1")], &none, Ok(())),
        ("Cookie where the route bypasses them", Method::GET, &[("cookie", "id=1")], &cookies, Err(Bypass::Cookie)),
        ("no Cookie where the route bypasses them", Method::GET, &[], &cookies, Ok(())),
    ];
    for (what, method, req_h, rules, expected) in table {
        assert_eq!(lookup_allowed(&req_with(method.clone(), req_h), rules), *expected, "{what}");
    }
    assert!(only_if_cached(&req(&[("cache-control", "max-age=0, only-if-cached")])));
    assert!(!only_if_cached(&req(&[("cache-control", "no-cache")])));
}

#[test]
fn client_conditionals_against_stored() {
    let stored: Headers = &[("etag", "\"a\""), ("last-modified", "@-1000"), ("date", "@0")];
    let weak_stored: Headers = &[("etag", "W/\"a\"")];
    let bare: Headers = &[("date", "@-50")];
    let no_validator: Headers = &[];
    let comma_tag: Headers = &[("etag", "\"a,b\"")];

    // (what, request headers, stored headers, answer 304?)
    #[rustfmt::skip]
    let table: &[(&str, Headers, Headers, bool)] = &[
        ("same strong tag", &[("if-none-match", "\"a\"")], stored, true),
        ("weak request tag matches weakly", &[("if-none-match", "W/\"a\"")], stored, true),
        ("strong request tag vs weak stored", &[("if-none-match", "\"a\"")], weak_stored, true),
        ("list", &[("if-none-match", "\"x\", W/\"y\", \"a\"")], stored, true),
        ("several lines", &[("if-none-match", "\"x\""), ("if-none-match", "\"a\"")], stored, true),
        ("other tag", &[("if-none-match", "\"x\"")], stored, false),
        ("star", &[("if-none-match", "*")], stored, true),
        ("star without stored tag", &[("if-none-match", "*")], no_validator, true),
        ("tag without stored tag", &[("if-none-match", "\"a\"")], no_validator, false),
        ("comma inside tag", &[("if-none-match", "\"a,b\"")], comma_tag, true),
        ("comma tag is not two tags", &[("if-none-match", "\"a\"")], comma_tag, false),
        ("If-None-Match beats If-Modified-Since", &[("if-none-match", "\"x\""), ("if-modified-since", "@0")], stored, false),
        ("IMS after Last-Modified", &[("if-modified-since", "@-500")], stored, true),
        ("IMS equal to Last-Modified", &[("if-modified-since", "@-1000")], stored, true),
        ("IMS before Last-Modified", &[("if-modified-since", "@-2000")], stored, false),
        ("IMS invalid", &[("if-modified-since", "yesterday")], stored, false),
        ("IMS repeated", &[("if-modified-since", "@0"), ("if-modified-since", "@0")], stored, false),
        ("IMS against Date without Last-Modified", &[("if-modified-since", "@-10")], bare, true),
        ("IMS before Date without Last-Modified", &[("if-modified-since", "@-60")], bare, false),
        ("IMS with nothing to compare", &[("if-modified-since", "@0")], no_validator, false),
        ("no conditionals", &[], stored, false),
    ];
    for (what, req_h, stored_h, expected) in table {
        assert_eq!(not_modified(&headers(req_h), &headers(stored_h)), *expected, "{what}");
    }
}

fn stored_entry(res_h: Headers) -> (Policy, HeaderMap) {
    let res = res(200, res_h);
    let policy = Policy::new(&req(&[]), &res, &Rules::default(), at(-2), at(0)).unwrap();
    (policy, storable_headers(&res.headers, &Rules::default()))
}

fn revalidate(stored_h: Headers, answer: u16, answer_h: Headers, now: i64) -> (Policy, HeaderMap, Revalidation) {
    let (policy, stored) = stored_entry(stored_h);
    let answer = res(answer, answer_h);
    let outcome = policy.revalidate(&req(&[]), &stored, &answer, &Rules::default(), at(now - 1), at(now));
    (policy, stored, outcome)
}

#[test]
fn revalidation_headers_come_from_validators() {
    let (policy, stored) =
        stored_entry(&[("cache-control", "max-age=5"), ("etag", "W/\"v\""), ("last-modified", "@-9")]);
    let conditional = policy.revalidation_headers(&stored);
    assert_eq!(conditional["if-none-match"], "W/\"v\"");
    assert_eq!(conditional["if-modified-since"], date(-9).as_str());
    assert!(policy.has_validator());

    let (policy, stored) = stored_entry(&[("cache-control", "max-age=5")]);
    assert!(policy.revalidation_headers(&stored).is_empty());
    assert!(!policy.has_validator());
}

#[test]
fn not_modified_merges_headers_new_in_the_304() {
    let stored_h: Headers = &[
        ("cache-control", "max-age=60"),
        ("etag", "\"v1\""),
        ("content-type", "text/html"),
        ("content-length", "1234"),
        ("content-md5", "stored=="),
        ("content-digest", "sha-256=:stored=:"),
        ("x-old", "kept"),
        ("age", "3"),
    ];
    let answer_h: Headers = &[
        ("date", "@100"),
        ("etag", "\"v1\""),
        ("cache-control", "max-age=120"),
        ("x-new", "added"),
        ("content-length", "0"),
        ("content-md5", "other=="),
        ("content-digest", "sha-256=:other=:"),
        ("set-cookie", "id=1"),
        ("connection", "x-hop"),
        ("x-hop", "1"),
    ];
    let (_, _, outcome) = revalidate(stored_h, 304, answer_h, 100);
    let Revalidation::NotModified { policy, headers } = outcome else {
        panic!("expected NotModified, got {outcome:?}");
    };
    assert_eq!(headers["x-new"], "added");
    assert_eq!(headers["x-old"], "kept");
    assert_eq!(headers["cache-control"], "max-age=120");
    assert_eq!(headers["content-length"], "1234");
    // Digests of the stored body stay the stored body's (cache-tests 304-etag-update-response-Content-MD5).
    assert_eq!(headers["content-md5"], "stored==");
    assert_eq!(headers["content-digest"], "sha-256=:stored=:");
    assert_eq!(headers["date"], date(100).as_str());
    for gone in ["set-cookie", "connection", "x-hop", "age"] {
        assert!(!headers.contains_key(gone), "{gone}");
    }
    assert_eq!(policy.lifetime(), Duration::from_secs(120));
    // Age restarts from the 304: one second of response delay.
    assert_eq!(policy.age(at(100)), Duration::from_secs(1));
    assert_eq!(policy.evaluate(&req(&[]), at(150)), Freshness::Fresh);
}

#[test]
fn not_modified_without_date_gets_arrival_date() {
    let stored_h: Headers = &[("cache-control", "max-age=60"), ("last-modified", "@-500"), ("date", "@-1")];
    let mut answer = res(304, &[("last-modified", "@-500")]);
    answer.headers.remove("date");
    let (policy, stored) = stored_entry(stored_h);
    let outcome = policy.revalidate(&req(&[]), &stored, &answer, &Rules::default(), at(199), at(200));
    let Revalidation::NotModified { policy, headers } = outcome else {
        panic!("expected NotModified");
    };
    assert_eq!(headers["date"], date(200).as_str());
    assert_eq!(policy.ttl(at(200)), Duration::from_secs(59));
}

#[test]
fn which_304_refreshes_the_entry() {
    let strong: Headers = &[("cache-control", "max-age=1"), ("etag", "\"v1\"")];
    let weak: Headers = &[("cache-control", "max-age=1"), ("etag", "W/\"v1\"")];
    let dated: Headers = &[("cache-control", "max-age=1"), ("last-modified", "@-500")];
    let both: Headers = &[("cache-control", "max-age=1"), ("etag", "\"v1\""), ("last-modified", "@-500")];
    let bare: Headers = &[("cache-control", "max-age=1")];

    // (what, stored, status, answer headers, refreshes?)
    #[rustfmt::skip]
    let table: &[(&str, Headers, u16, Headers, bool)] = &[
        ("same strong ETag", strong, 304, &[("etag", "\"v1\"")], true),
        ("other ETag", strong, 304, &[("etag", "\"v2\"")], false),
        ("weak 304 tag, strong stored", strong, 304, &[("etag", "W/\"v1\"")], true),
        ("weak tags", weak, 304, &[("etag", "W/\"v1\"")], true),
        ("strong 304 tag, weak stored", weak, 304, &[("etag", "\"v1\"")], false),
        ("same Last-Modified", dated, 304, &[("last-modified", "@-500")], true),
        ("other Last-Modified", dated, 304, &[("last-modified", "@-400")], false),
        ("Last-Modified only, stored has both", both, 304, &[("last-modified", "@-500")], true),
        ("bare 304, stored has ETag", strong, 304, &[], true),
        ("bare 304, stored has Last-Modified", dated, 304, &[], true),
        ("bare 304, stored has no validator", bare, 304, &[], true),
        ("200 is a new representation", strong, 200, &[("etag", "\"v1\"")], false),
    ];
    for (what, stored_h, status, answer_h, refreshes) in table {
        let (_, _, outcome) = revalidate(stored_h, *status, answer_h, 10);
        let refreshed = matches!(outcome, Revalidation::NotModified { .. });
        assert_eq!(refreshed, *refreshes, "{what}: {outcome:?}");
        if !refreshes {
            assert!(matches!(outcome, Revalidation::Modified), "{what}");
        }
    }
}

#[test]
fn not_modified_that_forbids_storing() {
    let stored_h: Headers = &[("cache-control", "max-age=60"), ("etag", "\"v1\"")];
    let answer_h: Headers = &[("etag", "\"v1\""), ("cache-control", "no-store")];
    let (_, _, outcome) = revalidate(stored_h, 304, answer_h, 10);
    let Revalidation::NotModifiedUncacheable { headers, reason } = outcome else {
        panic!("expected NotModifiedUncacheable, got {outcome:?}");
    };
    assert_eq!(reason, Bypass::NoStore);
    assert_eq!(headers["cache-control"], "no-store");
}

#[test]
fn response_headers_set_age_and_keep_date() {
    let (policy, stored) = stored_entry(&[("cache-control", "max-age=60"), ("date", "@-5"), ("age", "2")]);
    let out = policy.response_headers(&stored, at(30));
    // apparent age 5 beats Age 2 + delay 2; then 30 s resident.
    assert_eq!(out["age"], "35");
    assert_eq!(out["date"], date(-5).as_str());
    assert_eq!(out.get_all("age").iter().count(), 1);

    // Without a Date the arrival time is written as an IMF-fixdate, never "+0000".
    let mut no_date = res(200, &[("cache-control", "max-age=60")]);
    no_date.headers.remove("date");
    let policy = Policy::new(&req(&[]), &no_date, &Rules::default(), at(0), at(0)).unwrap();
    let out = policy.response_headers(&no_date.headers, at(7));
    let written = out["date"].to_str().unwrap();
    assert_eq!(written, date(0));
    assert!(written.ends_with(" GMT"), "{written}");
    assert_eq!(httpdate::parse_http_date(written).unwrap(), at(0));
    assert_eq!(out["age"], "7");
}

#[test]
fn set_cookie_never_stored() {
    let rules = Rules { store_set_cookie: true, ..Rules::default() };
    let res = res(200, &[("set-cookie", "id=1"), ("set-cookie", "b=2"), ("cache-control", "max-age=60")]);
    assert!(Policy::new(&req(&[]), &res, &rules, at(0), at(0)).is_ok());
    let stored = storable_headers(&res.headers, &rules);
    assert!(!stored.contains_key("set-cookie"));
    assert_eq!(stored["cache-control"], "max-age=60");
}

#[test]
fn policy_serde_round_trip_holds_no_request_secrets() {
    let request = req(&[
        ("authorization", "Bearer top-secret-token"),
        ("cookie", "session=cookie-secret"),
        ("x-api-key", "key-secret"),
    ]);
    let response = res(200, &[("cache-control", "public, max-age=60"), ("etag", "\"v\"")]);
    let rules = Rules { stale_if_error: secs(30), ..Rules::default() };
    let policy = Policy::new(&request, &response, &rules, at(-1), at(0)).unwrap();

    let json = serde_json::to_string(&policy).unwrap();
    for secret in ["secret", "authorization", "cookie", "Bearer", "x-api-key"] {
        assert!(!json.to_ascii_lowercase().contains(&secret.to_ascii_lowercase()), "{secret} in {json}");
    }
    let back: Policy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, policy);
    assert_eq!(back.age(at(10)), policy.age(at(10)));
    assert_eq!(back.stale_if_error(&req(&[])), Duration::from_secs(30));
}

#[test]
fn unsafe_methods_invalidate_same_origin_uris() {
    let uri = |s: &str| s.parse::<Uri>().unwrap();
    let request_uri = uri(URI);
    // (what, method, status, response headers, expected URIs)
    #[rustfmt::skip]
    let table: &[(&str, Method, u16, Headers, &[&str])] = &[
        ("POST with relative Location", Method::POST, 201, &[("location", "/items/7")], &[URI, "http://example.test/items/7"]),
        ("path-relative Location", Method::POST, 201, &[("location", "c?x=1#top")], &[URI, "http://example.test/a/c?x=1"]),
        ("cross-origin Location dropped", Method::POST, 303, &[("location", "http://other.test/x")], &[URI]),
        ("other scheme dropped", Method::PATCH, 200, &[("location", "https://example.test/a/b")], &[URI]),
        ("other port dropped", Method::POST, 201, &[("location", "//example.test:8080/x")], &[URI]),
        ("explicit default port kept", Method::PUT, 204, &[("content-location", "http://EXAMPLE.test:80/a/c")], &[URI, "http://EXAMPLE.test:80/a/c"]),
        ("both headers", Method::PUT, 200, &[("location", "/l"), ("content-location", "/cl")], &[URI, "http://example.test/l", "http://example.test/cl"]),
        ("Location equal to request", Method::DELETE, 200, &[("location", "/a/b")], &[URI]),
        ("DELETE", Method::DELETE, 204, &[], &[URI]),
        ("custom method", Method::from_bytes(b"PURGE").unwrap(), 200, &[], &[URI]),
        ("failed POST", Method::POST, 500, &[("location", "/items/7")], &[]),
        ("rejected POST", Method::POST, 404, &[], &[]),
        ("GET", Method::GET, 200, &[("location", "/items/7")], &[]),
        ("HEAD", Method::HEAD, 200, &[], &[]),
        ("OPTIONS", Method::OPTIONS, 200, &[], &[]),
    ];
    for (what, method, status, res_h, expected) in table {
        let status = StatusCode::from_u16(*status).unwrap();
        let got = invalidations(method, status, &request_uri, &headers(res_h));
        let expected: Vec<Uri> = expected.iter().map(|s| uri(s)).collect();
        assert_eq!(got, expected, "{what}");
    }
    // A relative request URI cannot anchor Location: only itself is returned.
    let got = invalidations(&Method::POST, StatusCode::OK, &uri("/a/b"), &headers(&[("location", "/x")]));
    assert_eq!(got, vec![uri("/a/b")]);
}

/// RFC 9111 §4.3.5: a HEAD's 200 updates the stored GET response when its
/// validators and length are the stored one's; otherwise it is a new version.
#[test]
fn a_head_response_updates_the_stored_response_it_describes() {
    let stored_h: Headers =
        &[("cache-control", "max-age=5"), ("etag", "\"v1\""), ("last-modified", "@-100"), ("a", "1")];
    let (policy, stored) = stored_entry(stored_h);
    let head = |status: u16, h: Headers| {
        let answer = res(status, h);
        policy.update_from_head(&req(&[]), &stored, 4, &answer, &Rules::default(), at(0), at(0))
    };
    let updating: &[Headers] = &[
        &[("cache-control", "max-age=600"), ("etag", "\"v1\""), ("a", "2"), ("content-length", "4")],
        &[("cache-control", "max-age=600"), ("last-modified", "@-100"), ("a", "2")],
        &[("cache-control", "max-age=600"), ("a", "2")],
    ];
    for h in updating {
        match head(200, h) {
            Revalidation::NotModified { policy, headers } => {
                assert_eq!(headers["a"], "2", "{h:?}");
                assert_eq!(headers["etag"], "\"v1\"", "{h:?}");
                assert_eq!(policy.ttl_secs(at(0)), 600, "{h:?}");
            }
            other => panic!("{h:?}: {other:?}"),
        }
    }
    let new_versions: &[Headers] = &[
        &[("cache-control", "max-age=600"), ("etag", "\"v2\"")],
        &[("cache-control", "max-age=600"), ("etag", "W/\"v1\"")],
        &[("cache-control", "max-age=600"), ("last-modified", "@-50")],
        &[("cache-control", "max-age=600"), ("etag", "\"v1\""), ("content-length", "5")],
    ];
    for h in new_versions {
        assert!(matches!(head(200, h), Revalidation::Modified), "{h:?}");
    }
    assert!(matches!(head(404, &[("cache-control", "max-age=600")]), Revalidation::Modified));
    assert!(matches!(head(304, &[("etag", "\"v1\"")]), Revalidation::NotModified { .. }));
    let stored_503 = res(503, &[("cache-control", "max-age=5")]);
    let policy_503 = Policy::new(&req(&[]), &stored_503, &Rules::default(), at(0), at(0)).unwrap();
    let answer = res(200, &[("cache-control", "max-age=600")]);
    let over = policy_503.update_from_head(&req(&[]), &stored_503.headers, 4, &answer, &Rules::default(), at(0), at(0));
    assert!(matches!(over, Revalidation::Modified), "a 200 to a HEAD does not turn a stored 503 into a 200");
    let no_store = head(200, &[("etag", "\"v1\""), ("cache-control", "no-store")]);
    assert!(matches!(no_store, Revalidation::NotModifiedUncacheable { .. }), "{no_store:?}");
}
