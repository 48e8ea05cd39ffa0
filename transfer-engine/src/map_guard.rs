//! Surviving a mapped file that shrinks: the process-wide SIGBUS handler and the registry of the
//! address ranges [`crate::fs::MappedFile`] maps.
//!
//! Reading a page of a shared file map that lies beyond the file's end (the file was truncated
//! after it was mapped) raises SIGBUS, whose default action kills the process. barsync cannot
//! prevent a file from being truncated (a source changed by someone else while `barsync copy`
//! reads it, a basis truncated locally during a patch), so every map is registered here and the
//! handler, installed once for the whole process by the first registration, does this:
//!
//! - the faulting address lies in a registered range: it maps anonymous zero pages over that
//!   range from the faulting page to its end (`mmap(MAP_FIXED)`, read-only), marks the range as
//!   faulted and returns; the faulting read is executed again and reads zeros. The map's owner
//!   asks [`Registration::faulted`] and reports the file as changed instead of using what it read;
//! - anywhere else: the fault is not ours. It goes to the handler that was installed before
//!   (Rust's runtime has one that reports stack overflows, and restores the default action for
//!   any other fault) or, if there was none, the default action is restored and the faulting
//!   instruction runs again: the process dies of SIGBUS as it would have without this module.
//!
//! The registry is a fixed array of slots (a signal handler may not allocate or lock). Each
//! slot is a seqlock: its sequence number is odd while the slot is being written, so the handler
//! skips a slot that changes under it; the faulting thread's own range is registered and stable
//! while it reads it, so that slot is always found.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::OnceLock;

/// Maps registered at once, at most (a session holds a handful per worker).
const SLOTS: usize = 4096;

struct Slot {
    claimed: AtomicBool,
    /// Odd while `start`, `len` or `faulted` are being rewritten.
    sequence: AtomicU64,
    start: AtomicUsize,
    len: AtomicUsize,
    faulted: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise the array
const FREE: Slot = Slot {
    claimed: AtomicBool::new(false),
    sequence: AtomicU64::new(0),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    faulted: AtomicBool::new(false),
};

static REGISTRY: [Slot; SLOTS] = [FREE; SLOTS];

/// The SIGBUS action in place before ours, and the page size, set once before ours is installed.
struct Installed {
    previous: libc::sigaction,
    page: usize,
}

// SAFETY: `libc::sigaction` is plain data (a handler address, flags and a signal mask); it is
// written once before it is shared and only read afterwards.
unsafe impl Sync for Installed {}
// SAFETY: as above: plain data.
unsafe impl Send for Installed {}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Why a range could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// Every slot is taken.
    #[error("more than {SLOTS} files mapped at once")]
    Full,
    /// `sigaction` refused the handler.
    #[error("installing the SIGBUS handler: {0}")]
    Install(std::io::Error),
}

/// A registered range; dropping it unregisters it (drop it before unmapping the range).
#[derive(Debug)]
pub struct Registration {
    slot: &'static Slot,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Slot({:#x}+{})",
            self.start.load(SeqCst),
            self.len.load(SeqCst)
        )
    }
}

/// Registers the mapped range `[start, start + len)` (`len > 0`), installing the handler first
/// if this is the first registration of the process.
pub fn register(start: *const u8, len: usize) -> Result<Registration, GuardError> {
    install()?;
    let slot = REGISTRY
        .iter()
        .find(|slot| {
            slot.claimed
                .compare_exchange(false, true, SeqCst, SeqCst)
                .is_ok()
        })
        .ok_or(GuardError::Full)?;
    slot.sequence.fetch_add(1, SeqCst);
    slot.start.store(start as usize, SeqCst);
    slot.len.store(len, SeqCst);
    slot.faulted.store(false, SeqCst);
    slot.sequence.fetch_add(1, SeqCst);
    Ok(Registration { slot })
}

impl Registration {
    /// Whether a read of the range faulted (the file shrank under the map; the range reads zeros
    /// from the faulting page on).
    pub fn faulted(&self) -> bool {
        self.slot.faulted.load(SeqCst)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let slot = self.slot;
        slot.sequence.fetch_add(1, SeqCst);
        slot.start.store(0, SeqCst);
        slot.len.store(0, SeqCst);
        slot.faulted.store(false, SeqCst);
        slot.sequence.fetch_add(1, SeqCst);
        slot.claimed.store(false, SeqCst);
    }
}

fn install() -> Result<(), GuardError> {
    static RESULT: OnceLock<Result<(), i32>> = OnceLock::new();
    let result = RESULT.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = if page > 0 { page as usize } else { 4096 };
        // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, no flags, empty mask); it is
        // only filled in by the kernel below.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: querying the current action into a valid, writable sigaction.
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) } != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        let _ = INSTALLED.set(Installed { previous, page });
        // SAFETY: as above, zeroed is a valid starting value; every field used is set.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: sa_mask is a valid sigset_t owned by `action`.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: installs a handler with the signature SA_SIGINFO requires; `previous` is
        // already stored for it.
        if unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(())
    });
    result.map_err(|errno| GuardError::Install(std::io::Error::from_raw_os_error(errno)))
}

/// The SIGBUS handler. Only async-signal-safe work: atomic loads and stores, `mmap`, `sigaction`.
extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // The interrupted code may be about to read errno: keep it.
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    let errno = unsafe { *libc::__errno_location() };
    handle(signal, info, context);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn handle(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let address = unsafe { (*info).si_addr() } as usize;
    let Some(installed) = INSTALLED.get() else {
        return default_action();
    };
    for slot in REGISTRY.iter() {
        let before = slot.sequence.load(SeqCst);
        if before & 1 == 1 {
            continue;
        }
        let (start, len) = (slot.start.load(SeqCst), slot.len.load(SeqCst));
        if slot.sequence.load(SeqCst) != before || len == 0 {
            continue;
        }
        if address < start || address - start >= len {
            continue;
        }
        let from = address & !(installed.page - 1);
        let end = (start + len).div_ceil(installed.page) * installed.page;
        // SAFETY: `[from, end)` lies inside the registered map (page-aligned; the map covers
        // whole pages), which the faulting thread is reading and so is still mapped; replacing
        // its pages with anonymous read-only zero pages changes only what that map reads, and
        // unmapping the map later unmaps these pages with it.
        let mapped = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return default_action();
        }
        slot.faulted.store(true, SeqCst);
        return;
    }
    // Not ours: the previous handler decides.
    let previous = &installed.previous;
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return default_action();
    }
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous action was installed with SA_SIGINFO, so its handler has this
        // signature; it gets the arguments the kernel gave us.
        let previous: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        previous(signal, info, context);
    } else {
        // SAFETY: without SA_SIGINFO, the previous handler takes the signal number only.
        let previous: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        previous(signal);
    }
}

/// Restores the default SIGBUS action; returning from the handler then runs the faulting
/// instruction again, which kills the process with SIGBUS.
fn default_action() {
    // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask; sigaction is
    // async-signal-safe.
    unsafe {
        let action: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}
