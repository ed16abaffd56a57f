//! HTTP/2 flood detection on the bytes a client sends.
//!
//! h2 bounds what each frame may cost (it answers one PING or SETTINGS at a
//! time, caps CONTINUATION frames by the header list size, and refuses
//! streams reset before they were accepted), but a client may still make the
//! proxy work for frames that ask for nothing useful: PINGs, SETTINGS,
//! PRIORITY, and streams opened and reset at once (rapid reset,
//! CVE-2023-44487) each wake the connection and some start a request. Each
//! such frame here costs one token from a per-connection bucket of
//! [`BURST`] that refills at [`REFILL`] per second; a client that empties it
//! has its connection ended. Legitimate clients send a handful of these per
//! page (a browser cancels the streams of a page it leaves).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Tokens a connection starts with.
pub(super) const BURST: f64 = 500.0;
/// Tokens regained per second.
pub(super) const REFILL: f64 = 50.0;

const PREFACE_LEN: usize = 24;
const HEADER_LEN: usize = 9;

const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const ACK: u8 = 1;

/// The error a flooding connection ends with. (h2 keeps only the message of
/// an I/O error, so the connection learns of it through [`Frames::alarm`].)
#[derive(Debug, thiserror::Error)]
#[error("HTTP/2 flood: {0} frames beyond the allowance")]
pub(super) struct Flood(pub &'static str);

/// Follows the frame boundaries of the client's byte stream.
pub(super) struct Frames {
    /// Set when the connection is ended for a flood.
    pub alarm: Arc<AtomicBool>,
    /// Bytes to pass over before the next frame header (the preface, then payloads).
    skip: usize,
    /// A frame header split across reads.
    head: [u8; HEADER_LEN],
    have: usize,
    tokens: f64,
    last: Instant,
}

impl Default for Frames {
    fn default() -> Self {
        Frames {
            alarm: Arc::default(),
            skip: PREFACE_LEN,
            head: [0; HEADER_LEN],
            have: 0,
            tokens: BURST,
            last: Instant::now(),
        }
    }
}

impl Frames {
    /// Reads the frame headers in `bytes`, the next bytes from the client.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Flood> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER_LEN - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < HEADER_LEN {
                break;
            }
            self.have = 0;
            let h = self.head;
            self.skip = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            let costly = match kind {
                PING | SETTINGS if flags & ACK == 0 => Some(if kind == PING { "PING" } else { "SETTINGS" }),
                RST_STREAM => Some("RST_STREAM"),
                PRIORITY => Some("PRIORITY"),
                _ => None,
            };
            if let Some(kind) = costly {
                self.spend(kind)?;
            }
        }
        Ok(())
    }

    fn spend(&mut self, kind: &'static str) -> Result<(), Flood> {
        if self.tokens < 1.0 {
            // The clock is read only when the bucket runs dry.
            let now = Instant::now();
            self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * REFILL).min(BURST);
            self.last = now;
            if self.tokens < 1.0 {
                self.alarm.store(true, Ordering::Relaxed);
                return Err(Flood(kind));
            }
        }
        self.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags, 0, 0, 0, 1];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn pings_past_the_allowance_end_the_connection_acks_do_not() {
        let mut f = Frames::default();
        f.feed(&[b'P'; PREFACE_LEN]).unwrap();
        for _ in 0..1000 {
            f.feed(&frame(PING, ACK, &[0; 8])).unwrap();
        }
        let ping = frame(PING, 0, &[0; 8]);
        let mut sent = 0;
        let flood = loop {
            if let Err(e) = f.feed(&ping) {
                break e;
            }
            sent += 1;
            assert!(sent < 10_000, "never refused");
        };
        assert_eq!(flood.0, "PING");
        assert!(sent >= BURST as usize - 1, "refused after only {sent}");
    }

    #[test]
    fn headers_split_across_reads_and_large_payloads_are_followed() {
        let mut f = Frames::default();
        let mut stream = vec![b'P'; PREFACE_LEN];
        stream.extend(frame(0, 0, &[7; 70_000]));
        for _ in 0..(BURST as usize + 10) {
            stream.extend(frame(RST_STREAM, 0, &[0; 4]));
        }
        let mut refused = false;
        for chunk in stream.chunks(5) {
            if f.feed(chunk).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "a run of resets past the allowance is refused, whatever the read sizes");
        // A DATA payload full of bytes that look like PING headers costs nothing.
        let mut f = Frames::default();
        let mut stream = vec![b'P'; PREFACE_LEN];
        let fake: Vec<u8> = std::iter::repeat_n(frame(PING, 0, &[0; 8]), 2000).flatten().collect();
        stream.extend(frame(0, 0, &fake[..16_000]));
        f.feed(&stream).unwrap();
    }
}
