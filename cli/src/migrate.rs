//! `migsight migrate` (to be written).

#[derive(clap::Args)]
pub struct MigrateArgs {}

pub fn run(_a: MigrateArgs) -> anyhow::Result<()> {
    anyhow::bail!("migsight migrate is not implemented yet")
}
