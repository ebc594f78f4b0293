//! Workload parameters from environment variables (the kernel command line's
//! unknown `KEY=value` pairs, passed on by /init).

use crate::opspage::*;

pub use migsight_opspage::Mode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Random = 0,
    Seq = 1,
    HotCold = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Scatter = 0,
    Run = 1,
}

#[derive(Clone, Debug)]
pub struct Params {
    pub mode: Mode,
    pub ws_mb: u64,
    /// Page writes per second; 0 = none; u64::MAX = unlimited ("max").
    pub rate: u64,
    pub bytes: u64,
    pub entropy: u32,
    pub pattern: Pattern,
    pub layout: Layout,
    pub compute: u64,
    pub cold_mb: u64,
    pub cold_entropy: u32,
    pub seed: u64,
    pub value_bytes: u64,
    pub keys: u64,
    pub write_pct: u64,
    pub level: u64,
    /// Real-program modes: operations per second cap; 0 = unlimited.
    pub ops_rate: u64,
    pub pipeline: u64,
    pub chunk_mb: u64,
    pub rows_per_txn: u64,
    pub mem_mb: u64,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn num(name: &str, default: u64, min: u64, max: u64) -> Result<u64, String> {
    match env(name) {
        None => Ok(default),
        Some(s) => {
            let v: u64 = s
                .parse()
                .map_err(|_| format!("{name}={s}: not an unsigned integer"))?;
            if v < min || v > max {
                return Err(format!("{name}={v}: out of range {min}..={max}"));
            }
            Ok(v)
        }
    }
}

impl Params {
    /// `mode_arg` is the first command-line argument, if any (subcommand form);
    /// otherwise the `MODE` environment variable; default `synthetic`.
    pub fn from_env(mode_arg: Option<&str>) -> Result<Params, String> {
        let mode_s = mode_arg
            .map(str::to_string)
            .or_else(|| env("MODE"))
            .unwrap_or_else(|| "synthetic".into());
        let mode = Mode::parse(&mode_s).ok_or_else(|| {
            format!("MODE={mode_s}: unknown (idle|synthetic|redis|memcached|sqlite|gzip|xz)")
        })?;
        let rate = match env("RATE").as_deref() {
            Some("max") | Some("MAX") | Some("unlimited") => u64::MAX,
            _ => num("RATE", 2000, 0, 100_000_000)?,
        };
        let pattern = match env("PATTERN")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("random") => Pattern::Random,
            Some("seq") | Some("sequential") => Pattern::Seq,
            Some("hotcold") => Pattern::HotCold,
            Some(o) => return Err(format!("PATTERN={o}: unknown (random|seq|hotcold)")),
        };
        let layout = match env("LAYOUT")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("scatter") => Layout::Scatter,
            Some("run") => Layout::Run,
            Some(o) => return Err(format!("LAYOUT={o}: unknown (scatter|run)")),
        };
        let default_level = match mode {
            Mode::Xz => 1,
            _ => 6,
        };
        Ok(Params {
            mode,
            ws_mb: num("WS_MB", 64, 1, 1 << 20)?,
            rate,
            bytes: num("BYTES", 512, 1, 4096)?,
            entropy: num("ENTROPY", 8, 1, 8)? as u32,
            pattern,
            layout,
            compute: num("COMPUTE", 0, 0, 1 << 32)?,
            cold_mb: num("COLD_MB", 0, 0, 1 << 20)?,
            cold_entropy: num("COLD_ENTROPY", 8, 0, 8)? as u32,
            seed: num("SEED", 1, 0, u64::MAX)?,
            value_bytes: num("VALUE_BYTES", 1024, 1, 1 << 20)?,
            keys: num("KEYS", 10_000, 1, 100_000_000)?,
            write_pct: num("WRITE_PCT", 50, 0, 100)?,
            level: num("LEVEL", default_level, 1, 9)?,
            ops_rate: num("OPS_RATE", 0, 0, 100_000_000)?,
            pipeline: num("PIPELINE", 1, 1, 1024)?,
            chunk_mb: num("CHUNK_MB", 16, 1, 4096)?,
            rows_per_txn: num("ROWS_PER_TXN", 4, 1, 10_000)?,
            mem_mb: num("MEM_MB", 256, 16, 1 << 20)?,
        })
    }

    pub fn publish(&self, page: &OpsPage) {
        page.set(OFF_VERSION, VERSION);
        page.set(OFF_WORKLOAD_TYPE, self.mode.workload_type());
        page.set(OFF_MODE, self.mode.code());
        page.set(OFF_WS_MB, self.ws_mb);
        page.set(OFF_RATE, self.rate);
        page.set(OFF_BYTES, self.bytes);
        page.set(OFF_ENTROPY, self.entropy as u64);
        page.set(OFF_PATTERN, self.pattern as u64);
        page.set(OFF_COMPUTE, self.compute);
        page.set(OFF_COLD_MB, self.cold_mb);
        page.set(OFF_COLD_ENTROPY, self.cold_entropy as u64);
        page.set(OFF_SEED, self.seed);
        page.set(OFF_LAYOUT, self.layout as u64);
        page.set(OFF_VALUE_BYTES, self.value_bytes);
        page.set(OFF_KEYS, self.keys);
        page.set(OFF_WRITE_PCT, self.write_pct);
        page.set(OFF_LEVEL, self.level);
        page.set(OFF_OPS_RATE, self.ops_rate);
        page.set(OFF_PIPELINE, self.pipeline);
        page.set(OFF_CHUNK_MB, self.chunk_mb);
        page.set(OFF_ROWS_PER_TXN, self.rows_per_txn);
        page.set(OFF_MEM_MB, self.mem_mb);
        page.set_bytes(OFF_MODE_NAME, 16, self.mode.name().as_bytes());
    }

    pub fn summary(&self) -> String {
        let rate = if self.rate == u64::MAX {
            "max".to_string()
        } else {
            self.rate.to_string()
        };
        format!(
            "mode={} ws_mb={} rate={} bytes={} entropy={} pattern={:?} layout={:?} compute={} cold_mb={} cold_entropy={} seed={} value_bytes={} keys={} write_pct={} level={} ops_rate={} pipeline={}",
            self.mode.name(), self.ws_mb, rate, self.bytes, self.entropy, self.pattern, self.layout,
            self.compute, self.cold_mb, self.cold_entropy, self.seed, self.value_bytes, self.keys,
            self.write_pct, self.level, self.ops_rate, self.pipeline
        )
    }
}
