//! The byte encoding of a delta, for storing or sending it, and its strict decoder.
//!
//! Layout: a header (`"BDLT"`, version `1`, `log2(digest block size)`), then operations, each a
//! tag byte and LEB128 integers:
//! - `0x01 first count`: copy basis blocks;
//! - `0x02 len bytes…`: literal, `1 ≤ len ≤` [`MAX_LITERAL_FRAME`];
//! - `0x00 new_len digest[32]`: end.
//!
//! The decoder reads through a fixed buffer, never allocating from a length it was sent, and
//! rejects unknown tags, overlong integers, empty or oversized literals, and truncation.

use std::io::{self, Read, Write};

use crate::block_size::is_valid_block_size;
use crate::delta::{DeltaSink, DeltaSummary, MAX_LITERAL_RUN};
use crate::digest::FileDigest;
use crate::error::FormatError;

const MAGIC: &[u8; 4] = b"BDLT";
const VERSION: u8 = 1;
const TAG_END: u8 = 0;
const TAG_COPY: u8 = 1;
const TAG_LITERAL: u8 = 2;
/// Largest literal one operation may carry.
pub const MAX_LITERAL_FRAME: usize = MAX_LITERAL_RUN;
const WHAT: &str = "delta stream";

/// Writes a delta as bytes; use it as the sink of [`crate::delta::delta`], then call `finish`.
pub struct DeltaEncoder<W: Write> {
    out: W,
}

impl<W: Write> DeltaEncoder<W> {
    /// Starts a delta whose digest uses `digest_block_size`.
    pub fn new(mut out: W, digest_block_size: usize) -> io::Result<Self> {
        assert!(is_valid_block_size(digest_block_size));
        out.write_all(MAGIC)?;
        out.write_all(&[VERSION, digest_block_size.trailing_zeros() as u8])?;
        Ok(DeltaEncoder { out })
    }

    /// Writes the end record from the delta's summary and returns the writer.
    pub fn finish(mut self, summary: &DeltaSummary) -> io::Result<W> {
        self.out.write_all(&[TAG_END])?;
        write_varint(&mut self.out, summary.new_len)?;
        self.out.write_all(&summary.digest.0)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> DeltaSink for DeltaEncoder<W> {
    type Error = io::Error;
    fn copy(&mut self, first: u64, count: u64) -> io::Result<()> {
        self.out.write_all(&[TAG_COPY])?;
        write_varint(&mut self.out, first)?;
        write_varint(&mut self.out, count)
    }
    fn literal(&mut self, data: &[u8]) -> io::Result<()> {
        for piece in data.chunks(MAX_LITERAL_FRAME) {
            self.out.write_all(&[TAG_LITERAL])?;
            write_varint(&mut self.out, piece.len() as u64)?;
            self.out.write_all(piece)?;
        }
        Ok(())
    }
}

fn write_varint<W: Write>(out: &mut W, mut value: u64) -> io::Result<()> {
    let mut buf = [0u8; 10];
    let mut len = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            buf[len] = byte;
            len += 1;
            break;
        }
        buf[len] = byte | 0x80;
        len += 1;
    }
    out.write_all(&buf[..len])
}

/// The end record of a decoded delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaEnd {
    /// Length of the new file, as the sender states it.
    pub len: u64,
    /// Digest of the new file, as the sender states it.
    pub digest: FileDigest,
}

/// Decodes an encoded delta and drives a sink with its operations.
pub struct DeltaReader<R: Read> {
    input: R,
    digest_block_size: usize,
}

/// Errors the decoder raises besides the sink's own.
pub trait DecodeError: From<FormatError> {
    /// Wraps a read failure of the underlying stream.
    fn read(error: io::Error) -> Self;
}

impl DecodeError for crate::error::PatchError {
    fn read(error: io::Error) -> Self {
        crate::error::PatchError::Read(error)
    }
}

impl<R: Read> DeltaReader<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R) -> Result<Self, crate::error::PatchError> {
        let mut header = [0u8; 6];
        read_exact::<_, crate::error::PatchError>(&mut input, &mut header)?;
        if &header[..4] != MAGIC {
            return Err(FormatError::BadMagic { what: WHAT }.into());
        }
        if header[4] != VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: WHAT,
                version: header[4] as u32,
            }
            .into());
        }
        let digest_block_size = 1usize.checked_shl(header[5] as u32).unwrap_or(0);
        if !is_valid_block_size(digest_block_size) {
            return Err(FormatError::Invalid {
                what: WHAT,
                reason: format!("digest block size 2^{}", header[5]),
            }
            .into());
        }
        Ok(DeltaReader {
            input,
            digest_block_size,
        })
    }

    /// The digest block size announced in the header.
    pub fn digest_block_size(&self) -> usize {
        self.digest_block_size
    }

    /// Feeds every operation to `sink` and returns the end record.
    pub fn drive<S: DeltaSink>(mut self, sink: &mut S) -> Result<DeltaEnd, S::Error>
    where
        S::Error: DecodeError,
    {
        let mut buffer = vec![0u8; MAX_LITERAL_FRAME];
        loop {
            let mut tag = [0u8; 1];
            read_exact::<_, S::Error>(&mut self.input, &mut tag)?;
            match tag[0] {
                TAG_COPY => {
                    let first = read_varint::<_, S::Error>(&mut self.input)?;
                    let count = read_varint::<_, S::Error>(&mut self.input)?;
                    sink.copy(first, count)?;
                }
                TAG_LITERAL => {
                    let len = read_varint::<_, S::Error>(&mut self.input)?;
                    if len == 0 || len > MAX_LITERAL_FRAME as u64 {
                        return Err(FormatError::Invalid {
                            what: WHAT,
                            reason: format!("literal of {len} bytes"),
                        }
                        .into());
                    }
                    let data = &mut buffer[..len as usize];
                    read_exact::<_, S::Error>(&mut self.input, data)?;
                    sink.literal(data)?;
                }
                TAG_END => {
                    let len = read_varint::<_, S::Error>(&mut self.input)?;
                    let mut digest = [0u8; 32];
                    read_exact::<_, S::Error>(&mut self.input, &mut digest)?;
                    return Ok(DeltaEnd {
                        len,
                        digest: FileDigest(digest),
                    });
                }
                other => {
                    return Err(FormatError::Invalid {
                        what: WHAT,
                        reason: format!("unknown operation tag {other:#04x}"),
                    }
                    .into());
                }
            }
        }
    }
}

fn read_exact<R: Read, E: DecodeError>(input: &mut R, buf: &mut [u8]) -> Result<(), E> {
    input.read_exact(buf).map_err(|error| {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            E::from(FormatError::Truncated {
                what: WHAT,
                needed: buf.len(),
                got: 0,
            })
        } else {
            E::read(error)
        }
    })
}

fn read_varint<R: Read, E: DecodeError>(input: &mut R) -> Result<u64, E> {
    let mut value = 0u64;
    for index in 0..10 {
        let mut byte = [0u8; 1];
        read_exact::<_, E>(input, &mut byte)?;
        let bits = (byte[0] & 0x7f) as u64;
        if index == 9 && bits > 1 {
            break;
        }
        value |= bits << (7 * index);
        if byte[0] & 0x80 == 0 {
            if index > 0 && byte[0] == 0 {
                break; // overlong: a trailing zero group
            }
            return Ok(value);
        }
    }
    Err(FormatError::Invalid {
        what: WHAT,
        reason: "malformed integer".into(),
    }
    .into())
}
