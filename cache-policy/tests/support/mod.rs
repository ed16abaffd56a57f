#![allow(unreachable_pub)] // shared by every test crate: its items are used across files
//! Builders shared by the integration tests. Time is fixed: `at(0)` is the moment
//! the response arrived, and header values written `@N` become the IMF-fixdate of
//! `at(N)` (`@-3600` is an hour before the response).

#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, request, response};

const BASE: u64 = 1_700_000_000;
pub const URI: &str = "http://example.test/a/b";

pub fn at(offset: i64) -> SystemTime {
    let secs = BASE.checked_add_signed(offset).expect("offset in range");
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn date(offset: i64) -> String {
    httpdate::fmt_http_date(at(offset))
}

pub fn headers(list: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in list {
        let value = match value.strip_prefix('@') {
            Some(offset) => date(offset.parse().expect("@offset")),
            None => (*value).to_owned(),
        };
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::try_from(value).unwrap());
    }
    map
}

pub fn req_with(method: Method, list: &[(&str, &str)]) -> request::Parts {
    let (mut parts, ()) =
        Request::builder().method(method).uri(URI).header("host", "example.test").body(()).unwrap().into_parts();
    parts.headers.extend(headers(list));
    parts
}

pub fn req(list: &[(&str, &str)]) -> request::Parts {
    req_with(Method::GET, list)
}

/// A response; gets `Date: @0` unless the list has a Date.
pub fn res(status: u16, list: &[(&str, &str)]) -> response::Parts {
    let (mut parts, ()) = Response::builder().status(status).body(()).unwrap().into_parts();
    parts.headers = headers(list);
    if !parts.headers.contains_key("date") {
        parts.headers.insert("date", date(0).try_into().unwrap());
    }
    parts
}

pub fn secs(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n))
}
