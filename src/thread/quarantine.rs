//! Checked mode (`--features quarantine`): a hardened build that trades speed and memory for
//! catching heap misuse where it happens instead of corrupting memory silently.
//!
//! * **Delayed reuse (quarantine).** `free` of a small or large block does not give it back at
//!   once: the block waits in a bounded per-thread FIFO ([`SLOTS`] blocks, [`MAX_BYTES`] bytes;
//!   a fixed array in TLS, no allocation) and is really freed when it falls out (or when the
//!   thread exits, or on [`crate::collect`]). A dangling pointer therefore does not hit a block
//!   that was handed out again right away.
//! * **Poisoning.** A block entering the quarantine gets a tag word (its address mixed with a
//!   per-process random key) and the rest of it (up to [`POISON_MAX`] bytes) is filled with
//!   [`POISON`]. When the block leaves the quarantine both are verified: a write after free is
//!   reported with the first modified address and aborts.
//! * **Double free / use of a freed block.** `free`, `realloc` and `malloc_usable_size` of a
//!   block still in a quarantine see its tag and abort ("double free"), whichever thread does
//!   it. A pointer that is not the start of a block is reported as such.
//! * **Guard pages** (`huge.rs`): a `PROT_NONE` page right after and right before every huge
//!   block, so linear overflows and underflows fault; `realloc` always moves huge blocks (their
//!   mappings never change size).
//! * Everything the default and `hardened` builds check (encoded, validated free-list links;
//!   double and interior frees; guard pages around huge blocks) applies too.
//! * **Freed huge blocks** skip the per-thread quarantine and the huge cache: their pages are
//!   dropped and made `PROT_NONE` at once (any later access faults; a second `free` or a
//!   `realloc` sees the header's `freed` flag), and the mapping waits in a small process-wide
//!   ring (`huge::RETIRED_SLOTS` blocks) before it is unmapped.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::layout::{self, PageKind, SEG_HUGE};
use crate::sys::os::{self, Os, Sys};

/// Blocks a thread's quarantine holds at most.
pub(crate) const SLOTS: usize = 256;
/// Bytes (block sizes) a thread's quarantine holds at most.
pub(crate) const MAX_BYTES: usize = 256 << 10;
/// Bytes of a freed block that are poisoned and verified (its head; the rest is not touched).
pub(crate) const POISON_MAX: usize = 8 << 10;
/// The poison pattern (one byte, repeated).
pub(crate) const POISON: u8 = 0xdf;
const POISON_WORD: u64 = u64::from_ne_bytes([POISON; 8]);

/// Per-process random key (never 0 once initialised).
static KEY: AtomicU64 = AtomicU64::new(0);

/// State of a thread's quarantine.
const ST_NEW: u8 = 0;
const ST_REGISTERED: u8 = 1;
/// The thread-exit flush ran: later frees of this thread bypass the quarantine.
const ST_DONE: u8 = 2;

struct Quarantine {
    ptrs: [*mut u8; SLOTS],
    sizes: [u32; SLOTS],
    /// Index of the oldest entry.
    head: usize,
    len: usize,
    bytes: usize,
    state: u8,
}

std::thread_local! {
    // Const-initialised and without `Drop`: a plain TLS slot, no destructor registration (which
    // could allocate). Thread exit is handled by a pthread key (see `register_exit`).
    static Q: UnsafeCell<Quarantine> = const {
        UnsafeCell::new(Quarantine {
            ptrs: [ptr::null_mut(); SLOTS],
            sizes: [0; SLOTS],
            head: 0,
            len: 0,
            bytes: 0,
            state: ST_NEW,
        })
    };
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The per-process random key (from the kernel, mixed with address-space and clock entropy).
#[inline]
pub(crate) fn key() -> u64 {
    let k = KEY.load(Ordering::Relaxed);
    if k != 0 {
        return k;
    }
    init_key()
}

#[cold]
#[inline(never)]
fn init_key() -> u64 {
    let k = mix(Sys::random_u64()) | 1;
    match KEY.compare_exchange(0, k, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => k,
        Err(old) => old,
    }
}

/// The tag a quarantined block carries in its first word.
#[inline]
fn tag(p: *const u8) -> u64 {
    mix(p as u64 ^ key()) | 1
}

/// What `p` is, for the checks: `Some(block size)` for a small or large block start (aborting
/// with `what` on an interior pointer or a freed span), `None` for anything else (huge blocks
/// and foreign pointers: the normal paths handle and report those).
fn classify(p: *mut u8, what: &str) -> Option<usize> {
    let (seg, page) = layout::lookup(p)?;
    // SAFETY: live segment and descriptor (lookup checked the segment map).
    unsafe {
        if (*seg).kind == SEG_HUGE {
            return None;
        }
        let pg = &*page;
        match pg.kind() {
            PageKind::Small => {
                let bs = pg.block_size.get() as usize;
                // `capacity` is the owner's: other threads check the block grid only.
                let owner = pg.owned_by(crate::thread::tls::heap() as usize);
                if !pg.is_block(p as usize) || (owner && pg.block_index(p as usize) >= pg.capacity() as usize) {
                    os::fatal(format_args!(
                        "{}(): invalid pointer {:p} (not a block start; quarantine build)",
                        what, p
                    ));
                }
                Some(bs)
            }
            PageKind::Large => {
                if pg.span_start() != p {
                    os::fatal(format_args!("{}(): invalid pointer {:p} (inside a large block)", what, p));
                }
                Some(pg.block_size.get() as usize)
            }
            PageKind::Free => os::fatal(format_args!("{}(): double free or invalid pointer {:p}", what, p)),
            PageKind::Meta => os::fatal(format_args!("{}(): invalid pointer {:p} (allocator metadata)", what, p)),
        }
    }
}

/// Aborts if `p` (a pointer the program passed to `what`) is a block waiting in a quarantine.
pub(crate) fn check_live(p: *mut u8, what: &str) {
    if classify(p, what).is_some() {
        // SAFETY: `p` is the start of a small or large block: mapped, at least 8 bytes.
        if unsafe { ptr::read(p as *const u64) } == tag(p) {
            os::fatal(format_args!(
                "{}(): double free or use after free of {:p} (invalid pointer: the block was freed and waits in quarantine; quarantine build)",
                what, p
            ));
        }
    }
}

/// Checked `free`: validates `p`, poisons it and puts it in the thread's quarantine, really
/// freeing the oldest blocks when the quarantine is over its bounds.
///
/// # Safety
/// `p` is non-null; anything the program passes to `free` is checked where possible.
pub(crate) unsafe fn free(p: *mut u8) {
    let Some(bs) = classify(p, "free") else {
        if let Some((seg, _)) = layout::lookup(p) {
            // SAFETY: a live header found by lookup.
            if unsafe { (*seg).kind } == SEG_HUGE {
                // SAFETY: the checks of `free`, then kept inaccessible for a while.
                unsafe {
                    crate::node::huge_mark_freed(seg, p);
                    crate::node::huge_retire(seg);
                }
                return;
            }
        }
        // Foreign: the normal path reports it.
        // SAFETY: forwarded.
        return unsafe { crate::thread::free::free(p) };
    };
    // SAFETY: `p` starts a small/large block of `bs` bytes (classify), mapped and not freed to
    // the page (the quarantine holds every block freed through here until it really frees it).
    unsafe {
        let w = p as *mut u64;
        if ptr::read(w) == tag(p) {
            os::fatal(format_args!("free(): double free of {:p} (it waits in the quarantine)", p));
        }
        let q = match Q.try_with(|q| q.get()) {
            Ok(q) if (*q).state != ST_DONE => q,
            _ => return crate::thread::free::free(p),
        };
        let n = bs.min(POISON_MAX);
        ptr::write_bytes(p.add(8), POISON, n - 8);
        ptr::write(w, tag(p));
        let q = &mut *q;
        if q.state == ST_NEW {
            q.state = ST_REGISTERED;
            register_exit();
        }
        while q.len == SLOTS || (q.len > 0 && q.bytes + bs > MAX_BYTES) {
            evict_one(q);
        }
        let i = (q.head + q.len) % SLOTS;
        q.ptrs[i] = p;
        q.sizes[i] = bs as u32;
        q.len += 1;
        q.bytes += bs;
    }
}

/// Verifies and really frees the oldest entry.
///
/// # Safety
/// `q` is the calling thread's quarantine, non-empty.
unsafe fn evict_one(q: &mut Quarantine) {
    let p = q.ptrs[q.head];
    let bs = q.sizes[q.head] as usize;
    q.ptrs[q.head] = ptr::null_mut();
    q.head = (q.head + 1) % SLOTS;
    q.len -= 1;
    q.bytes -= bs;
    // SAFETY: a quarantined block: ours, mapped, `bs` bytes, poisoned by `free`.
    unsafe {
        verify(p, bs);
        // Clear the tag, so the block, handed out again, is not taken for a freed one.
        ptr::write(p as *mut u64, 0);
        crate::thread::free::free(p);
    }
}

/// Aborts with the first modified address if the quarantined block `p` was written.
///
/// # Safety
/// `p` is a quarantined block of `bs` bytes.
unsafe fn verify(p: *mut u8, bs: usize) {
    let n = bs.min(POISON_MAX);
    // SAFETY: `n` bytes of the block, 8-byte aligned (every block is).
    unsafe {
        if ptr::read(p as *const u64) != tag(p) {
            report(p, p);
        }
        let mut off = 8;
        while off + 8 <= n {
            if ptr::read(p.add(off) as *const u64) != POISON_WORD {
                let mut b = off;
                while *p.add(b) == POISON {
                    b += 1;
                }
                report(p, p.add(b));
            }
            off += 8;
        }
        while off < n {
            if *p.add(off) != POISON {
                report(p, p.add(off));
            }
            off += 1;
        }
    }
}

#[cold]
fn report(block: *mut u8, at: *mut u8) -> ! {
    os::fatal(format_args!(
        "write after free to {:p} (offset {} in the freed block {:p}; quarantine build)",
        at,
        at as usize - block as usize,
        block
    ))
}

/// Really frees every block of the calling thread's quarantine (after verifying them).
pub(crate) fn flush() {
    let Ok(q) = Q.try_with(|q| q.get()) else { return };
    // SAFETY: this thread's quarantine; `evict_one` does not reenter it.
    unsafe {
        let q = &mut *q;
        while q.len > 0 {
            evict_one(q);
        }
    }
}

/// pthread key whose destructor flushes an exiting thread's quarantine (0 = none yet, else
/// key + 1).
static EXIT_KEY: AtomicU64 = AtomicU64::new(0);
/// Serialises the key's creation.
static EXIT_KEY_LOCK: crate::sys::Lock<()> = crate::sys::Lock::new(crate::sys::LockKind::Other, ());

/// The thread-exit key's lock, for the fork handlers (a leaf: nothing else is taken under it).
pub(crate) fn fork_lock() -> &'static crate::sys::Lock<()> {
    &EXIT_KEY_LOCK
}

/// Arranges for the calling thread's quarantine to be flushed when it exits.
#[cold]
fn register_exit() {
    let mut k = EXIT_KEY.load(Ordering::Acquire);
    if k == 0 {
        let _g = EXIT_KEY_LOCK.lock();
        k = EXIT_KEY.load(Ordering::Acquire);
        if k == 0 {
            if let Some(key) = Sys::thread_key_create(thread_exit) {
                k = key.0 + 1;
                EXIT_KEY.store(k, Ordering::Release);
            }
        }
    }
    if k != 0 {
        Sys::thread_key_set(os::ThreadKey(k - 1), 1 as *mut core::ffi::c_void);
    }
}

/// The thread-exit destructor: flush, and free directly from now on.
///
/// # Safety
/// Called by libc at thread exit.
unsafe extern "C" fn thread_exit(_arg: *mut core::ffi::c_void) {
    flush();
    let _ = Q.try_with(|q| {
        // SAFETY: this thread's quarantine, not borrowed elsewhere.
        unsafe { (*q.get()).state = ST_DONE };
    });
}
