//! Who places memory, and finding out where it went.
//!
//! * A policy (`DOMALLOC_POLICY`, or one the process inherited from numactl) is applied to whole
//!   ranges before they are touched ([`apply_policy`]); node-targeted blocks are bound to their
//!   node ([`place_range`]). Where the OS has no per-range placement (the BSDs) the range is
//!   first-touched under a per-thread placement instead.
//! * Everything else of 16 KiB and more is placed by the kernel's first touch, and a freed block's
//!   home is where its pages really are: [`home_of`] asks the kernel once per freed block or span
//!   (`move_pages` without target nodes on Linux), sampling up to [`SAMPLES`] pages.

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::config;
use crate::config::options::Policy;
use crate::layout::size_class::{class_of, class_size, is_placed, SMALL_MAX};
use crate::layout::SpanPlacement;
use crate::sys::os::{self, Os, Placement, Sys, OS_PAGE, PAGE_ABSENT};

/// Pages asked about per block: all of them up to this many, else evenly spaced ones.
pub(crate) const SAMPLES: usize = 32;

/// Where the pages of a freed range are, as far as the kernel says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Home {
    /// No page is resident (never touched, or purged): anyone's first touch places it.
    Untouched,
    /// Every resident page asked about is on this node.
    On(usize),
    /// Resident pages on several nodes; the one with the most.
    Mixed(usize),
    /// The OS cannot tell.
    Unknown,
}

/// Asks the kernel where the pages of `[p, p + len)` are (one system call).
pub(crate) fn home_of(p: *const u8, len: usize) -> Home {
    if !crate::config::page_queries() {
        return Home::Unknown;
    }
    let pages = len.div_ceil(OS_PAGE).max(1);
    let k = pages.min(SAMPLES);
    let mut addrs = [0usize; SAMPLES];
    for (i, a) in addrs[..k].iter_mut().enumerate() {
        *a = (p as usize & !(OS_PAGE - 1)) + (i * pages / k) * OS_PAGE;
    }
    let mut nodes = [PAGE_ABSENT; SAMPLES];
    crate::sys::syscall(crate::sys::Syscall::MovePages);
    if !Sys::page_nodes(&addrs[..k], &mut nodes[..k]) {
        return Home::Unknown;
    }
    // The node with the most pages (ids may be large: count in a small table of distinct ids).
    let mut ids = [0i32; SAMPLES];
    let mut counts = [0u32; SAMPLES];
    let mut distinct = 0;
    for &n in &nodes[..k] {
        if n == PAGE_ABSENT {
            continue;
        }
        match ids[..distinct].iter().position(|&x| x == n) {
            Some(j) => counts[j] += 1,
            None => {
                ids[distinct] = n;
                counts[distinct] = 1;
                distinct += 1;
            }
        }
    }
    if distinct == 0 {
        return Home::Untouched;
    }
    let best = (0..distinct).max_by_key(|&j| (counts[j], core::cmp::Reverse(ids[j]))).unwrap_or(0);
    let node = ids[best] as usize;
    if distinct == 1 {
        Home::On(node)
    } else {
        Home::Mixed(node)
    }
}

/// Applies the placement for memory of domain `node`: the configured policy when it applies to
/// this range (`policy_applies`), else "this node" (preferred) so pages land on the domain's node
/// whoever touches them first.
pub(crate) fn apply_policy(p: *mut u8, size: usize, node: usize, policy_applies: bool) {
    if policy_applies && crate::config::options::get().tier.is_some() {
        place_range(p, size, Placement::Preferred(tier_node(size, node)));
        return;
    }
    let (policy, _) = crate::config::policy();
    if policy_applies && !matches!(policy, Policy::Local) {
        place_range(p, size, crate::node::domain::placement_of(&policy));
        return;
    }
    if !crate::config::numa_enabled() {
        return;
    }
    // Only bind where the OS can do it per range, without touching the pages now.
    crate::sys::syscall(crate::sys::Syscall::Mbind);
    // SAFETY: our own fresh mapping.
    unsafe { Sys::place(p, size, Placement::Preferred(node)) };
}

/// Applies `placement` to an untouched range: per range where the OS can (Linux `mbind`), else
/// by first-touching each page while the thread's placement points at the page's node (the
/// BSDs). Returns whether the placement could be applied.
pub(crate) fn place_range(p: *mut u8, len: usize, placement: Placement<'_>) -> bool {
    crate::sys::syscall(crate::sys::Syscall::Mbind);
    // SAFETY: the caller passes an untouched range of its own mapping.
    if unsafe { Sys::place(p, len, placement) } {
        return true;
    }
    let granule = Sys::PLACEMENT_GRANULE.max(OS_PAGE);
    let pages = len.div_ceil(granule);
    let node_for = |i: usize| -> Option<usize> {
        match placement {
            Placement::Local => None,
            Placement::Preferred(n) => Some(n),
            Placement::PreferredMany(m) => m.nth_cyclic(0),
            Placement::Bind(m) => m.nth_cyclic(0),
            Placement::Interleave(m) => m.nth_cyclic(i),
        }
    };
    let mut i = 0;
    while i < pages {
        let Some(node) = node_for(i) else { return true };
        // Run of pages for the same node.
        let mut j = i + 1;
        while j < pages && node_for(j) == Some(node) {
            j += 1;
        }
        let (from, to) = (i, j);
        let ok = Sys::with_thread_placement(node, &mut || {
            for k in from..to {
                // Touch every OS page of the granule (each needs its first fault here).
                let mut off = k * granule;
                while off < ((k + 1) * granule).min(len) {
                    // SAFETY: inside the caller's untouched range; writing zero keeps it zero.
                    unsafe { ptr::write_volatile(p.add(off), 0) };
                    off += OS_PAGE;
                }
            }
        });
        if !ok {
            return false;
        }
        i = j;
    }
    true
}

// ---- the tier policy (`DOMALLOC_POLICY=hbw...`) ----

/// Bytes of memory the tier policy placed on high-bandwidth nodes, placed on the thread's own
/// node instead (the budget was spent), and how many times that happened. Placements are whole
/// segments (4 MiB) and own mappings of blocks: what the kernel was asked for, not pages touched.
static TIER_HBW_BYTES: AtomicU64 = AtomicU64::new(0);
static TIER_SPILL_BYTES: AtomicU64 = AtomicU64::new(0);
static TIER_SPILLS: AtomicU64 = AtomicU64::new(0);

/// Where the tier policy puts `size` bytes for a thread of node `node`: its nearest
/// high-bandwidth node while the process budget lasts, else `node` itself (a spill; never
/// another socket's high-bandwidth node). `node` too when there is no high-bandwidth node.
fn tier_node(size: usize, node: usize) -> usize {
    let Some(t) = crate::config::options::get().tier else { return node };
    let Some(hbw) = crate::config::topology::get().hbw_node(node) else { return node };
    let size = size as u64;
    let fits = t.budget == 0
        || TIER_HBW_BYTES
            .fetch_update(Relaxed, Relaxed, |used| (used + size <= t.budget).then_some(used + size))
            .is_ok();
    if fits {
        if t.budget == 0 {
            TIER_HBW_BYTES.fetch_add(size, Relaxed);
        }
        hbw
    } else {
        TIER_SPILL_BYTES.fetch_add(size, Relaxed);
        TIER_SPILLS.fetch_add(1, Relaxed);
        node
    }
}

/// The tier policy's counters: bytes placed on high-bandwidth nodes, bytes spilled to the
/// threads' own nodes, spills. `None` when the policy is off.
pub(crate) fn tier_counts() -> Option<(u64, u64, u64)> {
    crate::config::options::get().tier?;
    Some((TIER_HBW_BYTES.load(Relaxed), TIER_SPILL_BYTES.load(Relaxed), TIER_SPILLS.load(Relaxed)))
}

/// Gives back the pages of a free block except its first (which holds its pool link): for
/// blocks waiting in a home pool while the program idles.
///
/// # Safety
/// `[p, p + len)` is a free block of ours whose pages past the first nobody uses.
pub(crate) unsafe fn purge_tail(p: *mut u8, len: usize) {
    if len > OS_PAGE {
        // SAFETY: the caller's contract.
        unsafe { os::purge(p.add(OS_PAGE), len - OS_PAGE, os::PurgeMode::DontNeed) };
    }
}

/// What is being placed, for [`span_placement`] and [`huge_by_policy`]: the one placement
/// decision for every kind of block.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BlockKind {
    /// A span of small blocks of class `class`, for a heap whose thread is `pinned` or not.
    Small { class: usize, pinned: bool },
    /// A large block (one span) of `size` bytes.
    Large { size: usize },
}

/// How the span of a small or large block is placed:
/// - covered by the policy in force (`DOMALLOC_POLICY`, also the tier policy): from segments
///   with the policy applied;
/// - small blocks of the placed classes (16 KiB and more) on a multi-node machine, for a thread
///   not pinned by the node API: first touch (fresh or purged memory, so the toucher's node
///   decides);
/// - large blocks: first touch too (also on one node: no transparent huge pages, so a block
///   costs the pages the program touches), unless `DOMALLOC_THP=1` on one node, which keeps
///   them in bound segments with huge pages;
/// - everything else: bound to the heap's node.
#[inline]
pub(crate) fn span_placement(kind: BlockKind) -> SpanPlacement {
    match kind {
        BlockKind::Small { class, pinned } => {
            if policy_covers(class_size(class)) {
                SpanPlacement::Policy
            } else if config::numa_enabled() && is_placed(class) && !pinned {
                SpanPlacement::FirstTouch
            } else {
                SpanPlacement::Bound
            }
        }
        BlockKind::Large { size } => {
            if policy_covers(size) {
                SpanPlacement::Policy
            } else if config::options::get().thp && !config::numa_enabled() {
                SpanPlacement::Bound
            } else {
                SpanPlacement::FirstTouch
            }
        }
    }
}

/// Whether a block of `size` bytes above the small sizes gets its own mapping with the policy
/// applied (`placed`: bound by the node API, which the policy never overrides). `threshold_only`:
/// asked before choosing between a large and a huge block, when only a policy with a size
/// threshold (`@<size>`) sends large sizes to their own mapping.
#[inline]
pub(crate) fn huge_by_policy(size: usize, placed: bool, threshold_only: bool) -> bool {
    !placed && policy_covers(size) && (!threshold_only || config::policy().1 > 0)
}

/// Whether the policy in force applies to blocks of `size` bytes. Small blocks are covered per
/// size class: a class is covered when its block size reaches the threshold (so the fast path,
/// which never looks at the policy, gets its spans from the policy's segments).
#[inline]
pub(crate) fn policy_covers(size: usize) -> bool {
    if let Some(t) = &crate::config::options::get().tier {
        // The tier policy covers blocks below its size (small ones per class).
        let size = if size <= SMALL_MAX { class_size(class_of(size.max(1))) } else { size };
        return config::numa_enabled() && size < t.below;
    }
    let (policy, min) = config::policy();
    if matches!(policy, Policy::Local) {
        return false;
    }
    min == 0 || if size <= SMALL_MAX { class_size(class_of(size.max(1))) >= min } else { size >= min }
}
