//! The one place that decides block sizes.
//!
//! The rule: the power of two nearest to the square root of the file length (rsync's heuristic,
//! which balances signature size against literal data around each change), clamped to
//! [`MIN_BLOCK_SIZE`] .. [`MAX_BLOCK_SIZE`].
//!
//! Why these bounds, for PostgreSQL backups:
//! - 8 KiB minimum: PostgreSQL changes relation files a page (8 KiB) at a time, so smaller blocks
//!   only grow the signature without finding more matches. A 16 MiB WAL segment gets 8 KiB blocks
//!   (√16 MiB = 4 KiB, clamped up).
//! - A 1 GiB relation segment gets 32 KiB blocks: 32,768 blocks, a signature of about 0.5 MB, and a
//!   scattered page change costs one 32 KiB literal.
//! - 128 KiB maximum (rsync's cap): files above 16 GiB stop growing the block, so the signature
//!   grows linearly but each change stays cheap to resend.
//!
//! Block sizes are always powers of two, which keeps block arithmetic to shifts and masks and lets
//! the wire format carry the size as its base-2 logarithm.

/// Smallest block size the rule picks or the wire accepts: one PostgreSQL page.
pub const MIN_BLOCK_SIZE: usize = 8 * 1024;
/// Largest block size the rule picks or the wire accepts.
pub const MAX_BLOCK_SIZE: usize = 128 * 1024;

/// The block size the rule picks for a file of `len` bytes.
pub fn block_size_for(len: u64) -> usize {
    let root = (len as f64).sqrt();
    // Nearest power of two in log space: round(log2(root)).
    let exponent = if root <= 1.0 {
        0
    } else {
        root.log2().round() as u32
    };
    let size = 1usize.checked_shl(exponent).unwrap_or(MAX_BLOCK_SIZE);
    size.clamp(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE)
}

/// Whether `size` is a block size this engine accepts (a power of two within the bounds).
pub fn is_valid_block_size(size: usize) -> bool {
    size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&size)
}

/// Number of blocks of `block_size` needed to cover `len` bytes (the last one may be short).
pub fn block_count(len: u64, block_size: usize) -> u64 {
    len.div_ceil(block_size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_matches_documented_examples() {
        assert_eq!(block_size_for(0), MIN_BLOCK_SIZE);
        assert_eq!(block_size_for(16 << 20), 8 * 1024, "WAL segment");
        assert_eq!(block_size_for(1 << 30), 32 * 1024, "1 GiB relation segment");
        assert_eq!(block_size_for(256 << 20), 16 * 1024);
        assert_eq!(block_size_for(100 << 30), MAX_BLOCK_SIZE);
        assert_eq!(block_size_for(u64::MAX), MAX_BLOCK_SIZE);
    }

    #[test]
    fn every_rule_result_is_valid() {
        for shift in 0..64 {
            let size = block_size_for(1u64 << shift);
            assert!(is_valid_block_size(size), "{size} for 2^{shift}");
        }
        assert!(!is_valid_block_size(3 * 8192));
        assert!(!is_valid_block_size(4096));
        assert!(!is_valid_block_size(256 * 1024));
    }

    #[test]
    fn block_count_rounds_up() {
        assert_eq!(block_count(0, 8192), 0);
        assert_eq!(block_count(1, 8192), 1);
        assert_eq!(block_count(8192, 8192), 1);
        assert_eq!(block_count(8193, 8192), 2);
    }
}
