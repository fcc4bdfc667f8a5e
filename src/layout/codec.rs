//! The free-list link codec, in one place (snmalloc's `freelist.h` is the model): a free block's
//! first word holds `next ^ address of the block ^ key`, with a random odd per-process key. A
//! link overwritten by a heap overflow or a write after free then decodes to an address the
//! attacker did not choose, which `page.rs` checks against the block's span before following
//! it; a freed block carries the mark of a valid encoding, which the double-free screen reads.
//!
//! The measurement build (`RUSTFLAGS=--cfg domalloc_plain_links`, never one to run) stores plain
//! links, to price the encoding.

use core::sync::atomic::{AtomicUsize, Ordering};

/// The per-process key mixed into every stored link (odd: never 0). It is read on every
/// allocation and free and written once, so it gets a cache line of its own: a neighbour that is
/// written (a lock, a pool head) would otherwise make every core miss on it.
#[repr(align(128))]
struct KeyLine(AtomicUsize);

static LINK_KEY: KeyLine = KeyLine(AtomicUsize::new(0x9e37_79b9_7f4a_7c15));

/// Takes `LINK_KEY`'s address so that the optimiser keeps it whole (with its alignment) instead of
/// splitting the one-field struct into a bare word that the linker packs beside other statics.
#[used]
static LINK_KEY_LINE: &KeyLine = &LINK_KEY;

/// Sets the link key. Called once during initialisation, before any block exists.
pub(crate) fn set_link_key(k: u64) {
    LINK_KEY.0.store(k as usize | 1, Ordering::Relaxed);
}

/// The link key.
#[inline(always)]
pub(crate) fn link_key() -> usize {
    LINK_KEY.0.load(Ordering::Relaxed)
}

/// The codec with a key loaded (a register's worth: `Copy`, passed by value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Codec(usize);

impl Codec {
    /// The process's codec.
    #[inline(always)]
    pub(crate) fn current() -> Self {
        Codec(link_key())
    }

    /// The codec for a key already loaded (`link_key()`, kept in a register across a loop).
    #[inline(always)]
    pub(crate) fn with(key: usize) -> Self {
        Codec(key)
    }

    /// A codec with key `key` (tests; `key` odd).
    #[cfg(test)]
    pub(crate) const fn with_key(key: usize) -> Self {
        Codec(key)
    }

    /// The word stored in the block at `at` to link it to `next` (an address or 0).
    #[inline(always)]
    pub(crate) fn encode(self, at: usize, next: usize) -> usize {
        #[cfg(domalloc_plain_links)]
        {
            let _ = at;
            next
        }
        #[cfg(not(domalloc_plain_links))]
        {
            next ^ at ^ self.0
        }
    }

    /// The link a word stored in the block at `at` stands for (not validated: the caller
    /// checks it against the span).
    #[inline(always)]
    pub(crate) fn decode(self, at: usize, word: usize) -> usize {
        #[cfg(domalloc_plain_links)]
        {
            let _ = at;
            word
        }
        #[cfg(not(domalloc_plain_links))]
        {
            word ^ at ^ self.0
        }
    }

    /// Reads and decodes the first word of the block at `at`.
    ///
    /// # Safety
    /// `at` is a mapped block of at least 8 bytes the caller may read.
    #[inline(always)]
    pub(crate) unsafe fn read(self, at: *mut u8) -> usize {
        // SAFETY: the caller's contract.
        self.decode(at as usize, unsafe { *(at as *const usize) })
    }

    /// Encodes `next` into the first word of the block at `at`.
    ///
    /// # Safety
    /// `at` is a block of at least 8 bytes the caller may write.
    #[inline(always)]
    pub(crate) unsafe fn write(self, at: *mut u8, next: usize) {
        // SAFETY: the caller's contract.
        unsafe { *(at as *mut usize) = self.encode(at as usize, next) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_every_alignment() {
        let c = Codec::with_key(0x5bd1_e995_1234_5679);
        for at in [0x1000usize, 0x7fff_f000_0010, 0x7fff_f000_0018, 0x10] {
            for next in [0usize, at + 16, at - 16, 0x7fff_ffff_fff0] {
                assert_eq!(c.decode(at, c.encode(at, next)), next);
            }
        }
    }

    #[cfg(not(domalloc_plain_links))]
    #[test]
    fn stored_words_do_not_show_the_link() {
        // A link is never stored as itself, null included (else a zeroed block would read as
        // the end of a free list), and the same link reads differently in two blocks.
        let c = Codec::with_key(0x5bd1_e995_1234_5679);
        let (a, b) = (0x7f00_0000_1000usize, 0x7f00_0000_1040usize);
        assert_ne!(c.encode(a, 0), 0);
        assert_ne!(c.encode(a, b), b);
        assert_ne!(c.encode(a, 0x7f00_0000_2000), c.encode(b, 0x7f00_0000_2000));
        // A one-byte overwrite of the stored word moves the decoded link by that byte's bits
        // only in the low byte: it stays in the 256-byte neighbourhood of the real link only
        // by the attacker knowing the key, which the span check of page.rs then confines.
        let w = c.encode(a, b) ^ 0xff;
        assert_eq!(c.decode(a, w) ^ b, 0xff);
    }

    #[test]
    fn memory_round_trip() {
        let c = Codec::current();
        let mut blocks = [0usize; 4];
        let at = blocks.as_mut_ptr().cast::<u8>();
        let next = blocks[2..].as_ptr() as usize;
        // SAFETY: `at` is our array's first word.
        unsafe {
            c.write(at, next);
            assert_eq!(c.read(at), next);
            c.write(at, 0);
            assert_eq!(c.read(at), 0);
        }
    }
}
