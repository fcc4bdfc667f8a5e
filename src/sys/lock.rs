//! The allocator's lock: spins briefly, then sleeps on a futex; never allocates; records its
//! holder, so fork handlers can tell a lock the forking thread itself holds (fork from a signal
//! handler that interrupted it) from one another thread holds.
//!
//! The word is 0 when free, else the holder's thread id ([`os::thread_id`], below 2^30) with
//! [`WAITERS`] set once some thread sleeps or may sleep on it (the classic three-state futex
//! mutex of Drepper's "Futexes Are Tricky", with the holder's id as the "locked" state, as
//! glibc's robust mutexes keep it). Unlock is one `swap` and, only when someone waits, one
//! `futex_wake`.
//!
//! Spinning: up to [`SPINS`] rounds of a growing number of `pause`s while the holder is likely
//! running (an uncontended critical section here is tens of nanoseconds); then the waiter sleeps,
//! so a descheduled holder (more threads than CPUs, a virtual CPU taken away) costs the waiters
//! nothing but the wake-up. This is what parking_lot's WordLock and glibc's adaptive mutex do;
//! plain spin-and-yield (what this file replaced) collapses when threads outnumber CPUs.

use core::cell::UnsafeCell;
use core::hint::spin_loop;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::sys::contention;
use crate::sys::os::{self, Os, Sys};

/// Set in the word while a thread sleeps (or is about to sleep) on the lock.
const WAITERS: u32 = 1 << 31;
/// Spin rounds before sleeping.
const SPINS: u32 = 6;

/// A mutual-exclusion lock; `const`-constructible and allocation-free.
pub(crate) struct Lock<T> {
    word: AtomicU32,
    kind: contention::LockKind,
    /// Taken by the fork prepare handler (and to be released by the parent/child handlers).
    fork_held: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&mut T` to one holder at a time, so `T: Send` suffices.
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: moving the lock moves the value, which is `Send`.
unsafe impl<T: Send> Send for Lock<T> {}

impl<T> Lock<T> {
    /// A free lock of `kind` (which counter it counts under with `contention-stats`).
    pub(crate) const fn new(kind: contention::LockKind, value: T) -> Self {
        Self { word: AtomicU32::new(0), kind, fork_held: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Takes the lock.
    #[inline]
    pub(crate) fn lock(&self) -> Guard<'_, T> {
        let me = os::thread_id();
        contention::lock_taken(self.kind);
        if self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended(me);
        }
        Guard { lock: self }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<Guard<'_, T>> {
        let me = os::thread_id();
        if self.word.load(Ordering::Relaxed) == 0
            && self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            contention::lock_taken(self.kind);
            Some(Guard { lock: self })
        } else {
            None
        }
    }

    #[cold]
    fn lock_contended(&self, me: u32) {
        if self.word.load(Ordering::Relaxed) & !WAITERS == me {
            // Waiting would wait for ourselves: the thread is inside the allocator holding this
            // lock and called it again, which only a signal handler can do (`reentry.rs`).
            os::fatal(format_args!(
                "malloc or free re-entered from a signal handler while this thread held an allocator lock (a handler that allocates must not interrupt these calls; block the signal around them)"
            ));
        }
        contention::lock_contended(self.kind);
        for round in 0..SPINS {
            for _ in 0..(1u32 << round) {
                spin_loop();
            }
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 && self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return;
            }
        }
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                // Others may still sleep: keep WAITERS so our unlock wakes one.
                if self.word.compare_exchange(0, me | WAITERS, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return;
                }
                continue;
            }
            if v & WAITERS == 0
                && self.word.compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            contention::futex_wait();
            Sys::futex_wait(&self.word, v | WAITERS, None);
        }
    }

    /// Whether the calling thread holds the lock.
    pub(crate) fn held_by_me(&self) -> bool {
        self.word.load(Ordering::Relaxed) & !WAITERS == os::thread_id()
    }

    /// Whether some thread holds the lock (a hint).
    #[allow(dead_code)]
    pub(crate) fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    #[inline]
    fn unlock(&self) {
        if self.word.swap(0, Ordering::Release) & WAITERS != 0 {
            Sys::futex_wake(&self.word, 1);
        }
    }

    /// Fork prepare handler: takes the lock and keeps it across `fork` — unless the calling
    /// thread holds it already (fork from a signal handler that interrupted a critical section:
    /// waiting would never end; the interrupted code finishes and releases it in both processes).
    pub(crate) fn fork_acquire(&self) {
        if self.held_by_me() {
            self.fork_held.store(false, Ordering::Relaxed);
        } else {
            core::mem::forget(self.lock());
            self.fork_held.store(true, Ordering::Relaxed);
        }
    }

    /// Fork parent and child handlers: releases what [`Self::fork_acquire`] took.
    ///
    /// # Safety
    /// After `fork_acquire` in this thread (in the child: in the parent image of this thread);
    /// no reference obtained through the forgotten guard is used afterwards.
    pub(crate) unsafe fn fork_release(&self) {
        if self.fork_held.swap(false, Ordering::Relaxed) {
            self.unlock();
        }
    }
}

/// Proof of holding a [`Lock`]; unlocks on drop.
pub(crate) struct Guard<'a, T> {
    lock: &'a Lock<T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive ownership of the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive ownership of the lock.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

/// The fork handlers' view of a lock, whatever it guards (`thread/init.rs` takes every lock
/// of the allocator in `fork_prepare` and releases them in `fork_parent` and `fork_child`).
pub(crate) trait ForkLock {
    /// Takes the lock for the fork (a lock the forking thread holds itself is left alone).
    fn acquire(&self);
    /// Whether the calling thread holds it.
    fn held_by_me(&self) -> bool;
    /// Releases what `acquire` took.
    ///
    /// # Safety
    /// After `acquire` by this thread (or its image in the child).
    unsafe fn release(&self);
    /// Whether some thread holds it.
    #[cfg(test)]
    fn locked(&self) -> bool;
}

impl<T> ForkLock for Lock<T> {
    fn acquire(&self) {
        self.fork_acquire()
    }
    fn held_by_me(&self) -> bool {
        Lock::held_by_me(self)
    }
    unsafe fn release(&self) {
        // SAFETY: forwarded.
        unsafe { self.fork_release() }
    }
    #[cfg(test)]
    fn locked(&self) -> bool {
        self.is_locked()
    }
}

/// The order in which the fork handlers take the allocator's locks, stage by stage (each layer
/// names its locks of each stage: jemalloc's `*_prefork` stages): a lock held while another is
/// taken comes in an earlier stage than that other one, so the handlers never wait in the
/// opposite order of a thread that allocates.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ForkStage {
    /// Process-wide locks held while refilling (start-up, orphan and node heaps, heap pool).
    Outer,
    /// The domains' span locks.
    Spans,
    /// The arenas' queue locks.
    Queues,
    /// Locks under which no other allocator lock is taken.
    Leaves,
}

impl ForkStage {
    /// Every stage, in the order the prepare handler takes them.
    pub(crate) const ALL: [ForkStage; 4] = [ForkStage::Outer, ForkStage::Spans, ForkStage::Queues, ForkStage::Leaves];
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn many_threads_count_exactly() {
        let l = Arc::new(Lock::new(contention::LockKind::Other, 0u64));
        let threads: std::vec::Vec<_> = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        *l.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*l.lock(), 160_000);
    }

    #[test]
    fn holder_is_known() {
        let l = Lock::new(contention::LockKind::Other, ());
        assert!(!l.held_by_me());
        let g = l.lock();
        assert!(l.held_by_me());
        assert!(l.try_lock().is_none());
        let l2 = &l;
        std::thread::scope(|s| {
            s.spawn(|| assert!(!l2.held_by_me()));
        });
        drop(g);
        assert!(!l.is_locked());
    }
}
