//! Small helpers: RNG, locked memory, pacing, console, clocks.

use std::io;
use std::time::{Duration, Instant};

/// xorshift64* — small, fast, good enough for workload generation.
///
/// Not `migsight_proto::rng::Rng`: this binary runs inside the guest as a
/// small static executable with no dependency but libc (proto brings serde,
/// tokio and csv), it draws in the hot loop of every dirtied page, and its
/// stream is what the guests of the recorded lab data dirtied.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 scramble so that SEED=0/1/2 give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    #[inline(always)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0) by multiply-high.
    #[inline(always)]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    /// Fills `buf` with symbols of a 2^entropy alphabet (entropy 0..=8;
    /// 0 gives all zero bytes).
    pub fn fill_alphabet(&mut self, buf: &mut [u8], entropy: u32) {
        if entropy == 0 {
            buf.fill(0);
            return;
        }
        let mask = ((1u32 << entropy) - 1) as u8;
        let m64 = u64::from_ne_bytes([mask; 8]);
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&(self.next() & m64).to_ne_bytes());
        }
        for b in chunks.into_remainder() {
            *b = (self.next() as u8) & mask;
        }
    }
}

/// An anonymous private mapping, populated, excluded from fork (so a fork
/// never copy-on-writes it into another physical page) and locked.
pub struct Region {
    pub ptr: *mut u8,
    pub len: usize,
}

unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    pub fn new(len: usize) -> io::Result<Region> {
        let len = len.max(4096).div_ceil(4096) * 4096;
        // SAFETY: plain anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        unsafe {
            // Best effort: keep the pages 4 KiB and in place, never shared by fork.
            libc::madvise(p, len, libc::MADV_DONTFORK);
            libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
            if libc::mlock(p, len) != 0 {
                let e = io::Error::last_os_error();
                libc::munmap(p, len);
                return Err(e);
            }
        }
        Ok(Region {
            ptr: p as *mut u8,
            len,
        })
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is valid for `len` bytes for our lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// Locks all current and future memory of this process.
pub fn mlockall() -> io::Result<()> {
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// As PID 1: writes one line to the console without ever blocking (O_NONBLOCK; a full
/// or absent console just drops the line).
pub fn console(line: &str) {
    if std::process::id() != 1 {
        // Not the guest's init (e.g. a test run on a host): use stderr.
        eprintln!("{line}");
        return;
    }
    for path in [c"/dev/console", c"/dev/ttyS0"] {
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            let msg = format!("{line}\r\n");
            unsafe {
                libc::write(fd, msg.as_ptr() as *const libc::c_void, msg.len());
                libc::close(fd);
            }
            return;
        }
    }
}

pub fn clock_ms(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Paces operations at `rate` per second in 10 ms slices.
///
/// `rate == u64::MAX` means unlimited. A backlog (e.g. after the guest was
/// paused or throttled) is capped at 100 ms worth of operations, so the
/// workload never bursts to catch up on a long stall.
pub struct Pacer {
    rate: u64,
    start: Instant,
    done: u64,
    max_chunk: u64,
}

pub const SLICE: Duration = Duration::from_millis(10);

impl Pacer {
    pub fn new(rate: u64, max_chunk: u64) -> Pacer {
        Pacer {
            rate,
            start: Instant::now(),
            done: 0,
            max_chunk: max_chunk.max(1),
        }
    }

    /// How many operations may be done right now (at most `max_chunk`).
    /// Returns 0 after sleeping until the next slice when nothing is due.
    pub fn grant(&mut self) -> u64 {
        if self.rate == u64::MAX {
            return self.max_chunk;
        }
        let el = self.start.elapsed();
        let allowed = (el.as_nanos() * self.rate as u128 / 1_000_000_000) as u64;
        let cap = (self.rate / 10).max(1);
        if allowed > self.done + cap {
            self.done = allowed - cap;
        }
        if allowed > self.done {
            let n = (allowed - self.done).min(self.max_chunk);
            self.done += n;
            return n;
        }
        // Nothing due: sleep to the next 10 ms slice boundary (or less if the
        // next op is due sooner, for high rates).
        let slice_ns = SLICE.as_nanos() as u64;
        let el_ns = el.as_nanos() as u64;
        let next_slice = (el_ns / slice_ns + 1) * slice_ns;
        std::thread::sleep(Duration::from_nanos(next_slice - el_ns));
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_holds_the_rate() {
        let mut p = Pacer::new(5000, 64);
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed() < Duration::from_millis(300) {
            n += p.grant();
        }
        // 1500 expected (never more than rate x time + one chunk); allow for a
        // loaded machine below.
        assert!((1000..=1600).contains(&n), "{n}");
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::new(1);
        for n in [1u64, 2, 3, 1000, u64::MAX] {
            for _ in 0..1000 {
                assert!(r.below(n) < n);
            }
        }
    }
}
