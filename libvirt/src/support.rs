//! What a libvirt-managed VM can migrate with: the QEMU's own rules
//! ([`HostSupport`]) and then libvirt's — which of QEMU's knobs this
//! libvirt can turn, and what it turns on by itself — and, for each
//! algorithm migsight knows, the `virsh migrate` flags that realise it, or
//! why it is refused before libvirt hears of it.
//!
//! libvirt's side is read from the host, not assumed: the daemon's version
//! (`virsh version`) and the options this `virsh migrate` has (`--help`).
//! Measured with libvirt 11.3 and QEMU 10.0.2: `--postcopy` also turns on
//! `postcopy-preempt` when both QEMUs have it (seen in
//! `query-migrate-capabilities` during the migration; libvirt added
//! post-copy preemption in 10.0), so on such a host plain post-copy cannot
//! be had and migsight calls it what it is, `postcopy-preempt`.

use crate::virsh::{LibvirtError, Virsh};
use migsight_proto::wire::QemuInfo;
use migsight_proto::Algorithm;
use migsight_qemu::driver::MigrationConfig;
use migsight_qemu::{HostSupport, QemuVersion};
use std::collections::BTreeSet;

/// The first libvirt that turns `postcopy-preempt` on with post-copy.
pub const PREEMPT_SINCE: QemuVersion = QemuVersion::new(10, 0, 0);

/// What one libvirt + QEMU pair offers for migration.
#[derive(Debug, Clone, PartialEq)]
pub struct LibvirtSupport {
    /// The daemon's version (libvirt numbers its releases like QEMU).
    pub libvirt: QemuVersion,
    /// The QEMU that runs the domain.
    pub qemu: HostSupport,
    /// Long options of this `virsh migrate` (`parallel-connections`, …).
    pub migrate_options: BTreeSet<String>,
}

impl LibvirtSupport {
    /// Asks libvirt over `virsh` for its daemon's version and `virsh migrate`'s
    /// options; `qemu` is what the running QEMU offers (its binary's version
    /// and command line), else the hypervisor version libvirt reports is
    /// used with `accel`.
    pub fn query(
        virsh: &Virsh,
        qemu: Option<HostSupport>,
        accel: Option<&str>,
    ) -> Result<LibvirtSupport, LibvirtError> {
        let version = virsh.run(&["version", "--daemon"])?;
        let (libvirt, hypervisor) = parse_version(&version)?;
        let help = virsh.run(&["migrate", "--help"])?;
        let qemu = match qemu {
            Some(q) => q,
            None => {
                let v = hypervisor.ok_or_else(|| {
                    LibvirtError::Parse(format!("virsh version names no hypervisor: {version:?}"))
                })?;
                let mut h = HostSupport::from_version(v, &[]);
                h.accel = accel.map(str::to_string);
                h
            }
        };
        Ok(LibvirtSupport {
            libvirt,
            qemu,
            migrate_options: parse_options(&help),
        })
    }

    fn has(&self, option: &str) -> bool {
        self.migrate_options.contains(option)
    }

    /// `None` when libvirt can run `a` on this QEMU, else why not.
    pub fn unavailable(&self, a: Algorithm) -> Option<String> {
        if let Some(why) = self.qemu.unavailable(a) {
            return Some(why);
        }
        let lv = self.libvirt;
        let needs = |opt: &str| {
            (!self.has(opt)).then(|| format!("this virsh (libvirt {lv}) has no `migrate --{opt}`"))
        };
        match a {
            Algorithm::Precopy => None,
            Algorithm::AutoConverge => needs("auto-converge"),
            Algorithm::Xbzrle => needs("comp-xbzrle-cache"),
            Algorithm::Compress => needs("comp-mt-level"),
            Algorithm::Multifd => needs("parallel-connections"),
            Algorithm::MultifdZstd => needs("parallel-connections").or_else(|| needs("comp-zstd-level")),
            Algorithm::Postcopy => needs("postcopy-after-precopy").or_else(|| {
                (lv >= PREEMPT_SINCE && self.qemu.unavailable(Algorithm::PostcopyPreempt).is_none())
                    .then(|| format!("libvirt {lv} turns on postcopy-preempt with every post-copy migration on this QEMU: choose postcopy-preempt"))
            }),
            Algorithm::PostcopyPreempt => needs("postcopy-after-precopy").or_else(|| {
                (lv < PREEMPT_SINCE).then(|| {
                    format!("libvirt {lv} cannot turn on postcopy-preempt (libvirt {PREEMPT_SINCE} and later do)")
                })
            }),
            Algorithm::DirtyLimit => Some(format!(
                "libvirt {lv} has no migration flag for QEMU's dirty-limit"
            )),
        }
    }

    /// The algorithms libvirt can run here.
    pub fn available(&self) -> Vec<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(|a| self.unavailable(*a).is_none())
            .collect()
    }

    /// The wire form, `source` "libvirt": the predictor only predicts
    /// what libvirt can run.
    pub fn info(&self) -> QemuInfo {
        QemuInfo::describe(
            self.qemu.version.to_string(),
            self.qemu.accel.clone(),
            "libvirt".into(),
            |a| self.unavailable(a),
        )
    }

    /// The `virsh migrate` flags that realise `cfg` (everything after the
    /// domain and the destination URI), or why libvirt must not be asked:
    /// an algorithm libvirt or QEMU cannot run, and combinations QEMU would
    /// refuse (`extra_multifd_channels`: multifd asked on top of a
    /// non-multifd algorithm, e.g. post-copy with `--parallel`).
    pub fn migrate_flags(
        &self,
        cfg: &MigrationConfig,
        extra_multifd_channels: Option<u64>,
    ) -> Result<Vec<String>, String> {
        let a = cfg.algorithm;
        if let Some(why) = self.unavailable(a) {
            return Err(format!("{a} is not available through libvirt here: {why}"));
        }
        let mut f: Vec<String> = Vec::new();
        let mut put = |s: &[&str]| f.extend(s.iter().map(|x| x.to_string()));
        // libvirt takes MiB/s (see [`bandwidth_mib`]).
        let mib = bandwidth_mib(cfg.bandwidth_bps).to_string();
        put(&["--bandwidth", &mib]);
        let channels = match (a.is_multifd(), extra_multifd_channels) {
            (true, Some(n)) => Some(n),
            (true, None) => Some(cfg.multifd_channels),
            (false, Some(n)) => {
                if a.is_postcopy() && self.qemu.version < QemuVersion::new(10, 1, 0) {
                    return Err(format!(
                        "{a} with multifd (--parallel) is refused by QEMU {} (post-copy and multifd work together from QEMU 10.1 on); choose multifd, or {a} alone",
                        self.qemu.version
                    ));
                }
                if a != Algorithm::Precopy && !a.is_postcopy() {
                    return Err(format!("{a} with multifd is not a combination migsight models; choose multifd or {a}"));
                }
                Some(n)
            }
            (false, None) => None,
        };
        match a {
            Algorithm::Precopy | Algorithm::Multifd | Algorithm::DirtyLimit => {}
            Algorithm::AutoConverge => put(&[
                "--auto-converge",
                "--auto-converge-initial",
                &cfg.throttle_initial.to_string(),
                "--auto-converge-increment",
                &cfg.throttle_increment.to_string(),
            ]),
            Algorithm::Xbzrle => put(&[
                "--compressed",
                "--comp-methods",
                "xbzrle",
                "--comp-xbzrle-cache",
                &cfg.xbzrle_cache_bytes.to_string(),
            ]),
            Algorithm::Compress => put(&[
                "--compressed",
                "--comp-methods",
                "mt",
                "--comp-mt-level",
                &cfg.compress_level.to_string(),
                "--comp-mt-threads",
                &cfg.compress_threads.to_string(),
                "--comp-mt-dthreads",
                &cfg.decompress_threads.to_string(),
            ]),
            Algorithm::MultifdZstd => put(&[
                "--comp-methods",
                "zstd",
                "--comp-zstd-level",
                &cfg.zstd_level.to_string(),
            ]),
            // Switch after the first pass, as the QMP driver does.
            Algorithm::Postcopy | Algorithm::PostcopyPreempt => put(&[
                "--postcopy",
                "--postcopy-after-precopy",
                "--postcopy-bandwidth",
                &mib,
            ]),
        }
        if let Some(n) = channels {
            put(&["--parallel", "--parallel-connections", &n.to_string()]);
        }
        Ok(f)
    }
}

/// `--bandwidth` in libvirt's unit, whole MiB/s (at least 1): the
/// migration runs at this, so rows record [`applied_bandwidth_bps`].
pub fn bandwidth_mib(bps: f64) -> u64 {
    (bps / 1048576.0).round().max(1.0) as u64
}

/// The bandwidth libvirt applies for `bps`, bytes/s.
pub fn applied_bandwidth_bps(bps: f64) -> f64 {
    bandwidth_mib(bps) as f64 * 1048576.0
}

/// (daemon libvirt version, hypervisor version) from `virsh version`.
fn parse_version(text: &str) -> Result<(QemuVersion, Option<QemuVersion>), LibvirtError> {
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().last())
            .and_then(QemuVersion::parse)
    };
    let daemon = field("Running against daemon:")
        .or_else(|| field("Using library:"))
        .ok_or_else(|| {
            LibvirtError::Parse(format!(
                "virsh version printed no libvirt version: {text:?}"
            ))
        })?;
    Ok((daemon, field("Running hypervisor:")))
}

/// Long options in `virsh CMD --help`.
fn parse_options(help: &str) -> BTreeSet<String> {
    help.split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use migsight_qemu::discovery::Source;

    const VERSION_11_3: &str = "Compiled against library: libvirt 11.3.0\nUsing library: libvirt 11.3.0\nUsing API: QEMU 11.3.0\nRunning hypervisor: QEMU 10.0.2\nRunning against daemon: 11.3.0\n";
    /// `virsh migrate --help` of libvirt 11.3 (the options only).
    const OPTIONS_11_3: &str = "--live --p2p --persistent --compressed --auto-converge --postcopy --postcopy-after-precopy --migrateuri <string> --comp-methods <string> --comp-mt-level <number> --comp-mt-threads <number> --comp-mt-dthreads <number> --comp-xbzrle-cache <number> --auto-converge-initial <number> --auto-converge-increment <number> --postcopy-bandwidth <number> --parallel --parallel-connections <number> --bandwidth <number> --comp-zlib-level <number> --comp-zstd-level <number>";

    fn support(libvirt: &str, qemu: QemuVersion, help: &str) -> LibvirtSupport {
        LibvirtSupport {
            libvirt: QemuVersion::parse(libvirt).unwrap(),
            qemu: HostSupport {
                version: qemu,
                accel: Some("tcg".into()),
                dirty_ring: false,
                capabilities: None,
                parameters: None,
                multifd_compressions: None,
                source: Source::Binary,
            },
            migrate_options: parse_options(help),
        }
    }

    #[test]
    fn versions_and_options_parse() {
        let (d, h) = parse_version(VERSION_11_3).unwrap();
        assert_eq!(
            (d, h),
            (QemuVersion::new(11, 3, 0), Some(QemuVersion::new(10, 0, 2)))
        );
        assert!(parse_version("nothing").is_err());
        let o = parse_options(OPTIONS_11_3);
        assert!(
            o.contains("parallel-connections")
                && o.contains("comp-zstd-level")
                && o.contains("live")
        );
    }

    #[test]
    fn libvirt_11_3_on_qemu_10() {
        let s = support("11.3.0", QemuVersion::new(10, 0, 2), OPTIONS_11_3);
        assert_eq!(
            s.available(),
            vec![
                Algorithm::Precopy,
                Algorithm::AutoConverge,
                Algorithm::Xbzrle,
                Algorithm::Multifd,
                Algorithm::MultifdZstd,
                Algorithm::PostcopyPreempt
            ]
        );
        assert!(s
            .unavailable(Algorithm::Postcopy)
            .unwrap()
            .contains("choose postcopy-preempt"));
        assert_eq!(
            s.unavailable(Algorithm::Compress).as_deref(),
            Some("removed in QEMU 9.1")
        );
        let info = s.info();
        assert_eq!(info.source, "libvirt");
        assert_eq!(info.version, "10.0.2");
        let cfg = |a| {
            let mut c = MigrationConfig::new(a, 100e6);
            c.multifd_channels = 2;
            c
        };
        assert_eq!(
            s.migrate_flags(&cfg(Algorithm::MultifdZstd), None).unwrap().join(" "),
            "--bandwidth 95 --comp-methods zstd --comp-zstd-level 1 --parallel --parallel-connections 2"
        );
        assert_eq!(
            s.migrate_flags(&cfg(Algorithm::PostcopyPreempt), None)
                .unwrap()
                .join(" "),
            "--bandwidth 95 --postcopy --postcopy-after-precopy --postcopy-bandwidth 95"
        );
        assert_eq!(
            s.migrate_flags(&cfg(Algorithm::AutoConverge), None).unwrap().join(" "),
            "--bandwidth 95 --auto-converge --auto-converge-initial 20 --auto-converge-increment 10"
        );
        assert_eq!(
            s.migrate_flags(&cfg(Algorithm::Precopy), None)
                .unwrap()
                .join(" "),
            "--bandwidth 95"
        );
        // Refused before libvirt is called, with the reason.
        let e = s
            .migrate_flags(&cfg(Algorithm::PostcopyPreempt), Some(4))
            .unwrap_err();
        assert!(e.contains("refused by QEMU 10.0.2"), "{e}");
        let e = s
            .migrate_flags(&cfg(Algorithm::Compress), None)
            .unwrap_err();
        assert!(e.contains("removed in QEMU 9.1"), "{e}");
        let e = s
            .migrate_flags(&cfg(Algorithm::DirtyLimit), None)
            .unwrap_err();
        assert!(e.contains("dirty"), "{e}");
        assert_eq!(
            s.migrate_flags(&cfg(Algorithm::Precopy), Some(4))
                .unwrap()
                .join(" "),
            "--bandwidth 95 --parallel --parallel-connections 4"
        );
    }

    #[test]
    fn an_older_libvirt_on_qemu_7_2() {
        // No zstd level in virsh, no preempt from libvirt; compress is QEMU 7.2's.
        let help = OPTIONS_11_3.replace("--comp-zstd-level <number>", "");
        let s = support("9.0.0", QemuVersion::new(7, 2, 22), &help);
        assert!(s.unavailable(Algorithm::Postcopy).is_none());
        assert!(s
            .unavailable(Algorithm::PostcopyPreempt)
            .unwrap()
            .contains("10.0.0"));
        assert!(s
            .unavailable(Algorithm::MultifdZstd)
            .unwrap()
            .contains("comp-zstd-level"));
        let f = s
            .migrate_flags(&MigrationConfig::new(Algorithm::Compress, 50e6), None)
            .unwrap();
        assert!(f
            .join(" ")
            .contains("--compressed --comp-methods mt --comp-mt-level 1"));
        assert_eq!(bandwidth_mib(0.1), 1);
        assert_eq!(applied_bandwidth_bps(100e6), 95.0 * 1048576.0);
    }
}
