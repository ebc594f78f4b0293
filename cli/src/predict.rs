//! `migsight predict`: a feature vector straight to the predictor (owned by the predictor work).

#[derive(clap::Args)]
pub struct PredictArgs {}

pub fn run(_a: PredictArgs) -> anyhow::Result<()> {
    anyhow::bail!("migsight predict is not implemented yet")
}
