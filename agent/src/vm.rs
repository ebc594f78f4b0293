//! Finding a running QEMU VM: by QMP socket, pid, `-name`, libvirt domain or
//! Proxmox VMID.

use crate::error::AgentError;
use crate::procfs::read_proc;
use migsight_proto::wire::VmRef;
pub use migsight_qemu::cmdline::{
    has_flag, opt_get, option_values, ram_backends_from_args, ram_size_from_args, split_opts,
    vm_name,
};
use std::path::{Path, PathBuf};

/// A QEMU process to profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmTarget {
    pub pid: u32,
    /// The VM's `-name`, when known.
    pub name: Option<String>,
    /// A QMP socket the agent may use; `None` is pid-only mode.
    pub qmp: Option<PathBuf>,
}

impl VmTarget {
    pub fn new(pid: u32, qmp: Option<PathBuf>) -> Self {
        VmTarget {
            pid,
            name: None,
            qmp,
        }
    }
}

/// Finds the VM `r` refers to and checks it is a live QEMU process.
pub fn locate(r: &VmRef) -> Result<VmTarget, AgentError> {
    match r {
        VmRef::Pid(pid) => {
            let args = check_qemu(*pid)?;
            let qmp = qmp_sockets(*pid, &args).into_iter().next();
            Ok(VmTarget {
                pid: *pid,
                name: vm_name(&args),
                qmp,
            })
        }
        VmRef::QmpSocket(path) => {
            let pid = pid_of_qmp_socket(path)?;
            let args = check_qemu(pid)?;
            Ok(VmTarget {
                pid,
                name: vm_name(&args),
                qmp: Some(path.clone()),
            })
        }
        VmRef::Name(name) => {
            let mut found = Vec::new();
            for pid in qemu_pids() {
                if let Ok(args) = cmdline(pid) {
                    if vm_name(&args).as_deref() == Some(name.as_str()) {
                        found.push((pid, args));
                    }
                }
            }
            match found.len() {
                0 => Err(AgentError::VmNotFound(format!(
                    "no QEMU process with -name {name:?}"
                ))),
                1 => {
                    let (pid, args) = found.pop().unwrap();
                    let qmp = qmp_sockets(pid, &args).into_iter().next();
                    Ok(VmTarget {
                        pid,
                        name: Some(name.clone()),
                        qmp,
                    })
                }
                _ => Err(AgentError::BadRequest(format!(
                    "{} QEMU processes are named {name:?} (pids {}); give a pid",
                    found.len(),
                    found
                        .iter()
                        .map(|(p, _)| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
        VmRef::Libvirt(domain) => {
            if domain.contains('/') || domain.is_empty() {
                return Err(AgentError::BadRequest(format!(
                    "bad libvirt domain name {domain:?}"
                )));
            }
            let pidfile = PathBuf::from(format!("/run/libvirt/qemu/{domain}.pid"));
            let pid = match read_pidfile(&pidfile, &format!("libvirt domain {domain:?}")) {
                Ok(pid) => pid,
                // A libvirtd whose run directory this process does not see
                // (another mount namespace: a container, a second daemon):
                // libvirt always names its QEMU `-name guest=NAME`.
                Err(AgentError::VmNotFound(why)) => {
                    let named: Vec<u32> = qemu_pids()
                        .into_iter()
                        .filter(|p| {
                            cmdline(*p)
                                .is_ok_and(|a| vm_name(&a).as_deref() == Some(domain.as_str()))
                        })
                        .collect();
                    match named[..] {
                        [pid] => pid,
                        [] => return Err(AgentError::VmNotFound(why)),
                        _ => {
                            return Err(AgentError::BadRequest(format!(
                                "{} QEMU processes run a libvirt domain named {domain:?} and {} does not exist; give a pid",
                                named.len(),
                                pidfile.display()
                            )))
                        }
                    }
                }
                Err(e) => return Err(e),
            };
            check_qemu(pid)?;
            // libvirtd owns the domain's QMP socket: pid-only mode.
            Ok(VmTarget {
                pid,
                name: Some(domain.clone()),
                qmp: None,
            })
        }
        VmRef::Proxmox(vmid) => {
            let dir = Path::new("/var/run/qemu-server");
            let pid = read_pidfile(
                &dir.join(format!("{vmid}.pid")),
                &format!("Proxmox VM {vmid}"),
            )?;
            let args = check_qemu(pid)?;
            let qmp = dir.join(format!("{vmid}.qmp"));
            Ok(VmTarget {
                pid,
                name: vm_name(&args).or_else(|| Some(vmid.to_string())),
                qmp: qmp.exists().then_some(qmp),
            })
        }
    }
}

fn read_pidfile(path: &Path, what: &str) -> Result<u32, AgentError> {
    let s = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AgentError::VmNotFound(format!(
            "{what} is not running ({} does not exist)",
            path.display()
        )),
        _ => AgentError::io(format!("reading {}", path.display()), e),
    })?;
    s.trim().parse().map_err(|_| {
        AgentError::VmNotFound(format!("{} does not hold a pid: {s:?}", path.display()))
    })
}

/// The command line of `pid`, split at NULs.
pub fn cmdline(pid: u32) -> Result<Vec<String>, AgentError> {
    Ok(migsight_qemu::procfs::cmdline(pid)?)
}

fn looks_like_qemu(exe: &str) -> bool {
    let base = exe.rsplit('/').next().unwrap_or(exe);
    let base = base.trim_end_matches(" (deleted)");
    base.starts_with("qemu-system")
        || base == "qemu-kvm"
        || base == "kvm"
        || base.starts_with("qemu-kvm")
}

/// Checks that `pid` is a live QEMU system emulator and returns its arguments.
pub fn check_qemu(pid: u32) -> Result<Vec<String>, AgentError> {
    if pid == 0 {
        return Err(AgentError::VmNotFound("pid 0 is not a process".into()));
    }
    let stat = read_proc(pid, "stat")?;
    if let Some((_, f)) = crate::procfs::stat_fields(&stat) {
        if matches!(f.first(), Some(&"Z") | Some(&"X")) {
            return Err(AgentError::VmNotFound(format!(
                "process {pid} has exited (zombie)"
            )));
        }
    }
    let args = cmdline(pid)?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.display().to_string());
    let argv0 = args.first().cloned().unwrap_or_default();
    let comm = read_proc(pid, "comm").unwrap_or_default();
    let ok = exe.as_deref().map(looks_like_qemu).unwrap_or(false)
        || looks_like_qemu(&argv0)
        || comm.trim().starts_with("qemu-system")
        || comm.trim().starts_with("qemu-kvm");
    if !ok {
        return Err(AgentError::NotQemu {
            pid,
            detail: format!(
                "executable {}, argv[0] {argv0:?}",
                exe.unwrap_or_else(|| "unknown".into())
            ),
        });
    }
    Ok(args)
}

/// Pids of every QEMU system emulator on the host.
pub fn qemu_pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut v: Vec<u32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if looks_like_qemu(&exe) {
                return true;
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.starts_with("qemu-system") || comm.starts_with("qemu-kvm")
        })
        .collect();
    v.sort_unstable();
    v
}

/// QEMU processes on this host other than `except`.
pub fn other_vms(except: &[u32]) -> u32 {
    qemu_pids().iter().filter(|p| !except.contains(p)).count() as u32
}

fn resolve(pid: u32, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        cwd.join(p)
    }
}

/// QMP (control-mode) server sockets on the command line, absolute paths.
pub fn qmp_sockets(pid: u32, args: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for flag in ["-qmp", "-qmp-pretty"] {
        for v in option_values(args, flag) {
            let opts = split_opts(v);
            if let Some(p) = opts[0].strip_prefix("unix:") {
                let server = opts
                    .iter()
                    .any(|o| o == "server" || o == "server=on" || o == "server=yes");
                if server {
                    out.push(resolve(pid, p));
                }
            }
        }
    }
    // -chardev socket,id=X,path=P,server=on + -mon chardev=X,mode=control
    let control_ids: Vec<String> = option_values(args, "-mon")
        .into_iter()
        .filter_map(|v| {
            let o = split_opts(v);
            let mode = opt_get(&o, "mode").unwrap_or_else(|| "readline".into());
            (mode == "control")
                .then(|| opt_get(&o, "chardev"))
                .flatten()
        })
        .collect();
    for v in option_values(args, "-chardev") {
        let o = split_opts(v);
        if o[0] != "socket" {
            continue;
        }
        let id = opt_get(&o, "id").unwrap_or_default();
        let server = o
            .iter()
            .any(|x| x == "server" || x == "server=on" || x == "server=yes");
        if let (true, Some(path)) = (control_ids.contains(&id) && server, opt_get(&o, "path")) {
            out.push(resolve(pid, &path));
        }
    }
    out
}

fn same_path(a: &Path, b: &Path) -> bool {
    let ca = std::fs::canonicalize(a).unwrap_or_else(|_| a.to_path_buf());
    let cb = std::fs::canonicalize(b).unwrap_or_else(|_| b.to_path_buf());
    ca == cb
}

/// The pid of the QEMU process serving QMP on `path`: by the command line,
/// else by the socket's inode in `/proc/net/unix` and the processes' fds.
pub fn pid_of_qmp_socket(path: &Path) -> Result<u32, AgentError> {
    if !path.exists() {
        return Err(AgentError::VmNotFound(format!(
            "QMP socket {} does not exist",
            path.display()
        )));
    }
    let pids = qemu_pids();
    for &pid in &pids {
        if let Ok(args) = cmdline(pid) {
            if qmp_sockets(pid, &args).iter().any(|p| same_path(p, path)) {
                return Ok(pid);
            }
        }
    }
    // By inode: the listening socket bound to `path`.
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let p = f.get(7)?;
            (Path::new(p) == canon || Path::new(p) == path)
                .then(|| f.get(6).map(|s| s.to_string()))?
        })
        .collect();
    for &pid in &pids {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in rd.flatten() {
            if let Ok(l) = std::fs::read_link(fd.path()) {
                let l = l.display().to_string();
                if inodes.iter().any(|i| l == format!("socket:[{i}]")) {
                    return Ok(pid);
                }
            }
        }
    }
    Err(AgentError::VmNotFound(format!(
        "no QEMU process serves QMP on {}",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn qmp_sockets_parse() {
        let a = args("qemu-system-x86_64 -name src,debug-threads=on -m 512M -qmp unix:/tmp/a.qmp,server=on,wait=off");
        assert_eq!(qmp_sockets(1, &a), vec![PathBuf::from("/tmp/a.qmp")]);
        let a = args("qemu-system-x86_64 -m 1024 -chardev socket,id=mon0,path=/run/q.sock,server=on,wait=off -mon chardev=mon0,mode=control -chardev socket,id=s,path=/run/serial,server=on");
        assert_eq!(qmp_sockets(1, &a), vec![PathBuf::from("/run/q.sock")]);
        assert_eq!(vm_name(&a), None);
        let a = args("qemu-system-x86_64 --qmp unix:/x,server,nowait");
        assert_eq!(qmp_sockets(1, &a), vec![PathBuf::from("/x")]);
        // A client-mode QMP socket is not ours to connect to.
        let a = args("qemu-system-x86_64 -qmp unix:/y");
        assert!(qmp_sockets(1, &a).is_empty());
        assert!(ram_backends_from_args(&a).is_empty());
    }

    #[test]
    fn non_qemu_and_missing_pids() {
        let me = std::process::id();
        assert!(matches!(
            locate(&VmRef::Pid(me)),
            Err(AgentError::NotQemu { .. })
        ));
        assert!(matches!(
            locate(&VmRef::Pid(u32::MAX - 3)),
            Err(AgentError::VmNotFound(_))
        ));
        assert!(matches!(
            locate(&VmRef::Name("no-such-vm-migsight".into())),
            Err(AgentError::VmNotFound(_))
        ));
        assert!(matches!(
            locate(&VmRef::Libvirt("no-such-domain".into())),
            Err(AgentError::VmNotFound(_))
        ));
        assert!(matches!(
            locate(&VmRef::Proxmox(999_999)),
            Err(AgentError::VmNotFound(_))
        ));
        assert!(matches!(
            locate(&VmRef::QmpSocket("/nonexistent/q.sock".into())),
            Err(AgentError::VmNotFound(_))
        ));
    }
}
