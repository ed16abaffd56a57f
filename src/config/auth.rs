//! A route's `auth_basic` and `auth_request`: who may pass, checked after
//! the route's limits and before the cache and the origin.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Config, ConfigError, Dur, FieldName, KeyPart};

/// `auth_basic = { realm = "admin", users_file = "/etc/relais/htpasswd" }`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthBasicConfig {
    /// Shown by the browser's login prompt (`WWW-Authenticate: Basic realm="…"`).
    pub realm: Realm,
    /// An htpasswd file of bcrypt or argon2 hashes, read at load and on every reload.
    pub users_file: PathBuf,
    /// Send the client's `Authorization` upstream too. Default false.
    #[serde(default)]
    pub keep_authorization: bool,
    /// A `[[limit_req]]` zone keyed by `ip` that each failed attempt takes
    /// from; once it refuses, the client's attempts get 429 unverified.
    pub limit_req: Option<String>,
    /// The users of `users_file`, read with the configuration.
    #[serde(skip)]
    pub users: Vec<super::htpasswd::User>,
}

/// `auth_request = { upstream = "auth", path = "/verify", copy_headers = ["x-user"] }`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthRequestConfig {
    /// The `[upstreams.NAME]` that answers the subrequests.
    pub upstream: String,
    /// The path (and query) asked for.
    pub path: AuthPath,
    /// The subrequest's method. Default GET.
    #[serde(default)]
    pub method: AuthMethod,
    /// The request headers sent with it. Default: Authorization, Cookie and
    /// the request id header (`server.request_id`).
    pub headers: Option<Vec<FieldName>>,
    /// Headers of a 2xx answer set on the request sent upstream, replacing
    /// any the client sent.
    #[serde(default)]
    pub copy_headers: Vec<FieldName>,
    /// Remember answers (2xx, 401, 403) this long per credentials and URL.
    /// Default: not at all.
    pub cache: Option<Dur>,
}

/// A realm that can stand in a quoted string: printable, no `"` or `\`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct Realm(pub String);

impl TryFrom<String> for Realm {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() > 256 || s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            return Err(format!(
                "{s:?} cannot be a realm (at most 256 characters, no quotes, backslashes or controls)"
            ));
        }
        Ok(Realm(s))
    }
}

/// An origin-form target: `/verify`, `/auth?site=a`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct AuthPath(pub http::uri::PathAndQuery);

impl TryFrom<String> for AuthPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.parse::<http::uri::PathAndQuery>() {
            Ok(p) if s.starts_with('/') => Ok(AuthPath(p)),
            _ => Err(format!("{s:?} is not a path starting with '/'")),
        }
    }
}

/// A method name: `GET` (default), `HEAD`, `POST`…
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct AuthMethod(pub http::Method);

impl Default for AuthMethod {
    fn default() -> Self {
        AuthMethod(http::Method::GET)
    }
}

impl TryFrom<String> for AuthMethod {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let upper = s.trim().to_ascii_uppercase();
        match http::Method::from_bytes(upper.as_bytes()) {
            Ok(m) if m != http::Method::CONNECT => Ok(AuthMethod(m)),
            _ => Err(format!("{s:?} is not a method for a subrequest")),
        }
    }
}

/// Headers a subrequest's answer may not set on the request: they frame or
/// route it, which is relais's to say.
const NOT_COPIED: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive", "expect"];

/// Reads every route's `auth_basic.users_file` (after paths were resolved).
pub(super) fn read_users(config: &mut Config) -> Result<(), ConfigError> {
    for (i, r) in config.routes.iter_mut().enumerate() {
        if let Some(basic) = &mut r.auth_basic {
            let key = format!("routes[{i}].auth_basic.users_file");
            let file = basic.users_file.clone();
            let error = |reason: String| ConfigError::File { file: file.clone(), key: key.clone(), reason };
            let text = std::fs::read_to_string(&file).map_err(|e| error(e.to_string()))?;
            basic.users = super::htpasswd::parse(&text).map_err(error)?;
        }
    }
    Ok(())
}

/// What the types cannot check in `routes[i]`'s authentication.
pub(super) fn validate(
    i: usize,
    r: &super::RouteConfig,
    c: &Config,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");
    if let Some(zone) = r.auth_basic.as_ref().and_then(|b| b.limit_req.as_ref()) {
        match c.limit_req.iter().find(|z| z.name == *zone) {
            None => return Err(bad(key("auth_basic.limit_req"), format!("no [[limit_req]] zone is named {zone:?}"))),
            Some(z) if z.key.0 != [KeyPart::Ip] => {
                let why = format!("zone {zone:?} must have key = \"ip\": failed attempts are counted per client");
                return Err(bad(key("auth_basic.limit_req"), why));
            }
            Some(_) => {}
        }
    }
    let Some(a) = &r.auth_request else { return Ok(()) };
    if !c.upstreams.contains_key(&a.upstream) {
        let known: Vec<&str> = c.upstreams.keys().map(String::as_str).collect();
        let why = format!("unknown upstream {:?} (defined: {})", a.upstream, known.join(", "));
        return Err(bad(key("auth_request.upstream"), why));
    }
    if let Some(name) = a.copy_headers.iter().find(|n| NOT_COPIED.contains(&n.0.as_str())) {
        let why = format!("{:?} frames or routes the request: it cannot be copied from the answer", name.0.as_str());
        return Err(bad(key("auth_request.copy_headers"), why));
    }
    if a.cache.is_some_and(|d| d.get().is_zero()) {
        return Err(bad(key("auth_request.cache"), "must be more than 0 (leave it out for none)".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(route: &str, more: &str) -> String {
        let toml =
            format!("[upstreams.app]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"app\"\n{route}\n{more}");
        Config::from_toml(&toml, "t.toml").map(|_| String::new()).unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn references_and_values_are_checked_with_their_keys() {
        let zone = "[[limit_req]]\nname = \"login\"\nrate = \"1r/s\"\nkey = \"ip+path\"";
        for (route, more, want) in [
            (
                "auth_request = { upstream = \"sso\", path = \"/v\" }",
                "",
                "routes[0].auth_request.upstream: unknown upstream \"sso\"",
            ),
            ("auth_request = { upstream = \"app\", path = \"v\" }", "", "starting with '/'"),
            (
                "auth_request = { upstream = \"app\", path = \"/v\", copy_headers = [\"host\"] }",
                "",
                "routes[0].auth_request.copy_headers",
            ),
            (
                "auth_request = { upstream = \"app\", path = \"/v\", cache = \"0s\" }",
                "",
                "routes[0].auth_request.cache",
            ),
            ("auth_basic = { realm = \"a\\\"b\", users_file = \"/f\" }", "", "cannot be a realm"),
            (
                "auth_basic = { realm = \"a\", users_file = \"/nonexistent/htpasswd\" }",
                "",
                "routes[0].auth_basic.users_file: /nonexistent/htpasswd",
            ),
        ] {
            let e = check(route, more);
            assert!(e.contains(want), "{route}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, format!("ann:{}\n", bcrypt::hash("pw", 4).unwrap())).unwrap();
        let route = |z: &str| {
            format!("auth_basic = {{ realm = \"a\", users_file = \"{}\", limit_req = \"{z}\" }}", file.display())
        };
        assert!(check(&route("none"), zone).contains("routes[0].auth_basic.limit_req: no [[limit_req]] zone"));
        assert!(check(&route("login"), zone).contains("must have key = \"ip\""));
        assert_eq!(check(&route("login"), &zone.replace("ip+path", "ip")), "");
    }
}
