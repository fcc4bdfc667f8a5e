//! Alignments the README promises: any power of two up to 2^40 works for `posix_memalign` and
//! `aligned_alloc`, also far above the machine's memory (issue 26): the search for an aligned
//! place reserves address space only, and only the block is committed. b541f39 mapped the size
//! plus the alignment read/write and failed with ENOMEM from 2^34 on a 24 GiB machine.

// SAFETY (all unsafe blocks in this file): C-API calls with valid out-pointers; writes stay
// inside the blocks returned, which are freed once.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ffi::c_void;

#[global_allocator]
static A: domalloc::DomAlloc = domalloc::DomAlloc::new();

const SIZES: [usize; 3] = [16, 1 << 20, 8 << 20];

#[test]
fn posix_memalign_up_to_2_pow_40() {
    for shift in 34..=40 {
        let align = 1usize << shift;
        for size in SIZES {
            let mut p: *mut c_void = std::ptr::null_mut();
            let r = unsafe { domalloc::c::posix_memalign(&mut p, align, size) };
            assert_eq!(r, 0, "posix_memalign(2^{shift}, {size}) failed with {r}");
            assert_eq!(p as usize % align, 0, "posix_memalign(2^{shift}, {size}) returned {p:p}, misaligned");
            unsafe {
                let b = p.cast::<u8>();
                b.write(1);
                b.add(size - 1).write(2);
                assert_eq!((b.read(), b.add(size - 1).read()), (1, 2));
                domalloc::raw::free(b);
            }
        }
    }
}

#[test]
fn aligned_alloc_up_to_2_pow_40() {
    for shift in 34..=40 {
        let align = 1usize << shift;
        let size = 4 << 20;
        let p = unsafe { domalloc::c::aligned_alloc(align, size) }.cast::<u8>();
        assert!(!p.is_null(), "aligned_alloc(2^{shift}, {size}) failed: {}", std::io::Error::last_os_error());
        assert_eq!(p as usize % align, 0);
        unsafe {
            p.write(1);
            p.add(size - 1).write(2);
            domalloc::raw::free(p);
        }
    }
}
