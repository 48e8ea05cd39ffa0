//! The opening exchange: both sides send `Hello` at once, then check the other's.

use std::io::{Read, Write};

use super::frame::{Fields, FrameReader, FrameWriter, Kind};
use super::ProtocolError;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// This build's name and version, shown in version errors.
pub const AGENT: &str = concat!("barsync ", env!("CARGO_PKG_VERSION"));
const MAGIC: &[u8; 4] = b"BSYN";
/// Feature bit: the side decodes zstd literals.
pub const FEATURE_ZSTD: u32 = 1;
/// Feature bit: the side answers `RangeRequest` (a byte range of a file, verified on its own).
pub const FEATURE_RANGES: u32 = 2;
/// Feature bit: the side is a `barsync serve --read-only`: it refuses every push (file,
/// directory, symlink, removal). Older servers never set it.
pub const FEATURE_READ_ONLY: u32 = 4;
/// Feature bit: the side sends, and reads, the kind of a per-file failure
/// ([`FileErrorKind`](crate::FileErrorKind)) as one byte after the words of a `RequestError`
/// answering a listing or a file request; a side sends it only to a peer that announced it.
pub const FEATURE_ERROR_KINDS: u32 = 8;
/// Feature bit: the side answers `Watch` (wait for a file to change, then send its tail; see
/// [`watch`](super::watch)). Older servers never set it, and are never sent `Watch`.
pub const FEATURE_WATCH: u32 = 16;
/// Feature bit: the side reads a listing sent as `ListBatch` frames (entries packed together
/// and zstd-compressed: a tenth of the bytes of one `ListEntry` each for many small files).
/// A side sends them only to a peer that announced it.
pub const FEATURE_LIST_BATCH: u32 = 32;
/// Feature bit: the side answers `Probe` (send N bytes, to time the link; see
/// [`probe`](super::probe)). Older servers never set it, and are never sent `Probe`.
pub const FEATURE_PROBE: u32 = 64;
/// The features every side of this build announces.
pub const FEATURES: u32 = FEATURE_ZSTD
    | FEATURE_RANGES
    | FEATURE_ERROR_KINDS
    | FEATURE_WATCH
    | FEATURE_LIST_BATCH
    | FEATURE_PROBE;

/// Sends our `Hello` (announcing `features`) and checks the peer's; returns the peer's agent
/// string and features.
pub fn handshake<R: Read, W: Write>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    features: u32,
) -> Result<(String, u32), ProtocolError> {
    writer
        .start()
        .rest(MAGIC)
        .u32(PROTOCOL_VERSION)
        .u32(features)
        .str(AGENT);
    writer.send(Kind::Hello)?;
    writer.flush()?;
    let (kind, payload) = reader.expect_frame()?;
    let mut fields = Fields::new(kind, payload);
    match kind {
        Kind::Hello => {}
        Kind::Fatal => return Err(ProtocolError::Fatal(fields.str()?.to_string())),
        other => {
            return Err(ProtocolError::Malformed(format!(
                "expected Hello, got {other:?}"
            )))
        }
    }
    if &fields.array::<4>()? != MAGIC {
        return Err(ProtocolError::Malformed(
            "the peer is not speaking the barsync protocol".into(),
        ));
    }
    let version = fields.u32()?;
    let features = fields.u32()?;
    let agent = fields.str()?.to_string();
    fields.end()?;
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version {
            ours: PROTOCOL_VERSION,
            ours_agent: AGENT.into(),
            theirs: version,
            theirs_agent: agent,
        });
    }
    Ok((agent, features))
}
