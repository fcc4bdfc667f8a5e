//! Per-CPU arenas: lists of partly used pages that no thread owns, per size class.
//!
//! Pages land here when their owner thread exits or migrates to another node; a heap that needs
//! a page for a class looks in the arena of the CPU it runs on, then in the other arenas of the
//! same node, before asking the node's domain for a fresh span. Pages in an arena keep receiving
//! remote frees (lock-free); the arena's lock only guards the list links. FIFO order gives queued
//! pages the longest time to collect frees before they are reused.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::segment::Page;
use crate::size_class::CLASSES;
use crate::spin::SpinLock;

pub(crate) struct Queues {
    head: [*mut Page; CLASSES],
    tail: [*mut Page; CLASSES],
}
// SAFETY: pages in the queues are guarded by the arena lock.
unsafe impl Send for Queues {}

/// One CPU's arena. All-zero bytes are a valid empty arena.
pub(crate) struct Arena {
    queues: SpinLock<Queues>,
    /// Pages queued (a hint read without the lock).
    count: AtomicUsize,
}

impl Arena {
    /// Queues an unowned page.
    ///
    /// # Safety
    /// `page` is a small span's head, owned by nobody, in no list.
    pub(crate) unsafe fn push(&self, page: *mut Page) {
        let mut q = self.queues.lock();
        // SAFETY: the page is ours to link; queue pages are guarded by the lock.
        unsafe {
            let c = (*page).class.get() as usize;
            (*page).next.set(ptr::null_mut());
            (*page).prev.set(ptr::null_mut());
            if q.tail[c].is_null() {
                q.head[c] = page;
            } else {
                (*q.tail[c]).next.set(page);
            }
            q.tail[c] = page;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the oldest queued page of class `c`, if any.
    pub(crate) fn pop(&self, c: usize) -> *mut Page {
        if self.count.load(Ordering::Relaxed) == 0 {
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
                }
                (*p).next.set(ptr::null_mut());
            }
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        p
    }

    /// Collects the remote frees of every queued page and unlinks the pages that became empty
    /// (their blocks were all freed by other threads after the owner left). Returns them as a
    /// list linked through `next`, for the caller to hand back to their domains after the lock
    /// is released. `None`: the lock was busy and `wait` was false.
    pub(crate) fn reclaim(&self, wait: bool) -> Option<*mut Page> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return Some(ptr::null_mut());
        }
        let mut q = if wait { self.queues.lock() } else { self.queues.try_lock()? };
        let mut empty: *mut Page = ptr::null_mut();
        let mut removed = 0;
        for c in 0..CLASSES {
            let mut prev: *mut Page = ptr::null_mut();
            let mut p = q.head[c];
            while !p.is_null() {
                // SAFETY: queued pages are live, owned by nobody, and their links are guarded by
                // the lock we hold; nobody else collects an unowned page's remote list.
                unsafe {
                    let next = (*p).next.get();
                    if crate::page::is_unused(&*p) {
                        if prev.is_null() {
                            q.head[c] = next;
                        } else {
                            (*prev).next.set(next);
                        }
                        if q.tail[c] == p {
                            q.tail[c] = prev;
                        }
                        (*p).next.set(empty);
                        empty = p;
                        removed += 1;
                    } else {
                        prev = p;
                    }
                    p = next;
                }
            }
        }
        self.count.fetch_sub(removed, Ordering::Relaxed);
        Some(empty)
    }

    /// Pages queued (hint).
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The lock, for fork handlers.
    pub(crate) fn lock_for_fork(&self) {
        core::mem::forget(self.queues.lock());
    }
    /// # Safety
    /// Only after `lock_for_fork` by this thread.
    pub(crate) unsafe fn unlock_after_fork(&self) {
        // SAFETY: forwarded.
        unsafe { self.queues.force_unlock() }
    }
}
