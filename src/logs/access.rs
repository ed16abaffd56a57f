//! The access log line, in each format: `human` (key=value, as the error
//! log looks), `json` (one object per line) and `combined` (Apache's and
//! nginx's, which GoAccess and fail2ban read as they are).
//!
//! Every text field is escaped as nginx escapes its log: `"`, `\` and every
//! byte outside printable ASCII become `\xHH`. A line is printable ASCII and
//! ends with its only newline, whatever the request held.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::config::LogFormat;

/// What the access log says of one request.
pub struct Line<'a> {
    /// When the response ended.
    pub time: SystemTime,
    pub client: IpAddr,
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: &'a str,
    pub host: &'a str,
    /// The path and query, as the client sent them.
    pub target: &'a str,
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    pub duration: Duration,
    /// The origin server that answered.
    pub upstream: Option<&'a str>,
    /// From sending to the origin to its response head.
    pub upstream_time: Option<Duration>,
    pub cache: &'a str,
    /// The route's name (`routes[].name`); None: no route took the request.
    pub route: Option<&'a str>,
    pub refused: &'a str,
    pub rule: Option<&'a str>,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// The whole body was sent.
    pub complete: bool,
    /// The request's id (`server.request_id`); None: no field. Not in
    /// `combined`, which stays Apache's.
    pub request_id: Option<&'a [u8]>,
}

impl Line<'_> {
    /// The line in `format`, newline included.
    pub fn format(&self, format: LogFormat) -> String {
        let mut out = match format {
            LogFormat::Combined => self.combined(),
            LogFormat::Json => self.json(),
            LogFormat::Human => format!("{}  INFO relais::access: {}", rfc3339(self.time), self.fields()),
        };
        out.push('\n');
        out
    }

    /// Without time and target: what an embedding's own `tracing` subscriber gets.
    pub fn fields(&self) -> String {
        let mut o = String::with_capacity(256);
        let _ = write!(
            o,
            "client={} method={} scheme={} protocol={} host=\"",
            self.client,
            esc(self.method),
            self.scheme,
            self.protocol
        );
        push(&mut o, self.host.as_bytes());
        o.push_str("\" path=\"");
        push(&mut o, self.target.as_bytes());
        let _ = write!(o, "\" status={} bytes={} ms={} upstream=\"", self.status, self.bytes, ms(self.duration));
        push(&mut o, self.upstream.unwrap_or("-").as_bytes());
        let upstream_ms = self.upstream_time.map_or("-".into(), ms);
        let _ = write!(o, "\" upstream_ms={upstream_ms} cache=\"{}\" route=\"", self.cache);
        push(&mut o, self.route.unwrap_or("-").as_bytes());
        let _ = write!(o, "\" refused=\"{}\" rule=\"", self.refused);
        push(&mut o, self.rule.unwrap_or("-").as_bytes());
        o.push_str("\" referer=\"");
        push(&mut o, self.referer.unwrap_or(b"-"));
        o.push_str("\" user_agent=\"");
        push(&mut o, self.user_agent.unwrap_or(b"-"));
        let _ = write!(o, "\" complete={}", self.complete);
        if let Some(id) = self.request_id {
            // Unquoted, as the client's address: an id holds no space.
            o.push_str(" request_id=");
            push(&mut o, id);
        }
        o
    }

    fn combined(&self) -> String {
        let mut o = String::with_capacity(256);
        let _ = write!(o, "{} - - [{}] \"", self.client, clf_time(self.time));
        if self.method == "-" {
            // No request line could be read (nginx writes "-" too).
            o.push('-');
        } else {
            let _ = write!(o, "{} ", esc(self.method));
            push(&mut o, self.target.as_bytes());
            let _ = write!(o, " {}", self.protocol);
        }
        let _ = write!(o, "\" {} {} \"", self.status, self.bytes);
        push(&mut o, self.referer.unwrap_or(b"-"));
        o.push_str("\" \"");
        push(&mut o, self.user_agent.unwrap_or(b"-"));
        o.push('"');
        o
    }

    fn json(&self) -> String {
        // Escaped, a value holds no `"` and no control byte; its `\` (only
        // those of `\xHH`) are doubled to be JSON's: the value read is `\xHH`.
        let text = |o: &mut String, key: &str, value: &[u8]| {
            let _ = write!(o, ",\"{key}\":\"");
            let mut escaped = String::with_capacity(value.len());
            push(&mut escaped, value);
            o.push_str(&escaped.replace('\\', "\\\\"));
            o.push('"');
        };
        let mut o = String::with_capacity(384);
        let _ =
            write!(o, "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"target\":\"relais::access\"", rfc3339(self.time));
        text(&mut o, "client", self.client.to_string().as_bytes());
        text(&mut o, "method", self.method.as_bytes());
        text(&mut o, "scheme", self.scheme.as_bytes());
        text(&mut o, "protocol", self.protocol.as_bytes());
        text(&mut o, "host", self.host.as_bytes());
        text(&mut o, "path", self.target.as_bytes());
        let _ = write!(o, ",\"status\":{},\"bytes\":{},\"ms\":{}", self.status, self.bytes, ms(self.duration));
        text(&mut o, "upstream", self.upstream.unwrap_or("-").as_bytes());
        match self.upstream_time {
            Some(t) => {
                let _ = write!(o, ",\"upstream_ms\":{}", ms(t));
            }
            None => o.push_str(",\"upstream_ms\":null"),
        }
        text(&mut o, "cache", self.cache.as_bytes());
        text(&mut o, "route", self.route.unwrap_or("-").as_bytes());
        text(&mut o, "refused", self.refused.as_bytes());
        text(&mut o, "rule", self.rule.unwrap_or("-").as_bytes());
        text(&mut o, "referer", self.referer.unwrap_or(b"-"));
        text(&mut o, "user_agent", self.user_agent.unwrap_or(b"-"));
        let _ = write!(o, ",\"complete\":{}", self.complete);
        if let Some(id) = self.request_id {
            text(&mut o, "request_id", id);
        }
        o.push('}');
        o
    }
}

/// Milliseconds with three decimals (microseconds).
fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    push(&mut o, s.as_bytes());
    o
}

/// Appends `bytes` escaped as nginx escapes its log: `"`, `\` and bytes
/// outside printable ASCII as `\xHH`.
pub fn push(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
}

/// `2026-11-30T10:00:00.123456Z`
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// `30/Nov/2026:10:00:00 +0000`, the common log format's time (in UTC).
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let t = time::OffsetDateTime::from(t);
    let month = MONTHS[usize::from(u8::from(t.month())) - 1];
    format!("{:02}/{month}/{:04}:{:02}:{:02}:{:02} +0000", t.day(), t.year(), t.hour(), t.minute(), t.second())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(target: &'a str, agent: &'a [u8]) -> Line<'a> {
        Line {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            client: "192.0.2.7".parse().unwrap(),
            method: "GET",
            scheme: "http",
            protocol: "HTTP/1.1",
            host: "shop.test",
            target,
            status: 200,
            bytes: 512,
            duration: Duration::from_micros(1500),
            upstream: Some("127.0.0.1:3000"),
            upstream_time: Some(Duration::from_micros(1200)),
            cache: "uri-miss",
            route: Some("api"),
            refused: "-",
            rule: None,
            referer: None,
            user_agent: Some(agent),
            complete: true,
            request_id: None,
        }
    }

    #[test]
    fn combined_is_what_log_readers_expect() {
        let l = line("/a?b=1", b"curl/8.5");
        assert_eq!(
            l.format(LogFormat::Combined),
            "192.0.2.7 - - [14/Nov/2023:22:13:20 +0000] \"GET /a?b=1 HTTP/1.1\" 200 512 \"-\" \"curl/8.5\"\n"
        );
    }

    #[test]
    fn no_field_can_add_a_line_a_quote_or_an_escape_sequence() {
        let agent = b"x\"y\\z\n\r\x1b[31m\x9b\tw";
        let target = "/p\"q";
        for format in [LogFormat::Combined, LogFormat::Json, LogFormat::Human] {
            let out = line(target, agent).format(format);
            let body = &out[..out.len() - 1];
            assert!(out.ends_with('\n') && !body.contains('\n'), "{format:?}: {out:?}");
            assert!(body.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{format:?}: {out:?}");
            if format != LogFormat::Json {
                assert!(body.contains("x\\x22y\\x5Cz\\x0A\\x0D\\x1B[31m\\x9B\\x09w"), "{format:?}: {out:?}");
                assert!(body.contains("/p\\x22q"), "{format:?}: {out:?}");
            }
        }
        let json: serde_json::Value = serde_json::from_str(&line(target, agent).format(LogFormat::Json)).unwrap();
        assert_eq!(json["user_agent"], "x\\x22y\\x5Cz\\x0A\\x0D\\x1B[31m\\x9B\\x09w");
        assert_eq!(json["path"], "/p\\x22q");
        assert_eq!(json["upstream_ms"], 1.2);
        assert_eq!(json["protocol"], "HTTP/1.1");
        assert_eq!(json["complete"], true);
    }

    #[test]
    fn the_request_id_is_in_json_and_human_and_never_in_combined() {
        let l = Line { request_id: Some(b"4f2a\"x"), ..line("/", b"ua") };
        let json: serde_json::Value = serde_json::from_str(&l.format(LogFormat::Json)).unwrap();
        assert_eq!(json["request_id"], "4f2a\\x22x");
        assert!(l.format(LogFormat::Human).ends_with(" complete=true request_id=4f2a\\x22x\n"));
        assert_eq!(l.format(LogFormat::Combined), line("/", b"ua").format(LogFormat::Combined));
        let off: serde_json::Value = serde_json::from_str(&line("/", b"ua").format(LogFormat::Json)).unwrap();
        assert!(off.get("request_id").is_none());
    }

    #[test]
    fn human_keeps_the_error_log_look() {
        let out = line("/", b"ua").format(LogFormat::Human);
        assert!(
            out.starts_with("2023-11-14T22:13:20.000000Z  INFO relais::access: client=192.0.2.7 method=GET"),
            "{out}"
        );
        assert!(out.contains(" upstream_ms=1.200 ") && out.contains(" user_agent=\"ua\" complete=true\n"), "{out}");
    }
}
