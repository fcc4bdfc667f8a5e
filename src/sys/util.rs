//! Small helpers that never allocate: number parsing, list parsing, formatting into a fixed
//! buffer, byte counts for reports, edit distance. They import nothing from the crate (the
//! platform layer builds on them), so "malloc never calls malloc" is checkable in one file.

use core::cell::UnsafeCell;
use core::fmt;

/// A value set during start-up and read-only afterwards: the allocator's tables and decisions.
/// Reads are plain loads; the one write happens before the allocator is published as ready,
/// and the release/acquire pair of that publication orders it before every read. What the
/// value points to (tables mapped at start-up) is only read through it, or guarded by its own
/// locks and atomics.
pub(crate) struct SetOnce<T>(UnsafeCell<T>);

// SAFETY: see the type's documentation: one write before publication, shared reads after; no
// `T` is moved between threads (it is never taken out).
unsafe impl<T> Sync for SetOnce<T> {}

impl<T> SetOnce<T> {
    /// A cell holding `v` until start-up sets it.
    pub(crate) const fn new(v: T) -> Self {
        SetOnce(UnsafeCell::new(v))
    }

    /// Sets the value.
    ///
    /// # Safety
    /// Only during start-up, by one thread, before the value is published (no reader yet, and
    /// no reference from an earlier [`get`](Self::get) alive).
    pub(crate) unsafe fn set(&self, v: T) {
        // SAFETY: the caller's contract: no other access. The old value (a constant) is
        // overwritten, not dropped.
        unsafe { core::ptr::write(self.0.get(), v) }
    }

    /// The value.
    #[inline(always)]
    pub(crate) fn get(&self) -> &T {
        // SAFETY: written only by `set`, whose contract excludes concurrent readers.
        unsafe { &*self.0.get() }
    }
}

/// Parses an unsigned decimal number with an optional binary suffix (`k`, `m`, `g`, case-insensitive).
pub(crate) fn parse_size(s: &[u8]) -> Option<u64> {
    let s = trim(s);
    if s.is_empty() {
        return None;
    }
    let (digits, mult) = match s[s.len() - 1] {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1u64 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1u64 << 30),
        _ => (s, 1),
    };
    parse_u64(digits)?.checked_mul(mult)
}

/// Parses an unsigned decimal number; `None` on anything else or on overflow.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    let s = trim(s);
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// Strips ASCII whitespace on both ends.
pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest
        } else {
            break;
        }
    }
    s
}

/// Calls `f` for each id in a Linux-style list such as `0-3,8,10-11` (as in sysfs `cpulist`).
/// Returns `false` if the list is malformed; ids already reported stay reported.
pub(crate) fn for_each_in_list(s: &[u8], mut f: impl FnMut(usize)) -> bool {
    let s = trim(s);
    if s.is_empty() {
        return true;
    }
    for part in s.split(|&c| c == b',') {
        let part = trim(part);
        if part.is_empty() {
            continue;
        }
        let (lo, hi) = match part.iter().position(|&c| c == b'-') {
            Some(i) => (parse_u64(&part[..i]), parse_u64(&part[i + 1..])),
            None => (parse_u64(part), parse_u64(part)),
        };
        match (lo, hi) {
            (Some(lo), Some(hi)) if lo <= hi && hi < (1 << 20) => {
                for i in lo..=hi {
                    f(i as usize);
                }
            }
            _ => return false,
        }
    }
    true
}

/// A `fmt::Write` sink over a fixed byte buffer; output past the end is dropped (and `truncated`
/// set), never allocated.
pub(crate) struct BufWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    pub(crate) truncated: bool,
}

impl<'a> BufWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0, truncated: false }
    }
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

/// Formats `bytes` with a binary unit (`12.3 MiB`) for reports.
pub(crate) struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0;
        let mut u = 0;
        let mut frac = 0u64;
        while v >= 1024 && u < UNITS.len() - 1 {
            frac = (v % 1024) * 10 / 1024;
            v /= 1024;
            u += 1;
        }
        // Formatted into a buffer first so that width and alignment (`{:>11}`) apply.
        let mut buf = [0u8; 32];
        let mut w = BufWriter::new(&mut buf);
        let _ = if u == 0 {
            fmt::write(&mut w, format_args!("{} B", v))
        } else {
            fmt::write(&mut w, format_args!("{}.{} {}", v, frac, UNITS[u]))
        };
        f.pad(core::str::from_utf8(w.as_bytes()).unwrap_or("?"))
    }
}

/// The Levenshtein distance between `a` and `b`, for names up to 64 bytes (longer: `usize::MAX`).
pub(crate) fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let mut row = [0usize; 65];
    for (j, r) in row.iter_mut().enumerate().take(b.len() + 1) {
        *r = j;
    }
    for i in 1..=a.len() {
        let mut diag = row[0];
        row[0] = i;
        for j in 1..=b.len() {
            let up = row[j];
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (row[j] + 1).min(row[j - 1] + 1).min(diag + cost);
            diag = up;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn parses_sizes_and_lists() {
        assert_eq!(parse_size(b"64k"), Some(65536));
        assert_eq!(parse_size(b" 2M "), Some(2 << 20));
        assert_eq!(parse_size(b"12"), Some(12));
        assert_eq!(parse_size(b"x"), None);
        assert_eq!(parse_u64(b"99999999999999999999999"), None);
        let mut v = [0usize; 16];
        let mut n = 0;
        assert!(for_each_in_list(b"0-2,5,7-8\n", |i| {
            v[n] = i;
            n += 1
        }));
        assert_eq!(&v[..n], &[0, 1, 2, 5, 7, 8]);
        assert!(!for_each_in_list(b"3-1", |_| {}));
    }

    #[test]
    fn buf_writer_truncates_without_allocating() {
        let mut b = [0u8; 8];
        let mut w = BufWriter::new(&mut b);
        write!(w, "{}-{}", 1234, 56789).unwrap();
        assert_eq!(w.as_bytes(), b"1234-567");
        assert!(w.truncated);
        let mut b = [0u8; 32];
        let mut w = BufWriter::new(&mut b);
        write!(w, "{}", Bytes(3 * 1024 * 1024 + 512 * 1024)).unwrap();
        assert_eq!(w.as_bytes(), b"3.5 MiB");
        let mut b = [0u8; 32];
        let mut w = BufWriter::new(&mut b);
        write!(w, "[{:>9}]", Bytes(2048)).unwrap();
        assert_eq!(w.as_bytes(), b"[  2.0 KiB]");
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance(b"DOMALLOC_STAT", b"DOMALLOC_STATS"), 1);
        assert_eq!(edit_distance(b"abc", b"abc"), 0);
        assert_eq!(edit_distance(b"kitten", b"sitting"), 3);
    }
}
