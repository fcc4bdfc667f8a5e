//! The one intrusive doubly linked list: a heap's page queues, a domain's segment lists, the
//! live heaps of the heap pool. The links live in the elements ([`Linked`]); the list holds the
//! two ends in cells, so that the owner (a thread for its heap, a lock holder for the others)
//! changes it through a shared reference. Nothing is allocated; every operation is O(1) except
//! [`List::iter`].

use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr;

/// An element of a [`List`]: its two links.
pub(crate) trait Linked: Sized {
    /// The link to the next element (null at the end).
    fn next_link(&self) -> &Cell<*mut Self>;
    /// The link to the previous element (null at the front).
    fn prev_link(&self) -> &Cell<*mut Self>;
}

/// A doubly linked list of `T`s through their own links. Not `Sync`: whoever shares one guards
/// it (a lock, or one owning thread).
pub(crate) struct List<T: Linked> {
    head: Cell<*mut T>,
    tail: Cell<*mut T>,
    _t: PhantomData<*mut T>,
}

impl<T: Linked> List<T> {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        List { head: Cell::new(ptr::null_mut()), tail: Cell::new(ptr::null_mut()), _t: PhantomData }
    }

    /// The first element (null when empty).
    #[inline]
    pub(crate) fn head(&self) -> *mut T {
        self.head.get()
    }

    /// Whether the list is empty.
    #[inline]
    /// Exchanges the contents of two lists (the elements' links are untouched).
    pub(crate) fn swap(&self, other: &Self) {
        self.head.swap(&other.head);
        self.tail.swap(&other.tail);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.get().is_null()
    }

    /// Forgets every element (their links are left as they are).
    pub(crate) fn clear(&self) {
        self.head.set(ptr::null_mut());
        self.tail.set(ptr::null_mut());
    }

    /// Puts `x` at the front.
    ///
    /// # Safety
    /// `x` is valid, in no list; the caller has exclusive access to the list and its elements.
    pub(crate) unsafe fn push_front(&self, x: *mut T) {
        let head = self.head.get();
        // SAFETY: the caller's contract; `head` is an element of the list.
        unsafe {
            (*x).prev_link().set(ptr::null_mut());
            (*x).next_link().set(head);
            if head.is_null() {
                self.tail.set(x);
            } else {
                (*head).prev_link().set(x);
            }
        }
        self.head.set(x);
    }

    /// Puts `x` at the back.
    ///
    /// # Safety
    /// As [`push_front`](Self::push_front).
    pub(crate) unsafe fn push_back(&self, x: *mut T) {
        let tail = self.tail.get();
        // SAFETY: the caller's contract; `tail` is an element of the list.
        unsafe {
            (*x).next_link().set(ptr::null_mut());
            (*x).prev_link().set(tail);
            if tail.is_null() {
                self.head.set(x);
            } else {
                (*tail).next_link().set(x);
            }
        }
        self.tail.set(x);
    }

    /// Takes `x` out of the list (its links are cleared).
    ///
    /// # Safety
    /// `x` is an element of this list; exclusive access as for [`push_front`](Self::push_front).
    pub(crate) unsafe fn remove(&self, x: *mut T) {
        // SAFETY: the caller's contract: `x` and its neighbours are elements of the list.
        unsafe {
            let (p, n) = ((*x).prev_link().get(), (*x).next_link().get());
            if p.is_null() {
                self.head.set(n);
            } else {
                (*p).next_link().set(n);
            }
            if n.is_null() {
                self.tail.set(p);
            } else {
                (*n).prev_link().set(p);
            }
            (*x).next_link().set(ptr::null_mut());
            (*x).prev_link().set(ptr::null_mut());
        }
    }

    /// Moves element `x` to the back.
    ///
    /// # Safety
    /// As [`remove`](Self::remove).
    pub(crate) unsafe fn move_to_back(&self, x: *mut T) {
        if self.tail.get() != x {
            // SAFETY: forwarded.
            unsafe {
                self.remove(x);
                self.push_back(x);
            }
        }
    }

    /// The elements, front to back. The list must not change while the iterator is used.
    pub(crate) fn iter(&self) -> Iter<'_, T> {
        Iter { next: self.head.get(), _list: PhantomData }
    }
}

/// Iterator over a [`List`]'s elements (raw pointers, front to back).
pub(crate) struct Iter<'a, T: Linked> {
    next: *mut T,
    _list: PhantomData<&'a List<T>>,
}

impl<T: Linked> Iterator for Iter<'_, T> {
    type Item = *mut T;
    fn next(&mut self) -> Option<*mut T> {
        let x = self.next;
        if x.is_null() {
            return None;
        }
        // SAFETY: `x` is an element of the list, which does not change during the iteration.
        self.next = unsafe { (*x).next_link().get() };
        Some(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E {
        v: u32,
        next: Cell<*mut E>,
        prev: Cell<*mut E>,
    }
    impl Linked for E {
        fn next_link(&self) -> &Cell<*mut E> {
            &self.next
        }
        fn prev_link(&self) -> &Cell<*mut E> {
            &self.prev
        }
    }
    fn e(v: u32) -> E {
        E { v, next: Cell::new(ptr::null_mut()), prev: Cell::new(ptr::null_mut()) }
    }
    fn values(l: &List<E>) -> Vec<u32> {
        // SAFETY: elements of the test's list, alive for the whole test.
        l.iter().map(|x| unsafe { (*x).v }).collect()
    }

    #[test]
    fn push_remove_move() {
        let mut xs = [e(1), e(2), e(3), e(4)];
        let [a, b, c, d] = xs.each_mut().map(|x| x as *mut E);
        let l = List::new();
        // SAFETY: the elements live in `xs` for the whole test; one thread.
        unsafe {
            l.push_back(b);
            l.push_front(a);
            l.push_back(c);
            l.push_back(d);
            assert_eq!(values(&l), [1, 2, 3, 4]);
            l.remove(a);
            l.remove(d);
            assert_eq!(values(&l), [2, 3]);
            l.move_to_back(b);
            assert_eq!(values(&l), [3, 2]);
            l.remove(b);
            l.remove(c);
            assert!(l.is_empty());
            l.push_back(d);
            assert_eq!(values(&l), [4]);
            assert_eq!(l.head(), d);
        }
    }
}
