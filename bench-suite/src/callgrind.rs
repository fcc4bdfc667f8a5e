//! Callgrind client requests: the workloads binary marks the workload itself (after argument
//! parsing and the hwloc topology, before the `RESULT` line) so that `bench --icount` counts
//! that part only.
//!
//! A client request is valgrind's "special instruction sequence": four rotations of `rdi` that
//! add up to 128 bits (a no-op on a real CPU) followed by `xchg rbx, rbx`, with `rax` pointing
//! at the request and its arguments; valgrind recognises the sequence and answers in `rdx`
//! (`valgrind.h`, `VALGRIND_DO_CLIENT_REQUEST_EXPR` for amd64). Outside valgrind, or under a
//! tool that does not know the request, nothing happens. On other architectures these
//! functions do nothing and the report counts the whole process (it says so).

/// `VG_USERREQ_TOOL_BASE('C', 'T')`: the first of callgrind's requests (`callgrind.h`).
const CALLGRIND_BASE: usize = ((b'C' as usize) << 24) | ((b'T' as usize) << 16);
/// `VG_USERREQ__DUMP_STATS`: write the costs so far as a new part (`<out-file>.1`, ...).
const DUMP_STATS: usize = CALLGRIND_BASE;
/// `VG_USERREQ__ZERO_STATS`: zero every thread's costs and call counts.
const ZERO_STATS: usize = CALLGRIND_BASE + 1;

#[cfg(target_arch = "x86_64")]
fn client_request(request: usize) {
    let args: [usize; 6] = [request, 0, 0, 0, 0, 0];
    // SAFETY: the rotations leave rdi unchanged (3 + 13 + 61 + 51 = 128) and `xchg rbx, rbx`
    // changes nothing; only rdx (the default answer, 0) and the flags may change. Valgrind
    // reads `args` through rax, which outlives the asm block.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") 0usize => _,
            in("rax") args.as_ptr(),
            inout("rdi") 0usize => _,
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn client_request(_request: usize) {}

/// Starts the measured section: zeroes callgrind's costs and call counts (all threads).
pub fn start_measuring() {
    client_request(ZERO_STATS);
}

/// Ends the measured section: callgrind writes the costs since [`start_measuring`] as dump
/// part 1 (`<callgrind-out-file>.1`); what runs after goes to the final dump.
pub fn stop_measuring() {
    client_request(DUMP_STATS);
}
