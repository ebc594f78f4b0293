//! `--config FILE` for the daemons: `/etc/migsight/agent.toml` and
//! `/etc/migsight/predictor.toml`.
//!
//! The daemons' own argument parsers stay the single source of truth: a
//! config file is turned into the very flags it documents (`socket =
//! "/run/migsight/agent.sock"` becomes `--socket /run/migsight/agent.sock`)
//! and inserted before the command line is parsed. Flags given on the command
//! line win over the file. Keys are checked against the subcommand's flags, so
//! a typo is reported with the file, the line and the known keys.
//!
//! The format is the flat subset of TOML these files need: `key = value` lines
//! with strings (`"…"` with `\\ \" \n \t` escapes, or `'…'` literal),
//! integers, floats, booleans and one-line arrays of those; `#` comments. A
//! boolean `true` becomes a bare `--flag`, `false` omits it; an array repeats
//! the flag. Tables (`[section]`) are refused.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsString;
use std::path::Path;

/// Subcommands that accept `--config`.
pub const CONFIG_SUBCOMMANDS: [&str; 2] = ["agent", "predictor"];

/// Flags a config file may not set.
const COMMAND_LINE_ONLY: [&str; 1] = ["reload"];

/// A value of the flat TOML subset.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Value>),
}

impl Value {
    fn as_arg(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(_) => String::new(),
        }
    }
}

fn parse_scalar(s: &str) -> Result<(Value, &str), String> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((Value::Str(out), &rest[i + 1..])),
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, '"')) => out.push('"'),
                    Some((_, o)) => return Err(format!("unsupported escape \\{o}")),
                    None => return Err("unterminated string".into()),
                },
                c => out.push(c),
            }
        }
        return Err("unterminated string".into());
    }
    if let Some(rest) = s.strip_prefix('\'') {
        let end = rest.find('\'').ok_or("unterminated string")?;
        return Ok((Value::Str(rest[..end].to_string()), &rest[end + 1..]));
    }
    let end = s.find([',', ']', '#']).unwrap_or(s.len());
    let tok = s[..end].trim();
    let rest = &s[end..];
    let v = match tok {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => {
            let clean = tok.replace('_', "");
            if let Ok(i) = clean.parse::<i64>() {
                Value::Int(i)
            } else if let Ok(f) = clean.parse::<f64>() {
                Value::Float(f)
            } else if tok.is_empty() {
                return Err("missing value".into());
            } else {
                return Err(format!(
                    "{tok:?} is not a TOML value (quote strings: \"{tok}\")"
                ));
            }
        }
    };
    Ok((v, rest))
}

fn parse_value(s: &str) -> Result<Value, String> {
    let t = s.trim_start();
    let (v, rest) = if let Some(mut rest) = t.strip_prefix('[') {
        let mut items = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(']') {
                rest = r;
                break;
            }
            let (v, r) = parse_scalar(rest)?;
            items.push(v);
            rest = r.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with(']') {
                return Err("expected , or ] in array (arrays must fit on one line)".into());
            }
        }
        (Value::Array(items), rest)
    } else {
        parse_scalar(t)?
    };
    let rest = rest.trim();
    if !(rest.is_empty() || rest.starts_with('#')) {
        return Err(format!("unexpected {rest:?} after the value"));
    }
    Ok(v)
}

/// Parses a flat TOML file into (key, value, line) in file order.
pub fn parse(text: &str, file: &str) -> Result<Vec<(String, Value, usize)>> {
    let mut out: Vec<(String, Value, usize)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('[') {
            bail!("{file}, line {line}: tables ([section]) are not used in migsight config files");
        }
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow!("{file}, line {line}: expected `key = value`"))?;
        let key = k.trim().trim_matches('"').to_string();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!("{file}, line {line}: bad key {:?}", k.trim());
        }
        if out.iter().any(|(x, _, _)| *x == key) {
            bail!("{file}, line {line}: key {key:?} appears twice");
        }
        let value = parse_value(v).map_err(|e| anyhow!("{file}, line {line}, key {key}: {e}"))?;
        out.push((key, value, line));
    }
    Ok(out)
}

/// The flags a config file stands for, given the long flags the subcommand knows.
pub fn to_flags(
    entries: &[(String, Value, usize)],
    file: &str,
    known: &[String],
    given: &[String],
) -> Result<Vec<OsString>> {
    let mut flags = Vec::new();
    for (key, value, line) in entries {
        let long = key.replace('_', "-");
        // `reload` makes `migsight predictor` signal a running daemon
        // instead of serving: in the file, it would stop the unit from
        // ever starting one.
        if COMMAND_LINE_ONLY.contains(&long.as_str()) && known.contains(&long) {
            bail!("{file}, line {line}: {key:?} belongs on the command line (the unit's ExecReload), not in a config file");
        }
        if long == "config" || !known.contains(&long) {
            bail!(
                "{file}, line {line}: unknown key {key:?} (known: {})",
                known
                    .iter()
                    .filter(|k| {
                        *k != "config"
                            && *k != "help"
                            && *k != "version"
                            && !COMMAND_LINE_ONLY.contains(&k.as_str())
                    })
                    .map(|k| k.replace('-', "_"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if given.contains(&long) {
            continue; // the command line wins
        }
        let flag = format!("--{long}");
        let mut push = |v: &Value| -> Result<()> {
            match v {
                Value::Bool(true) => flags.push(flag.clone().into()),
                Value::Bool(false) => {}
                Value::Array(_) => bail!("{file}, line {line}: nested arrays are not supported"),
                other => {
                    flags.push(flag.clone().into());
                    flags.push(other.as_arg().into());
                }
            }
            Ok(())
        };
        match value {
            Value::Array(items) => {
                for v in items {
                    push(v)?;
                }
            }
            v => push(v)?,
        }
    }
    Ok(flags)
}

/// Rewrites `migsight agent|predictor --config FILE …` into the flags the file
/// stands for; any other command line is returned unchanged.
pub fn expand_args(args: Vec<OsString>, cmd: &clap::Command) -> Result<Vec<OsString>> {
    let sub = match args.get(1).and_then(|s| s.to_str()) {
        Some(s) if CONFIG_SUBCOMMANDS.contains(&s) => s.to_string(),
        _ => return Ok(args),
    };
    let mut path: Option<OsString> = None;
    let mut rest: Vec<OsString> = Vec::new();
    let mut it = args.into_iter();
    let head: Vec<OsString> = it.by_ref().take(2).collect();
    while let Some(a) = it.next() {
        if a == "--config" {
            path = Some(it.next().ok_or_else(|| anyhow!("--config needs a file"))?);
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
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading config file {file}"))?;
    let entries = parse(&text, &file)?;
    let sc = cmd
        .find_subcommand(&sub)
        .ok_or_else(|| anyhow!("no subcommand {sub}"))?;
    let known: Vec<String> = sc
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    let given: Vec<String> = rest
        .iter()
        .filter_map(|a| a.to_str())
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect();
    let flags = to_flags(&entries, &file, &known, &given)?;
    Ok(head.into_iter().chain(flags).chain(rest).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = r#"
# comment
socket = "/run/migsight/agent.sock"   # trailing comment
predictor = '/run/migsight/predictor.sock'
max_window = 60_000
ratio = 0.5
verbose = true
quiet = false
allow = ["a", "b"]
"#;

    #[test]
    fn the_flat_subset_parses() {
        let e = parse(AGENT, "agent.toml").unwrap();
        assert_eq!(
            e[0],
            (
                "socket".into(),
                Value::Str("/run/migsight/agent.sock".into()),
                3
            )
        );
        assert_eq!(e[1].1, Value::Str("/run/migsight/predictor.sock".into()));
        assert_eq!(e[2].1, Value::Int(60000));
        assert_eq!(e[3].1, Value::Float(0.5));
        assert_eq!(e[4].1, Value::Bool(true));
        assert_eq!(
            e[6].1,
            Value::Array(vec![Value::Str("a".into()), Value::Str("b".into())])
        );
        assert!(parse("[agent]\n", "x")
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        assert!(parse("a = bare\n", "x")
            .unwrap_err()
            .to_string()
            .contains("quote"));
        assert!(parse("a = 1\na = 2\n", "x")
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(parse("a = \"x\n", "x").is_err());
        assert!(parse("a\n", "x").is_err());
        assert_eq!(
            parse(r#"a = "q\"\\""#, "x").unwrap()[0].1,
            Value::Str("q\"\\".into())
        );
    }

    #[test]
    fn entries_become_flags_and_the_command_line_wins() {
        let e = parse(AGENT, "agent.toml").unwrap();
        let known: Vec<String> = [
            "socket",
            "predictor",
            "max-window",
            "ratio",
            "verbose",
            "quiet",
            "allow",
            "config",
        ]
        .map(String::from)
        .to_vec();
        let f = to_flags(&e, "agent.toml", &known, &["predictor".into()]).unwrap();
        let f: Vec<String> = f.into_iter().map(|s| s.into_string().unwrap()).collect();
        assert_eq!(
            f,
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
        let e = parse("reload = 42\n", "p.toml").unwrap();
        let with_reload = [known.clone(), vec!["reload".to_string()]].concat();
        let err = to_flags(&e, "p.toml", &with_reload, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("command line"), "{err}");
        let e = parse("sockett = \"x\"\n", "agent.toml").unwrap();
        let err = to_flags(&e, "agent.toml", &known, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sockett") && err.contains("socket") && err.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn expand_args_rewrites_only_daemon_command_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "socket = \"/tmp/a.sock\"\nverbose = true\n").unwrap();
        let cmd = clap::Command::new("m").subcommand(
            clap::Command::new("agent")
                .arg(clap::Arg::new("socket").long("socket"))
                .arg(
                    clap::Arg::new("verbose")
                        .long("verbose")
                        .action(clap::ArgAction::SetTrue),
                )
                .arg(clap::Arg::new("config").long("config")),
        );
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
        assert!(expand_args(a(&["m", "agent", "--config", "/nonexistent.toml"]), &cmd).is_err());
    }
}
