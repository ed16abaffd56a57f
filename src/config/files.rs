//! A route's static files (`root` or `alias`, `index`, `fallback`,
//! `symlinks`, `precompressed`): the types and what is checked at load.

use std::path::Path;

use serde::Deserialize;

use super::{ConfigError, RouteConfig};

/// What a static route does when no file matches the path (nginx's
/// `try_files`): `"upstream"` sends the request to the route's upstream; a
/// path (`"/index.html"`) serves that file of the directory instead, with 200.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum Fallback {
    Upstream,
    /// A path under the route's directory, starting with `/`.
    File(String),
}

impl TryFrom<String> for Fallback {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "upstream" {
            return Ok(Fallback::Upstream);
        }
        let plain = s.starts_with('/')
            && !s.ends_with('/')
            && !s.contains(['\\', '\0', '%'])
            && !s.split('/').any(|seg| seg == "." || seg == "..");
        if !plain {
            return Err(format!("{s:?} is neither \"upstream\" nor a file's path such as \"/index.html\""));
        }
        Ok(Fallback::File(s))
    }
}

/// Which symbolic links a static route follows (nginx's `disable_symlinks`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Symlinks {
    /// Those whose target is inside the route's directory; others are 404.
    #[default]
    Inside,
    /// Any (nginx's default, `disable_symlinks off`).
    Follow,
}

/// A name `index` lists: a file name, not a path.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct IndexName(String);

impl IndexName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IndexName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\\', '\0']) {
            return Err(format!("{s:?} is not a file name"));
        }
        Ok(IndexName(s))
    }
}

pub(super) fn index_html() -> Vec<IndexName> {
    vec![IndexName("index.html".into())]
}

/// `routes[i]`'s static file keys: one directory at most, one that exists.
/// (`fallback = "upstream"` without `upstream` is refused with the route's
/// missing upstream.)
pub(super) fn validate(
    r: &RouteConfig,
    key: &dyn Fn(&str) -> String,
    bad: &dyn Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let (name, dir) = match (&r.root, &r.alias) {
        (Some(_), Some(_)) => return Err(bad(key("alias"), "a route has root or alias, not both".into())),
        (Some(d), None) => ("root", d),
        (None, Some(d)) => ("alias", d),
        (None, None) => {
            if r.fallback.is_some() {
                return Err(bad(key("fallback"), "needs root or alias".into()));
            }
            return Ok(());
        }
    };
    if !Path::new(dir).is_dir() {
        return Err(bad(key(name), format!("{} is not a directory", dir.display())));
    }
    Ok(())
}
