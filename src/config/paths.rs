//! Every file and folder the configuration names, in one list: relative
//! paths are resolved once, at load, against the configuration file's folder
//! (as nginx resolves them against its prefix), so nothing later can read them
//! against the working directory; and a file that cannot be used is reported
//! with the key that named it.
//!
//! A new path key joins by one line in [`Config::paths_mut`].

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

impl Config {
    /// Each path in the configuration with its key, in the order of the README.
    pub fn paths_mut(&mut self) -> Vec<(String, &mut PathBuf)> {
        fn add<'a>(all: &mut Vec<(String, &'a mut PathBuf)>, key: String, path: Option<&'a mut PathBuf>) {
            if let Some(p) = path {
                all.push((key, p));
            }
        }
        let mut all = Vec::new();
        if let Some(tls) = &mut self.server.tls {
            for (i, c) in tls.certificates.iter_mut().enumerate() {
                add(&mut all, format!("server.tls.certificates[{i}].cert"), Some(&mut c.cert));
                add(&mut all, format!("server.tls.certificates[{i}].key"), Some(&mut c.key));
            }
            add(&mut all, "server.tls.client_ca".into(), tls.client_ca.as_mut());
        }
        if let Some(acme) = &mut self.acme {
            add(&mut all, "acme.storage".into(), Some(&mut acme.storage));
            add(&mut all, "acme.ca_root".into(), acme.ca_root.as_mut());
        }
        add(&mut all, "guard.rules_file".into(), self.guard.rules_file.as_mut());
        add(&mut all, "cache.disk_path".into(), Some(&mut self.cache.disk_path));
        add(&mut all, "buffering.temp_path".into(), self.buffering.temp_path.as_mut());
        add(&mut all, "log.file".into(), self.log.file.as_mut());
        add(&mut all, "log.error_file".into(), self.log.error_file.as_mut());
        for (name, u) in &mut self.upstreams {
            add(&mut all, format!("upstreams.{name}.tls.ca_file"), u.tls.ca_file.as_mut());
            add(&mut all, format!("upstreams.{name}.tls.client_cert"), u.tls.client_cert.as_mut());
            add(&mut all, format!("upstreams.{name}.tls.client_key"), u.tls.client_key.as_mut());
        }
        for (code, page) in &mut self.error_pages {
            add(&mut all, format!("error_pages.\"{code}\""), page.file_mut());
        }
        for (i, r) in self.routes.iter_mut().enumerate() {
            for (code, page) in &mut r.error_pages {
                add(&mut all, format!("routes[{i}].error_pages.\"{code}\""), page.file_mut());
            }
            let file = r.auth_basic.as_mut().map(|b| &mut b.users_file);
            add(&mut all, format!("routes[{i}].auth_basic.users_file"), file);
            add(&mut all, format!("routes[{i}].root"), r.root.as_mut());
            add(&mut all, format!("routes[{i}].alias"), r.alias.as_mut());
        }
        if let Some(bus) = self.cluster.as_mut().and_then(|c| c.bus.as_mut()) {
            add(&mut all, "cluster.bus.credentials_file".into(), bus.credentials_file.as_mut());
            add(&mut all, "cluster.bus.ca_file".into(), bus.ca_file.as_mut());
        }
        all
    }

    /// Makes every relative path relative to `dir` (the configuration file's folder).
    pub(super) fn resolve_paths(&mut self, dir: &Path) {
        for (_, path) in self.paths_mut() {
            if path.is_relative() {
                // `components` drops the `.` of `./relais-cache`.
                *path = dir.join(&*path).components().collect();
            }
        }
    }

    /// The keys that name `file` (a certificate file may be both `cert` and `key`).
    pub fn keys_naming(&self, file: &Path) -> Vec<String> {
        let mut config = self.clone();
        config.paths_mut().into_iter().filter(|(_, p)| p.as_path() == file).map(|(key, _)| key).collect()
    }

    /// A file that cannot be used, named with the key(s) that name it.
    pub fn file_error(&self, file: PathBuf, reason: String) -> ConfigError {
        let key = self.keys_naming(&file).join(", ");
        ConfigError::File { file, key, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_FILES: &str = r#"
[server.tls]
listen = ["127.0.0.1:0"]
certificates = [{ cert = "certs/site.pem", key = "/etc/relais/site.key" }]
client_ca = "ca.pem"
[cache]
disk_path = "cache"
[buffering]
temp_path = "../tmp"
[upstreams.app]
servers = ["https://127.0.0.1:3000"]
tls = { ca_file = "internal-ca.pem" }
[acme]
directory = "https://acme.test/dir"
names = ["a.test"]
[log]
file = "logs/access.log"
error_file = "/var/log/relais/error.log"
"#;

    #[test]
    fn relative_paths_are_the_config_folders_and_absolute_ones_stay() {
        let mut c = Config::from_toml(WITH_FILES, "t.toml").unwrap();
        assert_eq!(c.cache.disk_path, Path::new("cache"), "without a file, the working directory's");
        c.resolve_paths(Path::new("/etc/relais"));
        let tls = c.server.tls.as_ref().unwrap();
        assert_eq!(tls.certificates[0].cert, Path::new("/etc/relais/certs/site.pem"));
        assert_eq!(tls.certificates[0].key, Path::new("/etc/relais/site.key"));
        assert_eq!(tls.client_ca.as_deref(), Some(Path::new("/etc/relais/ca.pem")));
        assert_eq!(c.cache.disk_path, Path::new("/etc/relais/cache"));
        assert_eq!(c.buffering.temp_path.as_deref(), Some(Path::new("/etc/relais/../tmp")));
        assert_eq!(c.upstreams["app"].tls.ca_file.as_deref(), Some(Path::new("/etc/relais/internal-ca.pem")));
        assert_eq!(c.acme.as_ref().unwrap().storage, Path::new("/etc/relais/relais-acme"));
        assert_eq!(c.log.file.as_deref(), Some(Path::new("/etc/relais/logs/access.log")));
        assert_eq!(c.log.error_file.as_deref(), Some(Path::new("/var/log/relais/error.log")));
    }

    #[test]
    fn a_file_error_names_its_key() {
        let c = Config::from_toml(WITH_FILES, "t.toml").unwrap();
        let msg = c.file_error(PathBuf::from("internal-ca.pem"), "unreadable".into()).to_string();
        assert_eq!(msg, "upstreams.app.tls.ca_file: internal-ca.pem: unreadable");
        let msg = c.file_error(PathBuf::from("elsewhere.pem"), "unreadable".into()).to_string();
        assert_eq!(msg, "elsewhere.pem: unreadable");
    }
}
