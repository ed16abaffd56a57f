//! Micro-benchmarks of the per-request cache work: key computation and policy
//! evaluation. Run with `cargo bench --bench cache`.

use std::time::{Duration, SystemTime};

use cache_policy::{Policy, Rules};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request, Response, header};
use relais::internals::key;

fn request() -> http::request::Parts {
    Request::get("http://example.test/products/42?lang=en")
        .header(header::HOST, "example.test")
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
        .header(header::ACCEPT_LANGUAGE, "en-US,en;q=0.9,fr;q=0.8")
        .header(header::USER_AGENT, "Mozilla/5.0 (X11; Linux x86_64)")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn keys(c: &mut Criterion) {
    let req = request();
    c.bench_function("key/primary", |b| {
        b.iter(|| key::primary(&key::url("http", "example.test", "/products/42?lang=en")))
    });
    let names = [header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE];
    let primary = key::primary("http://example.test/products/42?lang=en");
    c.bench_function("key/variant (2 Vary headers)", |b| b.iter(|| key::variant(&primary, 7, &names, &req.headers)));
}

fn policy(c: &mut Criterion) {
    let req = request();
    let now = SystemTime::now();
    let (res, ()) = Response::builder()
        .header(header::CACHE_CONTROL, "public, max-age=3600, stale-while-revalidate=60")
        .header(header::DATE, httpdate::fmt_http_date(now))
        .header(header::ETAG, "\"abc\"")
        .header(header::CONTENT_TYPE, "text/html")
        .body(())
        .unwrap()
        .into_parts();
    let rules = Rules { max_ttl: Some(Duration::from_secs(600)), ..Rules::default() };
    c.bench_function("policy/new (storable?)", |b| b.iter(|| Policy::new(&req, &res, &rules, now, now).unwrap()));
    let p = Policy::new(&req, &res, &rules, now, now).unwrap();
    c.bench_function("policy/evaluate (fresh?)", |b| b.iter(|| p.evaluate(&req, now)));
    let mut stored = HeaderMap::new();
    stored.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    stored.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
    c.bench_function("policy/response_headers (Age)", |b| b.iter(|| p.response_headers(&stored, now)));
}

criterion_group!(benches, keys, policy);
criterion_main!(benches);
