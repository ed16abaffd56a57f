//! Which disk copies must not be read, and the disk writes still in flight.
//!
//! A purge removes a key from memory and the index at once, but its disk copy
//! goes later, behind it: until then the key is *doomed* and never read from
//! disk. A write that started before the purge may land after the deletion;
//! so a purge dooms every key with a write in flight too, and the key stays
//! doomed until both the deletion and every such write have ended (the write
//! itself removes what it wrote if a purge covers it). One lock guards both
//! sets, so no write can begin or end between a check and a change.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Default)]
pub(super) struct Hidden {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    doomed: HashSet<String>,
    /// Disk writes in flight, per key.
    writing: HashMap<String, u32>,
}

impl Hidden {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Never read `key` from disk until [`Hidden::deleted`] says otherwise.
    pub(super) fn doom(&self, key: &str) {
        self.state().doomed.insert(key.to_string());
    }

    /// Dooms `key` if it has a disk copy (`on_disk`) or a write in flight;
    /// true if so, and its disk copy must then be deleted.
    pub(super) fn doom_on_disk(&self, key: &str, on_disk: bool) -> bool {
        let mut state = self.state();
        let doomed = on_disk || state.writing.contains_key(key);
        if doomed {
            state.doomed.insert(key.to_string());
        }
        doomed
    }

    pub(super) fn is_doomed(&self, key: &str) -> bool {
        let state = self.state();
        !state.doomed.is_empty() && state.doomed.contains(key)
    }

    /// A purge's deletion of `key` ended: readable again, unless a write that
    /// may predate the purge is still in flight.
    pub(super) fn deleted(&self, key: &str) {
        let mut state = self.state();
        if !state.writing.contains_key(key) {
            state.doomed.remove(key);
        }
    }

    /// A disk write of `key` begins.
    pub(super) fn writing(&self, key: &str) {
        *self.state().writing.entry(key.to_string()).or_default() += 1;
    }

    /// A disk write of `key` ended. `clean`: the disk now holds what may be
    /// read (the write, or nothing after removing a purged write), so once no
    /// other write is in flight the key is readable again. A write that failed
    /// leaves a doomed key doomed.
    pub(super) fn written(&self, key: &str, clean: bool) {
        let mut state = self.state();
        let last = match state.writing.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                state.writing.remove(key);
                true
            }
            None => false,
        };
        if last && clean && !state.doomed.is_empty() {
            state.doomed.remove(key);
        }
    }

    /// Every doomed key (their deletions are owed, across a crash too).
    pub(super) fn owed(&self) -> Vec<String> {
        self.state().doomed.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_stays_doomed_until_its_deletion_and_its_writes_have_ended() {
        let h = Hidden::default();
        h.writing("k");
        assert!(h.doom_on_disk("k", false), "a write in flight counts as a disk copy");
        h.deleted("k");
        assert!(h.is_doomed("k"), "the write may land after the deletion");
        h.written("k", true);
        assert!(!h.is_doomed("k"));

        assert!(!h.doom_on_disk("j", false));
        assert!(h.doom_on_disk("j", true));
        h.writing("j");
        h.written("j", false);
        assert!(h.is_doomed("j"), "a failed write leaves it doomed");
        h.deleted("j");
        assert!(!h.is_doomed("j"));
        assert!(h.owed().is_empty());
    }
}
