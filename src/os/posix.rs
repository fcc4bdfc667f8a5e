//! POSIX pieces shared by every Unix implementation of [`super::Os`].

use core::ptr;

/// `mmap` an anonymous private read/write range, null on failure. `extra_flags` adds platform
/// flags (e.g. `MAP_NORESERVE`, FreeBSD's `MAP_ALIGNED`).
///
/// # Safety
/// `size` must be non-zero.
pub(crate) unsafe fn mmap_anon(hint: *mut u8, size: usize, extra_flags: libc::c_int) -> *mut u8 {
    // SAFETY: an anonymous mapping touches no existing memory unless MAP_FIXED is in extra_flags,
    // which callers only pass for ranges they own.
    let p = unsafe {
        libc::mmap(
            hint.cast(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED { ptr::null_mut() } else { p.cast() }
}

/// Aligned anonymous mapping by over-allocating and trimming both ends.
///
/// # Safety
/// `size` a non-zero multiple of the page size, `align` a power of two >= page size.
pub(crate) unsafe fn map_aligned_trim(size: usize, align: usize, extra_flags: libc::c_int) -> *mut u8 {
    // First try: the kernel often hands out addresses aligned enough when asked near one.
    // SAFETY: plain anonymous mapping.
    let p = unsafe { mmap_anon(ptr::null_mut(), size, extra_flags) };
    if p.is_null() {
        return p;
    }
    if (p as usize) % align == 0 {
        return p;
    }
    // SAFETY: we own [p, p+size).
    unsafe { libc::munmap(p.cast(), size) };
    let Some(over) = size.checked_add(align) else { return ptr::null_mut() };
    // SAFETY: plain anonymous mapping.
    let q = unsafe { mmap_anon(ptr::null_mut(), over, extra_flags) };
    if q.is_null() {
        return q;
    }
    let start = (q as usize + align - 1) & !(align - 1);
    let head = start - q as usize;
    let tail = over - head - size;
    // SAFETY: both trimmed pieces lie inside [q, q+over), which we own and nobody uses yet.
    unsafe {
        if head > 0 {
            libc::munmap(q.cast(), head);
        }
        if tail > 0 {
            libc::munmap((start + size) as *mut libc::c_void, tail);
        }
    }
    start as *mut u8
}

/// `munmap`, ignoring errors (there is nothing useful to do about them inside free).
///
/// # Safety
/// The range must be owned by the caller and unused.
pub(crate) unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { libc::munmap(p.cast(), size) };
}

/// `madvise`, returning success.
///
/// # Safety
/// The range must be mapped and owned by the caller.
pub(crate) unsafe fn madvise(p: *mut u8, size: usize, advice: libc::c_int) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe { libc::madvise(p.cast(), size, advice) == 0 }
}

extern "C" {
    static environ: *const *const libc::c_char;
}

/// Finds `name` in `environ` and returns the bytes after `=`.
pub(crate) fn environ_find(name: &[u8]) -> Option<&'static [u8]> {
    // SAFETY: `environ` is a null-terminated array of NUL-terminated strings set up by libc before
    // any user code runs; we only read it. A concurrent `setenv` could race, as with getenv(3).
    unsafe {
        let mut e = environ;
        if e.is_null() {
            return None;
        }
        while !(*e).is_null() {
            let s = (*e).cast::<u8>();
            let mut i = 0;
            while i < name.len() && *s.add(i) == name[i] {
                i += 1;
            }
            if i == name.len() && *s.add(i) == b'=' {
                let v = s.add(i + 1);
                let mut n = 0;
                while *v.add(n) != 0 {
                    n += 1;
                }
                return Some(core::slice::from_raw_parts(v, n));
            }
            e = e.add(1);
        }
    }
    None
}

/// Writes all of `bytes` to fd 2.
pub(crate) fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid slice.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Raises SIGABRT (and `_exit`s if that returns).
pub(crate) fn abort() -> ! {
    // SAFETY: abort never returns; _exit is the fallback.
    unsafe {
        libc::abort();
    }
}

/// `sched_yield`.
pub(crate) fn yield_now() {
    // SAFETY: no preconditions.
    unsafe { libc::sched_yield() };
}

/// Monotonic milliseconds.
pub(crate) fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// `pthread_key_create`.
pub(crate) fn thread_key_create(dtor: unsafe extern "C" fn(*mut libc::c_void)) -> Option<libc::pthread_key_t> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: valid out-pointer and destructor.
    if unsafe { libc::pthread_key_create(&mut key, Some(dtor)) } == 0 { Some(key) } else { None }
}

/// `pthread_setspecific`.
pub(crate) fn thread_key_set(key: libc::pthread_key_t, value: *mut libc::c_void) {
    // SAFETY: `key` came from pthread_key_create.
    unsafe { libc::pthread_setspecific(key, value) };
}

/// `pthread_atfork`.
pub(crate) fn atfork(prepare: unsafe extern "C" fn(), parent: unsafe extern "C" fn(), child: unsafe extern "C" fn()) -> bool {
    // SAFETY: plain function pointers with static lifetime.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
}

/// `mprotect(PROT_NONE)`: the range faults on any access (quarantine build's guard pages).
///
/// # Safety
/// The range must be mapped, page aligned, and hold nothing in use.
#[cfg_attr(not(feature = "quarantine"), allow(dead_code))]
pub(crate) unsafe fn protect_none(ptr: *mut u8, size: usize) -> bool {
    // SAFETY: the caller's range; changing its protection touches nothing else.
    unsafe { libc::mprotect(ptr.cast(), size, libc::PROT_NONE) == 0 }
}
