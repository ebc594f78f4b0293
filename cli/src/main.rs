//! `migsight`: the one command operators type.
//!
//! Each subcommand's arguments and logic live with the part they belong to:
//! the daemons in `agent/` and `predictor/`, training and evaluation in
//! `predictor/`; the operator workflow (`plan`, `migrate`, `predict`,
//! `install`) lives here in `cli/`. The lab is a binary of its own
//! (`migsight-lab`, which production hosts need not have): `migsight lab`
//! runs it.

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

mod config;
mod install;
mod migrate;
mod plan;
mod predict;
mod table;

#[derive(Parser)]
#[command(
    name = "migsight",
    version,
    about = "Predict how a QEMU/KVM live migration will go, and pick the algorithm"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host agent daemon (profiles VMs on request).
    Agent(migsight_agent::cli::AgentArgs),
    /// Run the predictor daemon (serves predictions from a model).
    Predictor(migsight_predictor::cli::ServeArgs),
    /// Train models from CSAP-schema CSV files.
    Train(migsight_predictor::cli::TrainArgs),
    /// Cross-validate models on CSAP-schema CSV files.
    Eval(migsight_predictor::cli::EvalArgs),
    /// Predict from a features file, without a VM.
    Predict(predict::PredictArgs),
    /// Profile a VM and recommend a migration algorithm under an SLA.
    Plan(plan::PlanArgs),
    /// Migrate a VM with the recommended (or a given) algorithm, and record the outcome.
    Migrate(migrate::MigrateArgs),
    /// Install binaries, systemd units, config and the default model.
    Install(install::InstallArgs),
    /// Remove what `install` put in place.
    Uninstall(install::UninstallArgs),
    /// Run real QEMU migrations to produce labelled training data (runs `migsight-lab`).
    #[command(disable_help_flag = true)]
    Lab {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MIGSIGHT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Daemons under systemd log JSON lines with MIGSIGHT_LOG_FORMAT=json.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("MIGSIGHT_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Replaces this process with `migsight-lab ARGS`, found next to this
/// binary or on `PATH`.
fn run_lab(args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("migsight-lab")))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| "migsight-lab".into());
    let e = std::process::Command::new(&program).args(&args).exec();
    anyhow::bail!(
        "cannot run {}: {e} (the lab is a binary of its own: cargo build --release -p migsight-lab)",
        program.display()
    )
}

fn main() -> ExitCode {
    // `migsight agent|predictor --config FILE`: the file's keys become flags.
    let args = match config::expand_args(std::env::args_os().collect(), &Cli::command()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("migsight: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    init_logging();
    let result = match cli.command {
        Command::Agent(a) => migsight_agent::cli::run(a),
        Command::Predictor(a) => migsight_predictor::cli::serve(a),
        Command::Train(a) => migsight_predictor::cli::train(a),
        Command::Eval(a) => migsight_predictor::cli::eval(a),
        Command::Predict(a) => predict::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Migrate(a) => migrate::run(a),
        Command::Install(a) => install::install(a),
        Command::Uninstall(a) => install::uninstall(a),
        Command::Lab { args } => run_lab(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migsight: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
