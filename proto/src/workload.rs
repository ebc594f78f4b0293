//! Workload type codes (`workload_type` column).

use serde::{Deserialize, Serialize};

/// The kind of program running in a VM when a sample was taken.
///
/// Codes 0–8 are the CSAP seed script's mapping; 9 and 10 are migsight's
/// additions for the real programs its lab runs in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadType {
    Idle = 0,
    Synthetic = 1,
    Specweb = 2,
    Oltp = 3,
    Memcached = 4,
    Dacapo = 5,
    Parsec = 6,
    /// Compression of data (the seed's gzip/bzip workload; the lab's gzip/xz).
    Bzip = 7,
    Mplayer = 8,
    /// migsight addition: redis-server driven by a RESP load client.
    Redis = 9,
    /// migsight addition: sqlite3 transactions.
    Sqlite = 10,
}

impl WorkloadType {
    pub const ALL: [WorkloadType; 11] = [
        WorkloadType::Idle,
        WorkloadType::Synthetic,
        WorkloadType::Specweb,
        WorkloadType::Oltp,
        WorkloadType::Memcached,
        WorkloadType::Dacapo,
        WorkloadType::Parsec,
        WorkloadType::Bzip,
        WorkloadType::Mplayer,
        WorkloadType::Redis,
        WorkloadType::Sqlite,
    ];

    pub const fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<WorkloadType> {
        Self::ALL.into_iter().find(|w| w.code() == code)
    }

    pub const fn name(self) -> &'static str {
        match self {
            WorkloadType::Idle => "idle",
            WorkloadType::Synthetic => "synthetic",
            WorkloadType::Specweb => "specweb",
            WorkloadType::Oltp => "oltp",
            WorkloadType::Memcached => "memcached",
            WorkloadType::Dacapo => "dacapo",
            WorkloadType::Parsec => "parsec",
            WorkloadType::Bzip => "bzip",
            WorkloadType::Mplayer => "mplayer",
            WorkloadType::Redis => "redis",
            WorkloadType::Sqlite => "sqlite",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn codes_round_trip() {
        for w in WorkloadType::ALL {
            assert_eq!(WorkloadType::from_code(w.code()), Some(w));
        }
        assert_eq!(WorkloadType::from_code(11), None);
    }
}
