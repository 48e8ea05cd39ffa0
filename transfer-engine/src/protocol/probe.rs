//! Measuring the link once per session, to choose how hard literals are compressed.
//!
//! Compression pays where the link is the slow stage (a WAN, `bandwidth_limit`) and costs
//! where it is not (loopback, a fast LAN, two ends sharing their cores): there, zstd level 3
//! takes about 10% more time and CPU than level 1 for WAL (measured on W3), for 5% fewer
//! bytes. A client that allows it ([`ClientOptions::adapt_compression`]) asks a server that
//! announced [`FEATURE_PROBE`] for [`PROBE_BYTES`] of incompressible bytes and times their
//! arrival, request to last byte (one round trip included, as every batch of requests pays it
//! too). At [`FAST_LINK`] or faster, the session's literals go at level 1; slower, at the level
//! asked for. Older servers are not asked.
//!
//! The probe's bytes are real traffic, so a session is probed only once its batches have asked
//! for at least [`PROBE_WORTH`] bytes of files with no basis on this side (new files, whose
//! every byte is a literal), before the batch that reaches it: at most 0.4% more on the wire.
//! Sessions that only list, or fetch little, or update files they have, are never probed and
//! keep the level asked for.
//!
//! ```text
//! client                              server
//! Probe(req, len) ──────────────────► Probed(req, bytes)… (len bytes in all)
//! ```
//!
//! [`ClientOptions::adapt_compression`]: super::client::ClientOptions::adapt_compression
//! [`FEATURE_PROBE`]: super::handshake::FEATURE_PROBE

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::frame::{Fields, FrameReader, FrameWriter, Kind};
use super::ProtocolError;

/// Bytes a probe asks for: under 2 ms on loopback, 21 ms at 100 Mbit/s.
pub const PROBE_BYTES: u32 = 256 * 1024;
/// Bytes of new files a session fetches before it is probed (256 times the probe).
pub const PROBE_WORTH: u64 = 64 << 20;
/// The most a server sends for one probe.
pub const MAX_PROBE_BYTES: u32 = 8 << 20;
/// Bytes per second from which a link counts as fast (400 Mbit/s): from there, compressing
/// harder than level 1 costs more time than the bytes it saves take to cross.
pub const FAST_LINK: f64 = 50e6;
/// The level a fast link gets.
pub const FAST_LINK_LEVEL: i32 = 1;
/// Bytes per `Probed` frame.
const CHUNK: usize = 64 * 1024;

/// What a probe measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkSpeed {
    /// Bytes received.
    pub bytes: u64,
    /// From sending the request to receiving the last byte.
    pub elapsed: Duration,
}

impl LinkSpeed {
    /// Bytes per second.
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Whether the link counts as fast ([`FAST_LINK`]).
    pub fn is_fast(&self) -> bool {
        self.bytes_per_second() >= FAST_LINK
    }
}

/// Bytes (as the caller was told their sizes) of the files `requests` fetch with no basis
/// here.
pub(super) fn new_file_bytes(requests: &[super::FetchRequest]) -> u64 {
    requests
        .iter()
        .filter(|request| {
            request
                .basis
                .as_deref()
                .is_none_or(|basis| std::fs::symlink_metadata(basis).is_err())
        })
        .filter_map(|request| request.max_len)
        .sum()
}

/// Client: sends `Probe` for `len` bytes and times the answer.
pub(super) fn measure<R: Read, W: Write>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    id: u32,
    len: u32,
) -> Result<LinkSpeed, ProtocolError> {
    let start = Instant::now();
    writer.start().u32(id).u32(len);
    writer.send(Kind::Probe)?;
    writer.flush()?;
    let mut received = 0u64;
    while received < u64::from(len) {
        let (kind, payload) = reader.expect_frame()?;
        let mut fields = Fields::new(kind, payload);
        match kind {
            Kind::Probed if fields.u32()? == id => {
                let chunk = fields.rest().len() as u64;
                if chunk == 0 {
                    // Empty frames would keep the client reading forever.
                    return Err(ProtocolError::Malformed("empty probe answer frame".into()));
                }
                received += chunk;
                if received > u64::from(len) {
                    return Err(ProtocolError::Malformed(format!(
                        "probe answer longer than the {len} bytes asked for"
                    )));
                }
            }
            Kind::Fatal => return Err(ProtocolError::Fatal(fields.str()?.to_string())),
            other => {
                return Err(ProtocolError::Malformed(format!(
                    "unexpected {other:?} while waiting for the probe's answer"
                )))
            }
        }
    }
    Ok(LinkSpeed {
        bytes: received,
        elapsed: start.elapsed(),
    })
}

/// Server: answers a `Probe` (its payload in `fields`) with that many bytes (at most
/// [`MAX_PROBE_BYTES`]) that no compression on the way can shrink.
pub(super) fn answer<W: Write>(
    writer: &mut FrameWriter<W>,
    mut fields: Fields<'_>,
) -> Result<(), ProtocolError> {
    let id = fields.u32()?;
    let len = fields.u32()?;
    fields.end()?;
    if len > MAX_PROBE_BYTES {
        return Err(ProtocolError::Malformed(format!(
            "probe of {len} bytes (limit {MAX_PROBE_BYTES})"
        )));
    }
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15 ^ u64::from(id));
    let mut left = len as usize;
    while left > 0 {
        let chunk = left.min(CHUNK);
        let mut payload = writer.start().u32(id);
        noise.fill(payload.buffer(), chunk);
        writer.send(Kind::Probed)?;
        left -= chunk;
    }
    writer.flush()?;
    Ok(())
}

/// xorshift64: bytes that look random to a compressor, at memory speed.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, out: &mut Vec<u8>, len: usize) {
        out.reserve(len);
        let end = out.len() + len;
        while out.len() < end {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let word = self.0.to_le_bytes();
            let take = (end - out.len()).min(8);
            out.extend_from_slice(&word[..take]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_bytes_do_not_compress() {
        let mut bytes = Vec::new();
        Noise(1).fill(&mut bytes, CHUNK);
        assert_eq!(bytes.len(), CHUNK);
        let compressed = zstd::bulk::compress(&bytes, 3).unwrap();
        assert!(
            compressed.len() >= bytes.len(),
            "{} bytes",
            compressed.len()
        );
    }

    #[test]
    fn speed_is_bytes_over_time() {
        let fast = LinkSpeed {
            bytes: PROBE_BYTES as u64,
            elapsed: Duration::from_millis(2),
        };
        assert!(fast.is_fast(), "{}", fast.bytes_per_second());
        let wan = LinkSpeed {
            bytes: PROBE_BYTES as u64,
            elapsed: Duration::from_millis(21 + 40),
        };
        assert!(!wan.is_fast(), "{}", wan.bytes_per_second());
    }
}
