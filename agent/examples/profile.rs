//! Profiles one VM and prints the report as JSON:
//! `cargo run -p migsight-agent --example profile -- VMREF [WINDOW_S] [INTERVAL_S]`
//! (VMREF as for `migsight`: `pid:N`, `name:NAME`, a QMP socket path, …).

use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let vm: migsight_proto::wire::VmRef = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: profile VMREF [WINDOW_S] [INTERVAL_S]"))?
        .parse()
        .map_err(anyhow::Error::msg)?;
    let window: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20.0);
    let interval: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1.0);
    let target = migsight_agent::locate(&vm)?;
    let cfg = migsight_agent::ProfileConfig {
        window: Duration::from_secs_f64(window),
        interval: Duration::from_secs_f64(interval),
        ..Default::default()
    };
    let cpu0 = migsight_agent::procfs::self_cpu_seconds();
    let r = migsight_agent::profile(&target, &cfg, &AtomicBool::new(false))?;
    let cpu = migsight_agent::procfs::self_cpu_seconds() - cpu0;
    println!("{}", serde_json::to_string_pretty(&r)?);
    eprintln!(
        "agent CPU: {:.3} s over {:.1} s ({:.2} % of one core)",
        cpu,
        window,
        cpu / window * 100.0
    );
    Ok(())
}
