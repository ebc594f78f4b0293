//! The ops page: one page-aligned 4096-byte page of guest RAM in which the
//! lab's guest workload publishes its counters, and which the host finds by
//! scanning guest memory for a 16-byte magic (`lab/workload/README.md`).
//!
//! This crate is the page's one definition, on both sides of the guest
//! boundary: the in-guest writer (`lab/workload`), the host-side reader
//! (`migsight_agent::ops_page`), the lab and the tests. It has no
//! dependencies so that the guest binary stays small and static.
//!
//! All integer fields are `u64` little-endian at 8-byte aligned offsets, so a
//! host reading the page with `process_vm_readv` never sees a torn value.

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

pub const MODE_NAME_LEN: usize = 16;

/// The magic is `MAGIC_A ^ MAGIC_B`, computed at run time so that its bytes
/// never appear verbatim in a binary or the initramfs (a page of guest RAM
/// holding the workload binary would otherwise look like the ops page; the
/// image build checks that they do not: `lab/guest/build-image.sh`).
///
/// magic = 6d 69 67 73 69 67 68 74 2d 6f 70 73 a7 3c 5e 01
///       = "migsight-ops" followed by a7 3c 5e 01
pub const MAGIC_A: [u8; 16] = [
    0x3c, 0xa1, 0x95, 0x02, 0x7e, 0xd4, 0x19, 0x8b, 0x44, 0x60, 0xc2, 0x5d, 0x13, 0xe8, 0x71, 0x9f,
];
pub const MAGIC_B: [u8; 16] = [
    0x51, 0xc8, 0xf2, 0x71, 0x17, 0xb3, 0x71, 0xff, 0x69, 0x0f, 0xb2, 0x2e, 0xb4, 0xd4, 0x2f, 0x9e,
];

/// The magic, for readers. `black_box` keeps the compiler from folding the
/// two halves into a literal copy of it.
pub fn magic() -> [u8; 16] {
    let a = std::hint::black_box(MAGIC_A);
    std::array::from_fn(|i| a[i] ^ MAGIC_B[i])
}

/// The `ready` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Allocating, touching, preloading.
    Initialising,
    Running,
    /// Failed: the page's error message says why.
    Failed,
    /// A value this layout does not define.
    Unknown(u64),
}

impl Ready {
    pub fn from_code(code: u64) -> Ready {
        match code {
            0 => Ready::Initialising,
            1 => Ready::Running,
            2 => Ready::Failed,
            other => Ready::Unknown(other),
        }
    }

    pub fn code(self) -> u64 {
        match self {
            Ready::Initialising => 0,
            Ready::Running => 1,
            Ready::Failed => 2,
            Ready::Unknown(c) => c,
        }
    }
}

/// The `u64` field at `off` of a page's bytes (little-endian); `None` when
/// `page` is too short to hold it.
pub fn field(page: &[u8], off: usize) -> Option<u64> {
    let bytes = page.get(off..off + 8)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    Some(u64::from_le_bytes(b))
}

/// Whether `page` starts with the magic.
pub fn has_magic(page: &[u8]) -> bool {
    page.get(..16) == Some(&magic()[..])
}

/// The header fields a host follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Operations done (monotonic).
    pub ops: u64,
    /// +1 every ~100 ms while the workload lives.
    pub heartbeat: u64,
    pub ready: Ready,
}

/// Bytes of the page a [`Header`] needs.
pub const HEADER_LEN: usize = OFF_MODE;

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes of a page; `None` when they do
    /// not carry the magic (not the ops page, or no longer) or are too short.
    pub fn parse(page: &[u8]) -> Option<Header> {
        if !has_magic(page) {
            return None;
        }
        Some(Header {
            ops: field(page, OFF_OPS)?,
            heartbeat: field(page, OFF_HEARTBEAT)?,
            ready: Ready::from_code(field(page, OFF_READY)?),
        })
    }
}

/// The error message of a failed workload: the NUL-terminated text at
/// [`OFF_ERROR_MSG`] of a whole page, or of the [`ERROR_MSG_LEN`] bytes read
/// from there (`msg`).
pub fn error_message(msg: &[u8]) -> String {
    let msg = if msg.len() >= PAGE {
        &msg[OFF_ERROR_MSG..OFF_ERROR_MSG + ERROR_MSG_LEN]
    } else {
        msg
    };
    let end = msg.iter().position(|b| *b == 0).unwrap_or(msg.len());
    String::from_utf8_lossy(&msg[..end]).into_owned()
}

/// Which program the workload runs (`MODE=` on the kernel command line; the
/// page's `mode` code and `mode_name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Idle,
    Synthetic,
    Redis,
    Memcached,
    Sqlite,
    Gzip,
    Xz,
}

impl Mode {
    pub const ALL: [Mode; 7] = [
        Mode::Idle,
        Mode::Synthetic,
        Mode::Redis,
        Mode::Memcached,
        Mode::Sqlite,
        Mode::Gzip,
        Mode::Xz,
    ];

    /// The `MODE=` value (a few aliases are accepted).
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s.to_ascii_lowercase().as_str() {
            "idle" => Mode::Idle,
            "synthetic" | "synth" => Mode::Synthetic,
            "redis" => Mode::Redis,
            "memcached" => Mode::Memcached,
            "sqlite" | "sqlite3" => Mode::Sqlite,
            "gzip" => Mode::Gzip,
            "xz" => Mode::Xz,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Idle => "idle",
            Mode::Synthetic => "synthetic",
            Mode::Redis => "redis",
            Mode::Memcached => "memcached",
            Mode::Sqlite => "sqlite",
            Mode::Gzip => "gzip",
            Mode::Xz => "xz",
        }
    }

    /// The CSAP `workload_type` code in the ops page's `workload_type`
    /// field (the codes of `migsight_proto::WorkloadType`).
    pub fn workload_type(self) -> u64 {
        match self {
            Mode::Idle => 0,
            Mode::Synthetic => 1,
            Mode::Memcached => 4,
            Mode::Gzip | Mode::Xz => 7,
            Mode::Redis => 9,
            Mode::Sqlite => 10,
        }
    }

    /// Code in the ops page's `mode` field.
    pub fn code(self) -> u64 {
        match self {
            Mode::Idle => 0,
            Mode::Synthetic => 1,
            Mode::Redis => 2,
            Mode::Memcached => 3,
            Mode::Sqlite => 4,
            Mode::Gzip => 5,
            Mode::Xz => 6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_the_documented_bytes() {
        // lab/workload/README.md: 6d 69 67 73 69 67 68 74 2d 6f 70 73 a7 3c 5e 01
        let mut want = b"migsight-ops".to_vec();
        want.extend_from_slice(&[0xa7, 0x3c, 0x5e, 0x01]);
        assert_eq!(&magic()[..], &want[..]);
    }

    #[test]
    fn header_and_parameters_are_consecutive_u64s() {
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
        for (i, off) in offs.iter().enumerate() {
            assert_eq!(*off, 0x10 + 8 * i);
        }
        assert_eq!(OFF_MODE_NAME + MODE_NAME_LEN, 0x190);
        assert_eq!(OFF_ERROR_MSG + ERROR_MSG_LEN, 0x300);
    }

    #[test]
    fn a_header_parses_only_with_the_magic() {
        let mut page = vec![0u8; PAGE];
        assert_eq!(Header::parse(&page), None);
        page[..16].copy_from_slice(&magic());
        page[OFF_OPS..OFF_OPS + 8].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        page[OFF_HEARTBEAT] = 7;
        page[OFF_READY] = 2;
        let h = Header::parse(&page[..HEADER_LEN]).unwrap();
        assert_eq!(
            h,
            Header {
                ops: 0x0102_0304_0506_0708,
                heartbeat: 7,
                ready: Ready::Failed
            }
        );
        assert_eq!(Header::parse(&page[..20]), None, "too short");
        page[OFF_ERROR_MSG..OFF_ERROR_MSG + 5].copy_from_slice(b"oops\0");
        assert_eq!(error_message(&page), "oops");
        assert_eq!(
            error_message(&page[OFF_ERROR_MSG..OFF_ERROR_MSG + ERROR_MSG_LEN]),
            "oops"
        );
        assert_eq!(Ready::from_code(9), Ready::Unknown(9));
    }

    #[test]
    fn modes_round_trip() {
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.name()), Some(m));
        }
        assert_eq!(Mode::parse("SQLITE3"), Some(Mode::Sqlite));
        assert_eq!(Mode::parse("bzip"), None);
    }
}
