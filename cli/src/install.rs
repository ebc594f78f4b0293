//! `migsight install` / `uninstall` (to be written).

#[derive(clap::Args)]
pub struct InstallArgs {}
#[derive(clap::Args)]
pub struct UninstallArgs {}

pub fn install(_a: InstallArgs) -> anyhow::Result<()> {
    anyhow::bail!("migsight install is not implemented yet")
}
pub fn uninstall(_a: UninstallArgs) -> anyhow::Result<()> {
    anyhow::bail!("migsight uninstall is not implemented yet")
}
