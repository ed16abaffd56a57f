//! Authentication from outside: `auth_basic` with htpasswd files made here
//! (bcrypt at its lowest cost, and argon2), `auth_request` with a real auth
//! upstream that allows and denies, and a real origin that says what reached it.

mod support;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use http::Request;
use support::process::{self, bin, write};
use support::*;

/// An origin that answers with the Authorization and X-User values it saw.
async fn echo() -> Origin {
    origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            let all = |name: &str| {
                let v: Vec<&str> = req.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
                if v.is_empty() { "-".to_string() } else { v.join("|") }
            };
            text(200, &format!("authorization={} x-user={}", all("authorization"), all("x-user")), &[])
        })
        .start()
        .await
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn argon2_hash(password: &str) -> String {
    use argon2::PasswordHasher;
    let salt = argon2::password_hash::SaltString::from_b64("c29tZXNhbHQ").unwrap();
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).unwrap().to_string()
}

/// An htpasswd file: ann (bcrypt) and bob (argon2).
fn htpasswd(dir: &Path, ann: &str, bob: &str) -> String {
    let path = dir.join("htpasswd");
    write(&path, &format!("ann:{}\nbob:{}\n", bcrypt::hash(ann, 4).unwrap(), argon2_hash(bob)));
    path.display().to_string()
}

fn basic_route(origin: &Origin, file: &str, extra: &str) -> Conf {
    proxy_to(origin.addr).with(format!("auth_basic = {{ realm = \"admin\", users_file = \"{file}\"{extra} }}"))
}

async fn metrics(proxy: &Relais) -> String {
    proxy.admin("GET", "/metrics", "").await.text()
}

const CHALLENGE: &str = "Basic realm=\"admin\", charset=\"UTF-8\"";

#[tokio::test]
async fn basic_lets_users_of_the_file_through_without_their_authorization() {
    let dir = tempfile::tempdir().unwrap();
    let origin = echo().await;
    let proxy = relais(basic_route(&origin, &htpasswd(dir.path(), "ann-pw", "bob-pw"), "")).await;
    for (user, password) in [("ann", "ann-pw"), ("bob", "bob-pw"), ("ann", "ann-pw")] {
        let r = get_with(&proxy.url("/x"), &[("authorization", &basic(user, password))]).await;
        assert_eq!(r.status, 200, "{user}");
        assert_eq!(r.text(), "authorization=- x-user=-", "the origin never sees the password");
    }
    let none = get(&proxy.url("/x")).await;
    let wrong = get_with(&proxy.url("/x"), &[("authorization", &basic("ann", "bob-pw"))]).await;
    let unknown = get_with(&proxy.url("/x"), &[("authorization", &basic("eve", "ann-pw"))]).await;
    let bearer = get_with(&proxy.url("/x"), &[("authorization", "Bearer ann-pw")]).await;
    for r in [&none, &wrong, &unknown, &bearer] {
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
    }
    assert_eq!(origin.total_hits(), 3);
    let m = metrics(&proxy).await;
    assert!(m.contains("relais_auth_total{route=\"*/\",kind=\"basic\",result=\"denied\"} 3"), "{m}");
    assert!(m.contains("relais_auth_total{route=\"*/\",kind=\"basic\",result=\"missing\"} 1"), "{m}");
    assert!(m.contains("relais_guard_rejections_total{reason=\"auth_basic\",route=\"*/\"} 4"), "{m}");
}

#[tokio::test]
async fn keep_authorization_sends_it_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let origin = echo().await;
    let proxy =
        relais(basic_route(&origin, &htpasswd(dir.path(), "ann-pw", "bob-pw"), ", keep_authorization = true")).await;
    let credentials = basic("ann", "ann-pw");
    let r = get_with(&proxy.url("/x"), &[("authorization", &credentials)]).await;
    assert_eq!(r.text(), format!("authorization={credentials} x-user=-"));
}

/// A reload reads the file again, and forgets who was verified under the old one.
#[tokio::test]
async fn a_reload_reads_the_changed_file() {
    let dir = tempfile::tempdir().unwrap();
    let origin = echo().await;
    let conf = basic_route(&origin, &htpasswd(dir.path(), "old-pw", "bob-pw"), "");
    let proxy = relais(&conf).await;
    let old = basic("ann", "old-pw");
    assert_eq!(get_with(&proxy.url("/"), &[("authorization", &old)]).await.status, 200);
    htpasswd(dir.path(), "new-pw", "bob-pw");
    // Listeners and [cache] stay as they were started.
    let config = relais::Config::from_toml(&format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{conf}"), "test.toml");
    proxy.handle.reload(config.unwrap()).unwrap();
    assert_eq!(get_with(&proxy.url("/"), &[("authorization", &old)]).await.status, 401);
    assert_eq!(get_with(&proxy.url("/"), &[("authorization", &basic("ann", "new-pw"))]).await.status, 200);
}

/// `relais check` refuses a hash that is cheap to guess, naming the key, the
/// file and the line, and says how to make a good one.
#[test]
fn check_refuses_an_md5_line_and_counts_the_users() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    let good = bcrypt::hash("pw", 4).unwrap();
    write(&file, &format!("ann:{good}\ncy:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n"));
    let config = dir.path().join("relais.toml");
    let route = "auth_basic = { realm = \"admin\", users_file = \"htpasswd\" }";
    write(&config, &process::config(dir.path(), 8080, "127.0.0.1:3000".parse().unwrap(), route));
    let out = Command::new(bin()).args(["check", "-c"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for part in ["routes[0].auth_basic.users_file", &file.display().to_string(), "line 2", "MD5", "htpasswd -B"] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    write(
        &file,
        &format!(
            "ann:{good}
"
        ),
    );
    let out = Command::new(bin()).args(["check", "-c"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("basic auth (1 user(s))"), "{summary}");
}

/// Failed attempts take from the zone; once it refuses, even the right
/// password gets 429 (nothing is verified) while others pass.
#[tokio::test]
async fn failed_attempts_are_limited_by_their_zone() {
    let dir = tempfile::tempdir().unwrap();
    let origin = echo().await;
    let conf = basic_route(&origin, &htpasswd(dir.path(), "ann-pw", "bob-pw"), ", limit_req = \"login\"")
        .section("[[limit_req]]\nname = \"login\"\nrate = \"1r/m\"\nburst = 1\nnodelay = true\nkey = \"ip\"");
    let proxy = relais(conf).await;
    let wrong = basic("ann", "guess");
    let right = basic("ann", "ann-pw");
    // Successes take nothing.
    for _ in 0..3 {
        assert_eq!(get_with(&proxy.url("/"), &[("authorization", &right)]).await.status, 200);
    }
    assert_eq!(get_with(&proxy.url("/"), &[("authorization", &wrong)]).await.status, 401);
    assert_eq!(get_with(&proxy.url("/"), &[("authorization", &wrong)]).await.status, 401);
    let limited = get_with(&proxy.url("/"), &[("authorization", &wrong)]).await;
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    let r = get_with(&proxy.url("/"), &[("authorization", &right)]).await;
    assert_eq!(r.status, 429, "refused without verifying");
    let m = metrics(&proxy).await;
    assert!(m.contains("kind=\"basic\",result=\"limited\"} 1"), "{m}");
}

/// `auth_basic` removes Authorization before the origin, but the cache still
/// treats the request as authorized: an answer without `public` (or another
/// directive that allows it, RFC 9111 §3.5) is not stored for the next user.
#[tokio::test]
async fn an_authorized_answer_is_not_shared_unless_it_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let origin = origin()
        .route("/public", |_| async { text(200, "for all", &[("cache-control", "public, max-age=60")]) })
        .route("/", |_| async { text(200, "ann's page", &[("cache-control", "max-age=60")]) })
        .start()
        .await;
    let proxy = relais(basic_route(&origin, &htpasswd(dir.path(), "ann-pw", "bob-pw"), "")).await;
    for (user, password) in [("ann", "ann-pw"), ("bob", "bob-pw")] {
        let r = get_with(&proxy.url("/page"), &[("authorization", &basic(user, password))]).await;
        assert_eq!(r.status, 200);
        get_with(&proxy.url("/public"), &[("authorization", &basic(user, password))]).await;
    }
    assert_eq!(origin.hits("/page"), 2, "each user's own page from the origin");
    assert_eq!(origin.hits("/public"), 1, "a public answer is shared");
}

/// The auth upstream: `Bearer good` is ann, `Bearer bad` 401, `Bearer no` 403,
/// anything else a 500. It answers with what it was asked about.
async fn auth_upstream() -> Origin {
    origin()
        .route("/verify", |req: Request<hyper::body::Incoming>| async move {
            let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            let asked = format!(
                "{} {} {} {} {} {}",
                h("x-original-method"),
                h("x-original-uri"),
                h("x-forwarded-method"),
                h("x-forwarded-uri"),
                h("x-forwarded-for"),
                h("x-forwarded-host"),
            );
            match h("authorization").as_str() {
                "Bearer good" => text(200, "", &[("x-user", "ann"), ("x-asked", &asked)]),
                "Bearer bad" => text(401, "", &[("www-authenticate", "Bearer realm=\"sso\"")]),
                "Bearer no" => text(403, "", &[]),
                _ => text(500, "", &[]),
            }
        })
        .start()
        .await
}

fn request_route(origin: &Origin, auth: impl std::fmt::Display, extra: &str) -> Conf {
    proxy_to(origin.addr).upstream("auth", auth).section(format!(
        "[[routes]]\npath = \"/app/\"\nupstream = \"o\"\n\
         auth_request = {{ upstream = \"auth\", path = \"/verify\", copy_headers = [\"x-user\", \"x-asked\"]{extra} }}"
    ))
}

#[tokio::test]
async fn auth_request_decides_and_its_headers_replace_the_clients() {
    let origin = echo().await;
    let auth = auth_upstream().await;
    let proxy = relais(request_route(&origin, auth.addr, "")).await;
    let forged = [("authorization", "Bearer good"), ("x-user", "root"), ("x-asked", "nothing")];
    let r = get_with(&proxy.url("/app/a?b=1"), &forged).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "authorization=Bearer good x-user=ann", "the client's x-user is replaced");

    let bad = get_with(&proxy.url("/app/a"), &[("authorization", "Bearer bad"), ("x-user", "root")]).await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.header("www-authenticate"), Some("Bearer realm=\"sso\""));
    let no = get_with(&proxy.url("/app/a"), &[("authorization", "Bearer no")]).await;
    assert_eq!(no.status, 403);
    let broken = get_with(&proxy.url("/app/a"), &[("authorization", "Bearer ?")]).await;
    assert_eq!(broken.status, 500);
    let none = get(&proxy.url("/app/a")).await;
    assert_eq!(none.status, 500);
    assert_eq!(origin.total_hits(), 1, "only the allowed request reached the origin");
    assert_eq!(get(&proxy.url("/other")).await.status, 200, "other routes ask nobody");
    let m = metrics(&proxy).await;
    assert!(m.contains("relais_auth_total{route=\"*/app/\",kind=\"request\",result=\"denied\"} 2"), "{m}");
    assert!(m.contains("relais_auth_total{route=\"*/app/\",kind=\"request\",result=\"error\"} 2"), "{m}");
}

/// The subrequest says what is asked for, and from where.
#[tokio::test]
async fn the_subrequest_names_the_original_request() {
    let origin = origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            let asked = req.headers().get("x-asked").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            text(200, &asked, &[])
        })
        .start()
        .await;
    let auth = auth_upstream().await;
    let proxy = relais(request_route(&origin, auth.addr, "")).await;
    let r = get_with(&proxy.url("/app/a?b=1"), &[("authorization", "Bearer good")]).await;
    assert_eq!(r.text(), format!("GET /app/a?b=1 GET /app/a?b=1 127.0.0.1 {}", proxy.addr));
}

#[tokio::test]
async fn an_auth_upstream_that_is_down_is_a_500() {
    let origin = echo().await;
    let proxy = relais(request_route(&origin, dead_addr(), "")).await;
    let r = get_with(&proxy.url("/app/a"), &[("authorization", "Bearer good")]).await;
    assert_eq!(r.status, 500);
    assert_eq!(origin.total_hits(), 0);
}

/// With `cache`, an answer is asked once per credentials (and URL).
#[tokio::test]
async fn answers_are_remembered_per_credentials() {
    let origin = echo().await;
    let auth = auth_upstream().await;
    let proxy = relais(request_route(&origin, auth.addr, ", cache = \"5s\"")).await;
    for _ in 0..2 {
        let r = get_with(&proxy.url("/app/a"), &[("authorization", "Bearer good"), ("x-user", "root")]).await;
        assert_eq!(r.text(), "authorization=Bearer good x-user=ann");
    }
    assert_eq!(auth.hits("/verify"), 1, "the same credentials ask once");
    for _ in 0..2 {
        assert_eq!(get_with(&proxy.url("/app/a"), &[("authorization", "Bearer bad")]).await.status, 401);
    }
    assert_eq!(auth.hits("/verify"), 2, "other credentials ask again, once");
    get_with(&proxy.url("/app/b"), &[("authorization", "Bearer good")]).await;
    assert_eq!(auth.hits("/verify"), 3, "another URL asks again");
}
