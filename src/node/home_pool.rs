//! Home pools: placed blocks (16 KiB and more) and large spans whose pages turned out to be on
//! this node while their span belongs to another node's domain.
//!
//! The OpenMP idiom: a serial region on node A allocates one buffer per worker; each worker first
//! touches its own, so a node-B worker's buffer has its pages on B though its span is A's. When
//! that buffer is freed, the kernel is asked where its pages are (`placement::home_of`), and the
//! block goes to B's pool instead of back to its span: the next allocation of that size on B
//! reuses it without a page fault, and no thread of A is ever handed memory that lives on B.
//! A block in a pool still counts as used in its span, so the span stays put.
//!
//! Small blocks are linked through their first word (they are resident on this node already, so
//! writing them places nothing), encoded like every free-list link and validated on the way out
//! by looking the block up. Large spans are linked through their descriptors. When a pool sits
//! unused for the purge delay, its small blocks give back all pages but the first and its large
//! spans are purged and returned to their own domains (fresh, placed again by first touch).

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::layout::size_class::{class_size, CLASSES, PLACED_MIN_CLASS};
use crate::layout::{self, Block, Page, PageKind, PAGES};
use crate::sys::os::{self, Os, Sys};
use crate::sys::Lock;
use crate::sys::LockKind;

const SMALL: usize = CLASSES - PLACED_MIN_CLASS;
const SMALL_WORDS: usize = SMALL.div_ceil(64);
static_assertions::const_assert!(PAGES <= 64);

pub(crate) struct Lists {
    small: [*mut Block; SMALL],
    large: [*mut Page; PAGES],
    /// Pages of the tails of small blocks were given back (since the last put).
    trimmed: bool,
}
// SAFETY: the pointers are owned by the pool and guarded by its lock.
unsafe impl Send for Lists {}

/// One node's pool (in its domain).
pub(crate) struct HomePool {
    lists: Lock<Lists>,
    /// Entries held (a hint read without the lock).
    count: AtomicU64,
    /// Bit `i % 64` of word `i / 64`: small list `i` is not empty; word `SMALL_WORDS`: large
    /// list `n` is not empty (changed under the lock, read without it), so that a refill of one
    /// class takes no lock for a pool holding blocks of other classes only.
    nonempty: [AtomicU64; SMALL_WORDS + 1],
    /// When the pool was last used (ms).
    last_use: AtomicU64,
}

impl HomePool {
    pub(crate) fn init(&mut self) {
        self.lists = Lock::new(
            LockKind::Other,
            Lists { small: [ptr::null_mut(); SMALL], large: [ptr::null_mut(); PAGES], trimmed: false },
        );
    }

    /// Whether the pool is empty (a hint).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0
    }

    /// Marks list `bit` (small list `i` is bit `i`, large list `n` is bit `64 * SMALL_WORDS + n`)
    /// as holding entries or not. Called under the lock.
    fn mark(&self, bit: usize, nonempty: bool) {
        let (w, m) = (&self.nonempty[bit / 64], 1u64 << (bit % 64));
        if nonempty {
            w.fetch_or(m, Ordering::Relaxed);
        } else {
            w.fetch_and(!m, Ordering::Relaxed);
        }
    }

    /// Whether list `bit` (see [`Self::mark`]) may hold entries (a hint: no lock).
    #[inline]
    fn may_have(&self, bit: usize) -> bool {
        self.nonempty[bit / 64].load(Ordering::Relaxed) & 1 << (bit % 64) != 0
    }

    /// Keeps placed block `b` (of class `c`, in use from its span's view).
    ///
    /// # Safety
    /// `b` is a block of class `c` the caller just took back from the program (freed), resident
    /// on this pool's node.
    pub(crate) unsafe fn put_block(&self, c: usize, b: *mut Block) {
        let mut g = self.lists.lock();
        let slot = &mut g.small[c - PLACED_MIN_CLASS];
        // SAFETY: the caller's freed block; the list is the pool's.
        *slot = unsafe { link_pooled(b, *slot) };
        g.trimmed = false;
        self.mark(c - PLACED_MIN_CLASS, true);
        drop(g);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.last_use.store(Sys::now_ms(), Ordering::Relaxed);
    }

    /// Takes a pooled block of class `c` (its first word cleared), or null.
    pub(crate) fn take_block(&self, c: usize) -> *mut Block {
        if !self.may_have(c - PLACED_MIN_CLASS) {
            return ptr::null_mut();
        }
        let mut g = self.lists.lock();
        let slot = &mut g.small[c - PLACED_MIN_CLASS];
        let b = *slot;
        if b.is_null() {
            return b;
        }
        // SAFETY: the head of the pool's list of class `c`.
        *slot = unsafe { unlink_pooled(b, c) };
        if g.small[c - PLACED_MIN_CLASS].is_null() {
            self.mark(c - PLACED_MIN_CLASS, false);
        }
        drop(g);
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.last_use.store(Sys::now_ms(), Ordering::Relaxed);
        b
    }

    /// Keeps large span `page` (no longer in use).
    ///
    /// # Safety
    /// `page` is the head of a large span that the program freed, resident on this node.
    pub(crate) unsafe fn put_large(&self, page: *mut Page) {
        let mut g = self.lists.lock();
        // SAFETY: the caller's span.
        let n = unsafe { (*page).span_pages() } as usize;
        // SAFETY: as above; linked through the descriptor.
        unsafe { (*page).next.set(g.large[n]) };
        g.large[n] = page;
        self.mark(64 * SMALL_WORDS + n, true);
        drop(g);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.last_use.store(Sys::now_ms(), Ordering::Relaxed);
    }

    /// Takes a pooled large span of exactly `n` pages, or null.
    pub(crate) fn take_large(&self, n: usize) -> *mut Page {
        if n >= PAGES || !self.may_have(64 * SMALL_WORDS + n) {
            return ptr::null_mut();
        }
        let mut g = self.lists.lock();
        let p = g.large[n];
        if !p.is_null() {
            // SAFETY: a pooled span of ours.
            g.large[n] = unsafe { (*p).next.get() };
            if g.large[n].is_null() {
                self.mark(64 * SMALL_WORDS + n, false);
            }
            drop(g);
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.last_use.store(Sys::now_ms(), Ordering::Relaxed);
        }
        p
    }

    /// After the pool sat unused for `delay` ms (or at once with `force`): small blocks give back
    /// all their pages but the first, large spans are purged and go back to their own domains.
    pub(crate) fn trim(&self, now: u64, delay: u64, force: bool) {
        if self.is_empty() || (!force && now < self.last_use.load(Ordering::Relaxed).saturating_add(delay)) {
            return;
        }
        let mut large: *mut Page = ptr::null_mut();
        let mut small = [ptr::null_mut::<Block>(); SMALL];
        {
            let mut g = self.lists.lock();
            for n in 0..PAGES {
                let mut p = g.large[n];
                g.large[n] = ptr::null_mut();
                self.mark(64 * SMALL_WORDS + n, false);
                while !p.is_null() {
                    // SAFETY: pooled spans of ours.
                    let next = unsafe { (*p).next.get() };
                    // SAFETY: as above.
                    unsafe { (*p).next.set(large) };
                    large = p;
                    self.count.fetch_sub(1, Ordering::Relaxed);
                    p = next;
                }
            }
            if !g.trimmed {
                g.trimmed = true;
                // Take the small lists out for the purges; they go back afterwards.
                small = g.small;
                g.small = [ptr::null_mut(); SMALL];
            }
        }
        for (i, &head) in small.iter().enumerate() {
            let mut b = head;
            let mut tail: *mut Block = ptr::null_mut();
            let bs = class_size(PLACED_MIN_CLASS + i);
            while !b.is_null() {
                valid_block(b, PLACED_MIN_CLASS + i);
                // SAFETY: a pooled block of ours, not reachable by anyone while we hold the list.
                unsafe {
                    crate::node::placement::purge_tail(b.cast(), bs);
                    tail = b;
                    b = layout::Codec::current().read(b.cast()) as *mut Block;
                }
            }
            if !head.is_null() {
                let mut g = self.lists.lock();
                let slot = &mut g.small[i];
                // SAFETY: `tail` ends our list; relink it in front of what arrived meanwhile.
                unsafe { layout::set_next(tail, *slot) };
                *slot = head;
                self.mark(i, true);
            }
        }
        while !large.is_null() {
            // SAFETY: a span taken out of the pool: ours.
            unsafe {
                let next = (*large).next.get();
                (*large).next.set(ptr::null_mut());
                let len = (*large).span_bytes();
                os::purge((*large).span_start(), len, os::PurgeMode::DontNeed);
                let d = crate::node::domain::domain((*large).node());
                d.counters.purged_bytes.fetch_add(len as u64, Ordering::Relaxed);
                d.free_span(large);
                large = next;
            }
        }
    }

    /// The pool's lock, for the fork handlers.
    pub(crate) fn fork_lock(&self) -> &Lock<Lists> {
        &self.lists
    }
}

/// Links freed placed block `b` in front of the list of pooled blocks `head` (null: empty),
/// through its first word, encoded like every free-list link; returns the new head. (The home
/// pools' lists, and the heaps' own caches of them.)
///
/// # Safety
/// `b` is a placed block the program freed, now the caller's; `head` is such a list of the
/// same class, the caller's.
pub(crate) unsafe fn link_pooled(b: *mut Block, head: *mut Block) -> *mut Block {
    // SAFETY: the caller's block; the link points to another pooled block or null.
    unsafe { layout::set_next(b, head) };
    b
}

/// Takes `b`, the head of a list of pooled blocks of class `c` (see [`link_pooled`]), out of
/// it: checks that it is a block of that class (a corrupted link aborts), clears its first word
/// and returns the next head.
///
/// # Safety
/// `b` is the non-null head of such a list, the caller's.
pub(crate) unsafe fn unlink_pooled(b: *mut Block, c: usize) -> *mut Block {
    valid_block(b, c);
    // SAFETY: a pooled block; its link decodes to another pooled block or null, which is
    // checked when it is taken in turn (links cross spans here).
    unsafe {
        let next = layout::Codec::current().read(b.cast()) as *mut Block;
        (*b).next = ptr::null_mut();
        next
    }
}

/// Checks that `b` is a live placed block start of class `c` (a pool link that does not lead to
/// one was overwritten: heap overflow or write after free)
fn valid_block(b: *mut Block, c: usize) {
    if let Some((seg, page)) = layout::lookup(b as *const u8) {
        // SAFETY: a live segment and its descriptor.
        let ok = unsafe {
            (*seg).kind == layout::SEG_NORMAL
                && (*page).kind() == PageKind::Small
                && (*page).class.get() as usize == c
                && (*page).is_block(b as usize)
        };
        if ok {
            return;
        }
    }
    os::fatal(format_args!("malloc(): corrupted free list: a pooled block link leads to {:p}, not a free block of its size (heap overflow or write after free)", b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of our own, outside any domain (all-zero bytes but the lock, as `init` says).
    fn pool_alone() -> Box<HomePool> {
        // SAFETY: all-zero bytes are a valid empty pool but for the lock, which `init` sets.
        let mut p: Box<HomePool> = unsafe { Box::new(core::mem::zeroed()) };
        p.init();
        p
    }

    fn span_of(n: u32) -> Box<Page> {
        let p = Box::new(Page::empty());
        p.set_span_pages(n);
        p
    }

    #[test]
    fn large_spans_are_kept_per_size_and_the_hints_follow_them() {
        let pool = pool_alone();
        assert!(pool.is_empty());
        assert!(pool.take_large(3).is_null(), "an empty pool gives nothing");
        let spans: Vec<Box<Page>> = [3u32, 5, 3].iter().map(|&n| span_of(n)).collect();
        let ptrs: Vec<*mut Page> = spans.iter().map(|p| &**p as *const Page as *mut Page).collect();
        for &p in &ptrs {
            // SAFETY: our test spans, in no list.
            unsafe { pool.put_large(p) };
        }
        assert_eq!(pool.count.load(Ordering::Relaxed), 3);
        assert!(pool.may_have(64 * SMALL_WORDS + 3) && pool.may_have(64 * SMALL_WORDS + 5));
        assert!(!pool.may_have(64 * SMALL_WORDS + 4), "only sizes held are hinted");
        assert!(pool.take_large(4).is_null(), "exactly the size asked for");
        assert_eq!(pool.take_large(3), ptrs[2], "the last one kept first");
        assert_eq!(pool.take_large(3), ptrs[0]);
        assert!(!pool.may_have(64 * SMALL_WORDS + 3), "an emptied list clears its hint");
        assert!(pool.take_large(3).is_null());
        assert_eq!(pool.take_large(5), ptrs[1]);
        assert!(pool.is_empty());
        assert!(pool.take_large(PAGES).is_null(), "no list beyond a segment's pages");
    }

    #[test]
    fn hints_of_small_and_large_lists_do_not_overlap() {
        let pool = pool_alone();
        pool.mark(SMALL - 1, true);
        assert!(pool.may_have(SMALL - 1));
        for n in 0..PAGES {
            assert!(!pool.may_have(64 * SMALL_WORDS + n), "large list {n} hinted by a small list's bit");
        }
        pool.mark(64 * SMALL_WORDS, true);
        for i in 0..SMALL - 1 {
            assert!(!pool.may_have(i), "small list {i} hinted by a large list's bit");
        }
        assert!(pool.take_block(PLACED_MIN_CLASS).is_null(), "a hint without a block gives nothing");
    }
}
