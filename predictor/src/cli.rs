//! `migsight predictor|train|eval` (to be written).

#[derive(clap::Args)]
pub struct ServeArgs {}
#[derive(clap::Args)]
pub struct TrainArgs {}
#[derive(clap::Args)]
pub struct EvalArgs {}

pub fn serve(_a: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
pub fn train(_a: TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
pub fn eval(_a: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
