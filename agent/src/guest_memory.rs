//! Reading a QEMU guest's RAM from the host with `process_vm_readv`.
//!
//! The guest RAM is the anonymous `rw-p` mapping of the RAM size in
//! `/proc/PID/maps` (a memfd or file backend shows as a `rw-s` file mapping
//! such as `/memfd:ram (deleted)`). TCG's code buffer (`rwxp`) is never taken.
//! A guest with several memory backends (one per NUMA node, as OpenStack's
//! `hw:numa_nodes` or KubeVirt's NUMA passthrough configure; hot-plugged
//! DIMMs) has one mapping per backend: they are found by their sizes and
//! read as one RAM, region after region. Offsets here are offsets into that
//! RAM, which for a one-backend `-M pc` guest with less than ~3.5 GiB equal
//! guest-physical addresses.

use crate::error::AgentError;
use std::fmt;

/// Bytes per page read.
pub const PAGE: usize = 4096;
/// Largest number of iovecs in one `process_vm_readv` call (Linux IOV_MAX).
const IOV_BATCH: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub path: String,
}

impl Mapping {
    fn len(&self) -> u64 {
        self.end - self.start
    }
    /// Anonymous private or memfd/file shared, writable, not executable, not a
    /// special region.
    fn is_ram_candidate(&self) -> bool {
        let p = self.perms.as_bytes();
        if p.len() < 4 || p[0] != b'r' || p[1] != b'w' || p[2] == b'x' {
            return false;
        }
        if self.path.is_empty() {
            return true;
        }
        if self.path.starts_with('[') {
            return false;
        }
        // memfd / hugetlbfs / memory-backend-file are shared file mappings.
        p[3] == b's' && (self.path.starts_with("/memfd:") || self.path.starts_with('/'))
    }
}

pub(crate) fn parse_maps(s: &str) -> Vec<Mapping> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.splitn(6, ' ');
            let range = it.next()?;
            let perms = it.next()?.to_string();
            let _off = it.next()?;
            let _dev = it.next()?;
            let _inode = it.next()?;
            let path = it.next().unwrap_or("").trim().to_string();
            let (a, b) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
                perms,
                path,
            })
        })
        .collect()
}

/// Picks the guest RAM: one mapping of exactly `ram_size` bytes (several
/// adjacent pieces of one mapping are joined), else the largest candidate of
/// at least 16 MiB when the size is unknown.
pub(crate) fn find_ram(maps: &[Mapping], ram_size: Option<u64>) -> Option<(u64, u64)> {
    let cands: Vec<&Mapping> = maps.iter().filter(|m| m.is_ram_candidate()).collect();
    if let Some(size) = ram_size {
        // Exact single mapping; prefer a named (memfd/file) backend, then the
        // lowest address.
        let mut exact: Vec<&&Mapping> = cands.iter().filter(|m| m.len() == size).collect();
        exact.sort_by_key(|m| (m.path.is_empty(), m.start));
        if let Some(m) = exact.first() {
            return Some((m.start, m.len()));
        }
        // Adjacent pieces (split by madvise/mlock) adding up to the size.
        for i in 0..cands.len() {
            let mut end = cands[i].end;
            let mut j = i + 1;
            while j < cands.len() && cands[j].start == end && cands[j].path == cands[i].path {
                end = cands[j].end;
                if end - cands[i].start == size {
                    return Some((cands[i].start, size));
                }
                j += 1;
            }
        }
        return None;
    }
    cands
        .iter()
        .filter(|m| m.len() >= 16 << 20)
        .max_by_key(|m| m.len())
        .map(|m| (m.start, m.len()))
}

/// Finds one distinct mapping per backend size in `parts` (each as
/// [`find_ram`] would, without reusing a mapping); `None` unless all are
/// found. Regions come back in `parts` order.
pub(crate) fn find_ram_parts(maps: &[Mapping], parts: &[u64]) -> Option<Vec<(u64, u64)>> {
    let mut left: Vec<Mapping> = maps.to_vec();
    let mut out = Vec::with_capacity(parts.len());
    for &size in parts {
        let (start, len) = find_ram(&left, Some(size))?;
        // Drop what was taken (a mapping, or the adjacent pieces joined).
        left.retain(|m| m.end <= start || m.start >= start + len);
        out.push((start, len));
    }
    Some(out)
}

/// One backend's mapping in the QEMU process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Region {
    addr: u64,
    len: u64,
    /// A shared (memfd/file) mapping: reading a hole would allocate it.
    shared: bool,
}

/// The RAM of a running guest, readable from the host.
pub struct GuestMemory {
    pid: u32,
    /// Each backend's mapping, in RAM-offset order.
    regions: Vec<Region>,
    size: u64,
    /// `/proc/PID/pagemap`, open when a region is shared: pages not present
    /// there are read as zeros instead of faulted in (see [`Self::read_pages`]).
    pagemap: Option<std::fs::File>,
}

impl fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GuestMemory(pid {}, {} MiB at",
            self.pid,
            self.size >> 20
        )?;
        for r in &self.regions {
            let kind = if r.shared { " shared" } else { "" };
            write!(f, " {:#x}+{}M{kind}", r.addr, r.len >> 20)?;
        }
        write!(f, ")")
    }
}

impl GuestMemory {
    /// Finds the RAM of QEMU process `pid`, its layout taken from the
    /// command line (`-m`, and the `memory-backend-*` objects' sizes).
    pub fn open(pid: u32) -> Result<Self, AgentError> {
        let args = crate::vm::check_qemu(pid)?;
        let size = crate::vm::ram_size_from_args(&args);
        let parts = crate::vm::ram_backends_from_args(&args);
        Self::open_with_layout(pid, Some(size), &parts)
    }

    /// Finds the RAM of `pid` given its size (from QMP `query-memory-size-summary`),
    /// or the largest plausible mapping when `None`.
    pub fn open_with_size(pid: u32, ram_size: Option<u64>) -> Result<Self, AgentError> {
        Self::open_with_layout(pid, ram_size, &[])
    }

    /// Finds the RAM of `pid`: one mapping of `ram_size` bytes; else, with
    /// the sizes of its memory backends (`parts`, from QMP `query-memdev` or
    /// the command line), one mapping per backend; else the largest
    /// plausible mapping (with a warning: the profile then covers part of
    /// the RAM).
    pub fn open_with_layout(
        pid: u32,
        ram_size: Option<u64>,
        parts: &[u64],
    ) -> Result<Self, AgentError> {
        let maps = crate::procfs::read_proc(pid, "maps")?;
        let maps = parse_maps(&maps);
        let regions = find_ram(&maps, ram_size)
            .map(|r| vec![r])
            .or_else(|| (parts.len() > 1).then(|| find_ram_parts(&maps, parts)).flatten())
            .or_else(|| {
                let r = find_ram(&maps, None)?;
                tracing::warn!(pid, wanted = ?ram_size, backends = ?parts, found = r.1, "no mapping of the guest RAM size, nor one per memory backend; using the largest anonymous mapping");
                Some(vec![r])
            })
            .ok_or_else(|| {
                AgentError::Other(format!(
                    "cannot find the guest RAM of process {pid} in /proc/{pid}/maps (wanted {} bytes)",
                    ram_size.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())
                ))
            })?;
        let regions: Vec<Region> = regions
            .into_iter()
            .map(|(addr, len)| Region {
                addr,
                len,
                shared: maps.iter().any(|m| {
                    m.start <= addr && addr < m.end && m.perms.as_bytes().get(3) == Some(&b's')
                }),
            })
            .collect();
        let pagemap = if regions.iter().any(|r| r.shared) {
            match std::fs::File::open(format!("/proc/{pid}/pagemap")) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(pid, error = %e, "cannot open pagemap: sampling a shared RAM backend will allocate the pages it reads");
                    None
                }
            }
        } else {
            None
        };
        let gm = GuestMemory {
            pid,
            size: regions.iter().map(|r| r.len).sum(),
            regions,
            pagemap,
        };
        // Prove we may read it (EPERM without CAP_SYS_PTRACE).
        let mut probe = [0u8; 8];
        gm.read(0, &mut probe)?;
        Ok(gm)
    }

    /// Reads this process's own memory at `[host_addr, host_addr+size)`, for tests.
    pub fn from_own_buffer(buf: &[u8]) -> Self {
        Self::from_own_buffers(&[buf])
    }

    /// This process's own buffers read as one RAM, in order, for tests.
    pub fn from_own_buffers(bufs: &[&[u8]]) -> Self {
        let regions: Vec<Region> = bufs
            .iter()
            .map(|b| Region {
                addr: b.as_ptr() as u64,
                len: b.len() as u64,
                shared: false,
            })
            .collect();
        GuestMemory {
            pid: std::process::id(),
            size: regions.iter().map(|r| r.len).sum(),
            regions,
            pagemap: None,
        }
    }

    /// This process's own shared mapping (e.g. a memfd) read as a shared RAM
    /// backend, with pagemap, for tests.
    pub fn from_own_shared_mapping(buf: &[u8]) -> Result<Self, AgentError> {
        let pagemap = std::fs::File::open("/proc/self/pagemap")
            .map_err(|e| AgentError::io("opening /proc/self/pagemap", e))?;
        Ok(GuestMemory {
            pid: std::process::id(),
            size: buf.len() as u64,
            regions: vec![Region {
                addr: buf.as_ptr() as u64,
                len: buf.len() as u64,
                shared: true,
            }],
            pagemap: Some(pagemap),
        })
    }

    /// Number of memory regions (backends) the RAM was found in.
    pub fn regions(&self) -> usize {
        self.regions.len()
    }

    /// Host address of RAM offset `off`, the bytes left in its region, and
    /// whether that region is shared.
    fn host(&self, mut off: u64) -> Option<(u64, u64, bool)> {
        for r in &self.regions {
            if off < r.len {
                return Some((r.addr + off, r.len - off, r.shared));
            }
            off -= r.len;
        }
        None
    }

    /// For each host page address, whether it is present (or swapped) in
    /// the process's page tables, from `/proc/PID/pagemap` (bits 63 and 62;
    /// readable with the same ptrace access as the memory). Addresses are
    /// looked up in 512-page windows (one 4 KiB read of pagemap each), so a
    /// random 10 % sample costs about one read per 50 pages.
    fn present(&self, pagemap: &std::fs::File, addrs: &[u64]) -> Result<Vec<bool>, AgentError> {
        use std::os::unix::fs::FileExt;
        const WINDOW: u64 = 512;
        let mut order: Vec<usize> = (0..addrs.len()).collect();
        order.sort_by_key(|&k| addrs[k]);
        let mut out = vec![true; addrs.len()];
        let mut entries = [0u8; (WINDOW * 8) as usize];
        let mut window = u64::MAX;
        for k in order {
            let vpn = addrs[k] / PAGE as u64;
            if vpn / WINDOW != window {
                window = vpn / WINDOW;
                pagemap
                    .read_exact_at(&mut entries, window * WINDOW * 8)
                    .map_err(|e| self.os_error(e))?;
            }
            let at = ((vpn % WINDOW) * 8) as usize;
            let mut e = [0u8; 8];
            e.copy_from_slice(&entries[at..at + 8]);
            out[k] = u64::from_le_bytes(e) >> 62 != 0;
        }
        Ok(out)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Guest RAM size, bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// Number of whole pages.
    pub fn pages(&self) -> u64 {
        self.size / PAGE as u64
    }

    /// Reads `buf.len()` bytes at `offset` of the guest RAM.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), AgentError> {
        let len = buf.len() as u64;
        if !matches!(offset.checked_add(len), Some(e) if e <= self.size) {
            return Err(AgentError::BadRequest(format!(
                "read of {len} bytes at {offset:#x} is outside the {}-byte guest RAM",
                self.size
            )));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let Some((addr, room, _)) = self.host(offset + done as u64) else {
                return Err(self.os_error(std::io::Error::from_raw_os_error(libc::EFAULT)));
            };
            let want = (buf.len() - done).min(room as usize);
            let local = libc::iovec {
                iov_base: buf[done..].as_mut_ptr() as *mut libc::c_void,
                iov_len: want,
            };
            let remote = libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: want,
            };
            // SAFETY: local iovec points into `buf`; the remote one is only read by the kernel.
            let n = unsafe {
                libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0)
            };
            if n < 0 {
                return Err(self.os_error(std::io::Error::last_os_error()));
            }
            if n == 0 {
                return Err(self.os_error(std::io::Error::from_raw_os_error(libc::EFAULT)));
            }
            done += n as usize;
        }
        Ok(())
    }

    fn os_error(&self, e: std::io::Error) -> AgentError {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => AgentError::PermissionDenied(format!(
                "process_vm_readv on pid {}: {e}; run the agent as root or grant it CAP_SYS_PTRACE",
                self.pid
            )),
            Some(libc::ESRCH) => AgentError::VmNotFound(format!("process {} has exited", self.pid)),
            _ => AgentError::io(format!("process_vm_readv on pid {}", self.pid), e),
        }
    }

    /// Reads the pages with indices `pages` into `buf` (page `i` of the list
    /// lands at `buf[i*4096..]`), batching up to 1024 pages per system call.
    ///
    /// In a shared (memfd/file) backend a page the guest never touched is a
    /// hole, and reading it would allocate it on the host (anonymous private
    /// RAM maps the shared zero page instead): such pages, not present in
    /// pagemap, are returned as zeros without being read. That is what they
    /// hold, and a 10 % sample of an idle 64 GiB guest no longer costs
    /// 6.4 GiB of host memory.
    pub fn read_pages(&self, pages: &[u64], buf: &mut [u8]) -> Result<(), AgentError> {
        assert!(buf.len() >= pages.len() * PAGE, "buffer too small");
        let npages = self.pages();
        let mut todo: Vec<(usize, u64)> = Vec::with_capacity(pages.len());
        let mut shared: Vec<usize> = Vec::new();
        for (k, &pg) in pages.iter().enumerate() {
            // Regions are whole pages, so a page never straddles two.
            let Some((addr, _, is_shared)) =
                (pg < npages).then(|| self.host(pg * PAGE as u64)).flatten()
            else {
                return Err(AgentError::BadRequest(format!(
                    "page {pg} is outside the guest RAM"
                )));
            };
            if is_shared && self.pagemap.is_some() {
                shared.push(todo.len());
            }
            todo.push((k, addr));
        }
        if let (Some(pm), false) = (&self.pagemap, shared.is_empty()) {
            let addrs: Vec<u64> = shared.iter().map(|&t| todo[t].1).collect();
            let present = self.present(pm, &addrs)?;
            let mut absent = vec![false; todo.len()];
            for (&t, p) in shared.iter().zip(present) {
                absent[t] = !p;
            }
            let mut t = 0;
            todo.retain(|&(k, _)| {
                let keep = !absent[t];
                t += 1;
                if !keep {
                    buf[k * PAGE..(k + 1) * PAGE].fill(0);
                }
                keep
            });
        }
        let mut local: Vec<libc::iovec> = Vec::with_capacity(IOV_BATCH);
        let mut remote: Vec<libc::iovec> = Vec::with_capacity(IOV_BATCH);
        let mut i = 0;
        while i < todo.len() {
            let n = (todo.len() - i).min(IOV_BATCH);
            local.clear();
            remote.clear();
            for &(k, addr) in &todo[i..i + n] {
                local.push(libc::iovec {
                    iov_base: buf[k * PAGE..].as_mut_ptr() as *mut libc::c_void,
                    iov_len: PAGE,
                });
                remote.push(libc::iovec {
                    iov_base: addr as *mut libc::c_void,
                    iov_len: PAGE,
                });
            }
            // SAFETY: local iovecs point into `buf`, which outlives the call.
            let got = unsafe {
                libc::process_vm_readv(
                    self.pid as libc::pid_t,
                    local.as_ptr(),
                    n as libc::c_ulong,
                    remote.as_ptr(),
                    n as libc::c_ulong,
                    0,
                )
            };
            if got < 0 {
                return Err(self.os_error(std::io::Error::last_os_error()));
            }
            let whole = got as usize / PAGE;
            if whole == 0 {
                // The first page of the batch cannot be read: the RAM is gone.
                if !std::path::Path::new(&format!("/proc/{}", self.pid)).exists() {
                    return Err(AgentError::VmNotFound(format!(
                        "process {} has exited",
                        self.pid
                    )));
                }
                return Err(self.os_error(std::io::Error::from_raw_os_error(libc::EFAULT)));
            }
            i += whole;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ram_among_typical_qemu_maps() {
        let maps = "\
55d0a0000000-55d0a0100000 r-xp 00000000 08:01 1234 /usr/bin/qemu-system-x86_64
7f0000000000-7f0040000000 rwxp 00000000 00:00 0 
7f1000000000-7f1020000000 rw-p 00000000 00:00 0 
7f1020000000-7f1020001000 ---p 00000000 00:00 0 
7f2000000000-7f2000400000 rw-p 00000000 00:00 0 
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
        let m = parse_maps(maps);
        assert_eq!(m.len(), 6);
        assert_eq!(
            find_ram(&m, Some(512 << 20)),
            Some((0x7f1000000000, 512 << 20))
        );
        assert_eq!(find_ram(&m, None), Some((0x7f1000000000, 512 << 20)));
        // The 1 GiB rwx code buffer is never RAM.
        assert_eq!(find_ram(&m, Some(1 << 30)), None);
        let memfd = "7f3000000000-7f3040000000 rw-s 00000000 00:01 99 /memfd:ram (deleted)\n";
        let m = parse_maps(memfd);
        assert_eq!(find_ram(&m, Some(1 << 30)), Some((0x7f3000000000, 1 << 30)));
        // Split in two adjacent pieces.
        let split = "7f1000000000-7f1010000000 rw-p 00000000 00:00 0 \n7f1010000000-7f1020000000 rw-p 00000000 00:00 0 \n";
        assert_eq!(
            find_ram(&parse_maps(split), Some(512 << 20)),
            Some((0x7f1000000000, 512 << 20))
        );
    }

    #[test]
    fn finds_one_mapping_per_memory_backend() {
        // Two NUMA nodes of 256 MiB (memory-backend-ram), a 1 GiB rwx code
        // buffer, and another 256 MiB anonymous mapping that is not RAM
        // (taken only if it comes first: the sizes are all we match on).
        let maps = "\
7f0000000000-7f0040000000 rwxp 00000000 00:00 0 
7f1000000000-7f1010000000 rw-p 00000000 00:00 0 
7f2000000000-7f2010000000 rw-p 00000000 00:00 0 
7f3000000000-7f3000800000 rw-p 00000000 00:00 0 
";
        let m = parse_maps(maps);
        assert_eq!(find_ram(&m, Some(512 << 20)), None);
        assert_eq!(
            find_ram_parts(&m, &[256 << 20, 256 << 20]),
            Some(vec![
                (0x7f1000000000, 256 << 20),
                (0x7f2000000000, 256 << 20)
            ])
        );
        // Unequal nodes, named memfd backends preferred; a missing part fails.
        let maps = "\
7f1000000000-7f1010000000 rw-p 00000000 00:00 0 
7f4000000000-7f4010000000 rw-s 00000000 00:01 7 /memfd:node0 (deleted)
7f5000000000-7f5020000000 rw-s 00000000 00:01 8 /memfd:node1 (deleted)
";
        let m = parse_maps(maps);
        assert_eq!(
            find_ram_parts(&m, &[256 << 20, 512 << 20]),
            Some(vec![
                (0x7f4000000000, 256 << 20),
                (0x7f5000000000, 512 << 20)
            ])
        );
        assert_eq!(find_ram_parts(&m, &[256 << 20, 256 << 20, 256 << 20]), None);
    }

    #[test]
    fn reads_across_regions_as_one_ram() {
        let a: Vec<u8> = (0..2 * PAGE).map(|i| (i / PAGE) as u8 + 1).collect();
        let b: Vec<u8> = (0..3 * PAGE).map(|i| (i / PAGE) as u8 + 10).collect();
        let gm = GuestMemory::from_own_buffers(&[&a, &b]);
        assert_eq!((gm.pages(), gm.regions()), (5, 2));
        let mut buf = vec![0u8; 5 * PAGE];
        gm.read_pages(&[4, 0, 2, 1, 3], &mut buf).unwrap();
        let firsts: Vec<u8> = buf.chunks(PAGE).map(|p| p[0]).collect();
        assert_eq!(firsts, [12, 1, 10, 2, 11]);
        // A read straddling the boundary.
        let mut x = [0u8; 16];
        gm.read(2 * PAGE as u64 - 8, &mut x).unwrap();
        assert_eq!(x, [2, 2, 2, 2, 2, 2, 2, 2, 10, 10, 10, 10, 10, 10, 10, 10]);
        assert!(gm.read(5 * PAGE as u64 - 8, &mut x).is_err());
        assert!(gm.read_pages(&[5], &mut buf).is_err());
    }

    /// A memfd of `pages` pages mapped shared, like QEMU's memfd backend.
    struct Memfd {
        fd: libc::c_int,
        ptr: *mut u8,
        len: usize,
    }

    impl Memfd {
        fn new(pages: usize) -> Memfd {
            let len = pages * PAGE;
            // SAFETY: plain syscalls on a fresh fd; the mapping is ours until drop.
            unsafe {
                let fd = libc::memfd_create(c"migsight-test".as_ptr(), 0);
                assert!(fd >= 0);
                assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
                let ptr = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                );
                assert_ne!(ptr, libc::MAP_FAILED);
                Memfd {
                    fd,
                    ptr: ptr as *mut u8,
                    len,
                }
            }
        }
        fn bytes(&self) -> &[u8] {
            // SAFETY: the mapping is `len` bytes, alive until drop.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
        fn bytes_mut(&mut self) -> &mut [u8] {
            // SAFETY: as above, and `&mut self` makes the borrow unique.
            unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
        }
        /// Pages allocated in the memfd (tmpfs counts 512-byte blocks).
        fn allocated_pages(&self) -> i64 {
            // SAFETY: fstat into a zeroed struct.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            assert_eq!(unsafe { libc::fstat(self.fd, &mut st) }, 0);
            st.st_blocks * 512 / PAGE as i64
        }
    }

    impl Drop for Memfd {
        fn drop(&mut self) {
            // SAFETY: unmapping and closing what `new` created.
            unsafe {
                libc::munmap(self.ptr as *mut libc::c_void, self.len);
                libc::close(self.fd);
            }
        }
    }

    #[test]
    fn sampling_a_shared_backend_does_not_allocate_its_holes() {
        let pages = 2048;
        let mut m = Memfd::new(pages);
        for p in (0..pages).step_by(10) {
            m.bytes_mut()[p * PAGE + 7] = (p % 251) as u8 + 1;
        }
        let touched = pages.div_ceil(10) as i64;
        assert_eq!(m.allocated_pages(), touched);
        let all: Vec<u64> = (0..pages as u64).rev().collect();
        let mut buf = vec![0xffu8; pages * PAGE];
        let gm = GuestMemory::from_own_shared_mapping(m.bytes()).unwrap();
        gm.read_pages(&all, &mut buf).unwrap();
        for (k, p) in all.iter().enumerate() {
            let page = &buf[k * PAGE..(k + 1) * PAGE];
            let want = if p % 10 == 0 { (p % 251) as u8 + 1 } else { 0 };
            assert_eq!(page[7], want, "page {p}");
            assert!(page.iter().enumerate().all(|(i, b)| i == 7 || *b == 0));
        }
        assert_eq!(m.allocated_pages(), touched, "holes were allocated");
        // Reading the same mapping blindly (no pagemap) allocates every hole:
        // what this guards against.
        GuestMemory::from_own_buffer(m.bytes())
            .read_pages(&all, &mut buf)
            .unwrap();
        assert_eq!(m.allocated_pages(), pages as i64);
    }

    #[test]
    fn reads_own_memory_in_batches() {
        let pages = 3000usize;
        let mut data = vec![0u8; pages * PAGE];
        for (i, c) in data.chunks_mut(PAGE).enumerate() {
            c[..8].copy_from_slice(&(i as u64).to_le_bytes());
            c[PAGE - 1] = i as u8;
        }
        let gm = GuestMemory::from_own_buffer(&data);
        assert_eq!(gm.pages(), pages as u64);
        let want: Vec<u64> = (0..pages as u64).rev().step_by(1).collect();
        let mut buf = vec![0u8; want.len() * PAGE];
        gm.read_pages(&want, &mut buf).unwrap();
        for (k, pg) in want.iter().enumerate() {
            let b = &buf[k * PAGE..(k + 1) * PAGE];
            assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), *pg);
            assert_eq!(b[PAGE - 1], *pg as u8);
        }
        let mut x = [0u8; 16];
        gm.read(5 * PAGE as u64 - 8, &mut x).unwrap();
        assert_eq!(&x[8..], &5u64.to_le_bytes());
        assert!(gm.read(gm.size_bytes() - 4, &mut x).is_err());
    }
}
