//! `migsight install` / `migsight uninstall`.
//!
//! Puts in place, under `--root` (default `/`):
//!
//! | what | where |
//! |---|---|
//! | the binary | `PREFIX/bin/migsight` |
//! | systemd units | `/etc/systemd/system/migsight-{agent,predictor}.service`, `migsight-predictor.socket` (optional socket activation) |
//! | the `migsight` system user | `PREFIX/lib/sysusers.d/migsight.conf` |
//! | configuration (kept if present) | `/etc/migsight/{agent,predictor}.toml` |
//! | docs | `PREFIX/share/doc/migsight/` |
//! | the default model | `/var/lib/migsight/model.msm` (trained from the source tree's `data/*.csv` unless one exists) |
//! | what was installed | `/var/lib/migsight/install-manifest.txt` |
//!
//! `uninstall` removes what the manifest lists, except configuration files
//! the operator changed, the model and the outcomes dataset (`--purge`
//! removes those too).

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const AGENT_UNIT: &str = include_str!("../../systemd/migsight-agent.service");
const PREDICTOR_UNIT: &str = include_str!("../../systemd/migsight-predictor.service");
const PREDICTOR_SOCKET: &str = include_str!("../../systemd/migsight-predictor.socket");
const SYSUSERS: &str = include_str!("../../systemd/migsight.sysusers.conf");
const AGENT_TOML: &str = include_str!("../../etc/migsight/agent.toml");
const PREDICTOR_TOML: &str = include_str!("../../etc/migsight/predictor.toml");
const JSON_DOC: &str = include_str!("../../docs/json.md");
const WORKFLOW_DOC: &str = include_str!("../../docs/workflow.md");

/// Unit names, for systemctl.
pub const UNITS: [&str; 2] = ["migsight-predictor.service", "migsight-agent.service"];
/// Every unit `uninstall` disables (the socket is optional, see its file).
const ALL_UNITS: [&str; 3] = [
    "migsight-predictor.socket",
    "migsight-predictor.service",
    "migsight-agent.service",
];
const MANIFEST: &str = "var/lib/migsight/install-manifest.txt";
const MODEL: &str = "var/lib/migsight/model.msm";

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// Installation prefix of the binary and docs.
    #[arg(long, default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Install into this directory instead of / (packaging, tests).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Use this model file instead of training one.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Directory of CSAP-schema CSV files to train the default model from.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Do not install or train a model.
    #[arg(long)]
    pub no_model: bool,
    /// Overwrite configuration files that already exist.
    #[arg(long)]
    pub force: bool,
    /// Do not run systemctl / systemd-sysusers (they only run when --root is /).
    #[arg(long)]
    pub no_systemctl: bool,
}

#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    /// Installation root used by `install`.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Also remove the model, the outcomes dataset and changed configuration.
    #[arg(long)]
    pub purge: bool,
    /// Do not run systemctl (it only runs when --root is /).
    #[arg(long)]
    pub no_systemctl: bool,
}

/// `root` joined with an absolute path.
fn under(root: &Path, abs: &Path) -> PathBuf {
    root.join(abs.strip_prefix("/").unwrap_or(abs))
}

/// A unit file with the binary and docs under `prefix`.
pub fn render_unit(text: &str, prefix: &Path) -> String {
    let p = prefix.display().to_string();
    let p = p.trim_end_matches('/');
    text.replace("/usr/local/bin/migsight", &format!("{p}/bin/migsight"))
        .replace(
            "/usr/local/share/doc/migsight",
            &format!("{p}/share/doc/migsight"),
        )
}

/// The source tree's data directory (this binary's build tree, or $MIGSIGHT_SRC).
fn default_data_dir() -> PathBuf {
    match std::env::var_os("MIGSIGHT_SRC") {
        Some(s) => PathBuf::from(s).join("data"),
        None => {
            let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
            d.canonicalize().unwrap_or(d)
        }
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    migsight_proto::write_file_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(())
}

fn is_real_root(root: &Path) -> bool {
    root == Path::new("/")
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn run_cmd(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => eprintln!("install: ran {shown}"),
        Ok(s) => eprintln!("install: warning: {shown} failed ({s})"),
        Err(e) => eprintln!("install: warning: cannot run {shown}: {e}"),
    }
}

/// CSV files directly in `dir`, sorted.
fn csv_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "csv") && p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn install(a: InstallArgs) -> Result<()> {
    if !a.prefix.is_absolute() {
        bail!("--prefix must be absolute (got {})", a.prefix.display());
    }
    let root = &a.root;
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    // Entries of an earlier install stay listed (a re-install may skip some files).
    let mut manifest: Vec<PathBuf> =
        std::fs::read_to_string(under(root, &Path::new("/").join(MANIFEST)))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with('/'))
            .map(PathBuf::from)
            .collect();
    let mut put = |abs: PathBuf, bytes: &[u8], mode: u32| -> Result<()> {
        let p = under(root, &abs);
        write_file(&p, bytes, mode)?;
        eprintln!("install: {}", p.display());
        manifest.push(abs);
        Ok(())
    };

    // Binary.
    let exe = std::env::current_exe().context("finding this binary")?;
    let bin = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
    let bin_abs = a.prefix.join("bin/migsight");
    put(bin_abs.clone(), &bin, 0o755)?;

    // Units and the system user.
    put(
        PathBuf::from("/etc/systemd/system/migsight-agent.service"),
        render_unit(AGENT_UNIT, &a.prefix).as_bytes(),
        0o644,
    )?;
    put(
        PathBuf::from("/etc/systemd/system/migsight-predictor.service"),
        render_unit(PREDICTOR_UNIT, &a.prefix).as_bytes(),
        0o644,
    )?;
    put(
        PathBuf::from("/etc/systemd/system/migsight-predictor.socket"),
        render_unit(PREDICTOR_SOCKET, &a.prefix).as_bytes(),
        0o644,
    )?;
    let sysusers_abs = a.prefix.join("lib/sysusers.d/migsight.conf");
    put(sysusers_abs.clone(), SYSUSERS.as_bytes(), 0o644)?;
    let doc = a.prefix.join("share/doc/migsight");
    put(doc.join("json.md"), JSON_DOC.as_bytes(), 0o644)?;
    put(doc.join("README.md"), WORKFLOW_DOC.as_bytes(), 0o644)?;

    // Configuration: kept when present (the operator may have edited it).
    for (name, text) in [
        ("agent.toml", AGENT_TOML),
        ("predictor.toml", PREDICTOR_TOML),
    ] {
        let abs = PathBuf::from("/etc/migsight").join(name);
        let p = under(root, &abs);
        if p.exists() && !a.force {
            eprintln!(
                "install: keeping existing {} (--force overwrites)",
                p.display()
            );
        } else {
            put(abs, text.as_bytes(), 0o644)?;
        }
    }

    // The default model.
    let model = under(root, Path::new("/").join(MODEL).as_path());
    if a.no_model {
        eprintln!("install: no model installed (--no-model)");
    } else if let Some(m) = &a.model {
        let bytes = std::fs::read(m).with_context(|| format!("reading model {}", m.display()))?;
        put(Path::new("/").join(MODEL), &bytes, 0o644)?;
    } else if model.exists() {
        eprintln!("install: keeping existing model {}", model.display());
    } else {
        let data = a.data.clone().unwrap_or_else(default_data_dir);
        let files = csv_files(&data);
        if files.is_empty() {
            eprintln!(
                "install: warning: no model installed: no CSV files in {} (train one: migsight train --data FILE.csv --out {})",
                data.display(),
                model.display()
            );
        } else {
            if let Some(d) = model.parent() {
                std::fs::create_dir_all(d)?;
            }
            eprintln!(
                "install: training the default model from {} file(s) in {}",
                files.len(),
                data.display()
            );
            let mut cmd = Command::new(&exe);
            cmd.arg("train");
            for f in &files {
                cmd.arg("--data").arg(f);
            }
            cmd.arg("--out").arg(&model);
            let st = cmd.status().context("running migsight train")?;
            if st.success() && model.exists() {
                eprintln!("install: {}", model.display());
                manifest.push(Path::new("/").join(MODEL));
            } else {
                eprintln!("install: warning: training failed ({st}); the predictor will not start until a model exists");
            }
        }
    }

    // The manifest (uninstall reads it).
    manifest.sort();
    manifest.dedup();
    let mut text = String::from("# written by migsight install; read by migsight uninstall\n");
    for p in &manifest {
        text += &format!("{}\n", p.display());
    }
    write_file(
        &under(root, &Path::new("/").join(MANIFEST)),
        text.as_bytes(),
        0o644,
    )?;

    if is_real_root(root) && !a.no_systemctl {
        run_cmd(Command::new("systemd-sysusers").arg(&sysusers_abs));
        if systemd_running() {
            run_cmd(Command::new("systemctl").arg("daemon-reload"));
        }
    }
    eprintln!(
        "install: done. Start the daemons with:\n  systemctl enable --now {}\n(or, predictor started on demand: systemctl enable --now migsight-predictor.socket migsight-agent.service)\nthen: {} plan <vm> --bandwidth 1Gbit",
        UNITS.join(" "),
        bin_abs.display()
    );
    Ok(())
}

pub fn uninstall(a: UninstallArgs) -> Result<()> {
    let root = &a.root;
    let manifest_path = under(root, &Path::new("/").join(MANIFEST));
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        anyhow!(
            "cannot read {}: {e} (was migsight installed under --root {}?)",
            manifest_path.display(),
            root.display()
        )
    })?;
    if is_real_root(root) && !a.no_systemctl && systemd_running() {
        let mut c = Command::new("systemctl");
        c.args(["disable", "--now"]).args(ALL_UNITS);
        run_cmd(&mut c);
    }
    let shipped = |abs: &Path| -> Option<&'static str> {
        match abs.to_str()? {
            "/etc/migsight/agent.toml" => Some(AGENT_TOML),
            "/etc/migsight/predictor.toml" => Some(PREDICTOR_TOML),
            _ => None,
        }
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let abs = PathBuf::from(line.trim());
        let p = under(root, &abs);
        if !p.exists() {
            continue;
        }
        if abs == Path::new("/").join(MODEL) && !a.purge {
            eprintln!(
                "uninstall: keeping the model {} (--purge removes it)",
                p.display()
            );
            continue;
        }
        if let Some(orig) = shipped(&abs) {
            let now = std::fs::read_to_string(&p).unwrap_or_default();
            if now != orig && !a.purge {
                eprintln!(
                    "uninstall: keeping changed configuration {} (--purge removes it)",
                    p.display()
                );
                continue;
            }
        }
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        eprintln!("uninstall: removed {}", p.display());
        if let Some(d) = p.parent() {
            dirs.push(d.to_path_buf());
        }
    }
    std::fs::remove_file(&manifest_path)
        .with_context(|| format!("removing {}", manifest_path.display()))?;
    if a.purge {
        for f in [
            "var/lib/migsight/outcomes.csv",
            MODEL,
            "etc/migsight/agent.toml",
            "etc/migsight/predictor.toml",
        ] {
            let p = root.join(f);
            if p.exists() {
                std::fs::remove_file(&p)?;
                eprintln!("uninstall: removed {}", p.display());
            }
        }
    } else if root.join("var/lib/migsight/outcomes.csv").exists() {
        eprintln!(
            "uninstall: keeping {} (--purge removes it)",
            root.join("var/lib/migsight/outcomes.csv").display()
        );
    }
    dirs.push(manifest_path.parent().unwrap().to_path_buf());
    dirs.push(root.join("etc/migsight"));
    // Remove directories left empty (deepest first), never above the root.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for d in dirs {
        let mut cur = Some(d.as_path());
        while let Some(dir) = cur {
            if dir == root.as_path()
                || !dir.starts_with(root)
                || dir.components().count() <= root.components().count()
            {
                break;
            }
            // Only the directories migsight owns or that are now empty.
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
            cur = dir.parent();
            // Stop at well-known shared directories when installing into /.
            if is_real_root(root) {
                break;
            }
        }
    }
    if is_real_root(root) && !a.no_systemctl && systemd_running() {
        run_cmd(Command::new("systemctl").arg("daemon-reload"));
    }
    eprintln!("uninstall: done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_the_prefix() {
        let u = render_unit(AGENT_UNIT, Path::new("/opt/migsight/"));
        assert!(
            u.contains(
                "ExecStart=/opt/migsight/bin/migsight agent --config /etc/migsight/agent.toml"
            ),
            "{u}"
        );
        assert!(!u.contains("/usr/local"));
        assert_eq!(
            render_unit(PREDICTOR_UNIT, Path::new("/usr/local")),
            PREDICTOR_UNIT
        );
    }

    #[test]
    fn install_and_uninstall_into_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let model = dir.path().join("m.msm");
        std::fs::write(&model, b"model").unwrap();
        install(InstallArgs {
            prefix: "/usr/local".into(),
            root: root.clone(),
            model: Some(model),
            data: None,
            no_model: false,
            force: false,
            no_systemctl: true,
        })
        .unwrap();
        for f in [
            "usr/local/bin/migsight",
            "etc/systemd/system/migsight-agent.service",
            "etc/systemd/system/migsight-predictor.service",
            "etc/systemd/system/migsight-predictor.socket",
            "usr/local/lib/sysusers.d/migsight.conf",
            "etc/migsight/agent.toml",
            "etc/migsight/predictor.toml",
            "var/lib/migsight/model.msm",
            "var/lib/migsight/install-manifest.txt",
        ] {
            assert!(root.join(f).is_file(), "{f} missing");
        }
        // The shipped configs stand for flags their daemon takes.
        for (sub, f) in [
            ("agent", "etc/migsight/agent.toml"),
            ("predictor", "etc/migsight/predictor.toml"),
        ] {
            let args = [
                "migsight",
                sub,
                "--config",
                &root.join(f).display().to_string(),
            ]
            .map(std::ffi::OsString::from)
            .to_vec();
            let cmd = <crate::Cli as clap::CommandFactory>::command();
            let flags = crate::config::expand_args(args, &cmd).unwrap();
            assert!(flags.len() > 4, "{f}: {flags:?}");
        }
        // A changed config survives uninstall; the rest goes.
        std::fs::write(root.join("etc/migsight/agent.toml"), "socket = \"/x\"\n").unwrap();
        std::fs::write(root.join("var/lib/migsight/outcomes.csv"), "x\n").unwrap();
        uninstall(UninstallArgs {
            root: root.clone(),
            purge: false,
            no_systemctl: true,
        })
        .unwrap();
        assert!(!root.join("usr/local/bin/migsight").exists());
        assert!(!root
            .join("etc/systemd/system/migsight-agent.service")
            .exists());
        assert!(!root.join("etc/migsight/predictor.toml").exists());
        assert!(root.join("etc/migsight/agent.toml").exists());
        assert!(root.join("var/lib/migsight/model.msm").exists());
        assert!(root.join("var/lib/migsight/outcomes.csv").exists());
        assert!(
            !root.join("usr/local/bin").exists(),
            "empty dirs are removed"
        );
        assert!(
            uninstall(UninstallArgs {
                root: root.clone(),
                purge: true,
                no_systemctl: true
            })
            .is_err(),
            "no manifest any more"
        );
    }
}
