//! The synthetic page-dirtying generator and the idle mode.

use crate::opspage::*;
use crate::params::{Layout, Params, Pattern};
use crate::util::{Pacer, Region, Rng};
use std::io;
use std::time::{Duration, Instant};

pub const PAGE: usize = 4096;

/// Allocates, locks and initialises the working set (and the cold region).
pub struct Memory {
    pub ws: Region,
    pub ws_pages: usize,
    #[allow(dead_code)]
    pub cold: Option<Region>,
}

pub fn setup_memory(p: &Params, rng: &mut Rng) -> io::Result<Memory> {
    let ws_pages = (p.ws_mb as usize * 1024 * 1024 / PAGE).max(1);
    let mut ws = Region::new(ws_pages * PAGE)?;
    // Every working-set page starts with bytes of the same alphabet the
    // writes use, so a page's byte histogram has ~ENTROPY bits throughout.
    rng.fill_alphabet(ws.as_mut_slice(), p.entropy);
    let cold = if p.cold_mb > 0 {
        let mut c = Region::new(p.cold_mb as usize * 1024 * 1024)?;
        rng.fill_alphabet(c.as_mut_slice(), p.cold_entropy);
        Some(c)
    } else {
        None
    };
    Ok(Memory { ws, ws_pages, cold })
}

/// Idle: the memory is allocated and touched once; then nothing happens
/// except the heartbeat thread.
pub fn run_idle(_page: &OpsPage) -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

struct Writer {
    bytes: usize,
    mask: u8,
    layout: Layout,
    perm: Box<[u16; PAGE]>,
}

impl Writer {
    /// Modifies `bytes` distinct positions of the page; every written byte
    /// takes a new value (different from the old one) from the alphabet.
    #[inline(always)]
    fn write(&mut self, pg: &mut [u8], rng: &mut Rng) {
        let mask = self.mask;
        let k = mask as u64; // number of *other* symbols: 2^E - 1
        #[inline(always)]
        fn newval(old: u8, r: u64, k: u64, mask: u8) -> u8 {
            // old + 1 + uniform(0..k) (mod 2^E): never equal to `old`.
            let d = 1 + (((r & 0xffff) * k) >> 16) as u8;
            old.wrapping_add(d) & mask
        }
        if self.bytes >= PAGE {
            for b in pg.iter_mut() {
                let r = rng.next();
                *b = newval(*b, r, k, mask);
            }
            return;
        }
        match self.layout {
            Layout::Run => {
                let start = rng.below(PAGE as u64) as usize;
                for i in 0..self.bytes {
                    let idx = (start + i) & (PAGE - 1);
                    let r = rng.next();
                    pg[idx] = newval(pg[idx], r, k, mask);
                }
            }
            Layout::Scatter => {
                // Partial Fisher-Yates over a persistent permutation: the first
                // `bytes` entries become a uniformly random set of distinct
                // positions; the array stays a permutation.
                let perm = &mut self.perm;
                for i in 0..self.bytes {
                    let r = rng.next();
                    let j = i + (((r >> 32) * (PAGE - i) as u64) >> 32) as usize;
                    perm.swap(i, j);
                    let idx = perm[i] as usize;
                    pg[idx] = newval(pg[idx], r, k, mask);
                }
            }
        }
    }
}

/// Burns `n` iterations of integer arithmetic (the COMPUTE knob).
#[inline(always)]
fn compute(n: u64, seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x ^= x >> 29;
    }
    x
}

pub fn run_synthetic(p: &Params, page: &OpsPage, mem: &mut Memory, rng: &mut Rng) -> ! {
    let n = mem.ws_pages;
    let base = mem.ws.ptr;
    let mut w = Writer {
        bytes: p.bytes as usize,
        mask: ((1u32 << p.entropy) - 1) as u8,
        layout: p.layout,
        perm: {
            let mut a = Box::new([0u16; PAGE]);
            for (i, v) in a.iter_mut().enumerate() {
                *v = i as u16;
            }
            a
        },
    };
    let hot_n = (n / 5).max(1) as u64;
    let cold_n = (n as u64).saturating_sub(hot_n).max(1);
    let mut seq_cursor = 0usize;
    let rate = p.rate;
    if rate == 0 {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    // Check the clock at least every ~1 ms worth of writes.
    let chunk = if rate == u64::MAX {
        64
    } else {
        (rate / 1000).clamp(1, 64)
    };
    let mut pacer = Pacer::new(rate, chunk);
    // Ground truth for host-side estimators: distinct pages written per
    // 1-second window, tracked in a bitmap.
    let mut bitmap = vec![0u64; n.div_ceil(64)];
    let mut distinct = 0u64;
    let mut win_end = Instant::now() + Duration::from_secs(1);
    let mut ops = page.get(OFF_OPS);
    let mut sink = 0u64;
    let bytes_per = p.bytes.min(PAGE as u64);
    loop {
        let g = pacer.grant();
        for _ in 0..g {
            let idx = match p.pattern {
                Pattern::Random => rng.below(n as u64) as usize,
                Pattern::Seq => {
                    let i = seq_cursor;
                    seq_cursor = if seq_cursor + 1 >= n {
                        0
                    } else {
                        seq_cursor + 1
                    };
                    i
                }
                Pattern::HotCold => {
                    let r = rng.next();
                    if (r & 0xffff) < 52429 {
                        ((((r >> 16) & 0xffff_ffff) * hot_n) >> 32) as usize
                    } else {
                        (hot_n + ((((r >> 16) & 0xffff_ffff) * cold_n) >> 32)) as usize
                    }
                }
            };
            let idx = idx.min(n - 1);
            // SAFETY: idx < n, the region holds n pages.
            let pg = unsafe { std::slice::from_raw_parts_mut(base.add(idx * PAGE), PAGE) };
            w.write(pg, rng);
            if p.compute > 0 {
                sink = sink.wrapping_add(compute(p.compute, idx as u64));
            }
            let (wi, bit) = (idx / 64, 1u64 << (idx % 64));
            if bitmap[wi] & bit == 0 {
                bitmap[wi] |= bit;
                distinct += 1;
            }
            ops += 1;
            page.set(OFF_OPS, ops);
            page.set(OFF_PAGES_DIRTIED, ops);
        }
        if g > 0 {
            page.bump(OFF_BYTES_DONE, g * bytes_per);
        }
        let now = Instant::now();
        if now >= win_end {
            page.set(OFF_DISTINCT_LAST_SEC, distinct);
            bitmap.fill(0);
            distinct = 0;
            win_end += Duration::from_secs(1);
            if win_end < now {
                win_end = now + Duration::from_secs(1);
            }
            std::hint::black_box(sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(bytes: usize, entropy: u32, layout: Layout) -> Writer {
        let mut perm = Box::new([0u16; PAGE]);
        for (i, v) in perm.iter_mut().enumerate() {
            *v = i as u16;
        }
        Writer {
            bytes,
            mask: ((1u32 << entropy) - 1) as u8,
            layout,
            perm,
        }
    }

    #[test]
    fn every_write_changes_exactly_bytes_distinct_positions_within_the_alphabet() {
        let mut rng = Rng::new(7);
        for &entropy in &[1u32, 2, 4, 8] {
            for &layout in &[Layout::Scatter, Layout::Run] {
                for &bytes in &[1usize, 2, 100, 512, 4095, 4096] {
                    let mut w = writer(bytes, entropy, layout);
                    let mut pg = vec![0u8; PAGE];
                    rng.fill_alphabet(&mut pg, entropy);
                    for _ in 0..20 {
                        let before = pg.clone();
                        w.write(&mut pg, &mut rng);
                        let changed = before.iter().zip(&pg).filter(|(a, b)| a != b).count();
                        assert_eq!(
                            changed, bytes,
                            "entropy {entropy} layout {layout:?} bytes {bytes}"
                        );
                        assert!(pg.iter().all(|&b| (b as u32) < (1 << entropy)));
                    }
                }
            }
        }
    }

    #[test]
    fn pages_keep_about_entropy_bits() {
        let mut rng = Rng::new(3);
        for &entropy in &[1u32, 3, 4, 8] {
            let mut w = writer(512, entropy, Layout::Scatter);
            let mut pg = vec![0u8; PAGE];
            rng.fill_alphabet(&mut pg, entropy);
            for _ in 0..200 {
                w.write(&mut pg, &mut rng);
            }
            let mut hist = [0usize; 256];
            for &b in &pg {
                hist[b as usize] += 1;
            }
            let h: f64 = hist
                .iter()
                .filter(|&&n| n > 0)
                .map(|&n| {
                    let p = n as f64 / PAGE as f64;
                    -p * p.log2()
                })
                .sum();
            assert!(
                (h - entropy as f64).abs() < 0.1,
                "entropy {entropy}: measured {h}"
            );
        }
    }
}
