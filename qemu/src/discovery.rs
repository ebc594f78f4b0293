//! What a QEMU can run: its version, migration capabilities and parameters,
//! its multifd compression methods and accelerator, and from them which of
//! migsight's algorithms are available here, or why not.
//!
//! Asked of the QEMU itself where there is a QMP socket (`query-version` via
//! the greeting, `query-migrate-capabilities`, `query-migrate-parameters`,
//! `query-qmp-schema` for the build's compression methods); in pid-only mode
//! (libvirt owns the monitor) read from the binary's `--version` and the
//! command line, with the version rules of
//! [`Algorithm::known_unavailable`] — and said so in [`QemuInfo::source`].

use crate::cmdline;
use crate::qmp::{Qmp, QmpError};
use crate::version::QemuVersion;
use migsight_proto::wire::QemuInfo;
use migsight_proto::Algorithm;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// Where the facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The running QEMU answered over QMP.
    Qmp,
    /// The QEMU binary's `--version` and the command line (no QMP).
    Binary,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Qmp => "qmp",
            Source::Binary => "binary",
        }
    }
}

/// What one QEMU offers for migration.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSupport {
    pub version: QemuVersion,
    /// `kvm`, `tcg`, … (`None`: not known).
    pub accel: Option<String>,
    /// KVM keeps a dirty ring (`-accel kvm,dirty-ring-size=N`): `dirty-limit` works.
    pub dirty_ring: bool,
    /// Migration capabilities QEMU lists (`None`: not asked).
    pub capabilities: Option<BTreeSet<String>>,
    /// Migration parameters QEMU lists (`None`: not asked).
    pub parameters: Option<BTreeSet<String>>,
    /// Values `multifd-compression` accepts in this build (`None`: not known).
    pub multifd_compressions: Option<BTreeSet<String>>,
    pub source: Source,
}

impl HostSupport {
    /// Asks a running QEMU over QMP; `args` is its command line (for the
    /// dirty ring, which QMP does not report).
    pub fn query(q: &mut Qmp, args: &[String]) -> Result<HostSupport, QmpError> {
        let caps = q.execute("query-migrate-capabilities", None)?;
        let capabilities: BTreeSet<String> = caps
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get("capability")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let params = q.execute("query-migrate-parameters", None)?;
        let parameters: BTreeSet<String> = params
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        // The schema is large (~240 KiB on 10.0) but asked once per plan/migration.
        let multifd_compressions = match q.execute("query-qmp-schema", None) {
            Ok(schema) => enum_values_of_member(&schema, "multifd-compression"),
            Err(QmpError::Command { .. }) => None,
            Err(e) => return Err(e),
        };
        let kvm = match q.execute("query-kvm", None) {
            Ok(v) => v.get("enabled").and_then(Value::as_bool),
            Err(QmpError::Command { .. }) => None,
            Err(e) => return Err(e),
        };
        let accel = match kvm {
            Some(true) => Some("kvm".to_string()),
            Some(false) => cmdline::accel(args)
                .filter(|a| a != "kvm")
                .or(Some("tcg".to_string())),
            None => cmdline::accel(args),
        };
        Ok(HostSupport {
            version: q.version,
            dirty_ring: accel.as_deref() == Some("kvm") && cmdline::dirty_ring_size(args).is_some(),
            accel,
            capabilities: Some(capabilities),
            parameters: Some(parameters),
            multifd_compressions,
            source: Source::Qmp,
        })
    }

    /// Without QMP: the version (from [`binary_version`]) and the command line.
    pub fn from_version(version: QemuVersion, args: &[String]) -> HostSupport {
        let accel = cmdline::accel(args);
        HostSupport {
            version,
            dirty_ring: accel.as_deref() == Some("kvm") && cmdline::dirty_ring_size(args).is_some(),
            accel,
            capabilities: None,
            parameters: None,
            multifd_compressions: None,
            source: Source::Binary,
        }
    }

    /// Whether QEMU has capability `cap` (assumed yes when not asked).
    pub fn has_capability(&self, cap: &str) -> bool {
        self.capabilities
            .as_ref()
            .map(|c| c.contains(cap))
            .unwrap_or(true)
    }

    /// Whether QEMU has migration parameter `p` (assumed yes when not asked).
    pub fn has_parameter(&self, p: &str) -> bool {
        self.parameters
            .as_ref()
            .map(|c| c.contains(p))
            .unwrap_or(true)
    }

    /// `None` when this QEMU can run `a`, else why not, in a few words.
    pub fn unavailable(&self, a: Algorithm) -> Option<String> {
        if let Some(why) = a.known_unavailable(self.version.major, self.version.minor) {
            return Some(why.to_string());
        }
        if let Some(cap) = a.capabilities().iter().find(|c| !self.has_capability(c)) {
            return Some(format!("QEMU {} has no `{cap}` capability", self.version));
        }
        if a == Algorithm::MultifdZstd {
            if let Some(m) = &self.multifd_compressions {
                if !m.contains("zstd") {
                    return Some("this QEMU build has no zstd multifd compression".into());
                }
            }
        }
        if a == Algorithm::DirtyLimit && !self.dirty_ring {
            return Some(match self.accel.as_deref() {
                Some("kvm") => "needs KVM dirty ring (start QEMU with -accel kvm,dirty-ring-size=4096; libvirt: <dirty-ring state='on' size='4096'/>)".into(),
                Some(other) => format!("needs KVM dirty ring (this VM runs under {other})"),
                None => "needs KVM dirty ring (accelerator not known)".into(),
            });
        }
        None
    }

    /// The algorithms this QEMU can run.
    pub fn available(&self) -> Vec<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(|a| self.unavailable(*a).is_none())
            .collect()
    }

    /// The wire form (profile reports and prediction requests carry it).
    pub fn info(&self) -> QemuInfo {
        QemuInfo::describe(
            self.version.to_string(),
            self.accel.clone(),
            self.source.name().to_string(),
            |a| self.unavailable(a),
        )
    }
}

/// The version of the QEMU binary of a running process (`/proc/PID/exe
/// --version`), for pid-only mode. The binary may have been upgraded on
/// disk since the process started: the package version is then newer than
/// what runs, which the caller should say.
pub fn binary_version(exe: &Path) -> Result<QemuVersion, String> {
    let out = std::process::Command::new(exe)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running {} --version: {e}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    QemuVersion::from_version_output(&text).ok_or_else(|| {
        format!(
            "{} --version printed no version: {:?}",
            exe.display(),
            text.chars().take(200).collect::<String>()
        )
    })
}

/// In a `query-qmp-schema` reply, the values of the enum that object member
/// `member` has as its type (introspection names types by number, so the
/// member is found by name and its enum by the number).
fn enum_values_of_member(schema: &Value, member: &str) -> Option<BTreeSet<String>> {
    let entries = schema.as_array()?;
    let ty = entries.iter().find_map(|e| {
        if e.get("meta-type")?.as_str()? != "object" {
            return None;
        }
        e.get("members")?
            .as_array()?
            .iter()
            .find(|m| m.get("name").and_then(Value::as_str) == Some(member))?
            .get("type")?
            .as_str()
    })?;
    let en = entries.iter().find(|e| {
        e.get("name").and_then(Value::as_str) == Some(ty)
            && e.get("meta-type").and_then(Value::as_str) == Some("enum")
    })?;
    // QEMU ≥ 6.2 lists `members` [{name}], older ones `values` [str]; both are sent by 7.2+.
    let from_values = en
        .get("values")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).map(str::to_string));
    let from_members = en.get("members").and_then(Value::as_array).map(|v| {
        v.iter()
            .filter_map(|m| m.get("name")?.as_str())
            .map(str::to_string)
    });
    let set: BTreeSet<String> = from_values
        .into_iter()
        .flatten()
        .chain(from_members.into_iter().flatten())
        .collect();
    (!set.is_empty()).then_some(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn support(version: QemuVersion, caps: &[&str], accel: &str, ring: bool) -> HostSupport {
        HostSupport {
            version,
            accel: Some(accel.into()),
            dirty_ring: ring,
            capabilities: Some(caps.iter().map(|s| s.to_string()).collect()),
            parameters: None,
            multifd_compressions: Some(["none", "zlib", "zstd"].map(String::from).into()),
            source: Source::Qmp,
        }
    }

    const CAPS_7_2: &[&str] = &[
        "xbzrle",
        "auto-converge",
        "compress",
        "postcopy-ram",
        "multifd",
        "postcopy-preempt",
    ];
    const CAPS_10_0: &[&str] = &[
        "xbzrle",
        "auto-converge",
        "postcopy-ram",
        "multifd",
        "postcopy-preempt",
        "dirty-limit",
    ];

    #[test]
    fn qemu_10_under_tcg_offers_all_but_compress_and_dirty_limit() {
        let s = support(QemuVersion::new(10, 0, 2), CAPS_10_0, "tcg", false);
        assert_eq!(
            s.unavailable(Algorithm::Compress).as_deref(),
            Some("removed in QEMU 9.1")
        );
        assert!(s
            .unavailable(Algorithm::DirtyLimit)
            .unwrap()
            .contains("needs KVM dirty ring (this VM runs under tcg)"));
        assert_eq!(
            s.available(),
            vec![
                Algorithm::Precopy,
                Algorithm::AutoConverge,
                Algorithm::Xbzrle,
                Algorithm::Postcopy,
                Algorithm::Multifd,
                Algorithm::MultifdZstd,
                Algorithm::PostcopyPreempt
            ]
        );
        let kvm = support(QemuVersion::new(10, 0, 2), CAPS_10_0, "kvm", true);
        assert!(kvm.unavailable(Algorithm::DirtyLimit).is_none());
        let kvm_no_ring = support(QemuVersion::new(10, 0, 2), CAPS_10_0, "kvm", false);
        assert!(kvm_no_ring
            .unavailable(Algorithm::DirtyLimit)
            .unwrap()
            .contains("dirty-ring-size"));
    }

    #[test]
    fn qemu_7_2_offers_compress_and_no_dirty_limit() {
        let s = support(QemuVersion::new(7, 2, 22), CAPS_7_2, "kvm", true);
        assert!(s.unavailable(Algorithm::Compress).is_none());
        assert_eq!(
            s.unavailable(Algorithm::DirtyLimit).as_deref(),
            Some("needs QEMU 8.1 or later")
        );
        let mut no_zstd = s.clone();
        no_zstd.multifd_compressions = Some(["none", "zlib"].map(String::from).into());
        assert!(no_zstd
            .unavailable(Algorithm::MultifdZstd)
            .unwrap()
            .contains("zstd"));
        // A capability the QEMU does not list makes its algorithm unavailable.
        let mut odd = s.clone();
        odd.capabilities = Some(["xbzrle".to_string()].into());
        assert!(odd
            .unavailable(Algorithm::Multifd)
            .unwrap()
            .contains("`multifd`"));
        let info = s.info();
        assert_eq!(info.version, "7.2.22");
        assert_eq!(info.algorithms.len(), Algorithm::ALL.len());
    }

    #[test]
    fn pid_only_mode_uses_the_version_rules() {
        let args: Vec<String> = "qemu-system-x86_64 -accel kvm,dirty-ring-size=4096 -m 4G"
            .split(' ')
            .map(String::from)
            .collect();
        let s = HostSupport::from_version(QemuVersion::new(9, 2, 0), &args);
        assert_eq!(s.source, Source::Binary);
        assert!(s.unavailable(Algorithm::Compress).is_some());
        assert!(s.unavailable(Algorithm::DirtyLimit).is_none());
        assert!(s.unavailable(Algorithm::MultifdZstd).is_none());
        assert_eq!(s.info().source, "binary");
    }

    #[test]
    fn schema_enum_lookup() {
        let schema = json!([
            {"name": "1", "meta-type": "object", "members": [
                {"name": "max-bandwidth", "type": "int"},
                {"name": "multifd-compression", "type": "42"}]},
            {"name": "42", "meta-type": "enum", "values": ["none", "zlib", "zstd"],
             "members": [{"name": "none"}, {"name": "zlib"}, {"name": "zstd"}]},
            {"name": "43", "meta-type": "enum", "values": ["a"]}
        ]);
        let v = enum_values_of_member(&schema, "multifd-compression").unwrap();
        assert!(v.contains("zstd") && v.len() == 3);
        assert_eq!(enum_values_of_member(&schema, "nope"), None);
        assert_eq!(
            enum_values_of_member(&json!({"x": 1}), "multifd-compression"),
            None
        );
    }

    #[test]
    fn binary_version_errors_are_clear() {
        let e = binary_version(Path::new("/nonexistent/qemu")).unwrap_err();
        assert!(e.contains("/nonexistent/qemu"), "{e}");
        let e = binary_version(Path::new("/bin/true")).unwrap_err();
        assert!(e.contains("no version"), "{e}");
    }
}
