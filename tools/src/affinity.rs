//! The launcher's own CPU affinity (`sched_getaffinity`/`sched_setaffinity` on itself, before it
//! executes the program, which inherits it). Masks are sized from the CPU ids asked for, so
//! machines with more than 1024 CPUs work too.

/// The CPUs this process may run on now, ascending.
pub fn current() -> Result<Vec<usize>, String> {
    let mut words = 16usize; // 1024 CPUs, doubled while the kernel says the mask is too small
    loop {
        let mut mask = vec![0u64; words];
        // SAFETY: the buffer has `words * 8` writable bytes, the length we pass.
        let r = unsafe { libc::syscall(libc::SYS_sched_getaffinity, 0, words * 8, mask.as_mut_ptr()) };
        if r >= 0 {
            return Ok(ids_of(&mask));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) || words >= 1 << 16 {
            return Err(format!("sched_getaffinity: {e}"));
        }
        words *= 2;
    }
}

/// Restricts this process (and so the program it executes) to `cpus`.
pub fn set(cpus: &[usize]) -> Result<(), std::io::Error> {
    let max = cpus.iter().copied().max().unwrap_or(0);
    let mut mask = vec![0u64; max / 64 + 1];
    for &c in cpus {
        mask[c / 64] |= 1 << (c % 64);
    }
    // SAFETY: the mask has `len * 8` readable bytes, the length we pass.
    let r = unsafe { libc::syscall(libc::SYS_sched_setaffinity, 0, mask.len() * 8, mask.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn ids_of(mask: &[u64]) -> Vec<usize> {
    let mut ids = Vec::new();
    for (w, &bits) in mask.iter().enumerate() {
        for b in 0..64 {
            if bits & (1 << b) != 0 {
                ids.push(w * 64 + b);
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    #[test]
    fn current_is_not_empty_and_set_to_itself_works() {
        let cpus = super::current().unwrap();
        assert!(!cpus.is_empty());
        super::set(&cpus).unwrap();
        assert_eq!(super::current().unwrap(), cpus);
        assert_eq!(super::ids_of(&[0b101, 1]), vec![0, 2, 64]);
    }
}
