//! `[compression]` and a route's `compression`: which responses relais
//! compresses, with what. The codings, their levels and the media types are
//! parsed here, as they are read; `crate::compress` uses them as they are.

use serde::Deserialize;

use super::{ConfigError, Size};

/// `[compression]` (nginx's `gzip`, `gzip_types`, `gzip_min_length`,
/// `gzip_comp_level`, and the brotli module's equivalents).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Off by default, as in nginx.
    pub enabled: bool,
    /// Preference order among `zstd`, `br`, `gzip`; others are never produced.
    pub encodings: Vec<Encoding>,
    /// Bodies shorter than this are sent as they are.
    pub min_length: Size,
    /// Media types compressed: exact (`application/json`) or a family (`text/*`).
    pub types: Vec<MediaType>,
    /// Level per encoding when compressing as a body streams: gzip 1–9, br 0–11, zstd 1–19.
    pub levels: Levels,
    /// Decode what the origin sent compressed for clients that do not accept its coding.
    pub decode: bool,
    /// Levels of the copies made once for cached bodies (zstd up to 22).
    pub stored_levels: Levels,
    /// Memory for encoded copies of cached bodies, made once and served many times.
    pub stored_memory: Size,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        let types = [
            "text/*",
            "application/json",
            "application/*+json",
            "application/javascript",
            "application/xml",
            "application/*+xml",
            "application/wasm",
            "image/svg+xml",
            "application/manifest+json",
        ];
        CompressionConfig {
            enabled: false,
            encodings: vec![Encoding::Zstd, Encoding::Br, Encoding::Gzip],
            min_length: Size(1024),
            types: types.iter().filter_map(|t| MediaType::parse(t)).collect(),
            levels: Levels::default(),
            stored_levels: Levels::default(),
            decode: true,
            stored_memory: Size::mib(64),
        }
    }
}

/// A route's `compression`: `true` (the default: `[compression]` applies),
/// `false` (it does not), or a table of the route's own levels,
/// `{ levels = { gzip = 9 }, stored_levels = { br = 11 } }` (nginx's
/// `gzip_comp_level` in a `location`); what it does not name is `[compression]`'s.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteCompression {
    pub on: bool,
    pub levels: Levels,
    pub stored_levels: Levels,
}

impl Default for RouteCompression {
    fn default() -> Self {
        RouteCompression { on: true, levels: Levels::default(), stored_levels: Levels::default() }
    }
}

/// By hand rather than `untagged`, whose only error is "did not match any variant".
impl<'de> Deserialize<'de> for RouteCompression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Own {
            #[serde(default)]
            levels: Levels,
            #[serde(default)]
            stored_levels: Levels,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RouteCompression;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "true, false or { levels = { gzip = 1..9, br = 0..11, zstd = 1..19 }, stored_levels = { ... } }",
                )
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<RouteCompression, E> {
                Ok(RouteCompression { on, ..RouteCompression::default() })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RouteCompression, A::Error> {
                let own = Own::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RouteCompression { on: true, levels: own.levels, stored_levels: own.stored_levels })
            }
        }
        d.deserialize_any(V)
    }
}

/// A content coding relais produces. Its configuration name is its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Zstd,
    Br,
    Gzip,
}

impl Encoding {
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// A coding as HTTP names it (any case; `x-gzip` is gzip).
    pub fn parse(token: &str) -> Option<Encoding> {
        match token.to_ascii_lowercase().as_str() {
            "zstd" => Some(Encoding::Zstd),
            "br" => Some(Encoding::Br),
            "gzip" | "x-gzip" => Some(Encoding::Gzip),
            _ => None,
        }
    }
}

/// A level per encoding (`levels = { gzip = 6 }`); an encoding left out keeps
/// the level it has elsewhere. Each level is within its encoding's range.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    pub zstd: Option<Level<1, 22>>,
    pub br: Option<Level<0, 11>>,
    pub gzip: Option<Level<1, 9>>,
}

impl Levels {
    pub fn get(&self, e: Encoding) -> Option<i32> {
        match e {
            Encoding::Zstd => self.zstd.map(|l| l.0),
            Encoding::Br => self.br.map(|l| l.0),
            Encoding::Gzip => self.gzip.map(|l| l.0),
        }
    }

    /// `self`'s levels where it has them, else `under`'s.
    pub fn or(self, under: Levels) -> Levels {
        Levels { zstd: self.zstd.or(under.zstd), br: self.br.or(under.br), gzip: self.gzip.or(under.gzip) }
    }

    /// zstd's ultra levels (20–22) use windows of up to 128 MiB: per response
    /// being compressed as it streams, that is memory no budget accounts for.
    fn streamable(&self, key: &str) -> Result<(), (String, String)> {
        match self.zstd.map(|l| l.0).filter(|&l| l > 19) {
            Some(level) => Err((
                format!("{key}.zstd"),
                format!(
                    "{level} is an ultra level (windows up to 128 MiB per response); at most 19 here, use stored_levels for more"
                ),
            )),
            None => Ok(()),
        }
    }
}

/// A compression level from `LOW` to `HIGH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i32")]
pub struct Level<const LOW: i32, const HIGH: i32>(i32);

impl<const LOW: i32, const HIGH: i32> TryFrom<i32> for Level<LOW, HIGH> {
    type Error = String;
    fn try_from(level: i32) -> Result<Self, String> {
        match (LOW..=HIGH).contains(&level) {
            true => Ok(Level(level)),
            false => Err(format!("{level} is not within {LOW}..{HIGH}")),
        }
    }
}

/// A `compression.types` entry: `text/html`, a family `text/*`, or a
/// structured suffix `application/*+json` (any `application/...+json`), lower-case.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum MediaType {
    Exact(String),
    /// `text/`.
    Family(String),
    /// `application/` and `+json`.
    Suffixed(String, String),
}

impl TryFrom<String> for MediaType {
    type Error = String;
    fn try_from(t: String) -> Result<Self, String> {
        MediaType::parse(&t).ok_or_else(|| format!("{t:?} is not a media type like text/html"))
    }
}

impl MediaType {
    fn parse(t: &str) -> Option<MediaType> {
        if t.split_once('/').is_none_or(|(a, b)| a.is_empty() || b.is_empty()) {
            return None;
        }
        let t = t.to_ascii_lowercase();
        if let Some((family, suffix)) = t.split_once("/*+") {
            return Some(MediaType::Suffixed(format!("{family}/"), format!("+{suffix}")));
        }
        Some(match t.strip_suffix('*') {
            Some(family) if family.ends_with('/') => MediaType::Family(family.to_string()),
            _ => MediaType::Exact(t),
        })
    }

    /// `media` (a Content-Type without parameters) is compared without regard
    /// to case, and without allocating.
    pub fn matches(&self, media: &str) -> bool {
        let starts = |p: &str| media.len() >= p.len() && media.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes());
        match self {
            MediaType::Exact(t) => media.eq_ignore_ascii_case(t),
            MediaType::Family(f) => starts(f),
            MediaType::Suffixed(f, s) => {
                starts(f)
                    && media.len() >= f.len() + s.len()
                    && media.as_bytes()[media.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

/// What the types cannot check: the levels used as bodies stream, in
/// `[compression]` and in each route's `compression`.
pub(super) fn validate(c: &super::Config, bad: &dyn Fn(String, String) -> ConfigError) -> Result<(), ConfigError> {
    let mut streamed = vec![("compression.levels".to_string(), &c.compression.levels)];
    for (i, r) in c.routes.iter().enumerate() {
        streamed.push((format!("routes[{i}].compression.levels"), &r.compression.levels));
    }
    for (key, levels) in streamed {
        levels.streamable(&key).map_err(|(key, msg)| bad(key, msg))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_match_without_regard_to_case() {
        let exact = MediaType::parse("application/json").unwrap();
        assert!(exact.matches("application/json") && exact.matches("Application/JSON"));
        assert!(!exact.matches("application/json5"));
        let family = MediaType::parse("text/*").unwrap();
        assert!(family.matches("text/html") && family.matches("TEXT/plain"));
        assert!(!family.matches("textual/html") && !family.matches("text"));
        let suffixed = MediaType::parse("application/*+json").unwrap();
        assert!(suffixed.matches("application/problem+json") && suffixed.matches("application/LD+JSON"));
        assert!(!suffixed.matches("application/json") && !suffixed.matches("text/x+json"));
        assert!(!suffixed.matches("application/+jso"));
        for bad in ["text", "/html", "text/", ""] {
            assert!(MediaType::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(CompressionConfig::default().types.len(), 9, "every default type parses");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's own error
    fn a_route_says_true_false_or_its_levels() {
        use figment::providers::Format;
        #[derive(Debug, Deserialize)]
        struct Route {
            compression: RouteCompression,
        }
        let read = |toml: &str| figment::Figment::from(figment::providers::Toml::string(toml)).extract::<Route>();
        assert!(!read("compression = false").unwrap().compression.on);
        assert_eq!(read("compression = true").unwrap().compression, RouteCompression::default());
        let own = read("[compression]\nlevels = { gzip = 1 }\n").unwrap().compression;
        assert!(own.on);
        assert_eq!((own.levels.get(Encoding::Gzip), own.levels.get(Encoding::Br)), (Some(1), None));
        let err = read("[compression]\nlevels = { gzip = 10 }\n").unwrap_err();
        assert_eq!(err.path, ["compression", "levels", "gzip"]);
        assert!(err.to_string().contains("not within 1..9"), "{err}");
        assert!(read("compression = { level = 1 }").is_err());
    }
}
