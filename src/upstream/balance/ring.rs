//! Consistent hashing (`balance = "hash"`, `"ip_hash"`): a ring of points,
//! 160 per unit of weight, each a hash of the server's address and the point's
//! number (Ketama's layout). A key goes to the first point at or after its
//! hash; when one of N servers leaves, only its points go, so about 1/N of
//! keys move and the rest stay where they were.

use std::hash::{BuildHasher, Hasher};

const POINTS_PER_WEIGHT: usize = 160;

pub(super) struct Ring {
    /// (point, server), sorted by point.
    points: Vec<(u64, usize)>,
}

impl Ring {
    pub(super) fn new(addresses: &[&str], weights: &[u32]) -> Ring {
        let mut points = Vec::new();
        for (i, (address, weight)) in addresses.iter().zip(weights).enumerate() {
            for p in 0..POINTS_PER_WEIGHT * *weight as usize {
                points.push((hash(&[address.as_bytes(), &(p as u64).to_le_bytes()]), i));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// Every server once: the key's owner, then the next two distinct servers
    /// around the ring (where its retries go, consistently too), then the rest.
    pub(super) fn walk(&self, key: u64, n: usize, out: &mut Vec<usize>) {
        if self.points.is_empty() || n == 0 {
            return;
        }
        let mut taken = vec![false; n];
        let start = self.points.partition_point(|(p, _)| *p < key);
        for k in 0..self.points.len() {
            let (_, server) = self.points[(start + k) % self.points.len()];
            if server < n && !taken[server] {
                taken[server] = true;
                out.push(server);
                if out.len() == n.min(3) {
                    break;
                }
            }
        }
        out.extend((0..n).filter(|&i| !taken[i]));
    }
}

/// A stable 64-bit hash (the same in every process, unlike `RandomState`):
/// keys come from clients, but where they land is no secret worth keying.
pub fn hash(parts: &[&[u8]]) -> u64 {
    let mut h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
    for p in parts {
        h.write(p);
        h.write_u8(0xff);
    }
    // SipHash's output is well mixed; spread it once more for the ring's sake.
    let x = h.finish();
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_one_of_four_servers_moves_about_a_quarter_of_the_keys() {
        let four = Ring::new(&["a:1", "b:1", "c:1", "d:1"], &[1, 1, 1, 1]);
        let three = Ring::new(&["a:1", "b:1", "c:1"], &[1, 1, 1]);
        let owner = |ring: &Ring, k: u64| {
            let mut out = Vec::new();
            ring.walk(hash(&[&k.to_le_bytes()]), 4, &mut out);
            out[0]
        };
        let mut moved = 0;
        let mut share = [0usize; 4];
        for k in 0..1000u64 {
            let before = owner(&four, k);
            share[before] += 1;
            if before != 3 && owner(&three, k) != before {
                moved += 1;
            }
            if before == 3 {
                moved += 1;
            }
        }
        assert!(moved <= 300, "{moved} of 1000 keys moved");
        assert!(share.iter().all(|&s| (150..=350).contains(&s)), "balanced: {share:?}");
    }

    #[test]
    fn the_walk_covers_every_server_once() {
        let ring = Ring::new(&["a:1", "b:1", "c:1"], &[1, 2, 1]);
        let mut out = Vec::new();
        ring.walk(42, 3, &mut out);
        out.sort();
        assert_eq!(out, [0, 1, 2]);
    }
}
