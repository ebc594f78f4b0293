//! `--config FILE` for the daemons: `/etc/migsight/agent.toml` and
//! `/etc/migsight/predictor.toml`.
//!
//! The daemons' own argument parsers stay the single source of truth: a
//! config file is turned into the very flags it documents (`socket =
//! "/run/migsight/agent.sock"` becomes `--socket /run/migsight/agent.sock`)
//! and inserted before the command line is parsed. Flags given on the command
//! line win over the file. Keys are checked against the subcommand's flags
//! (a typo is reported with the file, the line and the known keys), and
//! values against the flag's kind and value parser (reported with the file,
//! the line and the key), so a bad file fails before the daemon starts.
//!
//! The file is TOML, read by the `toml` crate: any valid TOML document whose
//! top level is `key = value` pairs. A boolean `true` becomes a bare `--flag`
//! (`false` omits it) for a switch; an array repeats a flag that takes
//! several values. Tables (`[section]`, inline tables) and dates are refused,
//! because no flag takes them.

use std::ffi::OsString;
use std::path::Path;

/// Subcommands that accept `--config`.
pub const CONFIG_SUBCOMMANDS: [&str; 2] = ["agent", "predictor"];

/// Flags a config file may not set.
const COMMAND_LINE_ONLY: [&str; 1] = ["reload"];

/// Flags that exist on every subcommand but mean nothing in a file.
const NOT_KEYS: [&str; 3] = ["config", "help", "version"];

/// A config file that cannot stand for flags; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--config needs a file")]
    MissingPath,
    #[error("reading config file {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Syntax {
        file: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{file}, line {line}: unknown key {key:?} (known: {known})")]
    UnknownKey {
        file: String,
        line: usize,
        key: String,
        known: String,
    },
    #[error("{file}, line {line}: {key:?} belongs on the command line (the unit's ExecReload), not in a config file")]
    CommandLineOnly {
        file: String,
        line: usize,
        key: String,
    },
    #[error("{file}, line {line}: {key:?} is a table; migsight config files are flat `key = value` pairs")]
    Table {
        file: String,
        line: usize,
        key: String,
    },
    #[error("{file}, line {line}: key {key:?} is {found}, but --{flag} takes {expected}")]
    WrongType {
        file: String,
        line: usize,
        key: String,
        flag: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("{file}, line {line}: key {key:?}: {message}")]
    BadValue {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
}

/// One top-level `key = value` of a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: toml::Value,
    /// 1-based line of the key, for messages.
    pub line: usize,
}

/// Reads a config file's top-level keys in file order.
pub fn entries(text: &str, file: &str) -> Result<Vec<Entry>, ConfigError> {
    use std::collections::BTreeMap;
    use toml::Spanned;
    let table: BTreeMap<Spanned<String>, toml::Value> =
        toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            source: Box::new(e),
        })?;
    let mut out: Vec<(usize, Entry)> = table
        .into_iter()
        .map(|(key, value)| {
            let start = key.span().start;
            let line = 1 + text.as_bytes()[..start.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            let entry = Entry {
                key: key.into_inner(),
                value,
                line,
            };
            (start, entry)
        })
        .collect();
    out.sort_by_key(|(start, _)| *start);
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

/// What a TOML value is, in a message.
fn kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// The command-line text of a scalar, or `None` for values no flag takes.
fn scalar_arg(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The flags a config file stands for, given the subcommand `sc` whose
/// flags it sets and the long flags `given` on the command line.
pub fn to_flags(
    entries: &[Entry],
    file: &str,
    sc: &clap::Command,
    given: &[String],
) -> Result<Vec<OsString>, ConfigError> {
    let mut flags = Vec::new();
    for Entry { key, value, line } in entries {
        let line = *line;
        if value.is_table() {
            return Err(ConfigError::Table {
                file: file.into(),
                line,
                key: key.clone(),
            });
        }
        let long = key.replace('_', "-");
        let arg = sc
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()));
        // `reload` makes `migsight predictor` signal a running daemon
        // instead of serving: in the file, it would stop the unit from
        // ever starting one.
        if arg.is_some() && COMMAND_LINE_ONLY.contains(&long.as_str()) {
            return Err(ConfigError::CommandLineOnly {
                file: file.into(),
                line,
                key: key.clone(),
            });
        }
        let Some(arg) = arg.filter(|_| !NOT_KEYS.contains(&long.as_str())) else {
            return Err(ConfigError::UnknownKey {
                file: file.into(),
                line,
                key: key.clone(),
                known: known_keys(sc),
            });
        };
        if given.contains(&long) {
            continue; // the command line wins
        }
        let flag = format!("--{long}");
        let wrong = |found: &'static str, expected: &'static str| ConfigError::WrongType {
            file: file.into(),
            line,
            key: key.clone(),
            flag: long.clone(),
            found,
            expected,
        };
        if !arg.get_action().takes_values() {
            match value {
                toml::Value::Boolean(true) => flags.push(flag.into()),
                toml::Value::Boolean(false) => {}
                other => return Err(wrong(kind(other), "true or false")),
            }
            continue;
        }
        let repeats = matches!(arg.get_action(), clap::ArgAction::Append);
        let items: Vec<&toml::Value> = match value {
            toml::Value::Array(items) if repeats => items.iter().collect(),
            toml::Value::Array(_) => return Err(wrong("an array", "one value")),
            v => vec![v],
        };
        for item in items {
            let text = scalar_arg(item).ok_or_else(|| {
                wrong(
                    kind(item),
                    if repeats {
                        "strings or numbers"
                    } else {
                        "a string or a number"
                    },
                )
            })?;
            check_value(sc, &flag, &text).map_err(|message| ConfigError::BadValue {
                file: file.into(),
                line,
                key: key.clone(),
                message,
            })?;
            flags.push(flag.clone().into());
            flags.push(text.into());
        }
    }
    Ok(flags)
}

/// Runs the subcommand's own parser on `--flag text` alone, so a value the
/// flag refuses is reported with the file and the key; clap's first line
/// says what is wrong. Errors about other flags (a required one missing, a
/// conflict) are the full command line's business, not this value's.
fn check_value(sc: &clap::Command, flag: &str, text: &str) -> Result<(), String> {
    use clap::error::ErrorKind;
    let probe = sc.clone().no_binary_name(true);
    match probe.try_get_matches_from([flag, text]) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) =>
        {
            let shown = e.to_string();
            let first = shown.lines().next().unwrap_or_default();
            Err(first.trim_start_matches("error: ").to_string())
        }
        _ => Ok(()),
    }
}

/// The keys a file may set for `sc`, for an unknown-key message.
fn known_keys(sc: &clap::Command) -> String {
    sc.get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|k| !NOT_KEYS.contains(k) && !COMMAND_LINE_ONLY.contains(k))
        .map(|k| k.replace('-', "_"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rewrites `migsight agent|predictor --config FILE …` into the flags the file
/// stands for; any other command line is returned unchanged.
pub fn expand_args(args: Vec<OsString>, cmd: &clap::Command) -> Result<Vec<OsString>, ConfigError> {
    let Some(sc) = args
        .get(1)
        .and_then(|s| s.to_str())
        .filter(|s| CONFIG_SUBCOMMANDS.contains(s))
        .and_then(|s| cmd.find_subcommand(s))
    else {
        return Ok(args);
    };
    let mut path: Option<OsString> = None;
    let mut rest: Vec<OsString> = Vec::new();
    let mut it = args.iter().cloned();
    let head: Vec<OsString> = it.by_ref().take(2).collect();
    while let Some(a) = it.next() {
        if a == "--config" {
            path = Some(it.next().ok_or(ConfigError::MissingPath)?);
        } else if let Some(p) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            path = Some(p.into());
        } else {
            rest.push(a);
        }
    }
    let Some(path) = path else {
        return Ok(head.into_iter().chain(rest).collect());
    };
    let path = Path::new(&path);
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let entries = entries(&text, &file)?;
    let given: Vec<String> = rest
        .iter()
        .filter_map(|a| a.to_str())
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect();
    let flags = to_flags(&entries, &file, sc, &given)?;
    Ok(head.into_iter().chain(flags).chain(rest).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    const AGENT: &str = r#"
# comment
socket = "/run/migsight/agent.sock"   # trailing comment
predictor = '/run/migsight/predictor.sock'
max_window = 60_000
ratio = 0.5
verbose = true
quiet = false
allow = [
    "a",   # multi-line arrays are TOML too
    "b",
]
"#;

    /// A subcommand with every kind of flag a daemon has.
    fn agent() -> Command {
        Command::new("agent")
            .arg(Arg::new("socket").long("socket"))
            .arg(Arg::new("predictor").long("predictor"))
            .arg(
                Arg::new("max-window")
                    .long("max-window")
                    .value_parser(clap::value_parser!(u64)),
            )
            .arg(
                Arg::new("ratio")
                    .long("ratio")
                    .value_parser(clap::value_parser!(f64)),
            )
            .arg(
                Arg::new("verbose")
                    .long("verbose")
                    .action(ArgAction::SetTrue),
            )
            .arg(Arg::new("quiet").long("quiet").action(ArgAction::SetTrue))
            .arg(Arg::new("allow").long("allow").action(ArgAction::Append))
            .arg(
                Arg::new("features")
                    .long("features")
                    .value_delimiter(',')
                    .value_parser(["a", "b"]),
            )
            .arg(Arg::new("reload").long("reload"))
            .arg(Arg::new("config").long("config"))
    }

    fn strings(f: Vec<OsString>) -> Vec<String> {
        f.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn toml_parses_in_file_order_with_lines() {
        let e = entries(AGENT, "agent.toml").unwrap();
        let keys: Vec<(&str, usize)> = e.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            keys,
            [
                ("socket", 3),
                ("predictor", 4),
                ("max_window", 5),
                ("ratio", 6),
                ("verbose", 7),
                ("quiet", 8),
                ("allow", 9)
            ]
        );
        assert_eq!(
            e[1].value,
            toml::Value::String("/run/migsight/predictor.sock".into())
        );
        assert_eq!(e[2].value, toml::Value::Integer(60000));
        assert_eq!(
            entries(r#"a = "q\"\\""#, "x").unwrap()[0].value,
            toml::Value::String("q\"\\".into())
        );
        // Not TOML: the file and the line are named.
        for bad in ["a = bare\n", "a = 1\na = 2\n", "a = \"x\n", "a\n"] {
            let err = entries(bad, "x.toml").unwrap_err().to_string();
            assert!(err.starts_with("x.toml: ") && err.contains("line"), "{err}");
        }
    }

    #[test]
    fn entries_become_flags_and_the_command_line_wins() {
        let e = entries(AGENT, "agent.toml").unwrap();
        let f = to_flags(&e, "agent.toml", &agent(), &["predictor".into()]).unwrap();
        assert_eq!(
            strings(f),
            [
                "--socket",
                "/run/migsight/agent.sock",
                "--max-window",
                "60000",
                "--ratio",
                "0.5",
                "--verbose",
                "--allow",
                "a",
                "--allow",
                "b"
            ]
        );
        let e = entries("features = \"a,b\"\n", "a.toml").unwrap();
        let f = to_flags(&e, "a.toml", &agent(), &[]).unwrap();
        assert_eq!(strings(f), ["--features", "a,b"]);
    }

    #[test]
    fn bad_keys_and_values_name_the_file_line_and_key() {
        let err = |text: &str| {
            let e = entries(text, "agent.toml").unwrap();
            to_flags(&e, "agent.toml", &agent(), &[])
                .unwrap_err()
                .to_string()
        };
        let e = err("reload = 42\n");
        assert!(e.contains("command line"), "{e}");
        let e = err("\nsockett = \"x\"\n");
        assert!(
            e.contains("agent.toml, line 2")
                && e.contains("sockett")
                && e.contains("known: socket, predictor")
                && !e.contains("config,"),
            "{e}"
        );
        let e = err("config = \"x\"\n");
        assert!(e.contains("unknown key"), "{e}");
        let e = err("verbose = \"yes\"\n");
        assert!(
            e.contains("line 1")
                && e.contains("\"verbose\" is a string")
                && e.contains("true or false"),
            "{e}"
        );
        let e = err("socket = [\"a\", \"b\"]\n");
        assert!(e.contains("is an array") && e.contains("one value"), "{e}");
        let e = err("[agent]\nsocket = \"x\"\n");
        assert!(e.contains("line 1: \"agent\" is a table"), "{e}");
        let e = err("socket = { path = \"x\" }\n");
        assert!(e.contains("\"socket\" is a table"), "{e}");
        let e = err("allow = [[\"a\"]]\n");
        assert!(e.contains("\"allow\" is an array"), "{e}");
        let e = err("max_window = \"soon\"\n");
        assert!(
            e.contains("line 1") && e.contains("max_window") && e.contains("soon"),
            "{e}"
        );
        let e = err("features = \"a,c\"\n");
        assert!(e.contains("features") && e.contains("'c'"), "{e}");
    }

    #[test]
    fn expand_args_rewrites_only_daemon_command_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "socket = \"/tmp/a.sock\"\nverbose = true\n").unwrap();
        let cmd = Command::new("m").subcommand(agent());
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let got = expand_args(a(&["m", "agent", "--config", p.to_str().unwrap()]), &cmd).unwrap();
        assert_eq!(
            got,
            a(&["m", "agent", "--socket", "/tmp/a.sock", "--verbose"])
        );
        let got = expand_args(
            a(&[
                "m",
                "agent",
                "--socket=/x",
                &format!("--config={}", p.display()),
            ]),
            &cmd,
        )
        .unwrap();
        assert_eq!(got, a(&["m", "agent", "--verbose", "--socket=/x"]));
        let same = a(&["m", "plan", "--config", "x"]);
        assert_eq!(expand_args(same.clone(), &cmd).unwrap(), same);
        let e = expand_args(a(&["m", "agent", "--config", "/nonexistent.toml"]), &cmd)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent.toml"), "{e}");
        assert!(matches!(
            expand_args(a(&["m", "agent", "--config"]), &cmd),
            Err(ConfigError::MissingPath)
        ));
    }
}
