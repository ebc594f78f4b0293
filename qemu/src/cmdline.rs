//! Reading a QEMU command line: its options, the VM's name, RAM size and
//! memory backends, the accelerator and whether KVM keeps a dirty ring.
//!
//! Pure functions of the argument vector (`/proc/PID/cmdline` split at NULs),
//! so that pid-only mode (no QMP, e.g. under libvirt) knows what QMP would
//! have said where the command line says it too.

/// Splits a QEMU option string at commas (`,,` is a literal comma).
pub fn split_opts(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Values of option `name` (`-name` given as `-name`), accepting `--name`
/// and `-name=value`.
pub fn option_values<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    let bare = name.trim_start_matches('-');
    let mut out = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        let stripped = a.strip_prefix("--").or_else(|| a.strip_prefix('-'));
        if let Some(opt) = stripped {
            if opt == bare {
                if let Some(v) = args.get(i + 1) {
                    out.push(v.as_str());
                }
                i += 2;
                continue;
            }
            if let Some(v) = opt.strip_prefix(bare).and_then(|r| r.strip_prefix('=')) {
                out.push(v);
            }
        }
        i += 1;
    }
    out
}

/// Whether flag `name` (without value) appears.
pub fn has_flag(args: &[String], name: &str) -> bool {
    let bare = name.trim_start_matches('-');
    args.iter()
        .skip(1)
        .any(|a| a.strip_prefix("--").or_else(|| a.strip_prefix('-')) == Some(bare))
}

/// `key=value` of a QEMU option string.
pub fn opt_get(opts: &[String], key: &str) -> Option<String> {
    opts.iter()
        .find_map(|o| o.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .map(str::to_string)
}

/// The VM's `-name` (`NAME,…` or `guest=NAME,…`).
pub fn vm_name(args: &[String]) -> Option<String> {
    let v = option_values(args, "-name").into_iter().last()?;
    let opts = split_opts(v);
    if let Some(g) = opt_get(&opts, "guest") {
        return Some(g);
    }
    let first = opts.first()?;
    if first.contains('=') {
        None
    } else {
        Some(first.clone())
    }
}

/// RAM size from `-m` (`512`, `512M`, `1G`, `size=1G,slots=…`), bytes;
/// QEMU's default is 128 MiB.
pub fn ram_size_from_args(args: &[String]) -> u64 {
    let Some(v) = option_values(args, "-m").into_iter().last() else {
        return 128 << 20;
    };
    let opts = split_opts(v);
    let size =
        opt_get(&opts, "size").or_else(|| opts.first().filter(|s| !s.contains('=')).cloned());
    size.and_then(|s| parse_size_mib_default(&s))
        .unwrap_or(128 << 20)
}

/// Sizes of the `-object memory-backend-{ram,memfd,file}` objects, bytes,
/// in command-line order; keyval (`memory-backend-ram,id=m0,size=1G`) and
/// JSON (`{"qom-type":"memory-backend-ram","size":1073741824,…}`, as libvirt
/// writes it) forms. Empty when there are none (a plain `-m` guest).
pub fn ram_backends_from_args(args: &[String]) -> Vec<u64> {
    option_values(args, "-object")
        .into_iter()
        .filter_map(|v| {
            if v.trim_start().starts_with('{') {
                let j: serde_json::Value = serde_json::from_str(v).ok()?;
                let t = j.get("qom-type")?.as_str()?;
                if !t.starts_with("memory-backend-") {
                    return None;
                }
                match j.get("size")? {
                    serde_json::Value::Number(n) => n.as_u64(),
                    serde_json::Value::String(s) => parse_size(s, 1),
                    _ => None,
                }
            } else {
                let opts = split_opts(v);
                let t = opts.first()?;
                let t = t.strip_prefix("qom-type=").unwrap_or(t);
                if !t.starts_with("memory-backend-") {
                    return None;
                }
                parse_size(&opt_get(&opts, "size")?, 1)
            }
        })
        .collect()
}

/// A QEMU size: a bare number is MiB for `-m`; suffixes K, M, G, T.
fn parse_size_mib_default(s: &str) -> Option<u64> {
    parse_size(s, 1 << 20)
}

/// A QEMU size with suffixes K, M, G, T (B: bytes); a bare number counts `unit`s.
fn parse_size(s: &str, unit: u64) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        't' | 'T' => (&s[..s.len() - 1], 1 << 40),
        'b' | 'B' => (&s[..s.len() - 1], 1),
        _ => (s, unit),
    };
    let n: f64 = num.parse().ok()?;
    (n > 0.0).then_some((n * mult as f64) as u64)
}

/// The accelerator: `kvm`, `tcg`, … from `-accel`, `-machine accel=` or
/// `-enable-kvm`; `None` when the command line does not say (QEMU then
/// picks its default, TCG for `qemu-system-*`).
pub fn accel(args: &[String]) -> Option<String> {
    if has_flag(args, "-enable-kvm") {
        return Some("kvm".into());
    }
    if let Some(a) = option_values(args, "-accel").first() {
        return split_opts(a).first().cloned().filter(|s| !s.is_empty());
    }
    option_values(args, "-machine")
        .into_iter()
        .chain(option_values(args, "-M"))
        .find_map(|m| opt_get(&split_opts(m), "accel"))
}

/// KVM's dirty-ring size from `-accel kvm,dirty-ring-size=N` (what libvirt
/// writes for `<dirty-ring state='on' size='N'/>`); `None` when absent or 0.
/// `dirty-limit` needs it.
pub fn dirty_ring_size(args: &[String]) -> Option<u64> {
    option_values(args, "-accel")
        .into_iter()
        .map(split_opts)
        .filter(|o| o.first().map(String::as_str) == Some("kvm"))
        .find_map(|o| opt_get(&o, "dirty-ring-size")?.parse::<u64>().ok())
        .filter(|n| *n > 0)
}

/// The number of vCPUs from `-smp` (`4`, `cpus=4,sockets=…`, `sockets=2,cores=2`);
/// QEMU's default is 1.
pub fn vcpus(args: &[String]) -> u32 {
    let Some(v) = option_values(args, "-smp").into_iter().last() else {
        return 1;
    };
    let o = split_opts(v);
    let num = |k: &str| opt_get(&o, k).and_then(|x| x.parse::<u32>().ok());
    if let Some(n) = o
        .first()
        .and_then(|x| x.parse::<u32>().ok())
        .or_else(|| num("cpus"))
    {
        return n.max(1);
    }
    let product: u32 = ["sockets", "dies", "clusters", "cores", "threads"]
        .iter()
        .filter_map(|k| num(k))
        .product();
    product.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn names_and_sizes_parse() {
        let a = args("qemu-system-x86_64 -name src,debug-threads=on -m 512M");
        assert_eq!(vm_name(&a).as_deref(), Some("src"));
        assert_eq!(ram_size_from_args(&a), 512 << 20);
        let a = args(
            "qemu-system-x86_64 -name guest=web,,1,debug-threads=on -m size=2G,slots=2,maxmem=8G",
        );
        assert_eq!(vm_name(&a).as_deref(), Some("web,1"));
        assert_eq!(ram_size_from_args(&a), 2 << 30);
        assert_eq!(ram_size_from_args(&args("qemu -m 1024")), 1 << 30);
        assert_eq!(ram_size_from_args(&args("qemu")), 128 << 20);
    }

    #[test]
    fn memory_backends_parse_in_both_syntaxes() {
        // Two NUMA nodes, keyval (plain QEMU) and a hot-plugged DIMM; the
        // secret and the iothread are not memory.
        let a = args(
            "qemu-system-x86_64 -m 1G,slots=2,maxmem=4G \
             -object memory-backend-ram,id=m0,size=512M -numa node,memdev=m0 \
             -object memory-backend-memfd,id=m1,size=536870912,share=on -numa node,memdev=m1 \
             -object secret,id=s0,data=x -object iothread,id=io0 \
             -object qom-type=memory-backend-file,id=d0,size=1G,mem-path=/dev/hugepages",
        );
        assert_eq!(
            ram_backends_from_args(&a),
            vec![512 << 20, 512 << 20, 1 << 30]
        );
        // libvirt writes JSON objects.
        let a = vec![
            "qemu-system-x86_64".to_string(),
            "-object".to_string(),
            r#"{"qom-type":"memory-backend-ram","id":"ram-node0","size":2147483648,"host-nodes":[0],"policy":"bind"}"#.to_string(),
            "-object".to_string(),
            r#"{"qom-type":"memory-backend-memfd","id":"ram-node1","size":"2G"}"#.to_string(),
            "-object".to_string(),
            r#"{"qom-type":"secret","id":"masterKey0","format":"raw"}"#.to_string(),
            "-object".to_string(),
            "{not json".to_string(),
        ];
        assert_eq!(ram_backends_from_args(&a), vec![2 << 30, 2 << 30]);
    }

    #[test]
    fn accelerator_dirty_ring_and_vcpus() {
        assert_eq!(
            accel(&args("qemu -accel tcg -m 1G")).as_deref(),
            Some("tcg")
        );
        assert_eq!(accel(&args("qemu -enable-kvm")).as_deref(), Some("kvm"));
        assert_eq!(
            accel(&args("qemu -machine pc,accel=kvm")).as_deref(),
            Some("kvm")
        );
        assert_eq!(accel(&args("qemu -m 1G")), None);
        assert_eq!(
            dirty_ring_size(&args("qemu -accel kvm,dirty-ring-size=4096")),
            Some(4096)
        );
        assert_eq!(dirty_ring_size(&args("qemu -accel kvm")), None);
        assert_eq!(
            dirty_ring_size(&args("qemu -accel kvm,dirty-ring-size=0")),
            None
        );
        assert_eq!(
            dirty_ring_size(&args("qemu -accel tcg,dirty-ring-size=4096")),
            None
        );
        assert_eq!(vcpus(&args("qemu -smp 4")), 4);
        assert_eq!(vcpus(&args("qemu -smp cpus=3,sockets=3")), 3);
        assert_eq!(vcpus(&args("qemu -smp sockets=2,cores=2,threads=2")), 8);
        assert_eq!(vcpus(&args("qemu")), 1);
    }
}
