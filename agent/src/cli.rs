//! `migsight agent` (to be written).

#[derive(clap::Args)]
pub struct AgentArgs {}

pub fn run(_a: AgentArgs) -> anyhow::Result<()> {
    anyhow::bail!("migsight agent is not implemented yet")
}
