//! Address lists: `allow` and `deny` blocks flattened once into sorted,
//! disjoint ranges, each carrying the verdict of the most specific block that
//! covers it, so a lookup is one binary search: O(log n) for any number of
//! prefixes, with no allocation.
//!
//! Blocks are prefixes, so two of them are either disjoint or nested; the
//! narrower one wins inside the wider (`deny = ["all"]`, `allow =
//! ["10.0.0.0/8"]` lets 10/8 in and keeps everyone else out, whatever the
//! order), which is what an nginx list written from the narrowest block to the
//! widest does. IPv4-mapped IPv6 addresses are looked up as IPv4.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

#[derive(Debug, Default)]
pub struct Access {
    v4: Vec<Range<u32>>,
    v6: Vec<Range<u128>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range<T> {
    start: T,
    end: T,
    verdict: Verdict,
}

impl Access {
    pub fn new(allow: &[IpNet], deny: &[IpNet]) -> Access {
        let tagged = || allow.iter().map(|n| (n, Verdict::Allow)).chain(deny.iter().map(|n| (n, Verdict::Deny)));
        let v4 = tagged()
            .filter_map(|(n, v)| match n {
                IpNet::V4(n) => Some((u32::from(n.network()), u32::from(n.broadcast()), v)),
                IpNet::V6(_) => None,
            })
            .collect();
        let v6 = tagged()
            .filter_map(|(n, v)| match n {
                IpNet::V6(n) => Some((u128::from(n.network()), u128::from(n.broadcast()), v)),
                IpNet::V4(_) => None,
            })
            .collect();
        Access { v4: flatten(v4), v6: flatten(v6) }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The verdict of the most specific block holding `ip`; None if none does.
    pub fn check(&self, ip: IpAddr) -> Option<Verdict> {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    /// Whether some block holds `ip` (for lists with one verdict: trusted proxies, a rule's `cidr`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.check(ip).is_some()
    }
}

fn find<T: Copy + Ord>(ranges: &[Range<T>], x: T) -> Option<Verdict> {
    let i = ranges.partition_point(|r| r.start <= x);
    let r = ranges.get(i.checked_sub(1)?)?;
    (x <= r.end).then_some(r.verdict)
}

trait Address: Copy + Ord {
    fn next(self) -> Option<Self>;
    fn prev(self) -> Option<Self>;
}

impl Address for u32 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn prev(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

impl Address for u128 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn prev(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

/// Nested blocks `(first, last, verdict)` as disjoint ranges, in order, each
/// with its innermost block's verdict; neighbours with the same verdict merged.
fn flatten<T: Address>(mut blocks: Vec<(T, T, Verdict)>) -> Vec<Range<T>> {
    // Wider blocks first among those starting at the same address.
    blocks.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<Range<T>> = Vec::with_capacity(blocks.len());
    let mut emit = |start: T, end: T, verdict: Verdict| {
        if start > end {
            return;
        }
        match out.last_mut() {
            Some(last) if last.verdict == verdict && last.end.next() == Some(start) => last.end = end,
            _ => out.push(Range { start, end, verdict }),
        }
    };
    // Open blocks, outermost first; `cursor` is the first address not yet emitted.
    let mut open: Vec<(T, Verdict)> = Vec::new();
    let mut cursor: Option<T> = None;
    for (start, end, verdict) in blocks {
        while let Some(&(last, v)) = open.last()
            && last < start
        {
            if let Some(c) = cursor {
                emit(c, last, v);
            }
            cursor = last.next();
            open.pop();
        }
        if let (Some(&(_, v)), Some(c), Some(before)) = (open.last(), cursor, start.prev()) {
            emit(c, before, v);
        }
        open.push((end, verdict));
        cursor = Some(start);
    }
    while let Some((last, v)) = open.pop() {
        if let Some(c) = cursor {
            emit(c, last, v);
        }
        cursor = last.next();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn check(a: &Access, ip: &str) -> Option<Verdict> {
        a.check(ip.parse().unwrap())
    }

    #[test]
    fn the_narrowest_block_decides() {
        let a =
            Access::new(&nets(&["10.0.0.0/8", "10.1.2.0/24", "2001:db8::/32"]), &nets(&["0.0.0.0/0", "10.1.0.0/16"]));
        assert_eq!(check(&a, "10.9.9.9"), Some(Verdict::Allow));
        assert_eq!(check(&a, "10.1.9.9"), Some(Verdict::Deny));
        assert_eq!(check(&a, "10.1.2.3"), Some(Verdict::Allow));
        assert_eq!(check(&a, "11.0.0.0"), Some(Verdict::Deny));
        assert_eq!(check(&a, "255.255.255.255"), Some(Verdict::Deny));
        assert_eq!(check(&a, "0.0.0.0"), Some(Verdict::Deny));
        assert_eq!(check(&a, "2001:db8::1"), Some(Verdict::Allow));
        assert_eq!(check(&a, "2001:db9::1"), None);
        assert_eq!(check(&a, "::ffff:10.9.9.9"), Some(Verdict::Allow), "mapped IPv4 is IPv4");
    }

    #[test]
    fn agrees_with_a_scan_of_every_block() {
        // Deterministic pseudo-random nested and disjoint blocks, checked against
        // the definition: the longest prefix holding the address decides.
        let mut seed = 0x2545_f491_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut blocks = Vec::new();
        for _ in 0..400 {
            let len = (next() % 33) as u8;
            let addr = std::net::Ipv4Addr::from((next() as u32) & 0xff00_ffff);
            let net = IpNet::V4(ipnet::Ipv4Net::new(addr, len).unwrap().trunc());
            blocks.push((net, if next() % 2 == 0 { Verdict::Allow } else { Verdict::Deny }));
        }
        blocks.dedup_by_key(|b| b.0);
        let mut seen = std::collections::HashSet::new();
        blocks.retain(|b| seen.insert(b.0));
        let allow: Vec<IpNet> = blocks.iter().filter(|b| b.1 == Verdict::Allow).map(|b| b.0).collect();
        let deny: Vec<IpNet> = blocks.iter().filter(|b| b.1 == Verdict::Deny).map(|b| b.0).collect();
        let a = Access::new(&allow, &deny);
        for _ in 0..20_000 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from((next() as u32) & 0xff00_ffff));
            let want = blocks.iter().filter(|b| b.0.contains(&ip)).max_by_key(|b| b.0.prefix_len()).map(|b| b.1);
            assert_eq!(a.check(ip), want, "{ip}");
        }
    }

    #[test]
    fn empty_lists_match_nothing() {
        let a = Access::new(&[], &[]);
        assert!(a.is_empty());
        assert_eq!(check(&a, "1.2.3.4"), None);
    }
}
