//! `migsight-lab`: real QEMU migrations that label migsight's data
//! (`migsight lab …` runs this binary).

use clap::Parser;

/// Produce labelled migrations on this machine, or report on a lab CSV.
#[derive(Parser, Debug)]
#[command(name = "migsight-lab", version)]
struct Args {
    #[command(flatten)]
    lab: migsight_lab::cli::LabArgs,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MIGSIGHT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = migsight_lab::cli::run(Args::parse().lab) {
        eprintln!("migsight lab: error: {e:#}");
        std::process::exit(1);
    }
}
