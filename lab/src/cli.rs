//! `migsight lab`: produce labelled migrations on this machine.

use crate::runner::{self, Fixed, LabConfig};
use crate::workload::{Ranges, Workload};
use migsight_proto::Algorithm;
use migsight_qemu::image::GuestImage;
use migsight_qemu::process::Accel;
use migsight_qemu::HostSupport;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct LabArgs {
    /// Labelled migrations (CSV rows) to add in this run.
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// CSAP-schema CSV to append to (created if missing; a resumed run continues it).
    #[arg(long, default_value = "lab-out/lab.csv")]
    pub out: PathBuf,
    /// Seed: with the same seed and group index, the same workload, guest size and bandwidth are drawn.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// QEMU accelerator: tcg works everywhere; kvm on real hosts; kvm-dirty-ring
    /// (KVM with a dirty ring) also runs dirty-limit. The QEMU is $MIGSIGHT_QEMU or
    /// qemu-system-x86_64 on PATH.
    #[arg(long, default_value = "tcg", value_parser = parse_accel)]
    pub accel: Accel,
    /// Profiling window before each migration (the agent's default is 20s).
    #[arg(long, default_value = "20s", value_parser = migsight_proto::units::parse_duration)]
    pub window: Duration,
    /// Sampling interval within the window.
    #[arg(long, default_value = "1s", value_parser = migsight_proto::units::parse_duration)]
    pub interval: Duration,
    /// A pre-copy phase longer than this is cancelled and recorded with converged=0.
    #[arg(long, default_value = "60s", value_parser = migsight_proto::units::parse_duration)]
    pub cap: Duration,
    /// Time the workload runs after it is ready and before the snapshot.
    #[arg(long, default_value = "3s", value_parser = migsight_proto::units::parse_duration)]
    pub warmup: Duration,
    /// Algorithms to migrate each state with (comma-separated; default every one the QEMU
    /// offers with this accelerator).
    #[arg(long, value_delimiter = ',')]
    pub algorithms: Vec<Algorithm>,
    /// Migrate each state this many times per algorithm (the noise floor: same state, same algorithm).
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// The agent's CPU budgets to profile with, as a share of one core per GiB of guest RAM
    /// (comma-separated; default the agent's own, 0.02). With several, each state is also
    /// migrated once per budget: how the features' sampling error passes into predictions.
    #[arg(long, value_delimiter = ',', value_parser = parse_budget)]
    pub cpu_budgets: Vec<f64>,
    /// Print the sanity report of an existing lab CSV (per algorithm medians, non-converged share,
    /// counts, repeat variance) instead of running migrations.
    #[arg(long, value_name = "CSV")]
    pub report: Option<PathBuf>,
    /// Parameter ranges to draw groups from: classic (guests up to 1 GiB, 10-125 MB/s) or
    /// wide (up to 4 GiB, 250 MB/s, faster dirtying); see data/README.md.
    #[arg(long, value_enum, default_value_t = RangeSet::Wide)]
    pub ranges: RangeSet,
    /// Use one small fixed synthetic workload (256 MiB guest, 50 MB/s) instead of drawing.
    #[arg(long)]
    pub quick: bool,
    /// Where QEMU sockets and snapshots live during a group.
    #[arg(long, default_value = "/tmp/migsight-lab")]
    pub runs_dir: PathBuf,
    /// How to drive the migrations: qmp (QEMUs the lab starts itself) or libvirt
    /// (domains on --libvirt-from migrated to --libvirt-to with virsh).
    #[arg(long, value_enum, default_value_t = Via::Qmp)]
    pub via: Via,
    /// --via libvirt: the source libvirt's connection URI (the guests are defined there;
    /// it must run on this host: the lab profiles the guest's QEMU process).
    #[arg(long, value_name = "URI")]
    pub libvirt_from: Option<String>,
    /// --via libvirt: the destination libvirt's connection URI.
    #[arg(long, value_name = "URI")]
    pub libvirt_to: Option<String>,
    /// --via libvirt: the destination's address for the migration data
    /// (virsh --migrateuri tcp://HOST:PORT); default: libvirt picks.
    #[arg(long, value_name = "HOST")]
    pub libvirt_migrate_host: Option<String>,
}

/// `--via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    Qmp,
    Libvirt,
}

/// `--ranges`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RangeSet {
    Classic,
    Wide,
}

fn parse_accel(s: &str) -> Result<Accel, String> {
    s.parse()
}

fn parse_budget(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(b) if b.is_finite() && b > 0.0 && b <= 1.0 => Ok(b),
        Ok(b) => Err(format!(
            "a CPU budget is a share of one core in (0, 1], got {b}"
        )),
        Err(e) => Err(format!("not a number: {s:?} ({e})")),
    }
}

impl LabArgs {
    /// The run's configuration; `offered` is what the QEMU can run (the
    /// default algorithm list).
    pub fn config(&self, offered: &[Algorithm]) -> LabConfig {
        LabConfig {
            out: self.out.clone(),
            samples: self.samples,
            seed: self.seed,
            accel: self.accel,
            window: self.window,
            interval: self.interval,
            cap: self.cap,
            warmup: self.warmup,
            algorithms: if self.algorithms.is_empty() {
                offered.to_vec()
            } else {
                self.algorithms.clone()
            },
            repeats: self.repeats,
            cpu_budgets: self.cpu_budgets.clone(),
            fixed: self.quick.then(|| Fixed {
                mem_mib: 256,
                workload: Workload::demo(16, 500),
                bandwidth_bps: 50e6,
            }),
            ranges: match self.ranges {
                RangeSet::Classic => Ranges::CLASSIC,
                RangeSet::Wide => Ranges::WIDE,
            },
            runs_dir: self.runs_dir.join(std::process::id().to_string()),
            libvirt: match (self.via, &self.libvirt_from, &self.libvirt_to) {
                (Via::Libvirt, Some(from), Some(to)) => Some(runner::LibvirtLab {
                    from: from.clone(),
                    to: to.clone(),
                    migrate_host: self.libvirt_migrate_host.clone(),
                }),
                _ => None,
            },
        }
    }
}

pub fn run(args: LabArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.report {
        let d = migsight_proto::csv::read_path(path)?;
        migsight_proto::write_stdout(&crate::report::render(&d))?;
        return Ok(());
    }
    let cancel = migsight_qemu::cancel::flag();
    let version = migsight_qemu::process::binary_version().map_err(|e| {
        anyhow::anyhow!(
            "{e} (install QEMU with scripts/deps.sh, or point MIGSIGHT_QEMU at a qemu-system-x86_64)"
        )
    })?;
    let accel_args = ["qemu".to_string(), "-accel".into(), args.accel.arg().into()];
    let support = HostSupport::from_version(version, &accel_args);
    let offered: Box<dyn Fn(Algorithm) -> Option<String>> = match args.via {
        Via::Qmp => {
            if args.libvirt_from.is_some() || args.libvirt_to.is_some() {
                anyhow::bail!("--libvirt-from/--libvirt-to need --via libvirt");
            }
            let s = support.clone();
            Box::new(move |a| s.unavailable(a))
        }
        Via::Libvirt => {
            let (Some(from), Some(_)) = (&args.libvirt_from, &args.libvirt_to) else {
                anyhow::bail!("--via libvirt needs --libvirt-from URI and --libvirt-to URI");
            };
            let lv = migsight_libvirt::LibvirtSupport::query(
                &migsight_libvirt::Virsh::new(from),
                Some(support.clone()),
                Some(args.accel.name()),
            )?;
            Box::new(move |a| lv.unavailable(a))
        }
    };
    let available: Vec<Algorithm> = Algorithm::ALL
        .into_iter()
        .filter(|a| offered(*a).is_none())
        .collect();
    let cfg = args.config(&available);
    for a in &cfg.algorithms {
        if let Some(why) = offered(*a) {
            anyhow::bail!("--algorithms {a}: not available on QEMU {version}: {why}");
        }
    }
    eprintln!("lab: preparing the guest image (built once, then cached)");
    let image = GuestImage::ensure()?;
    eprintln!(
        "lab: image {} | {} rows to {} | window {:?}, cap {:?}, QEMU {} ({}), accel {}, via {} | algorithms {}",
        image.dir.display(),
        cfg.samples,
        cfg.out.display(),
        cfg.window,
        cfg.cap,
        version,
        migsight_qemu::process::binary(),
        cfg.accel.name(),
        if cfg.libvirt.is_some() { "libvirt" } else { "qmp" },
        cfg.algorithms
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    let result = runner::run(&cfg, &image, cancel);
    let _ = std::fs::remove_dir_all(&cfg.runs_dir);
    let s = result?;
    eprintln!(
        "lab: done: {} rows written ({} not converged), {} groups failed{}",
        s.written,
        s.non_converged,
        s.failed,
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            " (interrupted)"
        } else {
            ""
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_shares_of_a_core() {
        assert_eq!(parse_budget("0.08"), Ok(0.08));
        assert_eq!(parse_budget(" 1 "), Ok(1.0));
        for bad in ["0", "-0.02", "1.5", "NaN", "inf"] {
            let e = parse_budget(bad).unwrap_err();
            assert!(e.contains("share of one core"), "{bad}: {e}");
        }
        assert!(parse_budget("two").unwrap_err().contains("not a number"));
    }
}
