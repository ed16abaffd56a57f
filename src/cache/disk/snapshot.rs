//! A snapshot of the map, written when the tier lets go of its directory (a
//! stop, a binary upgrade) and read by the next open instead of every index
//! bucket: a million entries load in about a second rather than a minute.
//! It is consumed as it is read, so a process that crashes leaves none behind
//! and the next start reads the index as before. A snapshot is written only
//! when nothing can change the index any more: the last write in flight has
//! ended and no new one may start (see `lock.rs`).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::accounting::{Saved, State};

const FILE: &str = "relais-map";
const MAGIC: &[u8; 16] = b"relais-map v1\n\0\0";
const HAS_CONTENT: u8 = 1;
const HAS_TEXT: u8 = 2;
const LISTED: u8 = 4;

/// Writes the snapshot of `st` (temp file, synced, renamed into place).
pub(super) fn save(dir: &Path, st: &State) -> io::Result<usize> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let file = File::create(&tmp)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut hash = Sha256::new();
    let mut put = |out: &mut BufWriter<File>, bytes: &[u8]| {
        hash.update(bytes);
        out.write_all(bytes)
    };
    put(&mut out, MAGIC)?;
    put(&mut out, &(st.len() as u64).to_le_bytes())?;
    let mut written = Ok(0);
    let mut record = Vec::with_capacity(128);
    st.each_oldest_first(|saved| {
        if written.is_err() {
            return;
        }
        record.clear();
        encode(&saved, &mut record);
        written = put(&mut out, &record).map(|()| written.as_ref().map_or(0, |n| n + 1));
    });
    let count = written?;
    out.write_all(&hash.finalize())?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))?;
    Ok(count)
}

fn encode(saved: &Saved<'_>, out: &mut Vec<u8>) {
    let text = saved.text.filter(|t| t.len() <= usize::from(u16::MAX));
    let flags = if saved.content.is_some() { HAS_CONTENT } else { 0 }
        | if text.is_some() { HAS_TEXT } else { 0 }
        | if saved.listed { LISTED } else { 0 };
    out.push(flags);
    out.extend_from_slice(&saved.name);
    out.extend_from_slice(&saved.size.to_le_bytes());
    out.extend_from_slice(&saved.label.to_le_bytes());
    out.extend_from_slice(&saved.extra.to_le_bytes());
    if let Some(content) = &saved.content {
        out.extend_from_slice(content);
    }
    if let Some(text) = text {
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
}

/// Takes the snapshot out of `dir` (it is gone afterwards, whatever it held):
/// its records if it is whole.
pub(super) fn take(dir: &Path) -> Option<Vec<u8>> {
    let taken = dir.join(format!("{FILE}.taken"));
    std::fs::rename(dir.join(FILE), &taken).ok()?;
    let data = std::fs::read(&taken);
    if let Err(e) = std::fs::remove_file(&taken) {
        tracing::warn!(path = %taken.display(), error = %e, "disk cache: cannot delete the map snapshot read");
    }
    let data = data.ok()?;
    let body = data.len().checked_sub(32)?;
    let (head, sum) = data.split_at(body);
    (head.starts_with(MAGIC) && Sha256::digest(head)[..] == *sum).then_some(data)
}

/// Calls `f` with each record of a snapshot [`take`] returned, oldest first;
/// `None` if they do not add up (then the index is read as without one).
pub(super) fn each(data: &[u8], mut f: impl FnMut(&Saved<'_>)) -> Option<usize> {
    let mut at = &data[MAGIC.len()..data.len() - 32];
    let count = u64::from_le_bytes(take_n(&mut at)?);
    let mut read = 0u64;
    while !at.is_empty() {
        let [flags] = take_n(&mut at)?;
        let name = take_n(&mut at)?;
        let size = u64::from_le_bytes(take_n(&mut at)?);
        let label = u64::from_le_bytes(take_n(&mut at)?);
        let extra = u32::from_le_bytes(take_n(&mut at)?);
        let content = match flags & HAS_CONTENT {
            0 => None,
            _ => Some(take_n(&mut at)?),
        };
        let text = match flags & HAS_TEXT {
            0 => None,
            _ => {
                let len = usize::from(u16::from_le_bytes(take_n(&mut at)?));
                let (text, rest) = (at.get(..len)?, at.get(len..)?);
                at = rest;
                Some(std::str::from_utf8(text).ok()?)
            }
        };
        f(&Saved { name, text, size, label, extra, content, listed: flags & LISTED != 0 });
        read += 1;
    }
    (read == count).then_some(read as usize)
}

fn take_n<const N: usize>(at: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = (at.get(..N)?, at.get(N..)?);
    *at = rest;
    head.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_once_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::default();
        st.insert(&"ab".repeat(32), 300, Some(&[9; 32]), 100, 7);
        st.insert("plain key", 250, None, 50, 0);
        st.set_listed("plain key", true);
        st.touch(&"ab".repeat(32));
        assert_eq!(save(dir.path(), &st).unwrap(), 2);
        let data = take(dir.path()).expect("a whole snapshot");
        assert!(take(dir.path()).is_none(), "consumed");
        let mut back = State::default();
        let mut order = 0;
        assert_eq!(
            each(&data, |saved| {
                back.restore(saved, order);
                order += 1;
            }),
            Some(2)
        );
        back.link_loaded();
        assert_eq!(back.used, st.used);
        assert_eq!(back.get(&"ab".repeat(32)), st.get(&"ab".repeat(32)));
        assert_eq!(back.labelled(7), ["ab".repeat(32)]);
        assert_eq!(back.listed(), ["plain key"]);
        let order: Vec<String> = std::iter::from_fn(|| back.pop_lru()).map(|(k, _)| k).collect();
        assert_eq!(order, ["plain key".to_owned(), "ab".repeat(32)], "recency kept");

        save(dir.path(), &st).unwrap();
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(take(dir.path()).is_none(), "a damaged snapshot is not used");
        assert!(!path.exists(), "and not kept");
    }

    /// A tier let go of leaves a snapshot that the next open loads instead of
    /// the index; a tier dropped without that (a crash) leaves none.
    #[tokio::test]
    async fn a_stopped_tier_is_reopened_from_its_snapshot() {
        use super::super::testing::open;
        use bytes::Bytes;
        use serde_json::json;
        let dir = tempfile::tempdir().unwrap();
        let key = |n: u8| format!("{n:02x}").repeat(32);
        let tier = open(dir.path(), 1 << 20).await;
        tier.put_labelled(&key(1), 5, true, json!({"a": 1}), Bytes::from_static(b"one")).await.unwrap();
        tier.put_labelled(&key(2), 5, false, json!({"a": 2}), Bytes::from(vec![2u8; 4096])).await.unwrap();
        tier.put("k", json!({}), Bytes::from_static(b"plain")).await.unwrap();
        let (used, entries) = (tier.used_bytes(), tier.entries());
        tier.unlock();
        assert!(dir.path().join(FILE).exists(), "saved as the lock went");
        drop(tier);

        // A key the snapshot does not know, written behind its back, is not in the map.
        cacache::index::insert(
            dir.path(),
            "behind",
            cacache::WriteOpts::new().integrity(cacache::Integrity::from(b"x")),
        )
        .unwrap();
        let tier = open(dir.path(), 1 << 20).await;
        assert!(!dir.path().join(FILE).exists(), "consumed");
        assert_eq!((tier.used_bytes(), tier.entries()), (used, entries));
        assert!(!tier.contains("behind"), "the map came from the snapshot, not the index");
        let mut labelled = tier.labelled(5);
        labelled.sort();
        assert_eq!(labelled, [key(1), key(2)]);
        let listed = tier.listed_with(|key, meta| Some((key, meta))).await.unwrap();
        assert_eq!(listed, [(key(1), json!({"a": 1}))], "marked entries listed without the index read");
        assert_eq!(&tier.get(&key(2)).await.unwrap().unwrap().1[..], &[2u8; 4096][..]);
        assert_eq!(&tier.get("k").await.unwrap().unwrap().1[..], b"plain");
        drop(tier);
        assert!(!dir.path().join(FILE).exists(), "a dropped tier leaves no snapshot");
        let tier = open(dir.path(), 1 << 20).await;
        assert!(tier.contains("behind"), "read from the index again");
    }
}
