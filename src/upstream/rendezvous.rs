//! Rendezvous (highest random weight) hashing: each key is owned by the node
//! whose hash of (node id, key) is highest. When a node leaves, only the keys
//! it owned move (each to its second choice); every other key stays put.
//!
//! The hash is FNV-1a with a 64-bit finaliser: stable across builds and
//! machines, so every node of a cluster agrees on every key's owner.

/// The score of `node` for `key`: the highest wins.
pub(crate) fn score(node: &str, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0xff]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // murmur3's fmix64: FNV alone mixes the last bytes poorly.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The index, among `nodes`, of the one that owns `key` of those `eligible` says
/// may (None if none may).
pub(crate) fn owner<'a>(
    nodes: impl IntoIterator<Item = &'a str>,
    key: &str,
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for (i, node) in nodes.into_iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let s = score(node, key);
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, i));
        }
    }
    best.map(|(_, i)| i)
}

/// The ring as `relais check` prints it: the mode, then each node, which is
/// this one, and the share of a sample of keys it owns while every node is up.
pub(crate) fn describe(cluster: &crate::config::ClusterConfig) -> String {
    use std::fmt::Write;
    let mode = match cluster.sharding {
        crate::config::Sharding::Rendezvous if cluster.peers.len() > 1 => "rendezvous",
        crate::config::Sharding::Rendezvous => "rendezvous (one node: nothing forwarded)",
        crate::config::Sharding::Off => "off (every node fetches for itself)",
    };
    let mut s = format!("  cluster  node {} · sharding {mode}\n", cluster.node);
    const SAMPLE: usize = 10_000;
    let mut owned = vec![0usize; cluster.peers.len()];
    for i in 0..SAMPLE {
        let key = format!("sample.test/objects/{i}");
        if let Some(o) = owner(cluster.peers.keys().map(String::as_str), &key, |_| true) {
            owned[o] += 1;
        }
    }
    for ((id, addr), n) in cluster.peers.iter().zip(owned) {
        let me = if *id == cluster.node { " (this node)" } else { "" };
        let share = if cluster.sharding == crate::config::Sharding::Rendezvous {
            format!(" · owns {:.1}% of keys", n as f64 * 100.0 / SAMPLE as f64)
        } else {
            String::new()
        };
        let _ = writeln!(s, "    {id:<12} {addr}{me}{share}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: [&str; 3] = ["a", "b", "c"];

    fn keys() -> impl Iterator<Item = String> {
        (0..3000).map(|i| format!("example.com/objects/{i}.jpg"))
    }

    #[test]
    fn keys_spread_about_evenly() {
        let mut counts = [0; 3];
        for k in keys() {
            counts[owner(NODES, &k, |_| true).unwrap()] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn when_a_node_leaves_only_its_keys_move() {
        let mut moved = 0;
        for k in keys() {
            let before = owner(NODES, &k, |_| true).unwrap();
            let after = owner(NODES, &k, |i| i != 1).unwrap();
            if before == 1 {
                assert_ne!(after, 1);
                moved += 1;
            } else {
                assert_eq!(before, after, "{k} moved though its owner stayed");
            }
        }
        assert!(moved > 0);
        assert_eq!(owner(NODES, "k", |_| false), None);
    }

    #[test]
    fn the_owner_depends_on_ids_not_their_order() {
        for k in keys().take(100) {
            let a = owner(NODES, &k, |_| true).unwrap();
            let b = owner(["c", "b", "a"], &k, |_| true).unwrap();
            assert_eq!(NODES[a], ["c", "b", "a"][b]);
        }
    }
}
