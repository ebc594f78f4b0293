//! QEMU's version, from the QMP greeting or from `qemu-system-* --version`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A QEMU release, e.g. 10.0.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl QemuVersion {
    pub const fn new(major: u32, minor: u32, micro: u32) -> Self {
        QemuVersion {
            major,
            minor,
            micro,
        }
    }

    /// Parses `10.0.2`, `7.2.22` or `9.1` (the form of the CSV's
    /// `qemu_version` column); `None` for anything else.
    pub fn parse(s: &str) -> Option<QemuVersion> {
        let mut it = s.trim().split('.');
        let num = |p: Option<&str>| -> Option<u32> {
            let p = p?;
            (!p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        let major = num(it.next())?;
        let minor = num(it.next())?;
        let micro = match it.next() {
            Some(p) => num(Some(p))?,
            None => 0,
        };
        it.next()
            .is_none()
            .then_some(QemuVersion::new(major, minor, micro))
    }

    /// The version in the output of `qemu-system-x86_64 --version`
    /// (`QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2…)`).
    pub fn from_version_output(out: &str) -> Option<QemuVersion> {
        let line = out.lines().next()?;
        let rest = line.split("version").nth(1)?;
        QemuVersion::parse(rest.split_whitespace().next()?)
    }
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(
            QemuVersion::parse("10.0.2"),
            Some(QemuVersion::new(10, 0, 2))
        );
        assert_eq!(
            QemuVersion::parse(" 7.2.22 "),
            Some(QemuVersion::new(7, 2, 22))
        );
        assert_eq!(QemuVersion::parse("9.1"), Some(QemuVersion::new(9, 1, 0)));
        for bad in ["", "10", "a.b", "1.2.3.4", "1..2", "-1.0", "99999999.0"] {
            assert_eq!(QemuVersion::parse(bad), None, "{bad}");
        }
        assert!(QemuVersion::new(9, 1, 0) > QemuVersion::new(7, 2, 22));
        assert_eq!(QemuVersion::new(10, 0, 2).to_string(), "10.0.2");
        assert_eq!(
            QemuVersion::from_version_output(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"
            ),
            Some(QemuVersion::new(10, 0, 2))
        );
        assert_eq!(QemuVersion::from_version_output("garbage"), None);
    }
}
