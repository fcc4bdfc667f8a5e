//! Size classes: which block size serves a request, and how many pages a class's span takes.
//!
//! Classes are 8 bytes apart up to 128 B, then eight per power of two (steps of 1/8) up to
//! 16 KiB; from 16 KiB on every class is a multiple of the 4 KiB OS page, so no OS page is
//! shared by two blocks and each block's pages can be placed by the first touch of whoever uses
//! it (the *placed* classes, [`PLACED_MIN_CLASS`] up): four classes between 16 and 32 KiB (20,
//! 24, 28, 32 KiB), then eight per power of two again up to [`SMALL_MAX`] = 128 KiB. The worst
//! internal waste is under 12.5% for every request above 64 B except in 16-32 KiB (under 20%),
//! and under 8 bytes below 64 B. Each class's span is the smallest run of 64 KiB pages that holds
//! at least four blocks with at most 1/8 of it left over.
//!
//! Alignment: block `i` of a span sits at `span + i * size`, so its natural alignment is the
//! largest power of two dividing the class size (spans are 64 KiB aligned). A request whose
//! alignment exceeds that moves up to the next class that is a multiple of it; for alignments up
//! to 8x the size that is the smallest multiple of the alignment at or above the size, so an
//! aligned request never wastes more than its alignment.

use static_assertions::const_assert;

use crate::layout::segment::{PAGE_SHIFT, PAGE_SIZE};

/// Number of small size classes.
pub const CLASSES: usize = 92;
/// Largest small block; bigger requests get their own span (large) or mapping (huge).
pub const SMALL_MAX: usize = 128 << 10;
/// Sizes up to this use the lookup tables below (fast path).
pub const LOOKUP_MAX: usize = 1024;
/// The first class whose blocks are placed by first touch (16 KiB, OS-page multiples from here).
pub const PLACED_MIN_CLASS: usize = 71;
/// The smallest block size placed by first touch.
pub const PLACED_MIN_SIZE: usize = 16 << 10;

/// The 8-per-octave class index of `size` (the table without the 16-32 KiB thinning).
const fn octave_index(size: usize) -> usize {
    if size <= 128 {
        size.div_ceil(8) - 1 + (size == 0) as usize
    } else {
        let s = size - 1;
        let k = (usize::BITS - 1 - s.leading_zeros()) as usize;
        16 + (k - 7) * 8 + (s >> (k - 3)) - 8
    }
}

/// The size of 8-per-octave index `i`.
const fn octave_size(i: usize) -> usize {
    if i < 16 {
        (i + 1) * 8
    } else {
        let j = i - 16;
        let k = 7 + j / 8;
        (8 + j % 8 + 1) << (k - 3)
    }
}

/// Block size of class `c`.
pub const fn class_size(c: usize) -> usize {
    if c <= PLACED_MIN_CLASS {
        octave_size(c)
    } else if c < PLACED_MIN_CLASS + 5 {
        PLACED_MIN_SIZE + (c - PLACED_MIN_CLASS) * 4096
    } else {
        octave_size(c + 4)
    }
}

/// The smallest class whose block holds `size` bytes (`1 <= size <= SMALL_MAX`).
#[inline]
pub const fn class_of(size: usize) -> usize {
    if size <= PLACED_MIN_SIZE {
        octave_index(size)
    } else if size <= 2 * PLACED_MIN_SIZE {
        PLACED_MIN_CLASS + (size - PLACED_MIN_SIZE).div_ceil(4096)
    } else {
        octave_index(size) - 4
    }
}

/// Whether class `c`'s blocks are placed by first touch (each spans whole OS pages).
#[inline(always)]
pub const fn is_placed(c: usize) -> bool {
    c >= PLACED_MIN_CLASS
}

/// Natural alignment of class `c`'s blocks (capped at the page size).
pub const fn class_align(c: usize) -> usize {
    let s = class_size(c);
    let a = 1usize << s.trailing_zeros();
    if a > PAGE_SIZE {
        PAGE_SIZE
    } else {
        a
    }
}

/// The class for `size` bytes at alignment `align`, or `None` if no small class fits.
#[inline]
pub const fn class_for(size: usize, align: usize) -> Option<usize> {
    if size > SMALL_MAX || align > PAGE_SIZE {
        return None;
    }
    let mut c = class_of(if size == 0 { 1 } else { size });
    while class_align(c) < align {
        c += 1;
        if c >= CLASSES {
            return None;
        }
    }
    Some(c)
}

/// Pages (64 KiB) in class `c`'s span.
pub const fn span_pages(c: usize) -> usize {
    let s = class_size(c);
    let mut p = 1;
    while p < 16 {
        let bytes = p << PAGE_SHIFT;
        let n = bytes / s;
        if n >= 4 && (bytes - n * s) * 8 <= bytes {
            return p;
        }
        p += 1;
    }
    16
}

/// Blocks in class `c`'s span.
pub const fn span_blocks(c: usize) -> usize {
    (span_pages(c) << PAGE_SHIFT) / class_size(c)
}

/// Most blocks a span of a placed class holds (each has a home-node slot in its descriptor).
pub const MAX_PLACED_BLOCKS: usize = 8;

const fn max_placed_blocks() -> usize {
    let mut c = PLACED_MIN_CLASS;
    let mut m = 0;
    while c < CLASSES {
        if span_blocks(c) > m {
            m = span_blocks(c);
        }
        c += 1;
    }
    m
}

const fn make_lookup(align: usize) -> [u8; LOOKUP_MAX / 8 + 1] {
    let mut t = [0u8; LOOKUP_MAX / 8 + 1];
    let mut i = 0;
    while i < t.len() {
        let size = if i == 0 { 1 } else { i * 8 };
        t[i] = match class_for(size, align) {
            Some(c) => c as u8,
            None => 0,
        };
        i += 1;
    }
    t
}

/// `(size + 7) / 8` -> class, for alignment up to 8 (Rust layouts).
pub static LOOKUP8: [u8; LOOKUP_MAX / 8 + 1] = make_lookup(8);
/// `(size + 7) / 8` -> class, for C `malloc` (16-byte alignment for every size, as glibc's
/// `MALLOC_ALIGNMENT`: C code and compilers written against glibc assume it even for tiny blocks).
pub static LOOKUP16: [u8; LOOKUP_MAX / 8 + 1] = make_lookup(16);

// Compile-time invariants of the class table.
const_assert!(class_size(CLASSES - 1) == SMALL_MAX);
const_assert!(class_of(SMALL_MAX) == CLASSES - 1);
const_assert!(class_size(PLACED_MIN_CLASS) == PLACED_MIN_SIZE);
const_assert!(class_size(PLACED_MIN_CLASS - 1) < PLACED_MIN_SIZE);
const_assert!(class_size(PLACED_MIN_CLASS + 4) == 32 << 10 && class_size(PLACED_MIN_CLASS + 5) == 36 << 10);
const_assert!(max_placed_blocks() <= MAX_PLACED_BLOCKS);
const_assert!(class_of(1) == 0 && class_of(8) == 0 && class_of(9) == 1);
const_assert!(class_of(129) == 16 && class_size(16) == 144);
const_assert!(CLASSES <= 255);
const_assert!(span_pages(CLASSES - 1) <= 16);
const_assert!(span_blocks(0) == PAGE_SIZE / 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_maps_to_the_smallest_fitting_class() {
        for size in 1..=SMALL_MAX {
            let c = class_of(size);
            assert!(class_size(c) >= size, "size {size}");
            if c > 0 {
                assert!(class_size(c - 1) < size, "size {size} not smallest");
            }
            let waste = class_size(c) - size;
            if size > PLACED_MIN_SIZE && size <= 2 * PLACED_MIN_SIZE {
                assert!(waste * 5 <= class_size(c), "size {size} wastes {waste}");
            } else if size > 64 {
                assert!(waste * 8 <= class_size(c), "size {size} wastes {waste}");
            } else {
                assert!(waste < 8);
            }
            if is_placed(c) {
                assert_eq!(class_size(c) % 4096, 0, "placed class {c} is not OS-page sized");
            }
        }
    }

    #[test]
    fn classes_increase_and_spans_are_tight() {
        for c in 1..CLASSES {
            assert!(class_size(c) > class_size(c - 1));
        }
        for c in 0..CLASSES {
            let bytes = span_pages(c) * PAGE_SIZE;
            let n = span_blocks(c);
            assert!(n >= 4, "class {c}");
            assert!((bytes - n * class_size(c)) * 8 <= bytes, "class {c} span waste");
        }
    }

    #[test]
    fn aligned_requests_waste_at_most_the_alignment() {
        let mut align = 8;
        while align <= PAGE_SIZE {
            for size in (1..=SMALL_MAX).step_by(97).chain([1, align - 1, align, align + 1]) {
                if let Some(c) = class_for(size, align) {
                    assert!(class_size(c) >= size);
                    assert_eq!(class_size(c) % align.min(PAGE_SIZE), 0, "size {size} align {align}");
                    assert!(
                        class_size(c) - size < align.max(class_size(class_of(size)) - size + 1)
                            || class_size(c) - size <= align,
                        "size {size} align {align} -> {}",
                        class_size(c)
                    );
                }
            }
            align *= 2;
        }
    }

    #[test]
    fn lookup_tables_agree_with_class_for() {
        for size in 1..=LOOKUP_MAX {
            assert_eq!(LOOKUP8[size.div_ceil(8)] as usize, class_for(size, 8).unwrap());
            let c = LOOKUP16[size.div_ceil(8)] as usize;
            assert_eq!(c, class_for(size, 16).unwrap());
            assert_eq!(class_size(c) % 16, 0);
            assert!(class_size(c) >= size);
        }
    }
}
