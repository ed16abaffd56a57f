//! Request IDs (`server.request_id`): each request's id reaches the origin,
//! the client and the access log; a client's own is kept only from a trusted
//! proxy and only when it fits; a cache hit carries its own request's id,
//! never the one stored; `""` turns it all off.

mod support;

use std::process::Stdio;

use http::Request;
use support::process::*;
use support::*;

/// An origin that answers, cacheably, with the id it was sent in `seen-id`,
/// and echoes it in `x-request-id` as some applications do.
async fn echoing_origin() -> Origin {
    origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            let id = req.headers().get("x-request-id").map_or("none", |v| v.to_str().unwrap()).to_string();
            text(200, "ok", &[("seen-id", &id), ("x-request-id", &id), ("cache-control", "max-age=60")])
        })
        .start()
        .await
}

fn is_made(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn a_made_id_reaches_origin_and_client_and_each_request_has_its_own() {
    let o = echoing_origin().await;
    let r = relais(proxy_to(o.addr)).await;
    let a = get(&r.url("/a")).await;
    let id = a.header("x-request-id").unwrap();
    assert!(is_made(id), "{id}");
    assert_eq!(a.header("seen-id"), Some(id), "the origin got the id the client did");
    let b = get(&r.url("/b")).await;
    assert_ne!(b.header("x-request-id"), Some(id));
    assert_eq!(b.header("seen-id"), b.header("x-request-id"));
}

#[tokio::test]
async fn a_hit_gets_its_own_id_and_none_is_stored() {
    let o = echoing_origin().await;
    let r = relais(proxy_to(o.addr)).await;
    let miss = get(&r.url("/page")).await;
    let hit = get(&r.url("/page")).await;
    assert_eq!(o.hits("/page"), 1);
    assert!(hit.header("cache-status").unwrap().contains("hit"), "{:?}", hit.headers);
    let (stored, own) = (miss.header("x-request-id").unwrap(), hit.header("x-request-id").unwrap());
    assert!(is_made(own) && own != stored, "the hit says {own}, the fill said {stored}");
    assert_eq!(hit.header("seen-id"), Some(stored), "the stored body is the fill's");
    assert_eq!(hit.headers.get_all("x-request-id").iter().count(), 1, "the origin's echo was not stored");
}

#[tokio::test]
async fn only_a_trusted_proxy_keeps_its_id_and_only_when_it_fits() {
    let o = echoing_origin().await;
    let untrusted = relais(proxy_to(o.addr)).await;
    let r = get_with(&untrusted.url("/u"), &[("x-request-id", "edge-7f3a")]).await;
    assert!(is_made(r.header("x-request-id").unwrap()), "{:?}", r.headers);
    assert_eq!(r.header("seen-id"), r.header("x-request-id"));

    let trusted = relais(proxy_to(o.addr).section("[guard]\nreal_ip = { trusted = [\"127.0.0.1/32\"] }")).await;
    let r = get_with(&trusted.url("/t"), &[("x-request-id", "edge-7f3a")]).await;
    assert_eq!((r.header("x-request-id"), r.header("seen-id")), (Some("edge-7f3a"), Some("edge-7f3a")));
    let long = "a".repeat(129);
    for (i, odd) in [long.as_str(), "two words", "tab\there"].into_iter().enumerate() {
        let r = get_with(&trusted.url(&format!("/odd{i}")), &[("x-request-id", odd)]).await;
        let id = r.header("x-request-id").unwrap();
        assert!(is_made(id), "{odd:?} gave {id}");
        assert_eq!(r.header("seen-id"), Some(id));
    }
}

#[tokio::test]
async fn the_header_name_is_configurable_and_empty_turns_it_off() {
    let o = echoing_origin().await;
    let named =
        relais(proxy_to(o.addr).section("[server]\nlisten = [\"127.0.0.1:0\"]\nrequest_id = \"X-Trace\"")).await;
    let r = get(&named.url("/n")).await;
    assert!(is_made(r.header("x-trace").unwrap()), "{:?}", r.headers);
    assert_eq!(r.header("seen-id"), Some("none"));
    assert_eq!(r.header("x-request-id"), Some("none"), "another header name: the origin's own passes");

    let off = relais(proxy_to(o.addr).section("[server]\nlisten = [\"127.0.0.1:0\"]\nrequest_id = \"\"")).await;
    let r = get(&off.url("/off")).await;
    assert_eq!(r.header("seen-id"), Some("none"), "relais sent no id");
    assert_eq!(r.header("x-request-id"), Some("none"), "the origin's header is its own affair");
    let r = get_with(&off.url("/off2"), &[("x-request-id", "client-1")]).await;
    assert_eq!(r.header("seen-id"), Some("client-1"), "a client's header passes as any other");
}

/// The id is a field of the json and human lines, the one the client got;
/// combined stays Apache's; with `""` no line has it.
#[tokio::test]
async fn the_access_log_carries_the_id() {
    let o = echoing_origin().await;
    for (format, server) in [("json", ""), ("human", ""), ("combined", ""), ("json", "request_id = \"\"")] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relais.toml");
        let port = free_port();
        let toml = config(dir.path(), port, o.addr, "")
            .replace("grace_period = \"5s\"", &format!("grace_period = \"5s\"\n{server}"));
        write(&path, &format!("[log]\nformat = \"{format}\"\nfile = \"access.log\"\n{toml}"));
        let mut command = std::process::Command::new(bin());
        command.args(["run", "--config"]).arg(&path).stdout(Stdio::null()).stderr(Stdio::null());
        command.env("RUST_LOG", "info");
        let child = start_command(&mut command, port).await;
        let r = get(&format!("http://127.0.0.1:{port}/logged")).await;
        let log = dir.path().join("access.log");
        let mut line = String::new();
        for _ in 0..100 {
            line = std::fs::read_to_string(&log).unwrap_or_default();
            if line.contains("/logged") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        drop(child);
        assert!(line.contains("/logged"), "{format}: no line in {line:?}");
        // With `request_id = ""` the client's header is the origin's echo ("none").
        let id = r.header("x-request-id").filter(|_| server.is_empty());
        match (format, id) {
            ("json", Some(id)) => {
                let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
                assert_eq!(v["request_id"], id, "{line}");
            }
            ("human", Some(id)) => assert!(line.trim_end().ends_with(&format!(" request_id={id}")), "{line}"),
            ("combined", Some(id)) => assert!(!line.contains(id) && line.trim_end().ends_with('"'), "{line}"),
            (_, None) => assert!(!line.contains("request_id"), "{line}"),
            _ => unreachable!(),
        }
    }
}
