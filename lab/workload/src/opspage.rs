//! The tagged ops page: one page-aligned 4096-byte page of guest RAM that the
//! host finds by scanning guest memory for a 16-byte magic.
//!
//! The layout is documented (and must stay in sync with) `lab/workload/README.md`.
//! All integer fields are `u64` little-endian at 8-byte aligned offsets, so a
//! host reading the page with `process_vm_readv` never sees a torn value.

use std::sync::atomic::{AtomicU64, Ordering};

pub const PAGE: usize = 4096;
pub const VERSION: u64 = 1;

// ---- header -------------------------------------------------------------
pub const OFF_MAGIC: usize = 0x000; // [u8; 16]
pub const OFF_VERSION: usize = 0x010;
pub const OFF_OPS: usize = 0x018;
pub const OFF_PAGES_DIRTIED: usize = 0x020;
pub const OFF_HEARTBEAT: usize = 0x028;
pub const OFF_WORKLOAD_TYPE: usize = 0x030;
pub const OFF_READY: usize = 0x038; // 0 initialising, 1 running, 2 failed
pub const OFF_MODE: usize = 0x040;
// ---- parameters (as parsed, after defaults) -----------------------------
pub const OFF_WS_MB: usize = 0x048;
pub const OFF_RATE: usize = 0x050;
pub const OFF_BYTES: usize = 0x058;
pub const OFF_ENTROPY: usize = 0x060;
pub const OFF_PATTERN: usize = 0x068;
pub const OFF_COMPUTE: usize = 0x070;
pub const OFF_COLD_MB: usize = 0x078;
pub const OFF_COLD_ENTROPY: usize = 0x080;
pub const OFF_SEED: usize = 0x088;
pub const OFF_LAYOUT: usize = 0x090;
pub const OFF_VALUE_BYTES: usize = 0x098;
pub const OFF_KEYS: usize = 0x0a0;
pub const OFF_WRITE_PCT: usize = 0x0a8;
pub const OFF_LEVEL: usize = 0x0b0;
pub const OFF_OPS_RATE: usize = 0x0b8;
pub const OFF_PIPELINE: usize = 0x0c0;
pub const OFF_CHUNK_MB: usize = 0x0c8;
pub const OFF_ROWS_PER_TXN: usize = 0x0d0;
pub const OFF_MEM_MB: usize = 0x0d8;
// 0x0e0..0x100 reserved (zero)
// ---- live counters / status ---------------------------------------------
pub const OFF_BYTES_DONE: usize = 0x100;
pub const OFF_UPTIME_MS: usize = 0x108;
pub const OFF_READY_MS: usize = 0x110;
pub const OFF_OPS_LAST_SEC: usize = 0x118;
pub const OFF_PAGES_LAST_SEC: usize = 0x120;
pub const OFF_DISTINCT_LAST_SEC: usize = 0x128;
pub const OFF_ERRORS: usize = 0x130;
pub const OFF_WS_PAGES: usize = 0x138;
pub const OFF_WS_VADDR: usize = 0x140;
pub const OFF_PAGE_VADDR: usize = 0x148;
pub const OFF_PID: usize = 0x150;
pub const OFF_CHILD_PID: usize = 0x158;
pub const OFF_READY_BOOTTIME_MS: usize = 0x160;
pub const OFF_AUX: usize = 0x168;
// 0x170..0x180 reserved (zero)
pub const OFF_MODE_NAME: usize = 0x180; // [u8; 16] ASCII, NUL padded
pub const OFF_ERROR_MSG: usize = 0x200; // [u8; 256] ASCII, NUL terminated (ready == 2)
pub const ERROR_MSG_LEN: usize = 256;

/// The magic is `MAGIC_A ^ MAGIC_B`, computed at run time so that its bytes
/// never appear verbatim in the binary or the initramfs.
///
/// magic = 6d 69 67 73 69 67 68 74 2d 6f 70 73 a7 3c 5e 01
///       = "migsight-ops" followed by a7 3c 5e 01
const MAGIC_A: [u8; 16] = [
    0x3c, 0xa1, 0x95, 0x02, 0x7e, 0xd4, 0x19, 0x8b, 0x44, 0x60, 0xc2, 0x5d, 0x13, 0xe8, 0x71, 0x9f,
];
const MAGIC_B: [u8; 16] = [
    0x51, 0xc8, 0xf2, 0x71, 0x17, 0xb3, 0x71, 0xff, 0x69, 0x0f, 0xb2, 0x2e, 0xb4, 0xd4, 0x2f, 0x9e,
];

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
    fn magic_is_the_documented_bytes() {
        let page = crate::util::Region::new(PAGE).unwrap();
        let p = OpsPage::new(page.ptr);
        p.write_magic();
        let got = unsafe { std::slice::from_raw_parts(page.ptr, 16) };
        // lab/workload/README.md: 6d 69 67 73 69 67 68 74 2d 6f 70 73 a7 3c 5e 01
        let mut want = b"migsight-ops".to_vec();
        want.extend_from_slice(&[0xa7, 0x3c, 0x5e, 0x01]);
        assert_eq!(got, &want[..]);
    }

    #[test]
    fn fields_are_u64_le_at_their_offsets() {
        let page = crate::util::Region::new(PAGE).unwrap();
        let p = OpsPage::new(page.ptr);
        p.set(OFF_OPS, 0x0102_0304_0506_0708);
        let b = unsafe { std::slice::from_raw_parts(page.ptr.add(0x18), 8) };
        assert_eq!(b, &[8, 7, 6, 5, 4, 3, 2, 1]);
        let offs = [
            OFF_VERSION,
            OFF_OPS,
            OFF_PAGES_DIRTIED,
            OFF_HEARTBEAT,
            OFF_WORKLOAD_TYPE,
            OFF_READY,
            OFF_MODE,
            OFF_WS_MB,
            OFF_RATE,
            OFF_BYTES,
            OFF_ENTROPY,
            OFF_PATTERN,
            OFF_COMPUTE,
            OFF_COLD_MB,
            OFF_COLD_ENTROPY,
            OFF_SEED,
            OFF_LAYOUT,
            OFF_VALUE_BYTES,
            OFF_KEYS,
            OFF_WRITE_PCT,
            OFF_LEVEL,
            OFF_OPS_RATE,
            OFF_PIPELINE,
            OFF_CHUNK_MB,
            OFF_ROWS_PER_TXN,
            OFF_MEM_MB,
        ];
        // Header and parameters are consecutive u64s from 0x10.
        for (i, off) in offs.iter().enumerate() {
            assert_eq!(*off, 0x10 + 8 * i);
        }
        p.set_bytes(OFF_MODE_NAME, 16, b"synthetic");
        let n = unsafe { std::slice::from_raw_parts(page.ptr.add(0x180), 16) };
        assert_eq!(&n[..10], b"synthetic\0");
    }
}
