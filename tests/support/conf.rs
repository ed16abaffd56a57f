//! Configurations for tests, built section by section instead of formatted by
//! hand: `Conf::new().upstream("app", addr).route("/", "app").with("cache = …")`.
//!
//! It writes TOML text, the one input relais reads, so a renamed key fails here
//! the same way it would fail an operator. Tests of the TOML syntax and its
//! error messages keep their literal text.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

/// A configuration as a list of sections, written in the order they were added.
#[derive(Clone, Debug, Default)]
pub struct Conf {
    sections: Vec<String>,
}

/// One upstream `o` serving `addr`, and one route that sends everything to it:
/// the configuration most tests start from.
pub fn proxy_to(addr: SocketAddr) -> Conf {
    Conf::new().upstream("o", addr).route_all("o")
}

impl Conf {
    pub fn new() -> Conf {
        Conf::default()
    }

    /// `[upstreams.NAME]` with one server.
    pub fn upstream(self, name: &str, addr: impl fmt::Display) -> Conf {
        self.servers(name, &[addr])
    }

    /// `[upstreams.NAME]` with these servers.
    pub fn servers(self, name: &str, addrs: &[impl fmt::Display]) -> Conf {
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        self.section(format!("[upstreams.{name}]\nservers = [{}]", list.join(", ")))
    }

    /// A `[[routes]]` entry for paths under `path`.
    pub fn route(self, path: &str, upstream: &str) -> Conf {
        self.section(format!("[[routes]]\npath = \"{path}\"\nupstream = \"{upstream}\""))
    }

    /// A `[[routes]]` entry without a path: it matches every request.
    pub fn route_all(self, upstream: &str) -> Conf {
        self.section(format!("[[routes]]\nupstream = \"{upstream}\""))
    }

    /// `[cache] disk_path`: the disk tier in `dir` (to restart on the same cache).
    pub fn disk(self, dir: &Path) -> Conf {
        self.section(format!("[cache]\ndisk_path = \"{}\"", dir.display()))
    }

    /// Lines added to the section added last (keys of that upstream, route or table).
    pub fn with(mut self, lines: impl AsRef<str>) -> Conf {
        let lines = lines.as_ref().trim_matches('\n');
        match self.sections.last_mut() {
            Some(last) if !lines.is_empty() => {
                last.push('\n');
                last.push_str(lines);
            }
            None => self.sections.push(lines.to_string()),
            _ => {}
        }
        self
    }

    /// Sections of TOML text, added as they are (each starts with its own table header).
    pub fn section(mut self, toml: impl AsRef<str>) -> Conf {
        let toml = toml.as_ref().trim_matches('\n');
        if !toml.is_empty() {
            self.sections.push(toml.to_string());
        }
        self
    }
}

impl fmt::Display for Conf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.sections {
            writeln!(f, "{s}")?;
        }
        Ok(())
    }
}
