//! Block signatures of a basis file: what the receiver sends so the sender can find reusable data.
//!
//! A signature holds, per block of the basis, the weak rolling checksum ([`crate::rolling`]) and
//! the keyed blake3 block hash ([`crate::digest`]) truncated to [`Signature::strong_len`] bytes.
//!
//! The truncation follows a collision budget: a false match needs a window whose weak checksum
//! and truncated keyed hash both equal a block's. The delta compares at most
//! `MAX_STRONG_COMPARISONS_PER_POSITION` blocks per position, so over a file of `n` bytes the
//! chance of any false match is at most `n · 2⁴ · 2^(-8·strong_len)`. We choose `strong_len` so
//! that this stays below 2⁻⁴⁸ for a basis the size of the file (8 bytes at least, 32 at most);
//! whatever slips through is still caught by the file digest, which is never truncated.
//!
//! Wire encoding ([`Signature::encode`] / [`Signature::decode`]), all integers little-endian:
//! `"BSIG"`, version `1`, `log2(block_size)` (u8), `strong_len` (u8), key (32 bytes),
//! basis length (u64), then per block: weak (u32) and strong (`strong_len` bytes).

use rayon::prelude::*;

use crate::block_size::{block_count, block_size_for, is_valid_block_size};
use crate::digest::{block_hash, random_key, HashKey};
use crate::error::FormatError;
use crate::fs::{MappedFile, RELEASE_EVERY};
use crate::rolling::weak_checksum;

const MAGIC: &[u8; 4] = b"BSIG";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 1 + 1 + 32 + 8;
/// Shortest truncated block hash a signature uses.
pub const MIN_STRONG_LEN: usize = 8;
/// Longest (full) block hash.
pub const MAX_STRONG_LEN: usize = 32;

/// How to build a signature.
#[derive(Clone, Debug, Default)]
pub struct SignatureOptions {
    /// Block size; `None` applies the rule of `block_size_for` (`block_size.rs`).
    pub block_size: Option<usize>,
    /// Hash key; `None` draws a random one (the right choice outside tests).
    pub key: Option<HashKey>,
    /// Hash blocks on all threads of rayon's pool rather than on the calling thread.
    pub parallel: bool,
}

/// The block signature of one basis file.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    block_size: usize,
    strong_len: usize,
    key: HashKey,
    basis_len: u64,
    weak: Vec<u32>,
    strong: Vec<u8>,
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signature")
            .field("block_size", &self.block_size)
            .field("strong_len", &self.strong_len)
            .field("basis_len", &self.basis_len)
            .field("blocks", &self.weak.len())
            .finish()
    }
}

/// Truncated hash length for a basis of `len` bytes (see the module documentation).
pub fn strong_len_for(len: u64) -> usize {
    let log2_len = 64 - len.max(1).leading_zeros() as usize;
    // n · 2^4 · 2^(-8s) ≤ 2^-48  ⇔  8s ≥ log2(n) + 52
    (log2_len + 52)
        .div_ceil(8)
        .clamp(MIN_STRONG_LEN, MAX_STRONG_LEN)
}

/// Computes the signature of `basis`.
pub fn signature(basis: &[u8], options: &SignatureOptions) -> Signature {
    signature_in_pieces(basis, options, usize::MAX, &mut |_| {})
}

/// [`signature`] of a memory-mapped basis, releasing the pages it has read every
/// [`RELEASE_EVERY`] bytes ([`MappedFile::release`]): the resident set does not grow with the
/// size of the basis.
pub fn signature_of_map(map: &MappedFile, options: &SignatureOptions) -> Signature {
    signature_in_pieces(map, options, RELEASE_EVERY, &mut |range| map.release(range))
}

/// [`signature`] of the bytes `range` of a memory-mapped basis (a part of a split file),
/// releasing pages as [`signature_of_map`] does.
pub fn signature_of_map_range(
    map: &MappedFile,
    range: std::ops::Range<usize>,
    options: &SignatureOptions,
) -> Signature {
    let start = range.start;
    signature_in_pieces(&map[range], options, RELEASE_EVERY, &mut |piece| {
        map.release(piece.start + start..piece.end + start)
    })
}

/// [`signature`], hashing `piece_len` bytes (whole blocks) at a time and calling `after` with
/// the byte range of each piece once it is done.
fn signature_in_pieces(
    basis: &[u8],
    options: &SignatureOptions,
    piece_len: usize,
    after: &mut dyn FnMut(std::ops::Range<usize>),
) -> Signature {
    let block_size = options
        .block_size
        .unwrap_or_else(|| block_size_for(basis.len() as u64));
    assert!(
        is_valid_block_size(block_size),
        "invalid block size {block_size}"
    );
    let key = options.key.unwrap_or_else(random_key);
    let strong_len = strong_len_for(basis.len() as u64);
    let blocks = block_count(basis.len() as u64, block_size) as usize;
    let mut weak = vec![0u32; blocks];
    let mut strong = vec![0u8; blocks * strong_len];
    let sign = |(block, (weak, strong)): (&[u8], (&mut u32, &mut [u8]))| {
        *weak = weak_checksum(block);
        strong.copy_from_slice(&block_hash(&key, block)[..strong_len]);
    };
    let blocks_per_piece = (piece_len / block_size).clamp(1, blocks.max(1));
    for (index, (weak, strong)) in weak
        .chunks_mut(blocks_per_piece)
        .zip(strong.chunks_mut(blocks_per_piece * strong_len))
        .enumerate()
    {
        let start = index * blocks_per_piece * block_size;
        let end = (start + blocks_per_piece * block_size).min(basis.len());
        let piece = &basis[start..end];
        if options.parallel {
            piece
                .par_chunks(block_size)
                .zip(weak.par_iter_mut().zip(strong.par_chunks_mut(strong_len)))
                .for_each(sign);
        } else {
            piece
                .chunks(block_size)
                .zip(weak.iter_mut().zip(strong.chunks_mut(strong_len)))
                .for_each(sign);
        }
        after(start..end);
    }
    Signature {
        block_size,
        strong_len,
        key,
        basis_len: basis.len() as u64,
        weak,
        strong,
    }
}

impl Signature {
    /// The block size.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Bytes kept of each block hash.
    pub fn strong_len(&self) -> usize {
        self.strong_len
    }

    /// The hash key of block hashes and of the file digest.
    pub fn key(&self) -> &HashKey {
        &self.key
    }

    /// Length of the basis file.
    pub fn basis_len(&self) -> u64 {
        self.basis_len
    }

    /// Number of blocks (the last may be short).
    pub fn blocks(&self) -> usize {
        self.weak.len()
    }

    /// Length of block `index`.
    pub fn block_len(&self, index: usize) -> usize {
        let start = index as u64 * self.block_size as u64;
        (self.basis_len - start).min(self.block_size as u64) as usize
    }

    /// Weak checksum of block `index`.
    #[inline]
    pub fn weak(&self, index: usize) -> u32 {
        self.weak[index]
    }

    /// Truncated block hash of block `index`.
    #[inline]
    pub fn strong(&self, index: usize) -> &[u8] {
        &self.strong[index * self.strong_len..(index + 1) * self.strong_len]
    }

    /// Size of the wire encoding in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.weak.len() * (4 + self.strong_len)
    }

    /// Appends the wire encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.block_size.trailing_zeros() as u8);
        out.push(self.strong_len as u8);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.basis_len.to_le_bytes());
        for (index, weak) in self.weak.iter().enumerate() {
            out.extend_from_slice(&weak.to_le_bytes());
            out.extend_from_slice(self.strong(index));
        }
    }

    /// Decodes a wire encoding, rejecting anything malformed or inconsistent.
    pub fn decode(bytes: &[u8]) -> Result<Signature, FormatError> {
        let what = "signature";
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::Truncated {
                what,
                needed: HEADER_LEN,
                got: bytes.len(),
            });
        }
        if &bytes[..4] != MAGIC {
            return Err(FormatError::BadMagic { what });
        }
        if bytes[4] != VERSION {
            return Err(FormatError::UnsupportedVersion {
                what,
                version: bytes[4] as u32,
            });
        }
        let block_size = 1usize.checked_shl(bytes[5] as u32).unwrap_or(0);
        if !is_valid_block_size(block_size) {
            return Err(FormatError::Invalid {
                what,
                reason: format!("block size 2^{}", bytes[5]),
            });
        }
        let strong_len = bytes[6] as usize;
        if !(MIN_STRONG_LEN..=MAX_STRONG_LEN).contains(&strong_len) {
            return Err(FormatError::Invalid {
                what,
                reason: format!("hash length {strong_len}"),
            });
        }
        let key: HashKey = bytes[7..39].try_into().expect("slice of 32");
        let basis_len = u64::from_le_bytes(bytes[39..47].try_into().expect("slice of 8"));
        let blocks = block_count(basis_len, block_size);
        let entry = 4 + strong_len as u64;
        let body = (bytes.len() - HEADER_LEN) as u64;
        if blocks.checked_mul(entry) != Some(body) {
            return Err(FormatError::Invalid {
                what,
                reason: format!("{body} bytes of blocks for a basis of {basis_len} bytes"),
            });
        }
        let blocks = blocks as usize;
        let mut weak = Vec::with_capacity(blocks);
        let mut strong = Vec::with_capacity(blocks * strong_len);
        for record in bytes[HEADER_LEN..].chunks_exact(entry as usize) {
            weak.push(u32::from_le_bytes(
                record[..4].try_into().expect("slice of 4"),
            ));
            strong.extend_from_slice(&record[4..]);
        }
        Ok(Signature {
            block_size,
            strong_len,
            key,
            basis_len,
            weak,
            strong,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strong_len_follows_budget() {
        assert_eq!(strong_len_for(0), 8);
        assert_eq!(strong_len_for(1 << 20), 10);
        assert_eq!(strong_len_for(1 << 30), 11);
        assert_eq!(strong_len_for(1 << 40), 12);
    }

    #[test]
    fn a_map_signed_in_pieces_and_released_gives_the_same_signature() {
        let data: Vec<u8> = (0..300_001u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        let options = SignatureOptions {
            key: Some([3u8; 32]),
            block_size: Some(8192),
            ..Default::default()
        };
        let whole = signature(&data, &options);
        let mut pieces = Vec::new();
        let in_pieces = signature_in_pieces(&data, &options, 3 * 8192 + 5, &mut |range| {
            pieces.push(range)
        });
        assert_eq!(whole, in_pieces);
        assert_eq!(pieces.first(), Some(&(0..3 * 8192)));
        assert_eq!(pieces.last().map(|r| r.end), Some(data.len()));
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, &data).unwrap();
        let map = MappedFile::open(file.path()).unwrap();
        assert_eq!(signature_of_map(&map, &options), whole);
        // Released pages read back the file's bytes.
        map.release(0..map.len());
        assert!(map[..] == data[..]);
    }

    #[test]
    fn parallel_and_serial_agree_and_round_trip() {
        let data: Vec<u8> = (0..300_001u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let key = [9u8; 32];
        let serial = signature(
            &data,
            &SignatureOptions {
                key: Some(key),
                ..Default::default()
            },
        );
        let parallel = signature(
            &data,
            &SignatureOptions {
                key: Some(key),
                parallel: true,
                ..Default::default()
            },
        );
        assert_eq!(serial, parallel);
        assert_eq!(serial.blocks(), 300_001usize.div_ceil(serial.block_size()));
        let mut wire = Vec::new();
        serial.encode(&mut wire);
        assert_eq!(wire.len(), serial.encoded_len());
        assert_eq!(Signature::decode(&wire).unwrap(), serial);
    }

    #[test]
    fn decode_rejects_damage() {
        let sig = signature(&[1u8; 20_000], &SignatureOptions::default());
        let mut wire = Vec::new();
        sig.encode(&mut wire);
        for cut in [0, 10, HEADER_LEN, wire.len() - 1] {
            assert!(
                Signature::decode(&wire[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut longer = wire.clone();
        longer.push(0);
        assert!(Signature::decode(&longer).is_err());
        let mut bad_block = wire.clone();
        bad_block[5] = 40;
        assert!(Signature::decode(&bad_block).is_err());
        let mut huge_len = wire.clone();
        huge_len[39..47].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Signature::decode(&huge_len).is_err());
    }
}
