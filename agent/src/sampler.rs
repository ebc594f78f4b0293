//! Page-sampling estimators of the memory features.
//!
//! A fixed uniform random sample of guest pages is read once per interval.
//! A page whose content changed since the previous read was dirtied in that
//! interval. Because the sample is fixed for the whole window:
//!
//! * the fraction of sampled pages that changed in interval *i* is an unbiased
//!   estimate of the fraction of all pages dirtied in it (distinct pages per
//!   interval, which is what a page dirty rate counts);
//! * the fraction of sampled pages that changed at least once is an unbiased
//!   estimate of the fraction of pages in the working set (a new sample each
//!   interval would not see a page dirtied in one interval and sampled in
//!   another, and would underestimate it);
//! * the fraction of non-zero sampled pages estimates the non-zero RAM.
//!
//! Standard errors are those of a proportion drawn without replacement
//! (binomial variance with the finite-population correction).
//!
//! The sample is kept in a random order (`rank`), so dropping the pages of
//! highest rank to stay inside the CPU budget leaves a uniform random sample.
//! A copy of each sampled page's previous content is kept for at most
//! `copy_cap` pages (the lowest ranks), for the modified-bytes estimate.

use migsight_proto::rng::SplitMix64;

use crate::error::AgentError;
use crate::guest_memory::{GuestMemory, PAGE};
use std::sync::OnceLock;

/// Pages read per `process_vm_readv` batch (4 MiB of scratch).
const BATCH: usize = 1024;

/// A small, fast PRNG (splitmix64) for choosing the sample.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }
    /// A generator seeded from the clock and the pid.
    pub fn from_entropy() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng::new(t ^ ((std::process::id() as u64) << 32))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// `k` distinct values of `0..n` in uniformly random order (Floyd's
/// algorithm, then a shuffle).
pub fn sample_without_replacement(n: u64, k: usize, rng: &mut Rng) -> Vec<u64> {
    let k = (k as u64).min(n) as usize;
    if k as u64 * 2 >= n {
        // Dense: shuffle everything and take a prefix.
        let mut all: Vec<u64> = (0..n).collect();
        for i in 0..k {
            let j = i + rng.below((n as usize - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        return all;
    }
    let mut set = std::collections::HashSet::with_capacity(k * 2);
    let mut out = Vec::with_capacity(k);
    for j in (n - k as u64)..n {
        let t = rng.below(j + 1);
        let v = if set.insert(t) {
            t
        } else {
            set.insert(j);
            j
        };
        out.push(v);
    }
    for i in (1..out.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        out.swap(i, j);
    }
    out
}

/// A 64-bit content hash of a page (four independent multiply-rotate lanes);
/// also says whether the page is all zero. Any change of one 8-byte word
/// always changes its lane; unrelated collisions have probability ~2^-64.
pub fn page_hash(p: &[u8]) -> (u64, bool) {
    const K: u64 = 0x9fb2_1c65_1e98_df25;
    let mut h = [
        0x243f_6a88_85a3_08d3u64,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    ];
    let mut or = 0u64;
    for c in p.chunks_exact(32) {
        for j in 0..4 {
            let w = u64::from_le_bytes(c[j * 8..j * 8 + 8].try_into().unwrap());
            or |= w;
            h[j] = (h[j] ^ w).wrapping_mul(K).rotate_left(29);
        }
    }
    let mut x = h[0] ^ h[1].rotate_left(17) ^ h[2].rotate_left(31) ^ h[3].rotate_left(47);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x, or == 0)
}

/// Number of byte positions at which `a` and `b` differ.
pub fn modified_bytes(a: &[u8], b: &[u8]) -> u32 {
    debug_assert_eq!(a.len(), b.len());
    let mut n = 0u32;
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        let d =
            u64::from_le_bytes(x.try_into().unwrap()) ^ u64::from_le_bytes(y.try_into().unwrap());
        if d != 0 {
            // Fold each byte onto its low bit, then count bytes.
            let mut t = d | (d >> 4);
            t |= t >> 2;
            t |= t >> 1;
            n += (t & 0x0101_0101_0101_0101).count_ones();
        }
    }
    n + ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .filter(|(x, y)| x != y)
        .count() as u32
}

fn xlogx_table() -> &'static [f64] {
    static T: OnceLock<Vec<f64>> = OnceLock::new();
    T.get_or_init(|| {
        (0..=PAGE)
            .map(|c| {
                if c == 0 {
                    0.0
                } else {
                    c as f64 * (c as f64).log2()
                }
            })
            .collect()
    })
}

/// Shannon entropy of the byte histogram of `p`, in bits per byte divided by
/// 8 (0 = one repeated byte, 1 = all 256 values equally often).
pub fn byte_entropy(p: &[u8]) -> f64 {
    if p.is_empty() {
        return 0.0;
    }
    let mut h = [[0u32; 256]; 4];
    let mut it = p.chunks_exact(4);
    for c in &mut it {
        h[0][c[0] as usize] += 1;
        h[1][c[1] as usize] += 1;
        h[2][c[2] as usize] += 1;
        h[3][c[3] as usize] += 1;
    }
    for &b in it.remainder() {
        h[0][b as usize] += 1;
    }
    let n = p.len() as f64;
    let table = if p.len() <= PAGE {
        Some(xlogx_table())
    } else {
        None
    };
    let mut s = 0.0;
    for (((a, b), c), d) in h[0].iter().zip(&h[1]).zip(&h[2]).zip(&h[3]) {
        let c = (a + b + c + d) as usize;
        if c > 0 {
            s += match table {
                Some(t) => t[c],
                None => c as f64 * (c as f64).log2(),
            };
        }
    }
    ((n.log2() - s / n) / 8.0).clamp(0.0, 1.0)
}

/// Mean and standard error accumulator.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MeanAcc {
    pub n: u64,
    sum: f64,
    sumsq: f64,
}

impl MeanAcc {
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sumsq += x * x;
    }
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
    /// Standard error of the mean (0 for fewer than two values).
    pub fn std_error(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        let m = self.sum / n;
        let var = ((self.sumsq - n * m * m) / (n - 1.0)).max(0.0);
        (var / n).sqrt()
    }
}

/// Standard error of a proportion `p` in a sample of `s` out of `n` drawn
/// without replacement.
pub fn proportion_se(p: f64, s: usize, n: u64) -> f64 {
    if s == 0 {
        return 0.0;
    }
    let fpc = if n > 1 {
        ((n as f64 - s as f64) / (n as f64 - 1.0)).max(0.0)
    } else {
        0.0
    };
    (p * (1.0 - p) / s as f64 * fpc).sqrt()
}

#[derive(Debug, Clone)]
struct Entry {
    page: u64,
    rank: u32,
    hash: u64,
    zero: bool,
    ever_dirty: bool,
    /// Intervals in which this page was found dirty.
    dirty_count: u32,
    /// Bit `i` set: dirty in interval `i` (the first [`HISTORY_INTERVALS`]).
    history: u64,
    copy: Option<u32>,
}

/// One interval's count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalCount {
    /// Seconds since the previous read of the sample.
    pub dt: f64,
    /// Sampled pages that changed.
    pub dirty: usize,
    /// Pages in the sample.
    pub sampled: usize,
}

/// Intervals whose dirty bits each sampled page keeps, for [`Estimates::dirtied`].
pub const HISTORY_INTERVALS: usize = 64;

/// Window lengths, in intervals, of the distinct-dirtied curve.
pub const DIRTIED_WINDOWS: [usize; 5] = [1, 2, 4, 8, 16];

/// Distinct pages dirtied within a window of consecutive intervals.
///
/// Pre-copy re-sends, after a round of `t` seconds, the distinct pages
/// dirtied during it: this curve, not `dirty rate × t`, which counts a page
/// dirtied in two intervals twice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowDirtied {
    pub intervals: usize,
    /// Mean length of such windows in the profile, s.
    pub seconds: f64,
    /// Pages dirtied at least once in the window, averaged over its start.
    pub pages: f64,
}

/// What one read of the sample found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotStats {
    /// Dirty pages found (0 for the first read).
    pub dirty: usize,
    /// Thread CPU seconds the read took.
    pub cpu_seconds: f64,
}

/// Estimates at the end of a window. Sizes in pages, rates in pages/s.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimates {
    pub total_pages: u64,
    pub sample_size: usize,
    pub intervals: usize,
    /// Distinct pages dirtied per second, averaged over intervals.
    pub dirty_pages_per_s: Option<f64>,
    pub dirty_pages_per_s_se: f64,
    /// Pages dirtied at least once in the window.
    pub wss_pages: Option<f64>,
    pub wss_pages_se: f64,
    /// Non-zero pages.
    pub nonzero_pages: f64,
    pub nonzero_pages_se: f64,
    /// Mean bytes differing between consecutive copies of a dirtied page.
    pub mwpp: Option<f64>,
    pub mwpp_se: f64,
    pub mwpp_observations: u64,
    /// Mean normalised byte entropy of working-set pages.
    pub wse: Option<f64>,
    pub wse_se: f64,
    /// Mean normalised byte entropy of non-zero pages outside the working set.
    pub nwse: Option<f64>,
    pub nwse_se: f64,
    /// The distinct-dirtied curve, for the [`DIRTIED_WINDOWS`] that fit in
    /// the window (and in [`HISTORY_INTERVALS`]).
    pub dirtied: Vec<WindowDirtied>,
}

/// The sample and its state across a window.
pub struct Sampler {
    total_pages: u64,
    entries: Vec<Entry>,
    copies: Vec<u8>,
    scratch: Vec<u8>,
    reads: usize,
    counts: Vec<IntervalCount>,
    mwpp: MeanAcc,
    wse: MeanAcc,
    nwse: MeanAcc,
    entropy_cap: usize,
    last_read: Option<std::time::Instant>,
}

impl Sampler {
    /// A sample of `sample_size` of `total_pages` pages, keeping previous
    /// copies of at most `copy_cap` of them.
    pub fn new(total_pages: u64, sample_size: usize, copy_cap: usize, rng: &mut Rng) -> Sampler {
        let pages = sample_without_replacement(total_pages, sample_size, rng);
        let ncopies = copy_cap.min(pages.len());
        let mut entries: Vec<Entry> = pages
            .iter()
            .enumerate()
            .map(|(rank, &page)| Entry {
                page,
                rank: rank as u32,
                hash: 0,
                zero: false,
                ever_dirty: false,
                dirty_count: 0,
                history: 0,
                copy: (rank < ncopies).then_some(rank as u32),
            })
            .collect();
        // Read in address order: friendlier to the page tables.
        entries.sort_unstable_by_key(|e| e.page);
        Sampler {
            total_pages,
            entries,
            copies: vec![0u8; ncopies * PAGE],
            scratch: vec![0u8; BATCH * PAGE],
            reads: 0,
            counts: Vec::new(),
            mwpp: MeanAcc::default(),
            wse: MeanAcc::default(),
            nwse: MeanAcc::default(),
            entropy_cap: usize::MAX,
            last_read: None,
        }
    }

    /// Computes entropies on at most `cap` sampled pages (those of lowest
    /// rank); unlimited by default.
    pub fn set_entropy_cap(&mut self, cap: usize) {
        self.entropy_cap = cap;
    }

    /// Pages in the sample now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of memory held for page copies and scratch.
    pub fn memory_bytes(&self) -> usize {
        self.copies.len() + self.scratch.len() + self.entries.len() * std::mem::size_of::<Entry>()
    }

    /// Keeps only the `n` pages of lowest rank (still a uniform random sample).
    pub fn truncate(&mut self, n: usize) {
        if n < self.entries.len() {
            self.entries.retain(|e| (e.rank as usize) < n);
        }
    }

    /// Reads the whole sample. The first read records the baseline; each
    /// later read counts the pages that changed. With `final_read`, also
    /// computes the entropies from the content just read.
    pub fn snapshot(
        &mut self,
        mem: &GuestMemory,
        final_read: bool,
    ) -> Result<SnapshotStats, AgentError> {
        let cpu0 = crate::procfs::thread_cpu_seconds();
        let now = std::time::Instant::now();
        let first = self.reads == 0;
        let mut dirty = 0usize;
        let mut pages = Vec::with_capacity(BATCH);
        for start in (0..self.entries.len()).step_by(BATCH) {
            let end = (start + BATCH).min(self.entries.len());
            pages.clear();
            pages.extend(self.entries[start..end].iter().map(|e| e.page));
            mem.read_pages(&pages, &mut self.scratch[..pages.len() * PAGE])?;
            for (k, e) in self.entries[start..end].iter_mut().enumerate() {
                let cur = &self.scratch[k * PAGE..(k + 1) * PAGE];
                let (h, zero) = page_hash(cur);
                let changed = !first && h != e.hash;
                if changed {
                    dirty += 1;
                    e.ever_dirty = true;
                    e.dirty_count += 1;
                    // This read closes interval `counts.len()`.
                    if self.counts.len() < HISTORY_INTERVALS {
                        e.history |= 1 << self.counts.len();
                    }
                }
                if let Some(slot) = e.copy {
                    let prev = &mut self.copies[slot as usize * PAGE..(slot as usize + 1) * PAGE];
                    if changed {
                        self.mwpp.add(modified_bytes(prev, cur) as f64);
                    }
                    if first || changed {
                        prev.copy_from_slice(cur);
                    }
                }
                e.hash = h;
                e.zero = zero;
                if final_read && !zero && (e.rank as usize) < self.entropy_cap {
                    // Entropy of the sampled pages of rank below the cap: the
                    // sample order is random, so they are a uniform
                    // sub-sample (never "the first N in address order",
                    // which would favour low guest-physical memory).
                    let h = byte_entropy(cur);
                    if e.ever_dirty {
                        self.wse.add(h);
                    } else {
                        self.nwse.add(h);
                    }
                }
            }
        }
        if let Some(prev) = self.last_read {
            self.counts.push(IntervalCount {
                dt: now.duration_since(prev).as_secs_f64(),
                dirty,
                sampled: self.entries.len(),
            });
        }
        self.last_read = Some(now);
        self.reads += 1;
        Ok(SnapshotStats {
            dirty,
            cpu_seconds: crate::procfs::thread_cpu_seconds() - cpu0,
        })
    }

    /// Counts per interval so far.
    pub fn counts(&self) -> &[IntervalCount] {
        &self.counts
    }

    /// The estimates from the reads so far.
    pub fn estimates(&self) -> Estimates {
        let n = self.total_pages;
        let s = self.entries.len();
        let nf = n as f64;
        let k = self.counts.len();
        let (dirty, dirty_se) = if k == 0 {
            (None, 0.0)
        } else {
            let mut sum = 0.0;
            for c in &self.counts {
                let p = c.dirty as f64 / c.sampled.max(1) as f64;
                sum += p * nf / c.dt.max(1e-3);
            }
            // The same pages are read in every interval, so the intervals'
            // counts are correlated: the sampling unit is the page. Standard
            // error from the spread of the pages' dirty counts per second.
            let secs: f64 = self.counts.iter().map(|c| c.dt.max(1e-3)).sum();
            let mut acc = MeanAcc::default();
            for e in &self.entries {
                acc.add(e.dirty_count as f64 / secs);
            }
            let fpc = if n > 1 {
                ((nf - s as f64) / (nf - 1.0)).max(0.0)
            } else {
                0.0
            };
            (Some(sum / k as f64), acc.std_error() * fpc.sqrt() * nf)
        };
        let frac = |pred: &dyn Fn(&Entry) -> bool| {
            let c = self.entries.iter().filter(|e| pred(e)).count();
            let p = if s > 0 { c as f64 / s as f64 } else { 0.0 };
            (p * nf, proportion_se(p, s, n) * nf)
        };
        let (wss, wss_se) = frac(&|e| e.ever_dirty);
        let (nz, nz_se) = frac(&|e| !e.zero);
        Estimates {
            total_pages: n,
            sample_size: s,
            intervals: k,
            dirty_pages_per_s: dirty,
            dirty_pages_per_s_se: dirty_se,
            wss_pages: (k > 0).then_some(wss),
            wss_pages_se: wss_se,
            nonzero_pages: nz,
            nonzero_pages_se: nz_se,
            mwpp: self.mwpp.mean(),
            mwpp_se: self.mwpp.std_error(),
            mwpp_observations: self.mwpp.n,
            wse: self.wse.mean(),
            wse_se: self.wse.std_error(),
            nwse: self.nwse.mean(),
            nwse_se: self.nwse.std_error(),
            dirtied: self.dirtied_curve(),
        }
    }

    /// Distinct pages dirtied within `k` consecutive intervals, for each `k`
    /// of [`DIRTIED_WINDOWS`]: the sampled fraction dirtied at least once in
    /// the window, averaged over every start position, times the pages.
    fn dirtied_curve(&self) -> Vec<WindowDirtied> {
        let held = self.counts.len().min(HISTORY_INTERVALS);
        let s = self.entries.len();
        if s == 0 {
            return Vec::new();
        }
        let nf = self.total_pages as f64;
        // The bits alone: 8 bytes a page instead of the whole entry per pass.
        let history: Vec<u64> = self.entries.iter().map(|e| e.history).collect();
        DIRTIED_WINDOWS
            .iter()
            .filter(|&&k| k <= held)
            .map(|&k| {
                let starts = held - k + 1;
                let mask = if k == 64 { u64::MAX } else { (1u64 << k) - 1 };
                let mut hits = 0u64;
                let mut secs = 0.0;
                for i in 0..starts {
                    let m = mask << i;
                    hits += history.iter().filter(|&&h| h & m != 0).count() as u64;
                    secs += self.counts[i..i + k].iter().map(|c| c.dt).sum::<f64>();
                }
                WindowDirtied {
                    intervals: k,
                    seconds: secs / starts as f64,
                    pages: hits as f64 / (starts * s) as f64 * nf,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_known_distributions() {
        assert_eq!(byte_entropy(&[7u8; PAGE]), 0.0);
        // Two symbols equally often: 1 bit = 1/8.
        let two: Vec<u8> = (0..PAGE).map(|i| (i % 2) as u8 * 200).collect();
        assert!((byte_entropy(&two) - 0.125).abs() < 1e-12);
        // All 256 values equally often: 8 bits = 1.
        let all: Vec<u8> = (0..PAGE).map(|i| i as u8).collect();
        assert!((byte_entropy(&all) - 1.0).abs() < 1e-12);
        // 16 symbols: 4 bits = 0.5.
        let sixteen: Vec<u8> = (0..PAGE).map(|i| (i % 16) as u8).collect();
        assert!((byte_entropy(&sixteen) - 0.5).abs() < 1e-12);
        // Skewed: p = (3/4, 1/4) -> 0.811278 bits.
        let skew: Vec<u8> = (0..PAGE).map(|i| (i % 4 == 0) as u8).collect();
        assert!((byte_entropy(&skew) - 0.811_278_124_459_132_8 / 8.0).abs() < 1e-9);
    }

    #[test]
    fn modified_bytes_counts_positions() {
        let a = vec![0u8; PAGE];
        let mut b = a.clone();
        assert_eq!(modified_bytes(&a, &b), 0);
        for i in [0usize, 1, 7, 8, 100, 4095] {
            b[i] = 0x80;
        }
        assert_eq!(modified_bytes(&a, &b), 6);
        b[3] = 1; // low bit only
        assert_eq!(modified_bytes(&a, &b), 7);
        let c = vec![0xffu8; PAGE];
        assert_eq!(modified_bytes(&a, &c), 4096);
        assert_eq!(modified_bytes(&a[..13], &c[..13]), 13);
    }

    #[test]
    fn hash_sees_every_single_byte_change() {
        let mut rng = Rng::new(3);
        let mut p: Vec<u8> = (0..PAGE).map(|_| rng.next_u64() as u8).collect();
        let (h0, z) = page_hash(&p);
        assert!(!z);
        for i in (0..PAGE).step_by(37) {
            let old = p[i];
            p[i] ^= 1 << (i % 8);
            assert_ne!(page_hash(&p).0, h0, "byte {i}");
            p[i] = old;
        }
        assert_eq!(page_hash(&p).0, h0);
        assert!(page_hash(&[0u8; PAGE]).1);
    }

    #[test]
    fn sampling_without_replacement_is_distinct_and_uniform() {
        let mut rng = Rng::new(9);
        for (n, k) in [(100u64, 100usize), (1000, 600), (1 << 20, 5000)] {
            let s = sample_without_replacement(n, k, &mut rng);
            assert_eq!(s.len(), k);
            let set: std::collections::HashSet<_> = s.iter().collect();
            assert_eq!(set.len(), k);
            assert!(s.iter().all(|&v| v < n));
        }
        // Mean of a large sample of 0..N is ~N/2.
        let s = sample_without_replacement(1_000_000, 20_000, &mut rng);
        let mean = s.iter().sum::<u64>() as f64 / s.len() as f64;
        assert!((mean - 500_000.0).abs() < 10_000.0, "{mean}");
        // The first elements (ranks) are not sorted: a prefix is a random sub-sample.
        let first: Vec<u64> = s[..100].to_vec();
        let mut sorted = first.clone();
        sorted.sort();
        assert_ne!(first, sorted);
    }

    /// A synthetic "guest" in this process: pages dirtied by a known pattern
    /// between reads, estimators checked against the truth.
    #[test]
    fn estimators_recover_a_synthetic_workload() {
        let total = 32_768usize; // 128 MiB
        let mut mem = vec![0u8; total * PAGE];
        let mut rng = Rng::new(42);
        // Non-zero content in the first 3/4 with 4-bit symbols; the rest is zero.
        let nonzero = total * 3 / 4;
        for b in mem[..nonzero * PAGE].iter_mut() {
            *b = (rng.next_u64() & 0x0f) as u8;
        }
        let ws = 8192usize; // working set: pages 0..ws
        let per_interval = 1000usize; // distinct pages dirtied per interval
        let bytes = 300usize; // bytes modified per dirtied page
        let mut sampler = Sampler::new(total as u64, 6000, 3000, &mut Rng::new(7));
        let gm = GuestMemory::from_own_buffer(&mem);
        sampler.snapshot(&gm, false).unwrap();
        let intervals = 6;
        let mut cursor = 0usize;
        let mut truth_wss = std::collections::HashSet::new();
        for i in 0..intervals {
            // Sequential distinct pages, each with `bytes` distinct positions
            // changed to a new 4-bit value.
            for _ in 0..per_interval {
                let pg = cursor % ws;
                cursor += 1;
                truth_wss.insert(pg);
                let base = pg * PAGE;
                let start = rng.below(PAGE as u64) as usize;
                for j in 0..bytes {
                    let idx = base + (start + j * 13) % PAGE;
                    mem[idx] = (mem[idx] + 1 + (rng.below(15) as u8)) & 0x0f;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            let gm = GuestMemory::from_own_buffer(&mem);
            sampler.snapshot(&gm, i == intervals - 1).unwrap();
        }
        let e = sampler.estimates();
        // The estimator averages each interval's rate, so the truth does
        // too: on a busy host the intervals' lengths differ, and the mean of
        // the rates is not the count over the mean length.
        let dts: f64 = sampler.counts().iter().map(|c| c.dt).sum::<f64>() / intervals as f64;
        let rate_truth = sampler
            .counts()
            .iter()
            .map(|c| per_interval as f64 / c.dt.max(1e-3))
            .sum::<f64>()
            / intervals as f64;
        let rel = |a: f64, b: f64| (a - b).abs() / b;
        let rate = e.dirty_pages_per_s.unwrap();
        assert!(rel(rate, rate_truth) < 0.15, "rate {rate} vs {rate_truth}");
        assert!(
            (rate - rate_truth).abs() < 4.0 * e.dirty_pages_per_s_se + 1.0,
            "se {}",
            e.dirty_pages_per_s_se
        );
        // Sequential dirtying: k intervals dirty min(1000 k, 8192) distinct pages.
        assert_eq!(
            e.dirtied.iter().map(|w| w.intervals).collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        for w in &e.dirtied {
            let truth = (per_interval * w.intervals).min(ws) as f64;
            assert!(rel(w.pages, truth) < 0.15, "{w:?} vs {truth}");
            // Windows of k consecutive intervals, averaged over their start:
            // about k mean intervals (the busier the host, the more the
            // intervals' lengths differ, and the windows with them).
            assert!(rel(w.seconds, dts * w.intervals as f64) < 0.25, "{w:?}");
        }
        let wss = e.wss_pages.unwrap();
        assert!(
            rel(wss, truth_wss.len() as f64) < 0.15,
            "wss {wss} vs {}",
            truth_wss.len()
        );
        assert!(
            rel(e.nonzero_pages, nonzero as f64) < 0.05,
            "nz {}",
            e.nonzero_pages
        );
        let mwpp = e.mwpp.unwrap();
        assert!(rel(mwpp, bytes as f64) < 0.02, "mwpp {mwpp}");
        let wse = e.wse.unwrap();
        assert!((wse - 0.5).abs() < 0.01, "wse {wse}");
        let nwse = e.nwse.unwrap();
        assert!((nwse - 0.5).abs() < 0.01, "nwse {nwse}");
        // The entropy sub-sample must be uniform over the RAM, not the low
        // addresses: make the upper half of the non-zero pages 8-bit.
        for b in mem[(nonzero / 2) * PAGE..nonzero * PAGE].iter_mut() {
            *b = rng.next_u64() as u8;
        }
        let gm = GuestMemory::from_own_buffer(&mem);
        let mut s2 = Sampler::new(total as u64, 6000, 100, &mut Rng::new(11));
        s2.set_entropy_cap(1000);
        s2.snapshot(&gm, false).unwrap();
        s2.snapshot(&gm, true).unwrap();
        let e3 = s2.estimates();
        assert!(
            (e3.nwse.unwrap() - 0.746).abs() < 0.03,
            "nwse {:?}",
            e3.nwse
        );
        assert!(s2.nwse.n <= 1000 && s2.nwse.n > 600, "{}", s2.nwse.n);
        // Truncation keeps a uniform sample and the estimates still hold.
        sampler.truncate(3000);
        assert_eq!(sampler.len(), 3000);
        let e2 = sampler.estimates();
        assert!(
            rel(e2.wss_pages.unwrap(), truth_wss.len() as f64) < 0.2,
            "{e2:?}"
        );
    }
}
