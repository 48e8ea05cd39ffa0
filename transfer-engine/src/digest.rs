//! Strong hashes: the keyed blake3 block hash and the whole-file digest built from block hashes.
//!
//! - A **block hash** is `blake3::keyed_hash(key, block)`. The key is random per signature, chosen by
//!   the receiver, so nobody who can only put data into a file (a database user, say) can build
//!   blocks that collide under the truncated hashes of a signature.
//! - A **file digest** is a keyed blake3 hash over the list of the full (32-byte) block hashes of
//!   the file's aligned blocks, followed by the block size and the length. It is as collision
//!   resistant as blake3 itself, and it has one property a plain hash of the file lacks: the
//!   sender's delta already computes the hash of every block that still sits where it was, so
//!   the digest of a mostly unchanged file costs no second pass over its data.
//!
//! The receiver recomputes the digest over the bytes it writes ([`DigestWriter`]) and compares it
//! with the sender's before the file is published.

use std::fmt;

/// The key of block hashes and file digests (32 bytes, random per signature).
pub type HashKey = [u8; 32];

const DOMAIN: &[u8] = b"barsync file digest v1\0";

/// A fresh random key from the operating system.
pub fn random_key() -> HashKey {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the operating system's random number source failed");
    key
}

/// The full keyed hash of one block.
#[inline]
pub fn block_hash(key: &HashKey, block: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(key, block).as_bytes()
}

/// The digest of a whole file (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileDigest(pub [u8; 32]);

impl fmt::Display for FileDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FileDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileDigest({self})")
    }
}

/// Builds a [`FileDigest`] from the block hashes of a file, in order.
pub struct DigestBuilder {
    list: blake3::Hasher,
    block_size: usize,
    blocks: u64,
}

impl DigestBuilder {
    /// A builder for a file cut into blocks of `block_size` bytes.
    pub fn new(key: &HashKey, block_size: usize) -> DigestBuilder {
        let mut list = blake3::Hasher::new_keyed(key);
        list.update(DOMAIN);
        DigestBuilder {
            list,
            block_size,
            blocks: 0,
        }
    }

    /// Appends the hash of the next block.
    pub fn push(&mut self, block_hash: &[u8; 32]) {
        self.list.update(block_hash);
        self.blocks += 1;
    }

    /// Number of block hashes pushed so far.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// The digest of a file of `len` bytes whose block hashes have all been pushed.
    pub fn finish(mut self, len: u64) -> FileDigest {
        debug_assert_eq!(self.blocks, len.div_ceil(self.block_size as u64));
        self.list.update(&(self.block_size as u64).to_le_bytes());
        self.list.update(&len.to_le_bytes());
        FileDigest(*self.list.finalize().as_bytes())
    }
}

/// The digest of `data`, computed in one pass (for files read whole, and for tests).
pub fn file_digest(key: &HashKey, block_size: usize, data: &[u8]) -> FileDigest {
    file_digest_in_pieces(key, block_size, data, usize::MAX, &mut |_| {})
}

/// [`file_digest`], calling `after` with the byte range of each piece of about `piece_len`
/// bytes (whole blocks) once it is hashed: a caller reading a memory map releases its pages
/// there, so hashing a large file does not leave it all resident.
pub fn file_digest_in_pieces(
    key: &HashKey,
    block_size: usize,
    data: &[u8],
    piece_len: usize,
    after: &mut dyn FnMut(std::ops::Range<usize>),
) -> FileDigest {
    let mut builder = DigestBuilder::new(key, block_size);
    let piece_len = piece_len.max(block_size) / block_size * block_size;
    let mut start = 0;
    for piece in data.chunks(piece_len) {
        for block in piece.chunks(block_size) {
            builder.push(&block_hash(key, block));
        }
        after(start..start + piece.len());
        start += piece.len();
    }
    builder.finish(data.len() as u64)
}

/// Computes the digest of a byte stream as it is written, whatever the pieces' sizes.
pub struct DigestWriter {
    key: HashKey,
    block_size: usize,
    partial: blake3::Hasher,
    partial_len: usize,
    builder: DigestBuilder,
    len: u64,
}

impl DigestWriter {
    /// A writer for a file cut into blocks of `block_size` bytes.
    pub fn new(key: &HashKey, block_size: usize) -> DigestWriter {
        DigestWriter {
            key: *key,
            block_size,
            partial: blake3::Hasher::new_keyed(key),
            partial_len: 0,
            builder: DigestBuilder::new(key, block_size),
            len: 0,
        }
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.partial_len > 0 {
            let take = data.len().min(self.block_size - self.partial_len);
            self.partial.update(&data[..take]);
            self.partial_len += take;
            data = &data[take..];
            if self.partial_len == self.block_size {
                self.push_partial();
            }
        }
        let mut blocks = data.chunks_exact(self.block_size);
        for block in &mut blocks {
            self.builder.push(&block_hash(&self.key, block));
        }
        let rest = blocks.remainder();
        if !rest.is_empty() {
            self.partial.update(rest);
            self.partial_len = rest.len();
        }
    }

    fn push_partial(&mut self) {
        let hash = *self.partial.finalize().as_bytes();
        self.builder.push(&hash);
        self.partial.reset();
        self.partial_len = 0;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything fed.
    pub fn finish(mut self) -> FileDigest {
        if self.partial_len > 0 {
            self.push_partial();
        }
        let len = self.len;
        self.builder.finish(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_equals_one_pass_for_any_split() {
        let key = [7u8; 32];
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let expected = file_digest(&key, 8192, &data);
        for piece in [1, 7, 8191, 8192, 8193, 50_000, 100_000] {
            let mut writer = DigestWriter::new(&key, 8192);
            for chunk in data.chunks(piece) {
                writer.update(chunk);
            }
            assert_eq!(writer.finish(), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn digest_depends_on_content_length_key_and_block_size() {
        let key = [1u8; 32];
        let data = vec![0u8; 20_000];
        let base = file_digest(&key, 8192, &data);
        assert_ne!(base, file_digest(&key, 8192, &data[..19_999]));
        assert_ne!(base, file_digest(&[2u8; 32], 8192, &data));
        assert_ne!(base, file_digest(&key, 16384, &data));
        let mut changed = data.clone();
        changed[12_345] = 1;
        assert_ne!(base, file_digest(&key, 8192, &changed));
        assert_ne!(file_digest(&key, 8192, &[]), file_digest(&key, 16384, &[]));
    }
}
