//! `migsight lab` (to be written).

#[derive(clap::Args)]
pub struct LabArgs {}

pub fn run(_a: LabArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
