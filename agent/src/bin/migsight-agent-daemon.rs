//! The agent daemon on its own, for the agent crate's process-level tests
//! (`tests/daemon.rs` starts it, talks to it and stops it with SIGTERM):
//! the shipped daemon is `migsight agent`, whose binary belongs to the `cli`
//! crate and so is not built for this crate's tests.

use clap::Parser;

#[derive(Parser)]
#[command(about = "migsight's agent daemon (for tests; operators run `migsight agent`)")]
struct Cli {
    #[command(flatten)]
    agent: migsight_agent::cli::AgentArgs,
}

fn main() -> anyhow::Result<()> {
    migsight_agent::cli::run(Cli::parse().agent)
}
