//! Copying a byte range between two files without bringing it through user space: a reflink
//! (`FICLONERANGE`: the new file shares the basis's extents, on XFS and btrfs), else the
//! kernel's own copy (`copy_file_range`: page cache to page cache, on ext4 and most others).
//! [`RangeCopier`] remembers what the file systems refused, so a copy that cannot be done in the
//! kernel costs one failed system call per file, and says which way each range went
//! ([`CopyPath`]); the caller copies what the kernel declined itself ([`CopyPath::UserCopy`]).

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// How bytes were copied from the basis into the new file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CopyPath {
    /// Extents shared with the basis (`FICLONERANGE`): no data copied.
    Reflink,
    /// Copied by the kernel (`copy_file_range`).
    KernelCopy,
    /// Read from the basis's map and written by this process.
    UserCopy,
}

impl CopyPath {
    /// `reflink`, `kernel copy`, `user copy`.
    pub fn label(self) -> &'static str {
        match self {
            CopyPath::Reflink => "reflink",
            CopyPath::KernelCopy => "kernel copy",
            CopyPath::UserCopy => "user copy",
        }
    }
}

impl fmt::Display for CopyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Copies ranges in the kernel while the file systems allow it (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub struct RangeCopier {
    try_reflink: bool,
    try_kernel: bool,
}

/// Alignment a reflink needs (the file system block; 4 KiB covers XFS and btrfs defaults, and a
/// larger block only makes the attempt fail once).
const REFLINK_ALIGN: u64 = 4096;

/// Largest request of one `copy_file_range` call (it may copy less; the rest is asked again).
const MAX_KERNEL_COPY: u64 = 1 << 30;

impl Default for RangeCopier {
    fn default() -> Self {
        RangeCopier::new()
    }
}

impl RangeCopier {
    /// A copier that tries a reflink, then the kernel's copy.
    pub fn new() -> RangeCopier {
        RangeCopier {
            try_reflink: true,
            try_kernel: true,
        }
    }

    /// A copier that declines every range (the caller copies in user space): what a file
    /// system without either gives, forced (tests, comparisons).
    #[cfg(test)]
    pub fn user_only() -> RangeCopier {
        RangeCopier {
            try_reflink: false,
            try_kernel: false,
        }
    }

    /// Whether ranges may still be copied in the kernel.
    #[cfg(test)]
    pub fn in_kernel(&self) -> bool {
        self.try_reflink || self.try_kernel
    }

    /// Copies up to `len` bytes from `source` at `from` to `target` at `to`. Returns the bytes
    /// copied and how: fewer than `len` (possibly 0) when the kernel declined the rest or the
    /// source ended early, and the caller copies the rest itself. An error is a failure of the
    /// copy itself (a full disk, an I/O error), not a refusal.
    pub fn copy(
        &mut self,
        source: &File,
        from: u64,
        target: &File,
        to: u64,
        len: u64,
    ) -> io::Result<(u64, CopyPath)> {
        if len == 0 {
            return Ok((0, CopyPath::KernelCopy));
        }
        if self.try_reflink && (from | to | len).is_multiple_of(REFLINK_ALIGN) {
            match reflink(source, from, target, to, len) {
                Ok(()) => return Ok((len, CopyPath::Reflink)),
                // Misaligned for this file system (or past the end): only this range.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) if refused(&e) => self.try_reflink = false,
                Err(e) => return Err(e),
            }
        }
        if !self.try_kernel {
            return Ok((0, CopyPath::UserCopy));
        }
        let mut done = 0;
        while done < len {
            let mut off_in = from + done;
            let mut off_out = to + done;
            let want = (len - done).min(MAX_KERNEL_COPY) as usize;
            match rustix::fs::copy_file_range(
                source,
                Some(&mut off_in),
                target,
                Some(&mut off_out),
                want,
            ) {
                Ok(0) => break, // the source ended early: the caller's copy will say so
                Ok(n) => done += n as u64,
                Err(e) => {
                    let e = io::Error::from(e);
                    if done == 0 && (refused(&e) || e.raw_os_error() == Some(libc::EINVAL)) {
                        self.try_kernel = false;
                        break;
                    }
                    return Err(e);
                }
            }
        }
        Ok((done, CopyPath::KernelCopy))
    }
}

/// Errors by which a file system (or a kernel) says it cannot do this kind of copy.
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::ENOTTY | libc::EPERM)
    )
}

fn reflink(source: &File, from: u64, target: &File, to: u64, len: u64) -> io::Result<()> {
    let range = libc::file_clone_range {
        src_fd: source.as_raw_fd() as i64,
        src_offset: from,
        src_length: len,
        dest_offset: to,
    };
    // SAFETY: FICLONERANGE reads one file_clone_range, which lives across the call; both
    // descriptors are open.
    let result = unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONERANGE, &range) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn files(len: usize) -> (tempfile::TempDir, File, File, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..len as u32).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(dir.path().join("a"), &data).unwrap();
        let source = File::open(dir.path().join("a")).unwrap();
        let target = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("b"))
            .unwrap();
        (dir, source, target, data)
    }

    #[test]
    fn a_range_lands_at_its_offset() {
        let (_dir, source, target, data) = files(300_000);
        let mut copier = RangeCopier::new();
        let (done, path) = copier.copy(&source, 8192, &target, 100, 200_000).unwrap();
        assert_eq!(done, 200_000);
        assert_ne!(path, CopyPath::UserCopy);
        let mut back = vec![0; 200_000];
        target.read_exact_at(&mut back, 100).unwrap();
        assert_eq!(back, data[8192..208_192]);
    }

    #[test]
    fn a_source_that_ends_early_gives_a_short_count() {
        let (_dir, source, target, _) = files(10_000);
        let (done, _) = RangeCopier::new()
            .copy(&source, 5_000, &target, 0, 8_000)
            .unwrap();
        assert_eq!(done, 5_000);
    }

    #[test]
    fn a_forced_user_copy_copies_nothing() {
        let (_dir, source, target, _) = files(10_000);
        let mut copier = RangeCopier::user_only();
        assert!(!copier.in_kernel());
        assert_eq!(
            copier.copy(&source, 0, &target, 0, 4096).unwrap(),
            (0, CopyPath::UserCopy)
        );
        assert_eq!(target.metadata().unwrap().len(), 0);
    }

    #[test]
    fn a_target_not_open_for_writing_is_an_error() {
        // EBADF is a caller's mistake, not a file system's refusal: reported, not hidden.
        let (dir, source, _, _) = files(10_000);
        let read_only = File::open(dir.path().join("b")).unwrap();
        assert!(RangeCopier::new()
            .copy(&source, 0, &read_only, 0, 4096)
            .is_err());
    }
}
