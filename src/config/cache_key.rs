//! A route's `cache.key`: what its cache key is made of beside the scheme,
//! host and path (nginx's `proxy_cache_key`, Varnish's `vcl_hash`). Parsed
//! once here; `cache::key` applies it.

use serde::Deserialize;

use super::FieldName;

/// `cache.key = { ... }`. Every field's default leaves the key as it always
/// was: scheme, lower-cased host, path and query as sent.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeyConfig {
    /// `as_sent` (default), `sorted` (parameters in order of name, so
    /// `?b=1&a=2` and `?a=2&b=1` share an entry), or `ignore` (no query at all).
    pub query: QueryKey,
    /// Only these query parameters are part of the key: names, or prefixes
    /// ending in `*` (`utm_*`). Default: all.
    pub keep_params: Vec<ParamName>,
    /// These query parameters are not part of the key (`utm_*`, `fbclid`).
    /// The origin is still asked with them.
    pub drop_params: Vec<ParamName>,
    /// Request headers whose values are part of the key (all of a header's
    /// lines, joined by `,`; an absent header differs from an empty one).
    pub headers: Vec<FieldName>,
    /// Cookies whose values are part of the key (the first of each name in
    /// `Cookie`; an absent cookie differs from an empty one).
    pub cookies: Vec<CookieName>,
    /// Lower-case the path in the key, for origins whose paths ignore case.
    /// (The host is always lower-cased.) Default false.
    pub fold_path_case: bool,
}

impl KeyConfig {
    /// Whether this changes nothing: the key is the canonical URL.
    pub fn is_default(&self) -> bool {
        *self == KeyConfig::default()
    }

    /// Whether the query is rewritten (not kept byte for byte).
    pub fn shapes_query(&self) -> bool {
        self.query != QueryKey::AsSent || !self.keep_params.is_empty() || !self.drop_params.is_empty()
    }
}

/// `cache.key.query`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QueryKey {
    #[default]
    AsSent,
    Sorted,
    Ignore,
}

/// A query parameter's name (`gclid`), or a prefix of names (`utm_*`),
/// matched against the name as the origin reads it (percent-decoded).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct ParamName {
    name: String,
    prefix: bool,
}

impl ParamName {
    pub fn matches(&self, name: &str) -> bool {
        if self.prefix { name.starts_with(&self.name) } else { name == self.name }
    }
}

impl TryFrom<String> for ParamName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (name, prefix) = match s.strip_suffix('*') {
            Some(p) => (p, true),
            None => (s.as_str(), false),
        };
        if name.is_empty() {
            return Err(format!("{s:?} is not a parameter name (give a name, or a prefix ending in *)"));
        }
        if name.contains('*') {
            return Err(format!("{s:?}: only a trailing * is a pattern"));
        }
        if name.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"&=#?".contains(&b)) {
            return Err(format!("{s:?} is not a parameter name (no spaces, &, =, # or ?)"));
        }
        Ok(ParamName { name: name.to_string(), prefix })
    }
}

/// A cookie's name: a token (RFC 6265 §4.1.1), compared exactly.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct CookieName(String);

impl CookieName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CookieName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if s.is_empty() || !s.bytes().all(token) {
            return Err(format!("{s:?} is not a cookie name"));
        }
        Ok(CookieName(s))
    }
}

/// What the types cannot check: fields that contradict each other.
/// The error names the field to change.
pub(super) fn validate(k: &KeyConfig) -> Result<(), (&'static str, String)> {
    if !k.keep_params.is_empty() && !k.drop_params.is_empty() {
        return Err(("keep_params", "give keep_params or drop_params, not both".into()));
    }
    if k.query == QueryKey::Ignore {
        if !k.keep_params.is_empty() {
            return Err(("keep_params", "query = \"ignore\" keeps no parameter".into()));
        }
        if !k.drop_params.is_empty() {
            return Err(("drop_params", "query = \"ignore\" already drops every parameter".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names_and_prefixes() {
        let p = |s: &str| ParamName::try_from(s.to_string());
        assert!(p("utm_*").unwrap().matches("utm_source"));
        assert!(!p("utm_*").unwrap().matches("utm"));
        assert!(p("gclid").unwrap().matches("gclid"));
        assert!(!p("gclid").unwrap().matches("gclid2"));
        for bad in ["", "*", "a*b", "a b", "a&b", "a=b"] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
        assert!(CookieName::try_from("session".to_string()).is_ok());
        assert!(CookieName::try_from("a;b".to_string()).is_err());
        assert!(CookieName::try_from(String::new()).is_err());
    }

    /// The error for a route's `cache = { … }` table.
    fn error_in(cache: &str) -> String {
        let toml = format!(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\ncache = {{ {cache} }}\n"
        );
        super::super::Config::from_toml(&toml, "relais.toml").unwrap_err().to_string()
    }

    fn error(key: &str) -> String {
        error_in(&format!("key = {{ {key} }}"))
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let both = error(r#"keep_params = ["a"], drop_params = ["b"]"#);
        assert!(both.contains("relais.toml") && both.contains("routes[0].cache.key.keep_params"), "{both}");
        let ignored = error(r#"query = "ignore", drop_params = ["b"]"#);
        assert!(ignored.contains("routes[0].cache.key.drop_params"), "{ignored}");
        let empty = error(r#"drop_params = [""]"#);
        assert!(
            empty.contains("relais.toml") && empty.contains("drop_params") && empty.contains("not a parameter name"),
            "{empty}"
        );
        let unknown = error(r#"query = "shuffled""#);
        assert!(unknown.contains("routes[0].cache.key.query"), "{unknown}");
        let cookie = error(r#"cookies = ["a b"]"#);
        assert!(cookie.contains("cookies") && cookie.contains("not a cookie name"), "{cookie}");
        let bypassed = error_in(r#"key = { cookies = ["plan"] }, cookie_requests = "bypass""#);
        assert!(bypassed.contains("routes[0].cache.key.cookies"), "{bypassed}");
        assert!(error_in("min_uses = 0").contains("routes[0].cache.min_uses"));
        assert!(error_in(r#"min_uses = 2, slice = "1MiB""#).contains("routes[0].cache.min_uses"));
    }
}
