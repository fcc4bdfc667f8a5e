//! Per-CPU arenas: unowned pages of one node, per size class, and a small cache of empty spans.
//!
//! Pages land here when their owner thread exits or migrates to another node, and when a page
//! that its owner gave up (full) receives its first remote free. A heap that needs a page for a
//! class looks in the arena of the CPU it runs on, then in the other arenas of the same node,
//! before asking the node's domain for a fresh span. Pages in an arena keep receiving remote frees
//! (lock-free). A page arrives on its class's inbox, a lock-free stack, and the next heap that
//! looks takes the whole inbox and adopts every page on it: a page's round trip (given up full,
//! queued by its first remote free, adopted again by the producer's next refill) takes no lock.
//! Only the sweeps, which walk queued pages for those that remote frees emptied, move inbox
//! pages to the locked FIFO queues; heaps take from those when the inbox is empty.
//!
//! Spans that become empty park here too (up to [`EMPTY_MAX_PAGES`] pages per arena), ready for
//! the next span any thread of the CPU needs, of any class or a large block: in steady state the
//! domain lock is taken only when an arena runs out or overflows. The maintenance sweep gives
//! back to the domain what has waited longer than the purge delay.
//!
//! Besides one arena per CPU id there is one per node ([`node_arena`]), for pages of
//! node-targeted heaps (which run on any CPU) and of memory-only nodes.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::config;
use crate::config::topology;
use crate::layout::size_class::CLASSES;
use crate::layout::Page;
use crate::layout::{SpanPlacement, PLACEMENTS};
use crate::node;
use crate::sys::LockKind;
use crate::sys::SetOnce;
use crate::sys::{ForkLock, ForkStage, Lock};

/// Span sizes (pages) the empty-span cache keeps, 1..=EMPTY_SIZES.
const EMPTY_SIZES: usize = 16;
/// Pages of empty spans an arena keeps at most (2 MiB).
pub(crate) const EMPTY_MAX_PAGES: usize = 32;
/// Words of the per-class non-empty bitmap.
const CLASS_WORDS: usize = CLASSES.div_ceil(64);

pub(crate) struct Queues {
    head: [*mut Page; CLASSES],
    tail: [*mut Page; CLASSES],
    /// Empty spans by placement and size (LIFO through `next`).
    empty: [[*mut Page; EMPTY_SIZES]; PLACEMENTS],
    empty_pages: usize,
}
// SAFETY: pages in the queues are guarded by the arena lock.
unsafe impl Send for Queues {}

/// One CPU's (or node's) arena. All-zero bytes are a valid empty arena but for the lock's kind
/// (set by [`Arena::init`]).
pub(crate) struct Arena {
    /// Pages queued since a heap or a sweep last looked, per class: a lock-free stack linked
    /// through `next` (pushers CAS onto it; a heap takes the whole stack with one swap and
    /// adopts every page), so a page's round trip through the arena (given up full, its first
    /// remote free queues it, its owner's next refill adopts it again: a producer/consumer
    /// pair's every page) takes no lock.
    inbox: [AtomicPtr<Page>; CLASSES],
    /// Pages a sweep moved out of the inboxes to look at, and pages waiting since: FIFO per
    /// class, under the lock.
    queues: Lock<Queues>,
    /// Partly used pages queued (a hint read without the lock).
    partial: AtomicUsize,
    /// Bit `c % 64` of word `c / 64`: class `c`'s queue is not empty (changed under the lock,
    /// read without it), so a heap looking for a page of one class takes no lock for an arena
    /// that holds pages of other classes only.
    nonempty: [AtomicU64; CLASS_WORDS],
    /// Pages of empty spans parked (a hint).
    empties: AtomicUsize,
    /// Pages taken from the queues so far, and the count the last sweep saw: an arena whose
    /// pages are being taken is in use, and its queued pages will be adopted soon enough; only
    /// an idle arena's queues are worth walking for pages that remote frees emptied.
    pops: AtomicUsize,
    pops_seen: AtomicUsize,
}

impl Arena {
    pub(crate) fn init(&mut self) {
        self.queues = Lock::new(
            LockKind::Arena,
            Queues {
                head: [ptr::null_mut(); CLASSES],
                tail: [ptr::null_mut(); CLASSES],
                empty: [[ptr::null_mut(); EMPTY_SIZES]; PLACEMENTS],
                empty_pages: 0,
            },
        );
    }

    /// Queues an unowned page with blocks in use (lock-free: onto its class's inbox).
    ///
    /// # Safety
    /// `page` is a small span's head, owned by nobody, in no list.
    pub(crate) unsafe fn push(&self, page: *mut Page) {
        // Counted first: a heap may take the page as soon as the CAS publishes it.
        self.partial.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's page: its links are ours until the CAS publishes them.
        unsafe {
            let slot = &self.inbox[(*page).class.get() as usize];
            (*page).prev.set(ptr::null_mut());
            let mut head = slot.load(Ordering::Relaxed);
            loop {
                (*page).next.set(head);
                // Release: the links (and everything the page's last owner wrote) go with it.
                match slot.compare_exchange_weak(head, page, Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => break,
                    Err(h) => head = h,
                }
            }
        }
    }

    /// Takes class `c`'s inbox: a list of pages linked through `next` (null: none).
    fn take_inbox(&self, c: usize) -> *mut Page {
        if self.inbox[c].load(Ordering::Relaxed).is_null() {
            return ptr::null_mut();
        }
        // Acquire: pairs with the pushes' release (links, and the pages' contents).
        self.inbox[c].swap(ptr::null_mut(), Ordering::Acquire)
    }

    /// Links `page` (taken from an inbox: counted in `partial` already) at the tail of its
    /// class's queue.
    ///
    /// # Safety
    /// As [`Self::push`]; `q` is this arena's locked queues.
    unsafe fn link(&self, q: &mut Queues, page: *mut Page) {
        // SAFETY: the page is ours to link; queue pages are guarded by the lock.
        unsafe {
            let c = (*page).class.get() as usize;
            (*page).next.set(ptr::null_mut());
            (*page).prev.set(ptr::null_mut());
            if q.tail[c].is_null() {
                q.head[c] = page;
                self.nonempty[c / 64].fetch_or(1 << (c % 64), Ordering::Relaxed);
            } else {
                (*q.tail[c]).next.set(page);
            }
            q.tail[c] = page;
        }
    }

    /// Whether class `c`'s queue may hold a page (a hint: no lock).
    #[inline]
    fn may_have(&self, c: usize) -> bool {
        self.nonempty[c / 64].load(Ordering::Relaxed) & 1 << (c % 64) != 0
    }

    /// Takes pages of class `c`: every page of its inbox (a list linked through `next`, for the
    /// caller to adopt them all), else the oldest page of its queue (its `next` null), else
    /// null. Only the queue takes the lock.
    pub(crate) fn pop(&self, c: usize) -> *mut Page {
        let list = self.take_inbox(c);
        if !list.is_null() {
            let mut n = 0;
            let mut p = list;
            while !p.is_null() {
                n += 1;
                // SAFETY: pages taken from the inbox are ours, their links published to us.
                p = unsafe { (*p).next.get() };
            }
            self.partial.fetch_sub(n, Ordering::Relaxed);
            self.pops.store(self.pops.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
            return list;
        }
        if !self.may_have(c) {
            return ptr::null_mut();
        }
        let mut q = self.queues.lock();
        let p = q.head[c];
        if !p.is_null() {
            // SAFETY: queued pages are live and guarded by the lock.
            unsafe {
                q.head[c] = (*p).next.get();
                if q.head[c].is_null() {
                    q.tail[c] = ptr::null_mut();
                    self.nonempty[c / 64].fetch_and(!(1 << (c % 64)), Ordering::Relaxed);
                }
                (*p).next.set(ptr::null_mut());
            }
            self.partial.fetch_sub(1, Ordering::Relaxed);
            self.pops.store(self.pops.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
        p
    }

    /// Parks an unused span for reuse; false (nothing done) when the arena holds enough already
    /// or the span is too big.
    ///
    /// # Safety
    /// `page` is the head of an unused, unowned span of this arena's node, in no list.
    pub(crate) unsafe fn park_empty(&self, page: *mut Page, now_ms: u64) -> bool {
        // SAFETY: the caller's span.
        let (n, pl) = unsafe { ((*page).span_pages() as usize, (*page).placement.get() as usize) };
        if n == 0 || n > EMPTY_SIZES || self.empties.load(Ordering::Relaxed) + n > EMPTY_MAX_PAGES {
            return false;
        }
        let mut q = self.queues.lock();
        if q.empty_pages + n > EMPTY_MAX_PAGES {
            return false;
        }
        // SAFETY: ours to link under the lock.
        unsafe {
            (*page).parked_ms.set(now_ms as u32);
            (*page).next.set(q.empty[pl][n - 1]);
        }
        q.empty[pl][n - 1] = page;
        q.empty_pages += n;
        self.empties.fetch_add(n, Ordering::Relaxed);
        true
    }

    /// Takes a parked empty span of `n` pages and `placement`, or null. A span for first touch
    /// comes back untouched (purged here, one `madvise` for the span: its pages are where its
    /// last users touched them, and the next user's first touch must place them); its
    /// `is_zero` says whether it reads as zero.
    pub(crate) fn take_empty(&self, n: usize, placement: SpanPlacement) -> *mut Page {
        if n == 0 || n > EMPTY_SIZES || self.empties.load(Ordering::Relaxed) < n {
            return ptr::null_mut();
        }
        // A parked span for first touch would be purged before it is handed out: its domain
        // maps new memory instead while it can (parked spans go back on the purge schedule).
        let skip = |p: *mut Page| {
            // SAFETY: a parked span of ours, read under the queues' lock.
            let node = unsafe { (*p).node() };
            placement == SpanPlacement::FirstTouch && crate::node::domain(node).maps_instead_of_purging()
        };
        let mut q = self.queues.lock();
        let slot = &mut q.empty[placement as usize][n - 1];
        let p = *slot;
        if !p.is_null() && skip(p) {
            return ptr::null_mut();
        }
        if !p.is_null() {
            // SAFETY: a parked span of ours.
            *slot = unsafe { (*p).next.get() };
            q.empty_pages -= n;
            self.empties.fetch_sub(n, Ordering::Relaxed);
            // SAFETY: as above.
            unsafe { (*p).next.set(ptr::null_mut()) };
        }
        drop(q);
        if !p.is_null() && placement == SpanPlacement::FirstTouch {
            // SAFETY: a parked span, ours now, no block handed out. Its `is_zero` says nothing
            // about what its blocks' users wrote: purge whatever it says.
            unsafe {
                (*p).is_zero.set(false);
                crate::node::domain((*p).node()).make_untouched(p);
            }
        }
        p
    }

    /// Unlinks what should go back to the domains: queued pages that remote frees emptied after
    /// their owner left (looked for only when no page was taken since the last call), and parked empty spans older than `max_age_ms` (all of them with
    /// `force`). Returns them as a list linked through `next`, for the caller to hand back after
    /// the lock is released. `None`: the lock was busy and `wait` was false.
    pub(crate) fn reclaim(&self, now_ms: u64, max_age_ms: u64, force: bool, wait: bool) -> Option<*mut Page> {
        if self.partial.load(Ordering::Relaxed) == 0 && self.empties.load(Ordering::Relaxed) == 0 {
            return Some(ptr::null_mut());
        }
        let mut q = if wait { self.queues.lock() } else { self.queues.try_lock()? };
        let mut out: *mut Page = ptr::null_mut();
        let mut removed = 0;
        let pops = self.pops.load(Ordering::Relaxed);
        // Walking the queues collects every queued page's remote frees (cache misses on blocks
        // another core wrote): only when the arena was idle since the last sweep, or forced.
        let walk = force || pops == self.pops_seen.load(Ordering::Relaxed);
        self.pops_seen.store(pops, Ordering::Relaxed);
        for c in (0..CLASSES).filter(|_| walk) {
            // The inbox's pages join the queue, to be looked at with the others.
            let mut p = self.take_inbox(c);
            while !p.is_null() {
                // SAFETY: taken from the inbox: ours to link, under the lock.
                unsafe {
                    let next = (*p).next.get();
                    self.link(&mut q, p);
                    p = next;
                }
            }
            let mut prev: *mut Page = ptr::null_mut();
            let mut p = q.head[c];
            while !p.is_null() {
                // SAFETY: queued pages are live, owned by nobody, and their links are guarded by
                // the lock we hold; nobody else collects an unowned page's remote list.
                unsafe {
                    let next = (*p).next.get();
                    if crate::layout::is_unused(&*p) {
                        if prev.is_null() {
                            q.head[c] = next;
                        } else {
                            (*prev).next.set(next);
                        }
                        if q.tail[c] == p {
                            q.tail[c] = prev;
                        }
                        if q.head[c].is_null() {
                            self.nonempty[c / 64].fetch_and(!(1 << (c % 64)), Ordering::Relaxed);
                        }
                        (*p).next.set(out);
                        out = p;
                        removed += 1;
                    } else {
                        prev = p;
                    }
                    p = next;
                }
            }
        }
        self.partial.fetch_sub(removed, Ordering::Relaxed);
        let mut freed_pages = 0;
        for pl in 0..PLACEMENTS {
            for n in 0..EMPTY_SIZES {
                let mut prev: *mut Page = ptr::null_mut();
                let mut p = q.empty[pl][n];
                while !p.is_null() {
                    // SAFETY: parked spans, guarded by the lock.
                    unsafe {
                        let next = (*p).next.get();
                        let age = (now_ms as u32).wrapping_sub((*p).parked_ms.get()) as u64;
                        if force || age >= max_age_ms {
                            if prev.is_null() {
                                q.empty[pl][n] = next;
                            } else {
                                (*prev).next.set(next);
                            }
                            (*p).next.set(out);
                            out = p;
                            freed_pages += n + 1;
                        } else {
                            prev = p;
                        }
                        p = next;
                    }
                }
            }
        }
        q.empty_pages -= freed_pages;
        self.empties.fetch_sub(freed_pages, Ordering::Relaxed);
        Some(out)
    }

    /// Pages queued (hint).
    pub(crate) fn len(&self) -> usize {
        self.partial.load(Ordering::Relaxed)
    }

    /// Pages of parked empty spans (hint).
    pub(crate) fn parked_pages(&self) -> usize {
        self.empties.load(Ordering::Relaxed)
    }

    /// The arena's lock, for the fork handlers.
    pub(crate) fn fork_lock(&self) -> &Lock<Queues> {
        &self.queues
    }
}

// ---- the table of arenas ----

/// One arena per CPU id, then one per node id, set up at start-up.
struct Table {
    arenas: *mut Arena,
    n_cpus: usize,
    n_nodes: usize,
}

static TABLE: SetOnce<Table> = SetOnce::new(Table { arenas: ptr::null_mut(), n_cpus: 0, n_nodes: 0 });

/// Publishes the arena table: `n_cpus + n_nodes` initialised arenas at `arenas`.
///
/// # Safety
/// Start-up only, before the allocator is published as ready; the table lives forever.
pub(crate) unsafe fn set_table(arenas: *mut Arena, n_cpus: usize, n_nodes: usize) {
    // SAFETY: the caller's contract is `SetOnce::set`'s.
    unsafe { TABLE.set(Table { arenas, n_cpus, n_nodes }) }
}

/// Number of arenas (CPU arenas, then node arenas).
pub(crate) fn arena_count() -> usize {
    let t = TABLE.get();
    t.n_cpus + t.n_nodes
}

/// The arena layer's locks of fork stage `stage` (see `sys::ForkStage`): every arena's queue lock.
pub(crate) fn fork_locks(stage: ForkStage, f: &mut dyn FnMut(&dyn ForkLock)) {
    if stage == ForkStage::Queues {
        for i in 0..arena_count() {
            f(arena(i).fork_lock());
        }
    }
}

/// Number of per-CPU arenas (the first of the table).
pub(crate) fn cpu_arena_count() -> usize {
    TABLE.get().n_cpus
}

/// Index of CPU `cpu`'s arena.
#[inline]
pub(crate) fn arena_index(cpu: usize) -> usize {
    let n = TABLE.get().n_cpus;
    if n == 0 {
        0
    } else {
        cpu % n
    }
}

/// Index of node `node`'s own arena (for node-targeted heaps and memory-only nodes).
#[inline]
pub(crate) fn node_arena(node: usize) -> usize {
    let t = TABLE.get();
    let node = if config::numa_enabled() && node < t.n_nodes { node } else { node::solo_node() };
    t.n_cpus + node
}

/// The node whose pages arena `i` holds.
pub(crate) fn arena_node(i: usize) -> usize {
    let t = TABLE.get();
    if i >= t.n_cpus {
        i - t.n_cpus
    } else {
        node::node_of_cpu(i)
    }
}

/// Arena number `i` (from [`arena_index`] or [`node_arena`]).
#[inline]
pub(crate) fn arena(i: usize) -> &'static Arena {
    let t = TABLE.get();
    // SAFETY: clamped to the table, which lives forever.
    unsafe { &*t.arenas.add(i.min(t.n_cpus + t.n_nodes - 1)) }
}

/// Queues the pages of list `p` (linked through `next`) in their arenas (a thread that exits or
/// migrates gives up all its pages at once), lock-free.
///
/// # Safety
/// Every page of the list is a small span's head with blocks in use, owned by nobody, in no
/// other list.
pub(crate) unsafe fn push_list(mut p: *mut Page) {
    while !p.is_null() {
        // SAFETY: live span heads (the caller's contract); each is pushed once, after its
        // successor was read.
        unsafe {
            let next = (*p).next.get();
            arena((*p).arena.get() as usize).push(p);
            p = next;
        }
    }
}

/// CPUs whose arenas serve node `node` (none when NUMA is off: every CPU serves the one node,
/// and heaps look in their own arena and the node's).
pub(crate) fn cpus_of_node(node: usize) -> &'static [u32] {
    if !config::numa_enabled() {
        return &[];
    }
    topology::get().cpus_of(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arena of our own, outside the table (all-zero bytes but the lock, as `init` says).
    fn arena_alone() -> Box<Arena> {
        // SAFETY: all-zero bytes are a valid empty arena but for the lock, which `init` sets.
        let mut a: Box<Arena> = unsafe { Box::new(core::mem::zeroed()) };
        a.init();
        a
    }

    fn page_of_class(c: usize) -> Box<Page> {
        let p = Box::new(Page::empty());
        p.class.set(c as u8);
        p
    }

    /// The pages of list `p` (linked through `next`), in order.
    fn list(mut p: *mut Page) -> Vec<*mut Page> {
        let mut v = Vec::new();
        while !p.is_null() {
            v.push(p);
            // SAFETY: our test pages.
            p = unsafe { (*p).next.get() };
        }
        v
    }

    #[test]
    fn the_inbox_gives_every_page_of_one_class_at_once_without_the_lock() {
        let a = arena_alone();
        let (c1, c2) = (3usize, 70usize);
        let pages: Vec<Box<Page>> = [c1, c2, c1, c1].iter().map(|&c| page_of_class(c)).collect();
        let ptrs: Vec<*mut Page> = pages.iter().map(|p| &**p as *const Page as *mut Page).collect();
        assert!(a.pop(c1).is_null(), "an empty arena gives nothing");
        for &p in &ptrs {
            // SAFETY: our pages, in no list.
            unsafe { a.push(p) };
        }
        assert_eq!(a.partial.load(Ordering::Relaxed), 4);
        assert!(!a.may_have(c1) && !a.may_have(c2), "the locked queues stay empty");
        let g = a.queues.lock();
        assert_eq!(
            list(a.pop(c1)),
            vec![ptrs[3], ptrs[2], ptrs[0]],
            "the whole inbox, newest first, while the lock is held"
        );
        assert_eq!(list(a.pop(c2)), vec![ptrs[1]]);
        drop(g);
        assert!(a.pop(c1).is_null() && a.pop(c2).is_null());
        assert_eq!(a.partial.load(Ordering::Relaxed), 0);
        // SAFETY: as above.
        unsafe { a.push(ptrs[0]) };
        assert_eq!(list(a.pop(c1)), vec![ptrs[0]], "pushed again after it was taken");
    }

    #[test]
    fn queues_are_first_in_first_out_per_class_and_the_hint_follows_them() {
        let a = arena_alone();
        let (c1, c2) = (3usize, 70usize); // two classes in different words of the hint
        let pages: Vec<Box<Page>> = [c1, c2, c1, c1].iter().map(|&c| page_of_class(c)).collect();
        let ptrs: Vec<*mut Page> = pages.iter().map(|p| &**p as *const Page as *mut Page).collect();
        // As a sweep queues inbox pages: counted, then linked under the lock.
        let queue = |p: *mut Page| {
            a.partial.fetch_add(1, Ordering::Relaxed);
            let mut q = a.queues.lock();
            // SAFETY: our pages, in no list, under the lock.
            unsafe { a.link(&mut q, p) };
        };
        assert!(!a.may_have(c1) && !a.may_have(c2));
        for &p in &ptrs {
            queue(p);
        }
        assert!(a.may_have(c1) && a.may_have(c2));
        assert!(!a.may_have(c1 + 1), "the hint names only queued classes");
        assert_eq!(a.partial.load(Ordering::Relaxed), 4);
        assert_eq!(a.pop(c1), ptrs[0], "oldest first");
        assert_eq!(a.pop(c1), ptrs[2]);
        assert_eq!(a.pop(c2), ptrs[1]);
        assert!(!a.may_have(c2), "an emptied queue clears its hint");
        assert_eq!(a.pop(c1), ptrs[3]);
        assert!(a.pop(c1).is_null());
        assert!(!a.may_have(c1));
        assert_eq!(a.partial.load(Ordering::Relaxed), 0);
        // A page queued again after its queue emptied is found again (tail reset).
        queue(ptrs[0]);
        assert_eq!(a.pop(c1), ptrs[0]);
    }
}
