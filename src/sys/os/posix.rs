//! POSIX pieces shared by every Unix implementation of [`super::Os`] (the trait's default
//! methods call these).

use core::ffi::c_void;
use core::ptr;

use super::ThreadKey;

/// `mmap` an anonymous private read/write range, null on failure. `extra_flags` adds platform
/// flags (e.g. FreeBSD's `MAP_ALIGNED`, `MAP_FIXED` for ranges the caller owns).
///
/// # Safety
/// `size` must be non-zero; with `MAP_FIXED`, `hint..hint+size` must be the caller's.
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
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Aligned anonymous mapping by over-allocating and trimming both ends.
///
/// # Safety
/// `size` a non-zero multiple of the page size, `align` a power of two >= page size.
pub(crate) unsafe fn map_aligned_trim(size: usize, align: usize, extra_flags: libc::c_int) -> *mut u8 {
    // First try: the kernel often hands out addresses aligned enough.
    // SAFETY: plain anonymous mapping.
    let p = unsafe { mmap_anon(ptr::null_mut(), size, extra_flags) };
    if p.is_null() || (p as usize) % align == 0 {
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
            libc::munmap((start + size) as *mut c_void, tail);
        }
    }
    start as *mut u8
}

/// A read/write anonymous mapping of `size` bytes whose address plus `offset` is a multiple of
/// `align`, without ever committing more than `size` bytes: the `size + align` bytes searched
/// for a place are reserved inaccessible (`PROT_NONE`, which no kernel charges against its
/// commit limit), trimmed to the block, and only the block is made read/write. So an alignment
/// far above the machine's memory (2^40) costs address space only. Null on failure.
///
/// # Safety
/// `size` a non-zero multiple of the page size, `align` a power of two >= page size, `offset` a
/// multiple of the page size.
pub(crate) unsafe fn map_reserved_aligned(size: usize, align: usize, offset: usize) -> *mut u8 {
    let Some(over) = size.checked_add(align) else { return ptr::null_mut() };
    // SAFETY: a fresh anonymous inaccessible mapping touches no existing memory.
    let q =
        unsafe { libc::mmap(ptr::null_mut(), over, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    if q == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    let q = q as usize;
    // The first address >= q whose address + offset is aligned.
    let start = ((q + offset + align - 1) & !(align - 1)) - offset;
    let start = if start < q { start + align } else { start };
    let head = start - q;
    let tail = over - head - size;
    // SAFETY: both trimmed pieces lie inside [q, q+over), which we own and nobody uses; then the
    // block, ours, becomes accessible.
    unsafe {
        if head > 0 {
            libc::munmap(q as *mut c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + size) as *mut c_void, tail);
        }
        if libc::mprotect(start as *mut c_void, size, libc::PROT_READ | libc::PROT_WRITE) != 0 {
            libc::munmap(start as *mut c_void, size);
            return ptr::null_mut();
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

/// `mprotect` to `PROT_NONE` (a guard) or back to read/write.
///
/// # Safety
/// The range must be mapped, page aligned, and hold nothing in use.
pub(crate) unsafe fn protect(p: *mut u8, size: usize, accessible: bool) -> bool {
    let prot = if accessible { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_NONE };
    // SAFETY: the caller's range; changing its protection touches nothing else.
    unsafe { libc::mprotect(p.cast(), size, prot) == 0 }
}

extern "C" {
    static environ: *const *const libc::c_char;
}

/// Calls `f` with each `NAME=value` entry of `environ`.
pub(crate) fn environ_each(f: &mut dyn FnMut(&[u8])) {
    // SAFETY: `environ` is a null-terminated array of NUL-terminated strings set up by libc before
    // any user code runs; we only read it. A concurrent `setenv` could race, as with getenv(3).
    unsafe {
        let mut e = environ;
        if e.is_null() {
            return;
        }
        while !(*e).is_null() {
            let s = (*e).cast::<u8>();
            let mut n = 0;
            while *s.add(n) != 0 {
                n += 1;
            }
            f(core::slice::from_raw_parts(s, n));
            e = e.add(1);
        }
    }
}

/// Finds `name` in `environ` and returns the bytes after `=`.
pub(crate) fn environ_find(name: &[u8]) -> Option<&'static [u8]> {
    let mut found: Option<&'static [u8]> = None;
    environ_each(&mut |entry| {
        if found.is_none() && entry.len() > name.len() && entry[name.len()] == b'=' && &entry[..name.len()] == name {
            // SAFETY: environment strings live for the process (as getenv's results do).
            found = Some(unsafe {
                core::slice::from_raw_parts(entry.as_ptr().add(name.len() + 1), entry.len() - name.len() - 1)
            });
        }
    });
    found
}

/// Writes all of `bytes` to `fd`.
pub(crate) fn write_fd(fd: i32, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            // SAFETY: errno of this thread.
            if n < 0 && unsafe { *errno_location() } == libc::EINTR {
                continue;
            }
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

#[cfg(target_os = "freebsd")]
unsafe fn errno_location() -> *mut libc::c_int {
    // SAFETY: the calling thread's errno.
    unsafe { libc::__error() }
}
#[cfg(not(target_os = "freebsd"))]
unsafe fn errno_location() -> *mut libc::c_int {
    // SAFETY: the calling thread's errno.
    unsafe { libc::__errno_location() }
}

/// The calling thread's `errno`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn errno() -> i32 {
    // SAFETY: errno location of the calling thread.
    unsafe { *errno_location() }
}

/// Sets `errno`.
pub(crate) fn set_errno(e: i32) {
    // SAFETY: errno location of the calling thread.
    unsafe { *errno_location() = e };
}

/// Creates (or truncates) a file for writing.
pub(crate) fn create_file(path: &[u8]) -> i32 {
    if path.last() != Some(&0) {
        return -1;
    }
    // SAFETY: NUL-terminated path.
    unsafe { libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC, 0o644) }
}

/// `close`.
pub(crate) fn close_fd(fd: i32) {
    // SAFETY: closing a descriptor the caller owns.
    unsafe { libc::close(fd) };
}

fn open_read(path: &[u8]) -> i32 {
    if path.last() != Some(&0) {
        return -1;
    }
    // SAFETY: NUL-terminated path.
    unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) }
}

/// Reads a small file into `buf`.
pub(crate) fn read_file<'a>(path: &[u8], buf: &'a mut [u8]) -> Option<&'a [u8]> {
    let fd = open_read(path);
    if fd < 0 {
        return None;
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: reading into the unfilled tail of `buf`.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    close_fd(fd);
    Some(&buf[..len])
}

/// Reads a file chunk by chunk.
pub(crate) fn read_file_chunks(path: &[u8], buf: &mut [u8], f: &mut dyn FnMut(&[u8])) -> bool {
    let fd = open_read(path);
    if fd < 0 {
        return false;
    }
    loop {
        // SAFETY: reading into `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        f(&buf[..n as usize]);
    }
    close_fd(fd);
    true
}

/// `uname`'s node name.
pub(crate) fn host_name(buf: &mut [u8]) -> usize {
    // SAFETY: utsname is plain bytes; all-zero is a valid value.
    let mut u: libc::utsname = unsafe { core::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return 0;
    }
    let mut n = 0;
    while n < u.nodename.len() && u.nodename[n] != 0 && n < buf.len() {
        buf[n] = u.nodename[n] as u8;
        n += 1;
    }
    n
}

/// `getpid`.
pub(crate) fn process_id() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() as u32 }
}

/// Reads 8 bytes from `/dev/urandom`, mixed with address-space layout and clock entropy.
pub(crate) fn random_u64() -> u64 {
    let mut r = [0u8; 8];
    let got = read_file(b"/dev/urandom\0", &mut r).map_or(0, |s| s.len());
    mix_entropy(if got == 8 { u64::from_ne_bytes(r) } else { 0 })
}

/// Mixes `seed` with entropy that needs no system call (stack and code addresses under ASLR,
/// the clock), so the key is never a constant even without a random device.
pub(crate) fn mix_entropy(seed: u64) -> u64 {
    fn mix(mut x: u64) -> u64 {
        // splitmix64's finaliser.
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    let stack = 0u8;
    let k = mix(seed)
        ^ mix(&stack as *const u8 as u64)
        ^ mix((mix_entropy as *const () as u64).rotate_left(17))
        ^ mix(now_ms().rotate_left(40));
    if k == 0 {
        0x5bd1_e995_c2b2_ae35
    } else {
        k
    }
}

/// Raises SIGABRT.
pub(crate) fn abort() -> ! {
    // SAFETY: abort never returns.
    unsafe { libc::abort() }
}

/// Monotonic milliseconds.
pub(crate) fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// A relative `timespec` for `ms` milliseconds.
#[allow(dead_code)]
pub(crate) fn timespec_ms(ms: u64) -> libc::timespec {
    libc::timespec { tv_sec: (ms / 1000) as libc::time_t, tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long }
}

/// `pthread_key_create`.
pub(crate) fn thread_key_create(dtor: unsafe extern "C" fn(*mut c_void)) -> Option<ThreadKey> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: valid out-pointer and destructor.
    if unsafe { libc::pthread_key_create(&mut key, Some(dtor)) } == 0 {
        Some(ThreadKey(key as u64))
    } else {
        None
    }
}

/// `pthread_setspecific`.
pub(crate) fn thread_key_set(key: ThreadKey, value: *mut c_void) {
    // SAFETY: `key` came from pthread_key_create.
    unsafe { libc::pthread_setspecific(key.0 as libc::pthread_key_t, value) };
}

/// Keeps the shared object holding this code loaded for the rest of the process: finds it
/// (`dladdr` on one of its functions) and opens it again with `RTLD_NOLOAD | RTLD_NODELETE`,
/// so a later `dlclose` does not unmap the code our threads and thread-exit destructors run.
/// Returns whether it is pinned (false for the main program, which is never unloaded, and
/// where the loader does not know the object). The loader allocates (with this allocator):
/// call only where a nested `malloc` is safe.
pub(crate) fn pin_object() -> bool {
    // Only a copy of the allocator inside an object that `dlclose` can unload needs pinning: not
    // the main program, and not an object linked `-z nodelete` (libdomalloc.so). Skipping the
    // `dlopen` there matters: a tool that intercepts `dlopen` and takes its own lock inside its
    // first `malloc` (heaptrack) would wait on itself.
    if !own_object_unloadable() {
        return false;
    }
    // SAFETY: `dladdr` fills `info` for an address of our own code; `dlopen` with
    // `RTLD_NOLOAD` only looks the already loaded object up by the name the loader gave us.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(pin_object as *const c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return false;
        }
        !libc::dlopen(info.dli_fname, libc::RTLD_LAZY | libc::RTLD_NOLOAD | libc::RTLD_NODELETE).is_null()
    }
}

/// Whether the object holding this code could be unloaded by `dlclose`: false for the main
/// program (the first object `dl_iterate_phdr` reports) and for an object whose dynamic section
/// has `DF_1_NODELETE`. Reads the loader's program headers; no allocation.
fn own_object_unloadable() -> bool {
    const PT_DYNAMIC: u32 = 2;
    const DT_NULL: i64 = 0;
    const DT_FLAGS_1: i64 = 0x6fff_fffb;
    const DF_1_NODELETE: u64 = 0x8;
    /// An ELF dynamic-section entry (`Elf64_Dyn`).
    #[repr(C)]
    struct Dyn {
        tag: i64,
        val: u64,
    }
    struct Found {
        addr: usize,
        index: usize,
        unloadable: Option<bool>,
    }
    unsafe extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> libc::c_int {
        // SAFETY: the loader passes a valid `info` for each object and our `data` back.
        unsafe {
            let f = &mut *(data as *mut Found);
            let i = &*info;
            let index = f.index;
            f.index += 1;
            let base = i.dlpi_addr as usize;
            let mut dynamic = 0usize;
            let mut ours = false;
            for k in 0..i.dlpi_phnum as usize {
                let ph = &*i.dlpi_phdr.add(k);
                let lo = base + ph.p_vaddr as usize;
                if ph.p_type == 1 /* PT_LOAD */ && (lo..lo + ph.p_memsz as usize).contains(&f.addr) {
                    ours = true;
                }
                if ph.p_type == PT_DYNAMIC {
                    dynamic = lo;
                }
            }
            if !ours {
                return 0;
            }
            let mut nodelete = false;
            if dynamic != 0 {
                let mut d = dynamic as *const Dyn;
                while (*d).tag != DT_NULL {
                    if (*d).tag == DT_FLAGS_1 && (*d).val & DF_1_NODELETE != 0 {
                        nodelete = true;
                    }
                    d = d.add(1);
                }
            }
            f.unloadable = Some(index != 0 && !nodelete);
            1
        }
    }
    let mut f = Found { addr: own_object_unloadable as *const () as usize, index: 0, unloadable: None };
    // SAFETY: `each` only reads what the loader hands it and writes our `Found`.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut f as *mut Found as *mut c_void) };
    // Unknown: pin (the safe side for a plugin).
    f.unloadable.unwrap_or(true)
}

/// `pthread_atfork`.
pub(crate) fn atfork(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) -> bool {
    // SAFETY: plain function pointers with static lifetime.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
}

/// A detached thread with every signal blocked (the mask is inherited from the creator, which
/// blocks everything around `pthread_create` and restores its own mask) and a 256 KiB stack.
pub(crate) fn spawn_thread(run: extern "C" fn(*mut c_void) -> *mut c_void) -> bool {
    // SAFETY: plain pthread and signal-mask calls on values on our stack.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_attr_init(&mut attr) != 0 {
            return false;
        }
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        libc::pthread_attr_setstacksize(&mut attr, 256 << 10);
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut tid: libc::pthread_t = core::mem::zeroed();
        let r = libc::pthread_create(&mut tid, &attr, run, ptr::null_mut());
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        r == 0
    }
}

// ---- signals: the statistics and profile dumps on a signal ----

/// The signals the allocator may catch ([`super::Signal`]) as numbers.
fn signal_number(s: super::Signal) -> libc::c_int {
    match s {
        super::Signal::Term => libc::SIGTERM,
        super::Signal::Hup => libc::SIGHUP,
        super::Signal::Usr1 => libc::SIGUSR1,
        super::Signal::Usr2 => libc::SIGUSR2,
    }
}

/// Per caught signal: our hook, whether the default action follows it, and the action that was
/// installed before ours (called after the hook: chaining, never replacing).
struct Caught {
    hook: core::sync::atomic::AtomicUsize,
    then_default: core::sync::atomic::AtomicBool,
    prev: core::cell::UnsafeCell<core::mem::MaybeUninit<libc::sigaction>>,
}

// SAFETY: `prev` is written once, before the handler that reads it is installed (the
// `sigaction` call that installs it orders the write before any delivery).
unsafe impl Sync for Caught {}

static CAUGHT: [Caught; super::Signal::COUNT] = [const {
    Caught {
        hook: core::sync::atomic::AtomicUsize::new(0),
        then_default: core::sync::atomic::AtomicBool::new(false),
        prev: core::cell::UnsafeCell::new(core::mem::MaybeUninit::uninit()),
    }
}; super::Signal::COUNT];

fn slot_of(sig: libc::c_int) -> Option<&'static Caught> {
    [super::Signal::Term, super::Signal::Hup, super::Signal::Usr1, super::Signal::Usr2]
        .into_iter()
        .find(|&s| signal_number(s) == sig)
        .map(|s| &CAUGHT[s as usize])
}

/// Our handler: the hook, then the program's previous handler if there was one, else (when
/// asked) the default action by re-raising the signal with `SIG_DFL` installed.
extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let Some(slot) = slot_of(sig) else { return };
    let hook = slot.hook.load(core::sync::atomic::Ordering::Acquire);
    if hook != 0 {
        // SAFETY: `hook` was stored from an `fn()` by `catch_signal`.
        let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(hook) };
        f();
    }
    // SAFETY: `prev` was written before this handler was installed.
    let prev = unsafe { (*slot.prev.get()).assume_init_ref() };
    let h = prev.sa_sigaction;
    if h != libc::SIG_DFL && h != libc::SIG_IGN {
        // SAFETY: the program's own handler, called as the kernel would have called it.
        unsafe {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) = core::mem::transmute(h);
                f(sig, info, ctx);
            } else {
                let f: extern "C" fn(libc::c_int) = core::mem::transmute(h);
                f(sig);
            }
        }
        return;
    }
    if h == libc::SIG_DFL && slot.then_default.load(core::sync::atomic::Ordering::Relaxed) {
        // SAFETY: async-signal-safe calls on a zeroed action of our own. The signal is blocked
        // while this handler runs; it is delivered, with the default action, once we return.
        unsafe {
            let mut dfl: libc::sigaction = core::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, ptr::null_mut());
            libc::raise(sig);
        }
    }
}

/// Installs `hook` for `s`, chained to the action in force (see [`super::Os::catch_signal`]).
pub(crate) fn catch_signal(s: super::Signal, hook: fn(), then_default: bool) -> bool {
    let sig = signal_number(s);
    let slot = &CAUGHT[s as usize];
    if slot.hook.load(core::sync::atomic::Ordering::Acquire) != 0 {
        return true; // installed already
    }
    // SAFETY: `sigaction` reads and writes actions on our stack and in `slot.prev`, which no
    // handler reads yet (ours is not installed for `sig`).
    unsafe {
        let mut old: libc::sigaction = core::mem::zeroed();
        if libc::sigaction(sig, ptr::null(), &mut old) != 0 || old.sa_sigaction == libc::SIG_IGN {
            return false; // ignored by the program (or its parent): stays ignored
        }
        (*slot.prev.get()).write(old);
        slot.then_default.store(then_default, core::sync::atomic::Ordering::Relaxed);
        slot.hook.store(hook as *const () as usize, core::sync::atomic::Ordering::Release);
        let mut act: libc::sigaction = core::mem::zeroed();
        act.sa_sigaction = on_signal as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(sig, &act, ptr::null_mut()) != 0 {
            slot.hook.store(0, core::sync::atomic::Ordering::Release);
            return false;
        }
    }
    true
}

// ---- the process's mappings ----

/// `/proc/self/maps`, one line at a time through stack buffers (see
/// [`super::Os::for_each_mapping`]); false where there is no such file (BSD without linprocfs).
pub(crate) fn for_each_mapping(f: &mut dyn FnMut(super::Mapping<'_>)) -> bool {
    #[cfg(test)]
    MAPS_READS.with(|n| n.set(n.get() + 1));
    let mut buf = [0u8; 4096];
    let mut line = [0u8; 512];
    let mut handle = |l: &[u8]| {
        // start-end perms offset dev inode path
        let mut fields = l.splitn(6, |&c| c == b' ');
        let (Some(range), Some(perms), Some(off)) = (fields.next(), fields.next(), fields.next()) else { return };
        let _dev = fields.next();
        let _inode = fields.next();
        let path = crate::sys::util::trim(fields.next().unwrap_or(b""));
        let Some(dash) = range.iter().position(|&c| c == b'-') else { return };
        let (Some(start), Some(end), Some(offset)) =
            (parse_hex(&range[..dash]), parse_hex(&range[dash + 1..]), parse_hex(off))
        else {
            return;
        };
        f(super::Mapping {
            start: start as usize,
            end: end as usize,
            readable: perms.first() == Some(&b'r'),
            executable: perms.get(2) == Some(&b'x'),
            offset,
            path,
        });
    };
    read_file_lines(b"/proc/self/maps\0", &mut buf, &mut line, &mut handle)
}

/// Calls `f` with each line of file `path` (without its newline; a line longer than `line` is
/// cut to its length), read through the stack buffers `buf` and `line`: no allocation. False
/// if the file could not be opened.
pub(crate) fn read_file_lines(path: &[u8], buf: &mut [u8], line: &mut [u8], f: &mut dyn FnMut(&[u8])) -> bool {
    let mut len = 0usize;
    let opened = read_file_chunks(path, buf, &mut |chunk| {
        for &c in chunk {
            if c == b'\n' {
                f(&line[..len]);
                len = 0;
            } else if len < line.len() {
                line[len] = c;
                len += 1;
            }
        }
    });
    if len > 0 {
        f(&line[..len]);
    }
    opened
}

#[cfg(test)]
thread_local! {
    /// Times this thread read the whole of `/proc/self/maps` ([`for_each_mapping`]; tests).
    pub(crate) static MAPS_READS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// See [`super::Os::readable_mapping_of`]: every mapping read until the one holding `addr`.
pub(crate) fn readable_mapping_of(addr: usize) -> Option<(usize, usize)> {
    let mut found = None;
    for_each_mapping(&mut |m| {
        if m.readable && m.start <= addr && addr < m.end {
            found = Some((m.start, m.end));
        }
    });
    found
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = v << 4 | d as u64;
    }
    Some(v)
}

#[cfg(test)]
mod signal_tests {
    use core::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Order in which the hook (1) and the program's handler (2) ran, as decimal digits.
    static ORDER: AtomicU32 = AtomicU32::new(0);

    fn hook() {
        ORDER.store(ORDER.load(Ordering::SeqCst) * 10 + 1, Ordering::SeqCst);
    }

    extern "C" fn program_handler(_: libc::c_int) {
        ORDER.store(ORDER.load(Ordering::SeqCst) * 10 + 2, Ordering::SeqCst);
    }

    #[test]
    fn a_caught_signal_runs_the_hook_then_the_programs_handler() {
        // SAFETY: installs a handler that only touches an atomic; raise delivers it to us.
        unsafe {
            libc::signal(libc::SIGUSR1, program_handler as *const () as libc::sighandler_t);
            assert!(catch_signal(super::super::Signal::Usr1, hook, true));
            libc::raise(libc::SIGUSR1);
        }
        assert_eq!(ORDER.load(Ordering::SeqCst), 12, "hook, then the program's handler");
    }

    #[test]
    fn an_ignored_signal_stays_ignored() {
        // SAFETY: plain signal calls; SIGHUP is ignored, so raising it does nothing.
        unsafe {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            assert!(!catch_signal(super::super::Signal::Hup, hook, true));
            libc::raise(libc::SIGHUP);
        }
    }
}

#[cfg(test)]
mod mapping_tests {
    #[test]
    fn the_mappings_hold_this_code_and_this_stack() {
        let code = the_mappings_hold_this_code_and_this_stack as *const () as usize;
        let local = 0u8;
        let stack = &local as *const u8 as usize;
        let (mut code_seen, mut stack_seen) = (false, false);
        assert!(super::for_each_mapping(&mut |m| {
            code_seen |= m.executable && (m.start..m.end).contains(&code) && !m.path.is_empty();
            stack_seen |= m.readable && (m.start..m.end).contains(&stack);
        }));
        assert!(code_seen && stack_seen);
    }
}
