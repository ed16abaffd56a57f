//! Settings that are valid but probably not what the operator meant: `relais
//! check` prints them, `relais run` (and a reload) logs them.

use super::Config;

/// `RELAIS_*` variables that are not configuration, left alone.
const NOT_CONFIG: [&str; 3] = ["RELAIS_BIN", "RELAIS_TEST_BIN", "RELAIS_LOG"];

/// `RELAIS_*` variables that cannot be a key, sorted: a key's levels are
/// joined by `__`, so `RELAIS_ADMIN_TOKEN` (meant as `RELAIS_ADMIN__TOKEN`)
/// names none, and the environment reader skips it. (A name with `__` that
/// matches no key is an error already: the tree refuses unknown keys.)
pub(super) fn unknown_env() -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().trim().to_string())
        .filter(|name| {
            let Some(rest) = name.get(..7).filter(|p| p.eq_ignore_ascii_case("RELAIS_")).map(|_| &name[7..]) else {
                return false;
            };
            let not_config = NOT_CONFIG.iter().any(|n| n.eq_ignore_ascii_case(name));
            // The reader also skips a name with an empty level (`RELAIS_ADMIN__`).
            !not_config && (!rest.contains("__") || rest.split("__").any(str::is_empty))
        })
        .collect();
    names.sort();
    names
}

impl Config {
    /// One line per thing worth a warning.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .unknown_env
            .iter()
            .map(|name| {
                format!(
                    "environment variable {name} matches no configuration key and is ignored \
                     (levels are joined by two underscores, as in RELAIS_ADMIN__TOKEN)"
                )
            })
            .collect();
        out.extend(self.uncacheable_sizes());
        if self.server.max_request_body.is_none() {
            for (i, _) in self.routes.iter().enumerate().filter(|(_, r)| r.request_buffering) {
                out.push(format!(
                    "routes[{i}].request_buffering is on without server.max_request_body: one upload may \
                     take all of buffering.request_disk ({}), and others are refused until it is sent",
                    self.buffering.request_disk
                ));
            }
        }
        out
    }
}

/// Bodies over this are stored on disk only (`cache::spill::STREAM_ABOVE`).
const DISK_ONLY_ABOVE: u64 = 8 << 20;

impl Config {
    /// Sizes `max_object_size` lets through that no tier can hold.
    fn uncacheable_sizes(&self) -> Vec<String> {
        let c = &self.cache;
        let max = c.max_object_size.bytes();
        let mut out = Vec::new();
        // A body is stored whole in memory (within fill_memory, up to 8MiB) or streamed to disk.
        let held_in_memory = c.fill_memory.bytes().min(DISK_ONLY_ABOVE);
        if max > c.disk_capacity.bytes() && max > held_in_memory {
            out.push(format!(
                "cache.max_object_size ({}) is more than cache.disk_capacity ({}): bodies between {} and {} \
                 pass the size check but are never stored (over {} they go to disk only, and the disk \
                 tier refuses an entry larger than its capacity)",
                c.max_object_size,
                c.disk_capacity,
                super::Size(held_in_memory.max(c.disk_capacity.bytes())),
                c.max_object_size,
                super::Size(held_in_memory),
            ));
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use std::path::Path;

    use figment::Jail;

    use super::*;

    const MINIMAL: &str = "[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n[[routes]]\nupstream = \"app\"\n";

    #[test]
    fn a_variable_with_one_underscore_is_named() {
        Jail::expect_with(|jail| {
            jail.create_file("relais.toml", MINIMAL)?;
            jail.set_env("RELAIS_ADMIN_TOKEN", "s3cret");
            jail.set_env("relais_cache__", "1");
            jail.set_env("RELAIS_CACHE__MEMORY_CAPACITY", "1GiB");
            jail.set_env("RELAIS_BIN", "target/release/relais");
            jail.set_env("RELAIS_TEST_BIN", "target/release/relais");
            let c = Config::load(Path::new("relais.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.unknown_env, ["RELAIS_ADMIN_TOKEN", "relais_cache__"]);
            assert_eq!(c.admin.token, None);
            let warnings = c.warnings();
            assert!(warnings[0].contains("RELAIS_ADMIN_TOKEN") && warnings[0].contains("RELAIS_ADMIN__TOKEN"));
            Ok(())
        });
    }

    #[test]
    fn a_size_no_tier_can_hold_is_a_warning() {
        let toml = format!("[cache]\ndisk_capacity = \"512MiB\"\n{MINIMAL}");
        let warnings = Config::from_toml(&toml, "t.toml").unwrap().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("cache.max_object_size (1GiB)") && warnings[0].contains("512MiB"), "{warnings:?}");
        let fits = format!("[cache]\ndisk_capacity = \"512MiB\"\nmax_object_size = \"256MiB\"\n{MINIMAL}");
        assert!(Config::from_toml(&fits, "t.toml").unwrap().warnings().is_empty());
        assert!(
            Config::from_toml(MINIMAL, "t.toml").unwrap().warnings().is_empty(),
            "the defaults hold what they let through"
        );
    }

    #[test]
    fn request_buffering_without_a_body_limit_is_a_warning() {
        let toml = format!("{MINIMAL}request_buffering = true\n");
        let warnings = Config::from_toml(&toml, "t.toml").unwrap().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("routes[0].request_buffering") && warnings[0].contains("max_request_body"));
        let limited = format!("[server]\nmax_request_body = \"10MiB\"\n{toml}");
        assert!(Config::from_toml(&limited, "t.toml").unwrap().warnings().is_empty());
    }
}
