//! What decoding an origin's body will cost, read from its first bytes before
//! a decoder is made: a zstd frame and a brotli stream declare the window they
//! need (zstd up to 2 GiB, brotli's large-window form up to 1 GiB); gzip's is
//! always 32 KiB. relais decodes zstd windows up to 8 MiB (RFC 9659 caps
//! `Content-Encoding: zstd` there) and brotli's standard ones (up to 16 MiB),
//! and counts each decoder's memory against `buffering.memory`.

use super::Encoding;

/// The largest zstd window decoded (RFC 9659 §3: 8 MiB).
pub(super) const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// A zstd decoder beside its window: two blocks of 128 KiB and its context.
const ZSTD_OVERHEAD: u64 = 512 * 1024;
/// A brotli decoder beside its window: Huffman tables, context maps, 4 KiB of output.
const BR_OVERHEAD: u64 = 256 * 1024;
/// A gzip decoder: its 32 KiB window, inflate state, output buffer, and a header
/// of up to 64 KiB (flate2's cap on the name and comment fields).
const GZIP_MEMORY: u64 = 160 * 1024;

/// What the first bytes say.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Need {
    /// Not enough bytes yet to tell.
    More,
    /// This much memory, and (zstd) the window log to hold the decoder to.
    Memory { bytes: u64, window_log: Option<u32> },
    /// A window larger than relais decodes.
    TooLarge { window: u64 },
}

/// The decoder's memory for a body that starts with `head` (`at_end`: that
/// is the whole body, so no more will come).
pub(super) fn need(e: Encoding, head: &[u8], at_end: bool) -> Need {
    let found = match e {
        Encoding::Gzip => Some(Need::Memory { bytes: GZIP_MEMORY, window_log: None }),
        Encoding::Br => brotli(head),
        Encoding::Zstd => zstd(head),
    };
    match found {
        Some(need) => need,
        // A body too short to say is broken or empty; the decoder says which, with the least memory.
        None if at_end => Need::Memory { bytes: GZIP_MEMORY, window_log: Some(10) },
        None => Need::More,
    }
}

/// RFC 7932 §9.1: WBITS in the stream's first 1 to 7 bits.
fn brotli(head: &[u8]) -> Option<Need> {
    let b = *head.first()?;
    let wbits = if b & 1 == 0 {
        16
    } else if (b >> 1) & 7 != 0 {
        17 + u32::from((b >> 1) & 7)
    } else {
        match (b >> 4) & 7 {
            0 => 17,
            // The large-window extension (WBITS up to 30), not standard brotli.
            1 => return Some(Need::TooLarge { window: 1 << 30 }),
            m => 8 + u32::from(m),
        }
    };
    Some(Need::Memory { bytes: (1u64 << wbits) + BR_OVERHEAD, window_log: None })
}

/// RFC 8878 §3.1.1.1: the window of the first frame. A skippable frame first
/// says nothing of the next: the largest window decoded is reserved.
fn zstd(head: &[u8]) -> Option<Need> {
    let magic = u32::from_le_bytes(head.get(..4)?.try_into().ok()?);
    let largest =
        Need::Memory { bytes: (1 << ZSTD_WINDOW_LOG_MAX) + ZSTD_OVERHEAD, window_log: Some(ZSTD_WINDOW_LOG_MAX) };
    if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
        return Some(largest);
    }
    if magic != 0xFD2F_B528 {
        // Not zstd: the decoder fails on its first bytes.
        return Some(Need::Memory { bytes: ZSTD_OVERHEAD, window_log: Some(10) });
    }
    let descriptor = *head.get(4)?;
    let single_segment = descriptor & 0x20 != 0;
    let window = if single_segment {
        // The window is the frame's content size, which follows the dictionary id.
        let id_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
        let size_len = [1, 2, 4, 8][usize::from(descriptor >> 6)];
        let field = head.get(5 + id_len..5 + id_len + size_len)?;
        let mut le = [0u8; 8];
        le[..size_len].copy_from_slice(field);
        u64::from_le_bytes(le) + if size_len == 2 { 256 } else { 0 }
    } else {
        let w = *head.get(5)?;
        let log = 10 + u32::from(w >> 3);
        let base = 1u64 << log;
        base + (base / 8) * u64::from(w & 7)
    };
    if window > 1 << ZSTD_WINDOW_LOG_MAX {
        return Some(Need::TooLarge { window });
    }
    // The decoder is held to the power of two that covers this window, and so are later frames.
    let log = (64 - window.max(1024).saturating_sub(1).leading_zeros()).max(10);
    Some(Need::Memory { bytes: (1 << log) + ZSTD_OVERHEAD, window_log: Some(log) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd_frame(window_log: u32, pledged: Option<u64>) -> Vec<u8> {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.set_parameter(zstd::zstd_safe::CParameter::WindowLog(window_log)).unwrap();
        e.set_pledged_src_size(pledged).unwrap();
        e.include_contentsize(pledged.is_some()).unwrap();
        std::io::Write::write_all(&mut e, &vec![b'x'; pledged.unwrap_or(100) as usize]).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn zstd_windows_are_read_from_the_frame_header() {
        let frame = zstd_frame(20, None);
        assert_eq!(need(Encoding::Zstd, &frame[..3], false), Need::More);
        assert_eq!(
            need(Encoding::Zstd, &frame, false),
            Need::Memory { bytes: (1 << 20) + ZSTD_OVERHEAD, window_log: Some(20) }
        );
        assert_eq!(need(Encoding::Zstd, &zstd_frame(26, None), false), Need::TooLarge { window: 1 << 26 });
        // A single-segment frame's window is its content size.
        let small = zstd_frame(20, Some(5000));
        assert_eq!(
            need(Encoding::Zstd, &small, false),
            Need::Memory { bytes: 8192 + ZSTD_OVERHEAD, window_log: Some(13) }
        );
        assert_eq!(need(Encoding::Zstd, &[], true), Need::Memory { bytes: GZIP_MEMORY, window_log: Some(10) });
    }

    #[test]
    fn brotli_windows_are_read_from_the_first_byte() {
        for lgwin in [10, 16, 18, 22, 24] {
            let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 5, lgwin);
            std::io::Write::write_all(&mut w, &vec![b'y'; 100_000]).unwrap();
            let stream = w.into_inner();
            assert_eq!(
                need(Encoding::Br, &stream, false),
                Need::Memory { bytes: (1 << lgwin) + BR_OVERHEAD, window_log: None },
                "lgwin {lgwin}"
            );
        }
        assert_eq!(need(Encoding::Br, &[0b0001_0001], false), Need::TooLarge { window: 1 << 30 }, "large window");
        assert_eq!(need(Encoding::Gzip, &[], false), Need::Memory { bytes: GZIP_MEMORY, window_log: None });
    }
}
