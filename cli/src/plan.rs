//! `migsight plan` (to be written).

#[derive(clap::Args)]
pub struct PlanArgs {}

pub fn run(_a: PlanArgs) -> anyhow::Result<()> {
    anyhow::bail!("migsight plan is not implemented yet")
}
