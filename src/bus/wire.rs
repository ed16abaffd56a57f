//! A purge as it travels on the stream: JSON, one message a purge.
//!
//! `{"id":"a-18c2…-7","node":"a","soft":false,"urls":["http://…","https://…"]}`;
//! instead of `urls`: `prefixes`, `tags`, or `"all": true`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::cache::purge::Target;
use crate::metrics::PurgeMode;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Purge {
    /// Unique in the cluster: the sending node, when its process started, a count.
    pub id: String,
    /// The node an operator sent it to.
    pub node: String,
    #[serde(default)]
    pub soft: bool,
    #[serde(flatten)]
    target: Matches,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Matches {
    Urls(Vec<String>),
    Prefixes(Vec<String>),
    Tags(Vec<String>),
    All(bool),
}

static COUNT: AtomicU64 = AtomicU64::new(0);

impl Purge {
    pub(crate) fn new(node: &str, target: &Target, mode: PurgeMode) -> Purge {
        let started = *STARTED;
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let target = match target {
            Target::Urls(u) => Matches::Urls(u.clone()),
            Target::Prefixes(p) => Matches::Prefixes(p.clone()),
            Target::Tags(t) => Matches::Tags(t.clone()),
            Target::All => Matches::All(true),
        };
        Purge { id: format!("{node}-{started:x}-{n}"), node: node.to_string(), soft: mode.is_soft(), target }
    }

    pub(crate) fn target(&self) -> Target {
        match &self.target {
            Matches::Urls(u) => Target::Urls(u.clone()),
            Matches::Prefixes(p) => Target::Prefixes(p.clone()),
            Matches::Tags(t) => Target::Tags(t.clone()),
            // `"all": false` is not something relais sends; purging everything is the safe reading.
            Matches::All(_) => Target::All,
        }
    }

    pub(crate) fn mode(&self) -> PurgeMode {
        if self.soft { PurgeMode::Soft } else { PurgeMode::Hard }
    }
}

/// When this process started, in nanoseconds: ids stay unique across restarts.
static STARTED: std::sync::LazyLock<u128> = std::sync::LazyLock::new(|| {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
});

/// What a node says it has applied, on `<stream>.applied.<node>`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Applied {
    pub node: String,
    pub sequence: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_reads_back_as_sent() {
        let p = Purge::new("a", &Target::Prefixes(vec!["http://s/x/".into()]), PurgeMode::Soft);
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains(r#""prefixes":["http://s/x/"]"#), "{text}");
        let back: Purge = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.target(), Target::Prefixes(vec!["http://s/x/".into()]));
        assert_eq!(back.mode(), PurgeMode::Soft);
        let all: Purge = serde_json::from_str(r#"{"id":"x","node":"b","all":true}"#).unwrap();
        assert_eq!((all.target(), all.mode()), (Target::All, PurgeMode::Hard));
        assert_ne!(
            Purge::new("a", &Target::All, PurgeMode::Hard).id,
            Purge::new("a", &Target::All, PurgeMode::Hard).id
        );
    }
}
