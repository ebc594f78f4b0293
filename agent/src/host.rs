//! Host-side monitors of a QEMU process: vCPU instruction counters and tap
//! network traffic.

use crate::procfs::threads;
use crate::vm::{has_flag, option_values, split_opts};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Retired-instruction counters on the vCPU threads.
pub(crate) struct Pmu {
    counters: Vec<perf_event::Counter>,
}

static PMU_WARNED: AtomicBool = AtomicBool::new(false);

/// vCPU threads (`CPU n/TCG`, `CPU n/KVM` with `debug-threads=on`), else all threads.
pub(crate) fn vcpu_threads(pid: u32) -> Vec<u32> {
    let all = threads(pid).unwrap_or_default();
    let vcpus: Vec<u32> = all
        .iter()
        .filter(|t| {
            t.name.starts_with("CPU ") && (t.name.ends_with("/TCG") || t.name.ends_with("/KVM"))
        })
        .map(|t| t.tid)
        .collect();
    if vcpus.is_empty() {
        all.iter().map(|t| t.tid).collect()
    } else {
        vcpus
    }
}

impl Pmu {
    /// Opens a hardware instruction counter on each vCPU thread, or says why not.
    pub(crate) fn start(pid: u32) -> Result<Pmu, String> {
        let tids = vcpu_threads(pid);
        if tids.is_empty() {
            return Err("no threads found for the QEMU process".into());
        }
        let mut counters = Vec::new();
        for tid in tids {
            let built = perf_event::Builder::new(perf_event::events::Hardware::INSTRUCTIONS)
                .observe_pid(tid as i32)
                .any_cpu()
                .exclude_kernel(true)
                .exclude_hv(true)
                .build();
            match built {
                Ok(mut c) => {
                    if let Err(e) = c.enable() {
                        return Err(format!("cannot enable the instructions counter: {e}"));
                    }
                    counters.push(c);
                }
                Err(e) => {
                    let reason = match e.raw_os_error() {
                        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) | Some(libc::ENODEV) => {
                            format!("no hardware PMU (perf_event_open instructions: {e})")
                        }
                        Some(libc::EACCES) | Some(libc::EPERM) => format!(
                            "perf_event_open not permitted ({e}); needs root, CAP_PERFMON or a lower kernel.perf_event_paranoid"
                        ),
                        Some(libc::ESRCH) => format!("vCPU thread {tid} exited ({e})"),
                        _ => format!("perf_event_open instructions failed: {e}"),
                    };
                    if !PMU_WARNED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%reason, "VM_pmu_instr will be absent");
                    }
                    return Err(reason);
                }
            }
        }
        Ok(Pmu { counters })
    }

    /// Instructions counted so far, scaled for multiplexing.
    pub(crate) fn read(&mut self) -> Result<f64, String> {
        let mut total = 0.0;
        for c in &mut self.counters {
            let ct = c
                .read_count_and_time()
                .map_err(|e| format!("reading the counter: {e}"))?;
            let scaled = if ct.time_running > 0 && ct.time_running < ct.time_enabled {
                ct.count as f64 * ct.time_enabled as f64 / ct.time_running as f64
            } else {
                ct.count as f64
            };
            total += scaled;
        }
        Ok(total)
    }
}

/// Byte counters of the VM's tap interfaces.
pub(crate) struct NetMonitor {
    pub(crate) ifaces: Vec<String>,
    /// Link speed used for the utilisation, bits/s, and where it came from.
    pub(crate) speed_bps: f64,
    pub(crate) speed_source: String,
    start: Vec<(u64, u64)>,
}

/// The VM's network as seen from the host.
pub(crate) enum Network {
    /// No NIC at all: utilisation is truly 0.
    None,
    /// Tap interfaces we can count.
    Taps(NetMonitor),
    /// A NIC whose traffic the host cannot attribute (user-mode, vhost-user…).
    Unknowable(String),
}

fn counter(iface: &str, which: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/{which}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Tap interfaces attached to `pid`: `iff:` lines of tun fds in
/// `/proc/PID/fdinfo`, plus `ifname=` on the command line.
pub(crate) fn tap_interfaces(pid: u32, args: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) {
        for e in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path()) {
                for l in s.lines() {
                    if let Some(v) = l.strip_prefix("iff:") {
                        let v = v.trim().to_string();
                        if !v.is_empty() && !out.contains(&v) {
                            out.push(v);
                        }
                    }
                }
            }
        }
    }
    for flag in ["-netdev", "-nic", "-net"] {
        for v in option_values(args, flag) {
            let o = split_opts(v);
            if o[0] == "tap" || o[0] == "bridge" {
                if let Some(n) = crate::vm::opt_get(&o, "ifname") {
                    if !out.contains(&n) && Path::new(&format!("/sys/class/net/{n}")).exists() {
                        out.push(n);
                    }
                }
            }
        }
    }
    out
}

fn read_speed_mbps(iface: &str) -> Option<f64> {
    let s: i64 = std::fs::read_to_string(format!("/sys/class/net/{iface}/speed"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (s > 0).then_some(s as f64)
}

/// Link speed for a tap: a tun device's own `speed` is a constant 10 Mb/s
/// placeholder, so the speed of the physical port of the bridge it is
/// attached to is used; failing that 1 Gb/s (the CSAP testbed's NIC).
fn link_speed(tap: &str) -> (f64, String) {
    let master = std::fs::read_link(format!("/sys/class/net/{tap}/master"))
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()));
    if let Some(br) = master {
        if let Ok(rd) = std::fs::read_dir(format!("/sys/class/net/{br}/brif")) {
            for p in rd.flatten() {
                let port = p.file_name().to_string_lossy().into_owned();
                let physical = Path::new(&format!("/sys/class/net/{port}/device")).exists();
                if physical {
                    if let Some(mbps) = read_speed_mbps(&port) {
                        return (
                            mbps * 1e6,
                            format!("speed of {port}, the physical port of bridge {br}"),
                        );
                    }
                }
            }
        }
    }
    if Path::new(&format!("/sys/class/net/{tap}/device")).exists() {
        if let Some(mbps) = read_speed_mbps(tap) {
            return (mbps * 1e6, format!("speed of {tap}"));
        }
    }
    (1e9, "no physical link speed found; assumed 1 Gb/s".into())
}

impl Network {
    pub(crate) fn detect(pid: u32, args: &[String]) -> Network {
        let taps = tap_interfaces(pid, args);
        if !taps.is_empty() {
            let start = taps
                .iter()
                .map(|i| {
                    (
                        counter(i, "rx_bytes").unwrap_or(0),
                        counter(i, "tx_bytes").unwrap_or(0),
                    )
                })
                .collect();
            let (speed_bps, speed_source) = link_speed(&taps[0]);
            return Network::Taps(NetMonitor {
                ifaces: taps,
                speed_bps,
                speed_source,
                start,
            });
        }
        let mut nets: Vec<String> = Vec::new();
        for flag in ["-netdev", "-nic", "-net"] {
            for v in option_values(args, flag) {
                nets.push(split_opts(v)[0].clone());
            }
        }
        let nic_devices = option_values(args, "-device").into_iter().any(|d| {
            let model = split_opts(d)[0].clone();
            model.contains("net")
                || model.starts_with("e1000")
                || model.starts_with("rtl8139")
                || model.starts_with("vmxnet")
        });
        let real: Vec<&String> = nets.iter().filter(|n| n.as_str() != "none").collect();
        if real.is_empty() && !nic_devices {
            if has_flag(args, "-nodefaults") || !nets.is_empty() {
                return Network::None;
            }
            return Network::Unknowable(
                "QEMU's default NIC (user-mode networking) carries no host-visible interface"
                    .into(),
            );
        }
        let kinds: Vec<String> = real.iter().map(|s| s.to_string()).collect();
        Network::Unknowable(format!(
            "the VM's network ({}) has no tap interface the host can count",
            if kinds.is_empty() {
                "a NIC device".to_string()
            } else {
                kinds.join(", ")
            }
        ))
    }
}

impl NetMonitor {
    /// Utilisation of the busier direction over `secs`, percent of the link speed.
    pub(crate) fn utilisation(&self, secs: f64) -> f64 {
        let mut rx = 0u64;
        let mut tx = 0u64;
        for (i, iface) in self.ifaces.iter().enumerate() {
            let (r0, t0) = self.start[i];
            rx += counter(iface, "rx_bytes").unwrap_or(r0).saturating_sub(r0);
            tx += counter(iface, "tx_bytes").unwrap_or(t0).saturating_sub(t0);
        }
        let bits = rx.max(tx) as f64 * 8.0;
        // A tap's nominal speed is a convention (10 Mbit/s for virtio taps):
        // traffic above it is saturation, not more than 100 %.
        (bits / secs.max(1e-3) / self.speed_bps * 100.0).clamp(0.0, 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn network_presence_from_the_command_line() {
        // Our own pid has no tun fds; only the arguments matter here.
        let me = std::process::id();
        assert!(matches!(
            Network::detect(me, &args("qemu -nodefaults -m 512M")),
            Network::None
        ));
        assert!(matches!(
            Network::detect(me, &args("qemu -m 512M -net none")),
            Network::None
        ));
        assert!(matches!(
            Network::detect(me, &args("qemu -m 512M")),
            Network::Unknowable(_)
        ));
        match Network::detect(
            me,
            &args("qemu -nodefaults -netdev user,id=n0 -device virtio-net-pci,netdev=n0"),
        ) {
            Network::Unknowable(why) => assert!(why.contains("user"), "{why}"),
            _ => panic!("user networking is not countable"),
        }
        // A tap whose interface does not exist here is not countable either.
        assert!(matches!(
            Network::detect(
                me,
                &args(
                    "qemu -nodefaults -netdev tap,id=n0,ifname=nosuchtap0 -device e1000,netdev=n0"
                )
            ),
            Network::Unknowable(_)
        ));
    }

    #[test]
    fn tap_utilisation_uses_the_busier_direction() {
        // Loopback stands in for a tap: its counters are real.
        let m = NetMonitor {
            ifaces: vec!["lo".into()],
            speed_bps: 1e9,
            speed_source: "test".into(),
            start: vec![(0, 0)],
        };
        let u = m.utilisation(1e9);
        assert!(u >= 0.0 && u.is_finite());
        assert!(link_speed("lo").0 > 0.0);
    }
}
