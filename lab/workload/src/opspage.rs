//! Writing the tagged ops page from inside the guest. Its layout, magic and
//! modes are `migsight_opspage`'s (documented in `lab/workload/README.md`),
//! shared with the host-side readers.

use std::sync::atomic::{AtomicU64, Ordering};

pub use migsight_opspage::*;

/// The guest's writer of the ops page.
pub struct OpsPage {
    base: *mut u8,
}

// The page lives for the whole process (it is never unmapped) and all
// counter accesses go through atomics.
unsafe impl Send for OpsPage {}
unsafe impl Sync for OpsPage {}

impl OpsPage {
    /// Wraps a zeroed, page-aligned, locked 4096-byte mapping.
    pub fn new(base: *mut u8) -> OpsPage {
        assert_eq!(base as usize % PAGE, 0);
        OpsPage { base }
    }

    pub fn vaddr(&self) -> u64 {
        self.base as u64
    }

    fn cell(&self, off: usize) -> &AtomicU64 {
        assert!(off & 7 == 0 && off + 8 <= PAGE);
        // SAFETY: in-bounds, 8-aligned, the mapping outlives `self`.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    #[inline(always)]
    pub fn get(&self, off: usize) -> u64 {
        self.cell(off).load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub fn set(&self, off: usize, v: u64) {
        // x86-64 is little-endian, so the u64 is stored LE as documented.
        self.cell(off).store(v, Ordering::Relaxed)
    }

    /// Increment for counters with a single writer thread (a plain load +
    /// store, no locked instruction: cheap under TCG).
    #[inline(always)]
    pub fn bump(&self, off: usize, by: u64) {
        let c = self.cell(off);
        c.store(
            c.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        )
    }

    /// Increment for counters written by several threads.
    pub fn add(&self, off: usize, by: u64) {
        self.cell(off).fetch_add(by, Ordering::Relaxed);
    }

    pub fn set_bytes(&self, off: usize, max: usize, s: &[u8]) {
        assert!(off + max <= PAGE);
        let n = s.len().min(max - 1);
        for i in 0..max {
            let b = s.get(i).copied().filter(|_| i < n).unwrap_or(0);
            // SAFETY: in-bounds of the page (asserted above).
            unsafe { std::ptr::write_volatile(self.base.add(off + i), b) };
        }
    }

    /// Writes the magic byte by byte with volatile stores of values computed
    /// from a `black_box`ed constant, so the compiler cannot fold the two
    /// constants into a literal copy of the magic.
    pub fn write_magic(&self) {
        let a = std::hint::black_box(MAGIC_A);
        for (i, (x, y)) in a.iter().zip(MAGIC_B.iter()).enumerate() {
            let b = std::hint::black_box(*x) ^ y;
            unsafe { std::ptr::write_volatile(self.base.add(OFF_MAGIC + i), b) };
        }
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_puts_the_magic_and_fields_where_readers_look() {
        let page = crate::util::Region::new(PAGE).unwrap();
        let p = OpsPage::new(page.ptr);
        p.write_magic();
        p.set(OFF_OPS, 0x0102_0304_0506_0708);
        p.set(OFF_READY, Ready::Running.code());
        let bytes = unsafe { std::slice::from_raw_parts(page.ptr, PAGE) };
        assert_eq!(&bytes[..16], &magic()[..]);
        assert_eq!(&bytes[0x18..0x20], &[8, 7, 6, 5, 4, 3, 2, 1]);
        let h = Header::parse(bytes).unwrap();
        assert_eq!((h.ops, h.ready), (0x0102_0304_0506_0708, Ready::Running));
        p.set_bytes(OFF_MODE_NAME, MODE_NAME_LEN, b"synthetic");
        assert_eq!(&bytes[0x180..0x18a], b"synthetic\0");
        p.set_bytes(OFF_ERROR_MSG, ERROR_MSG_LEN, b"no memory");
        assert_eq!(error_message(bytes), "no memory");
    }
}
