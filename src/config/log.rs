//! `[log]`: where the access and error logs go, in which format, and how much
//! the error log says.

use std::path::PathBuf;

use serde::Deserialize;

/// `[log]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The access log's format: `human`, `json` or `combined`. The error log
    /// is JSON with `json`, human text otherwise. Default `human`.
    pub format: LogFormat,
    /// One line per request in the access log, whatever `level` says. Default true.
    pub access: bool,
    /// What the error log says, when `RUST_LOG` is not set. Default `info`.
    pub level: LogLevel,
    /// `auto` (default): colour only when the error log is a terminal. `always`, `never`.
    pub color: LogColor,
    /// The access log's file (appended to, reopened on SIGUSR1), relative to
    /// the configuration file's folder. Default: stderr.
    pub file: Option<PathBuf>,
    /// The error log's file, likewise. Default: stderr.
    pub error_file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            access: true,
            level: LogLevel::default(),
            color: LogColor::Auto,
            file: None,
            error_file: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogColor {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
    /// Apache's and nginx's combined format (access log only).
    Combined,
}

/// `log.level`: a level (`off`, `error`, `warn` or `warning`, `info`,
/// `debug`, `trace`), optionally with per-target directives after it
/// (`"info,relais::upstream=debug"`). Held as the filter it stands for, with
/// `warning` spelled `warn`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct LogLevel(String);

impl Default for LogLevel {
    fn default() -> Self {
        LogLevel("info".into())
    }
}

impl LogLevel {
    /// The filter, as `tracing_subscriber::EnvFilter` reads it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const LEVELS: [&str; 7] = ["off", "error", "warn", "warning", "info", "debug", "trace"];

impl TryFrom<String> for LogLevel {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let level = |word: &str| {
            let word = word.trim().to_ascii_lowercase();
            match LEVELS.contains(&word.as_str()) {
                true if word == "warning" => Some("warn".to_string()),
                true => Some(word),
                false => None,
            }
        };
        let mut directives = Vec::new();
        for part in s.split(',').map(str::trim) {
            let directive = match part.split_once('=') {
                None => level(part),
                Some((target, word)) => {
                    let target = target.trim();
                    let named = !target.is_empty()
                        && target.split("::").all(|p| {
                            !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                        });
                    named.then(|| level(word).map(|l| format!("{target}={l}"))).flatten()
                }
            };
            directives.push(directive.ok_or_else(|| {
                format!(
                    "{part:?} is not a level: use off, error, warn, info, debug or trace, \
                     optionally followed by target=level directives (\"info,relais::upstream=debug\")"
                )
            })?);
        }
        Ok(LogLevel(directives.join(",")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_known_words_or_target_directives() {
        for (given, held) in [
            ("info", "info"),
            ("WARNING", "warn"),
            ("warn", "warn"),
            ("off", "off"),
            ("warning, relais::upstream=debug", "warn,relais::upstream=debug"),
            ("hyper=warning", "hyper=warn"),
        ] {
            assert_eq!(LogLevel::try_from(given.to_string()).unwrap().as_str(), held, "{given}");
        }
        for bad in ["loud", "", "info,", "relais::=debug", "x=loud", "a b=info", "relais[span]=info"] {
            assert!(LogLevel::try_from(bad.to_string()).is_err(), "{bad:?} accepted");
        }
    }
}
