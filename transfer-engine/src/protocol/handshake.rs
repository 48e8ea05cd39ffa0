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

/// Sends our `Hello` and checks the peer's; returns the peer's agent string and features.
pub fn handshake<R: Read, W: Write>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
) -> Result<(String, u32), ProtocolError> {
    writer
        .start()
        .rest(MAGIC)
        .u32(PROTOCOL_VERSION)
        .u32(FEATURE_ZSTD | FEATURE_RANGES)
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
