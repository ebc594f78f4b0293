//! `migsight predictor`, `migsight train`, `migsight eval`.

use crate::data::Data;
use crate::eval::{self, EvalOptions};
use crate::family::FamilyKind;
use crate::inputs;
use crate::model::{Model, TrainOptions};
use anyhow::Context;
use migsight_proto::units;
use migsight_proto::wire::{Objective, Sla};
use std::path::PathBuf;

/// Run the predictor daemon.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Model file written by `migsight train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Unix socket to listen on (mode 0660, parent directory created).
    #[arg(long, default_value = crate::server::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Group owning the socket (name or gid); members may connect.
    #[arg(long)]
    pub group: Option<String>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Most connections open at once; when full, the one waiting longest
    /// for its client is closed to make room (a newcomer gets `Busy` only
    /// when every connection is being served).
    #[arg(long, default_value_t = crate::server::DEFAULT_LIMITS.max_connections)]
    pub max_connections: usize,
    /// Close a connection with no request for this many seconds.
    #[arg(long, default_value_t = crate::server::DEFAULT_LIMITS.idle_timeout.as_secs())]
    pub idle_timeout_s: u64,
    /// A request must arrive whole within this many seconds of its first byte.
    #[arg(long, default_value_t = crate::server::DEFAULT_LIMITS.read_timeout.as_secs())]
    pub read_timeout_s: u64,
    /// A client must take its reply within this many seconds.
    #[arg(long, default_value_t = crate::server::DEFAULT_LIMITS.write_timeout.as_secs())]
    pub write_timeout_s: u64,
    /// MiB that request buffers may hold in all, beyond 4 KiB per connection.
    #[arg(long, default_value_t = crate::server::DEFAULT_LIMITS.request_memory >> 20)]
    pub request_memory_mib: usize,
    /// Do not serve: make the predictor running as process PID reload its
    /// model (SIGHUP), wait for the outcome over `--socket`, and exit
    /// non-zero if the file was refused (the units' `ExecReload`).
    #[arg(long, value_name = "PID")]
    pub reload: Option<u32>,
}

impl ServeArgs {
    /// The connection limits these flags set.
    pub fn limits(&self) -> migsight_proto::serve::Limits {
        migsight_proto::serve::Limits {
            max_connections: self.max_connections,
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_s),
            read_timeout: std::time::Duration::from_secs(self.read_timeout_s),
            write_timeout: std::time::Duration::from_secs(self.write_timeout_s),
            request_memory: self.request_memory_mib.saturating_mul(1 << 20),
        }
    }
}

/// Train models from CSAP-schema CSV files.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// CSAP-schema CSV file (repeatable); missing feature columns are allowed.
    #[arg(long = "data", required = true)]
    pub data: Vec<PathBuf>,
    /// Where to write the model (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of every random choice (training is deterministic for a seed).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Model family: gbdt (default), svr, linear, analytic.
    #[arg(long, default_value = "gbdt")]
    pub family: FamilyKind,
    /// Restrict the inputs (comma-separated input names, or raw/composed/analytic):
    /// raw features not named are dropped from the data and derived inputs
    /// recomputed without them; the physical baselines always stay.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Leave out rows with impossible labels (counted and shown) instead of
    /// failing on the first one.
    #[arg(long)]
    pub skip_bad_rows: bool,
    #[command(flatten)]
    pub fit: FitArgs,
}

/// Training threads and gradient-boosting settings (shared by `train` and `eval`).
#[derive(clap::Args, Debug)]
pub struct FitArgs {
    /// Training threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// gbdt: number of trees.
    #[arg(long, default_value_t = crate::gbdt::GbdtParams::regression().n_trees)]
    pub gbdt_trees: usize,
    /// gbdt: learning rate (shrinkage).
    #[arg(long, default_value_t = crate::gbdt::GbdtParams::regression().learning_rate)]
    pub gbdt_learning_rate: f64,
    /// gbdt: maximum tree depth.
    #[arg(long, default_value_t = crate::gbdt::GbdtParams::regression().max_depth)]
    pub gbdt_depth: usize,
    /// gbdt: loss, l1 (absolute error, default) or l2 (squared error), on the log target.
    #[arg(long, default_value = "l1")]
    pub gbdt_loss: String,
    /// gbdt: what TT/DT/TD boosting starts from: affine (series + fixed part,
    /// default), scaled (series × factor) or median (plain trees); cross-fitting
    /// may step down from it.
    #[arg(long, default_value = "affine")]
    pub gbdt_base: String,
    /// gbdt: target scale, log (default) or raw (scikit-learn's default; an ablation).
    #[arg(long, default_value = "log")]
    pub gbdt_target: String,
}

impl FitArgs {
    fn gbdt(&self) -> anyhow::Result<crate::gbdt::GbdtParams> {
        gbdt_params(self)
    }
}

/// Cross-validate models on CSAP-schema CSV files.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// CSAP-schema CSV file (repeatable).
    #[arg(long = "data", required = true)]
    pub data: Vec<PathBuf>,
    /// Restrict the inputs (comma-separated input names, or raw/composed/analytic).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Model families to evaluate.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gbdt,svr,linear,analytic"
    )]
    pub models: Vec<FamilyKind>,
    /// Folds of the cross-validation (at most one per paired group).
    #[arg(long, default_value_t = 10)]
    pub folds: usize,
    /// Instead of folds: train on the rows outside this region and score the
    /// rows inside it, e.g. 'VM_size>=1024', 'VM_ptr>=100', 'DIRTY.RATIO>=0.5'
    /// (extrapolation; paired groups stay whole).
    #[arg(long, value_name = "EXPR", value_parser = holdout)]
    pub holdout: Option<eval::Holdout>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// table, csv or json.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Write the fold of every row (with inputs and labels) here, for the scikit-learn reference.
    #[arg(long)]
    pub folds_out: Option<PathBuf>,
    /// Write every row's out-of-fold prediction (per model and metric, with
    /// its interval and P(converges)) here, to look at errors row by row.
    #[arg(long)]
    pub predictions_out: Option<PathBuf>,
    /// Leave out rows with impossible labels instead of failing on the first one.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Objective for recommendation quality (default: every objective).
    #[arg(long)]
    pub objective: Option<Objective>,
    /// SLA limit for recommendation quality, e.g. 300ms.
    #[arg(long)]
    pub max_downtime: Option<String>,
    #[arg(long)]
    pub max_time: Option<String>,
    #[arg(long)]
    pub max_data: Option<String>,
    #[arg(long)]
    pub min_performance: Option<f64>,
    #[command(flatten)]
    pub fit: FitArgs,
}

/// Parses SLA flags with units.
pub fn parse_sla(
    max_downtime: Option<&str>,
    max_time: Option<&str>,
    max_data: Option<&str>,
    min_performance: Option<f64>,
) -> anyhow::Result<Sla> {
    let sla = Sla {
        max_downtime_ms: max_downtime.map(units::parse_duration_ms).transpose()?,
        max_time_ms: max_time.map(units::parse_duration_ms).transpose()?,
        max_data_bytes: max_data.map(units::parse_size).transpose()?,
        min_performance,
    };
    sla.validate().map_err(anyhow::Error::msg)?;
    Ok(sla)
}

fn gbdt_params(a: &FitArgs) -> anyhow::Result<crate::gbdt::GbdtParams> {
    use crate::gbdt::{Base, Loss, Target};
    let loss = match a.gbdt_loss.as_str() {
        "l1" => Loss::L1,
        "l2" => Loss::L2,
        other => anyhow::bail!("unknown --gbdt-loss {other:?} (expected l1 or l2)"),
    };
    let base = match a.gbdt_base.as_str() {
        "affine" => Base::Affine,
        "scaled" => Base::Scaled,
        "median" => Base::Median,
        other => anyhow::bail!("unknown --gbdt-base {other:?} (expected affine, scaled or median)"),
    };
    let target = match a.gbdt_target.as_str() {
        "log" => Target::Log,
        "raw" => Target::Raw,
        other => anyhow::bail!("unknown --gbdt-target {other:?} (expected log or raw)"),
    };
    let (trees, lr, depth) = (a.gbdt_trees, a.gbdt_learning_rate, a.gbdt_depth);
    anyhow::ensure!(
        trees >= 1 && lr > 0.0 && lr <= 1.0 && depth >= 1,
        "bad gbdt settings: --gbdt-trees {trees} (≥ 1), --gbdt-learning-rate {lr} (in (0, 1]), --gbdt-depth {depth} (≥ 1)"
    );
    Ok(crate::gbdt::GbdtParams {
        n_trees: trees,
        learning_rate: lr,
        max_depth: depth,
        loss,
        base,
        target,
        ..crate::gbdt::GbdtParams::regression()
    })
}

/// What `--features` selects: the raw features the rows keep (`None`: all
/// of them) and the input columns the models may split on.
///
/// Raw features not named are dropped from the data, as if the files had no
/// such column, and every derived input (composed features, analytic
/// series, the baselines) is recomputed from those that remain. Derived
/// inputs are all allowed unless some are named (`composed`, `analytic`,
/// `A.TT`, …), then only those. The physical baselines are never inputs
/// and never dropped (`inputs::baseline`).
pub struct Selection {
    pub raw: Option<Vec<migsight_proto::Feature>>,
    pub allowed: Vec<usize>,
}

fn select_inputs(features: &[String]) -> anyhow::Result<Selection> {
    if features.is_empty() {
        return Ok(Selection {
            raw: None,
            allowed: inputs::default_allowed(),
        });
    }
    let mut cols = Vec::new();
    for f in features {
        cols.extend(inputs::resolve(f).with_context(|| {
            format!(
                "unknown input {f:?}; known: raw, composed, analytic, {}",
                inputs::default_allowed()
                    .into_iter()
                    .map(inputs::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?);
    }
    cols.sort_unstable();
    cols.dedup();
    let is_raw = |c: &usize| *c < migsight_proto::Feature::COUNT;
    let raw: Vec<migsight_proto::Feature> = cols
        .iter()
        .filter(|c| is_raw(c))
        .map(|&c| migsight_proto::Feature::ALL[c])
        .collect();
    let derived_named = cols.iter().any(|c| !is_raw(c));
    let allowed = if derived_named {
        cols
    } else {
        inputs::default_allowed()
            .into_iter()
            .filter(|c| !is_raw(c) || cols.contains(c))
            .collect()
    };
    Ok(Selection {
        raw: (!raw.is_empty()).then_some(raw),
        allowed,
    })
}

macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn write_stdout(s: &str) -> anyhow::Result<()> {
    Ok(migsight_proto::write_stdout(s)?)
}

pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    if let Some(pid) = a.reload {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let r = rt.block_on(crate::server::reload_and_wait(
            &a.socket,
            pid,
            std::time::Duration::from_secs(60),
        ))?;
        return write_stdout(&format!("predictor: {}\n", r.message));
    }
    let limits = a.limits();
    limits.validate().map_err(anyhow::Error::msg)?;
    // The unit's TasksMax=32 counts these, the blocking threads and main.
    anyhow::ensure!(
        (1..=16).contains(&a.threads),
        "threads must be between 1 and 16, got {}",
        a.threads
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        // Blocking threads only load models (SIGHUP), one at a time; the
        // unit's TasksMax counts every thread.
        .max_blocking_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(crate::server::run(
        &a.model,
        &a.socket,
        a.group.as_deref(),
        limits,
    ))
}

pub fn train(a: TrainArgs) -> anyhow::Result<()> {
    let mut data = Data::load_with(&a.data, a.skip_bad_rows)?;
    if data.bad_rows > 0 {
        eprintln!(
            "train: skipped {} rows with impossible labels (--skip-bad-rows), e.g.:\n  {}",
            data.bad_rows,
            data.bad_examples.join("\n  ")
        );
    }
    anyhow::ensure!(
        !data.rows.is_empty(),
        "no usable rows (with a capability) in the data"
    );
    let selection = select_inputs(&a.features)?;
    if let Some(raw) = &selection.raw {
        data.restrict(raw);
    }
    let mut opts = TrainOptions::new(a.family, a.seed);
    opts.allowed = selection.allowed;
    opts.threads = a.fit.threads.max(1);
    opts.gbdt = a.fit.gbdt()?;
    let model = Model::train(&data, &opts);
    model
        .check_usable()
        .map_err(|why| anyhow::anyhow!("{why}; no model written to {}", a.out.display()))?;
    model.save(&a.out)?;
    let mut out = String::new();
    outln!(
        out,
        "trained {} model on {} rows ({}) in {:.1} s -> {}",
        model.family,
        data.rows.len(),
        migsight_proto::Algorithm::ALL
            .iter()
            .map(|al| format!("{} {}", al.name(), model.rows[al.index()]))
            .collect::<Vec<_>>()
            .join(", "),
        model.training_seconds,
        a.out.display()
    );
    outln!(out, "data sha256 {}", model.data_sha256);
    outln!(
        out,
        "\nin-sample cross-fitted scores (use `migsight eval` for the real cross-validation):"
    );
    outln!(
        out,
        "{:<13} {:<5} {:>5} {:>8} {:>9}",
        "algorithm",
        "metric",
        "n",
        "gMRE",
        "coverage"
    );
    for am in &model.algorithms {
        for mm in &am.metrics {
            if let Some(cv) = &mm.cv {
                outln!(
                    out,
                    "{:<13} {:<5} {:>5} {:>8.3} {:>9.3}",
                    am.algorithm.name(),
                    mm.metric.name(),
                    cv.n,
                    cv.gmre,
                    cv.coverage
                );
            }
        }
    }
    if !model.decisions.is_empty() {
        outln!(
            out,
            "\nrecommendation fallback per objective (out-of-fold loss: the model's pick alone -> with the rule, {} training groups):",
            model.decisions[0].groups
        );
        for d in &model.decisions {
            let rule = if d.margin == 0.0 {
                "none: the model's pick".to_string()
            } else if d.margin.is_finite() {
                format!(
                    "{} unless another is predicted better by more than {:.1} %",
                    d.default.name(),
                    d.margin * 100.0
                )
            } else {
                format!("{} whenever it is likely to meet the SLA", d.default.name())
            };
            outln!(
                out,
                "  {:<12} {:<66} {:.3} -> {:.3}",
                d.objective.name(),
                rule,
                d.loss_model,
                d.loss_rule
            );
        }
    }
    if !model.notes.is_empty() {
        outln!(out, "\nnotes:");
        for n in &model.notes {
            outln!(out, "  - {n}");
        }
    }
    write_stdout(&out)
}

fn holdout(s: &str) -> Result<eval::Holdout, String> {
    eval::Holdout::parse(s)
}

pub fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let mut data = Data::load_with(&a.data, a.skip_bad_rows)?;
    let selection = select_inputs(&a.features)?;
    if let Some(raw) = &selection.raw {
        data.restrict(raw);
    }
    anyhow::ensure!(
        !data.rows.is_empty(),
        "no usable rows (with a capability) in the data"
    );
    anyhow::ensure!(a.folds >= 2, "--folds must be at least 2");
    let groups = {
        let mut g: Vec<&str> = data.rows.iter().map(|r| r.group.as_str()).collect();
        g.sort_unstable();
        g.dedup();
        g.len()
    };
    anyhow::ensure!(
        a.holdout.is_some() || a.folds <= groups,
        "--folds {} is more than the {groups} paired groups in the data (a fold needs a group to hold out)",
        a.folds
    );
    let sla = parse_sla(
        a.max_downtime.as_deref(),
        a.max_time.as_deref(),
        a.max_data.as_deref(),
        a.min_performance,
    )?;
    let opts = EvalOptions {
        models: a.models.clone(),
        split: match &a.holdout {
            Some(h) => eval::Split::Holdout(h.clone()),
            None => eval::Split::Folds(a.folds),
        },
        seed: a.seed,
        allowed: selection.allowed,
        sla,
        objectives: a
            .objective
            .map(|o| vec![o])
            .unwrap_or_else(|| Objective::ALL.to_vec()),
        threads: a.fit.threads.max(1),
        gbdt: a.fit.gbdt()?,
    };
    if let Some(p) = &a.folds_out {
        let folds = eval::folds(&data, a.folds, a.seed);
        migsight_proto::write_file_atomic(p, eval::folds_csv(&data, &folds).as_bytes())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let report = eval::run(&data, &opts);
    if let Some(p) = &a.predictions_out {
        migsight_proto::write_file_atomic(p, eval::predictions_csv(&data, &report).as_bytes())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    for (m, s) in &report.train_seconds {
        eprintln!("eval: {m}: {s:.2} s training ({})", report.split);
    }
    match a.format.as_str() {
        "table" => write_stdout(&eval::to_table(&report, &sla))?,
        "csv" => {
            write_stdout(&eval::to_csv(&report))?;
            eprint!("{}", eval::converge_table(&report));
            eprint!("{}", eval::rec_table(&report, &sla));
        }
        "json" => write_stdout(&(serde_json::to_string_pretty(&report)? + "\n"))?,
        other => anyhow::bail!("unknown --format {other:?} (expected table, csv or json)"),
    }
    Ok(())
}
