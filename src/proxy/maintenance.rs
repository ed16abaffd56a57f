//! Maintenance mode: a switch for every route or for named ones, set at run
//! time through the admin API or the command line, without a reload. While
//! it is on, requests get 503 with `Retry-After` (and the 503 error page),
//! except from `[maintenance] allow`. It lives beside the pipelines, so a
//! reload keeps it, and in a small file beside the disk cache, so a restart
//! or a binary upgrade keeps it too.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

pub(crate) struct Maintenance {
    /// Whether anything is on: the one load a request pays otherwise.
    any: AtomicBool,
    state: Mutex<State>,
    file: PathBuf,
}

/// What is in maintenance.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub(crate) struct State {
    /// Every route.
    pub all: bool,
    /// These routes, by name.
    pub routes: BTreeSet<String>,
}

impl Maintenance {
    /// The state kept in `file` (none, or unreadable: off).
    pub(crate) fn open(file: PathBuf) -> Maintenance {
        let state = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), error = %e, "maintenance state unreadable; off");
                State::default()
            }),
            Err(_) => State::default(),
        };
        if state.all || !state.routes.is_empty() {
            tracing::warn!(all = state.all, routes = ?state.routes, "maintenance mode is on, as it was left");
        }
        let m = Maintenance { any: AtomicBool::new(false), state: Mutex::new(state), file };
        m.any.store(m.state().is_on(), Ordering::Relaxed);
        m
    }

    /// Whether requests to `route` are answered with 503.
    pub(crate) fn applies(&self, route: &str) -> bool {
        if !self.any.load(Ordering::Relaxed) {
            return false;
        }
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.all || state.routes.contains(route)
    }

    pub(crate) fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Turns maintenance on or off, for `route` or for all (off for all
    /// clears every route too), and keeps the new state in its file.
    pub(crate) fn set(&self, route: Option<&str>, on: bool) -> State {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match (route, on) {
            (Some(r), true) => drop(state.routes.insert(r.to_string())),
            (Some(r), false) => drop(state.routes.remove(r)),
            (None, true) => state.all = true,
            (None, false) => *state = State::default(),
        }
        self.any.store(state.is_on(), Ordering::Relaxed);
        let now = state.clone();
        drop(state);
        if let Err(e) = write(&self.file, &now) {
            tracing::warn!(file = %self.file.display(), error = %e, "maintenance state not kept; a restart forgets it");
        }
        now
    }
}

impl State {
    fn is_on(&self) -> bool {
        self.all || !self.routes.is_empty()
    }
}

/// Written whole then renamed: a crash leaves the old state or the new.
fn write(file: &std::path::Path, state: &State) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(state).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_off_by_route_and_kept_in_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("maintenance.json");
        let m = Maintenance::open(file.clone());
        assert!(!m.applies("api"));
        m.set(Some("api"), true);
        assert!(m.applies("api") && !m.applies("www"));
        let again = Maintenance::open(file.clone());
        assert!(again.applies("api"), "a restart keeps it");
        again.set(None, true);
        assert!(again.applies("www"));
        again.set(None, false);
        assert!(!again.applies("api") && !again.applies("www"));
        assert!(!Maintenance::open(file).applies("api"));
    }
}
