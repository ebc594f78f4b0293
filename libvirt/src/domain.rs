//! What libvirt knows about a domain (its XML: memory, vCPUs, memory
//! backing, accelerator) and which QEMU process runs it.

use crate::virsh::{LibvirtError, Virsh};

/// Facts from `virsh dumpxml NAME`.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainFacts {
    pub name: String,
    pub uuid: String,
    /// `kvm` or `qemu` (TCG).
    pub domain_type: String,
    /// `<memory>`, KiB: the guest RAM QEMU maps (what migration copies).
    pub memory_kib: u64,
    /// `<currentMemory>`, KiB (less when a balloon took some back).
    pub current_memory_kib: u64,
    pub vcpus: u32,
    /// `<memoryBacking>` children in words (`hugepages`, `source type=memfd`,
    /// `access mode=shared`, `locked`, …); empty: anonymous memory.
    pub memory_backing: Vec<String>,
    /// `<features><kvm><dirty-ring state='on' size='N'/>`: dirty-limit needs it.
    pub dirty_ring: Option<u64>,
    pub emulator: Option<String>,
}

impl DomainFacts {
    /// Reads the domain's live XML.
    pub fn query(virsh: &Virsh, name: &str) -> Result<DomainFacts, LibvirtError> {
        let xml = virsh.run(&["dumpxml", name]).map_err(|e| match e {
            LibvirtError::Command { message, .. } => LibvirtError::Domain(name.into(), message),
            e => e,
        })?;
        DomainFacts::parse(&xml).map_err(|m| LibvirtError::Domain(name.into(), m))
    }

    /// Parses a domain XML.
    pub fn parse(xml: &str) -> Result<DomainFacts, String> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| format!("domain XML: {e}"))?;
        let root = doc.root_element();
        if root.tag_name().name() != "domain" {
            return Err(format!(
                "domain XML: root element is <{}>",
                root.tag_name().name()
            ));
        }
        fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
            n.children()
                .find(|c| c.is_element() && c.tag_name().name() == tag)
        }
        let text = |tag: &str| {
            child(root, tag)
                .and_then(|n| n.text())
                .map(|t| t.trim().to_string())
        };
        let kib = |tag: &str| -> Result<Option<u64>, String> {
            let Some(n) = child(root, tag) else {
                return Ok(None);
            };
            let v: u64 = n
                .text()
                .map(str::trim)
                .unwrap_or("")
                .parse()
                .map_err(|_| format!("<{tag}> is not a number"))?;
            let unit = n.attribute("unit").unwrap_or("KiB");
            let mul = match unit {
                "b" | "bytes" => 1.0 / 1024.0,
                "KB" => 1000.0 / 1024.0,
                "k" | "KiB" => 1.0,
                "MB" => 1e6 / 1024.0,
                "M" | "MiB" => 1024.0,
                "GB" => 1e9 / 1024.0,
                "G" | "GiB" => 1048576.0,
                "TB" => 1e12 / 1024.0,
                "T" | "TiB" => 1073741824.0,
                other => return Err(format!("<{tag}> has unknown unit {other:?}")),
            };
            Ok(Some((v as f64 * mul).round() as u64))
        };
        let memory_kib = kib("memory")?.ok_or("domain XML has no <memory>")?;
        let memory_backing = child(root, "memoryBacking")
            .map(|mb| {
                mb.children()
                    .filter(|c| c.is_element())
                    .map(|c| {
                        let attrs: Vec<String> = c
                            .attributes()
                            .map(|a| format!("{}={}", a.name(), a.value()))
                            .collect();
                        if attrs.is_empty() {
                            c.tag_name().name().to_string()
                        } else {
                            format!("{} {}", c.tag_name().name(), attrs.join(" "))
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let dirty_ring = child(root, "features")
            .and_then(|f| child(f, "kvm"))
            .and_then(|k| child(k, "dirty-ring"))
            .filter(|d| d.attribute("state") == Some("on"))
            .map(|d| {
                d.attribute("size")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0)
            });
        Ok(DomainFacts {
            name: text("name").ok_or("domain XML has no <name>")?,
            uuid: text("uuid").unwrap_or_default(),
            domain_type: root.attribute("type").unwrap_or("").to_string(),
            memory_kib,
            current_memory_kib: kib("currentMemory")?.unwrap_or(memory_kib),
            vcpus: text("vcpu")
                .map(|v| v.parse().map_err(|_| "<vcpu> is not a number".to_string()))
                .transpose()?
                .unwrap_or(1),
            memory_backing,
            dirty_ring,
            emulator: child(root, "devices")
                .and_then(|d| child(d, "emulator"))
                .and_then(|e| e.text())
                .map(|t| t.trim().to_string()),
        })
    }

    /// The accelerator in QEMU's words (`kvm`, `tcg`).
    pub fn accel(&self) -> &'static str {
        if self.domain_type == "kvm" {
            "kvm"
        } else {
            "tcg"
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "libvirt domain {} ({}): {} MiB, {} vCPU{}, {}, memory backing {}",
            self.name,
            self.domain_type,
            self.memory_kib / 1024,
            self.vcpus,
            if self.vcpus == 1 { "" } else { "s" },
            self.accel(),
            if self.memory_backing.is_empty() {
                "default (anonymous)".to_string()
            } else {
                self.memory_backing.join(", ")
            }
        )
    }

    /// The QEMU process running this domain: libvirt passes the domain's
    /// UUID as `-uuid`, which is unique on a host, whatever libvirt's run
    /// directory (a containerised or second libvirtd keeps its PID files
    /// where this process may not see them).
    pub fn find_pid(&self) -> Option<u32> {
        if self.uuid.is_empty() {
            return None;
        }
        let rd = std::fs::read_dir("/proc").ok()?;
        rd.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let Ok(bytes) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                    return false;
                };
                let args: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
                args.windows(2)
                    .any(|w| w[0] == b"-uuid" && w[1] == self.uuid.as_bytes())
            })
    }
}

/// `virsh domstate NAME`: `running`, `paused`, `shut off`, …
pub fn state(virsh: &Virsh, name: &str) -> Result<String, LibvirtError> {
    Ok(virsh.run(&["domstate", name])?.trim().to_string())
}

/// A diskless domain that direct-boots migsight's guest image (the lab's
/// and the tests' guests): machine `pc`, one vCPU, serial to a file, no
/// disks or network, so it migrates between any two libvirt hosts that see
/// the kernel and initramfs at the same paths. ACPI is on, as in the QEMUs
/// the lab starts itself (and without it libvirt 9.0 passes `-no-acpi`,
/// which QEMU 10 no longer has).
#[derive(Debug, Clone)]
pub struct GuestDomain<'a> {
    pub name: &'a str,
    pub mem_mib: u64,
    /// `tcg` (domain type `qemu`) or `kvm`.
    pub accel: &'a str,
    pub kernel: &'a std::path::Path,
    pub initrd: &'a std::path::Path,
    /// Kernel command line (the workload's parameters).
    pub cmdline: &'a str,
    pub serial_log: &'a std::path::Path,
    /// The QEMU binary libvirt starts.
    pub emulator: &'a str,
}

impl GuestDomain<'_> {
    /// The domain XML.
    pub fn xml(&self) -> String {
        let (name, mem_mib, accel, kernel, initrd, cmdline, serial_log, emulator) = (
            self.name,
            self.mem_mib,
            self.accel,
            self.kernel,
            self.initrd,
            self.cmdline,
            self.serial_log,
            self.emulator,
        );
        let e = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('\'', "&apos;")
                .replace('"', "&quot;")
        };
        let (ty, cpu) = if accel == "kvm" {
            ("kvm", "<cpu mode='host-passthrough'/>")
        } else {
            (
                "qemu",
                "<cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>",
            )
        };
        format!(
            "<domain type='{ty}'>
  <name>{name}</name>
  <memory unit='MiB'>{mem_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  {cpu}
  <on_poweroff>destroy</on_poweroff>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{emulator}</emulator>
    <serial type='file'><source path='{serial}'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
",
            name = e(name),
            kernel = e(&kernel.display().to_string()),
            initrd = e(&initrd.display().to_string()),
            cmdline = e(cmdline),
            serial = e(&serial_log.display().to_string()),
            emulator = e(emulator),
        )
    }
}

/// The absolute path of a QEMU binary (`<emulator>` must be one): `binary`
/// itself when it has a `/`, else the first match on `PATH`.
pub fn emulator_path(binary: &str) -> Option<std::path::PathBuf> {
    if binary.contains('/') {
        return Some(std::path::PathBuf::from(binary));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// Starts QEMU's own dirty-rate measurement through libvirt (`virsh
/// domdirtyrate-calc`, page-sampling, which is safe under TCG and KVM
/// alike): the cross-check the agent runs over QMP, for VMs whose monitor
/// libvirt owns. `seconds` is clamped to libvirt's 1–60.
pub fn start_dirty_rate(virsh: &Virsh, name: &str, seconds: u64) -> Result<(), LibvirtError> {
    let secs = seconds.clamp(1, 60).to_string();
    virsh.run(&["domdirtyrate-calc", name, "--seconds", &secs])?;
    Ok(())
}

/// The dirty rate QEMU measured (MiB/s, libvirt rounds it to whole
/// megabytes), once the calculation has finished.
pub fn dirty_rate(virsh: &Virsh, name: &str) -> Result<Option<f64>, LibvirtError> {
    let out = virsh.run(&["domstats", name, "--dirtyrate"])?;
    Ok(parse_dirty_rate(&out))
}

fn parse_dirty_rate(domstats: &str) -> Option<f64> {
    let field = |k: &str| {
        domstats
            .lines()
            .find_map(|l| l.trim().strip_prefix(k)?.strip_prefix('='))
            .map(str::trim)
    };
    // calc_status 2: measured.
    (field("dirtyrate.calc_status")? == "2")
        .then(|| field("dirtyrate.megabytes_per_second")?.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<domain type='qemu' id='1'>\n  <name>web1</name>\n  <uuid>3534df5f-27ea-44e3-b1c1-0cf2b22b93b3</uuid>\n  <memory unit='KiB'>262144</memory>\n  <currentMemory unit='KiB'>262144</currentMemory>\n  <vcpu placement='static'>2</vcpu>\n  <memoryBacking><hugepages/><source type='memfd'/><access mode='shared'/></memoryBacking>\n  <features><kvm><dirty-ring state='on' size='4096'/></kvm></features>\n  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>\n</domain>";

    #[test]
    fn domain_xml_facts() {
        let f = DomainFacts::parse(XML).unwrap();
        assert_eq!(f.name, "web1");
        assert_eq!(f.memory_kib, 262144);
        assert_eq!(f.vcpus, 2);
        assert_eq!(f.accel(), "tcg");
        assert_eq!(
            f.memory_backing,
            vec!["hugepages", "source type=memfd", "access mode=shared"]
        );
        assert_eq!(f.dirty_ring, Some(4096));
        assert_eq!(f.emulator.as_deref(), Some("/usr/bin/qemu-system-x86_64"));
        assert!(
            f.describe().contains("256 MiB, 2 vCPUs"),
            "{}",
            f.describe()
        );
        let g = DomainFacts::parse(
            "<domain type='kvm'><name>x</name><memory unit='GiB'>4</memory></domain>",
        )
        .unwrap();
        assert_eq!(
            (g.memory_kib, g.current_memory_kib, g.vcpus, g.accel()),
            (4 << 20, 4 << 20, 1, "kvm")
        );
        assert!(g.memory_backing.is_empty() && g.dirty_ring.is_none());
        assert_eq!(g.find_pid(), None, "no uuid, no search");
    }

    #[test]
    fn guest_xml_is_a_domain_libvirt_facts_read_back() {
        let x = GuestDomain {
            name: "g<1>",
            mem_mib: 256,
            accel: "tcg",
            kernel: std::path::Path::new("/k"),
            initrd: std::path::Path::new("/i"),
            cmdline: "MODE=synthetic A='b'",
            serial_log: std::path::Path::new("/tmp/s.log"),
            emulator: "/usr/bin/qemu-system-x86_64",
        }
        .xml();
        let f = DomainFacts::parse(&x).unwrap();
        assert_eq!(
            (f.name.as_str(), f.memory_kib, f.vcpus, f.accel()),
            ("g<1>", 256 * 1024, 1, "tcg")
        );
        let doc = roxmltree::Document::parse(&x).unwrap();
        let cmd = doc
            .descendants()
            .find(|n| n.has_tag_name("cmdline"))
            .unwrap();
        assert_eq!(cmd.text(), Some("MODE=synthetic A='b'"));
    }

    #[test]
    fn dirty_rates_parse_once_measured() {
        let done = "Domain: 'wt18g'\n  dirtyrate.calc_status=2\n  dirtyrate.calc_period=2\n  dirtyrate.calc_mode=page-sampling\n  dirtyrate.megabytes_per_second=12\n";
        assert_eq!(parse_dirty_rate(done), Some(12.0));
        assert_eq!(
            parse_dirty_rate(&done.replace("status=2", "status=1")),
            None
        );
        assert_eq!(parse_dirty_rate("Domain: 'x'\n"), None);
    }

    #[test]
    fn bad_xml_is_an_error_not_a_panic() {
        for bad in [
            "",
            "<domain>",
            "<network/>",
            "<domain><name>x</name></domain>",
            "<domain><name>x</name><memory unit='parsec'>1</memory></domain>",
            "<domain><name>x</name><memory>lots</memory></domain>",
        ] {
            assert!(DomainFacts::parse(bad).is_err(), "{bad}");
        }
    }
}
