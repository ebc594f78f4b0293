//! `migsight predict`: a feature vector straight to the predictor daemon (or,
//! with `--model`, to a model loaded in-process), printed as the plan table
//! or, with `--json`, as the `wire::Recommendation` JSON.

use crate::table;
use migsight_proto::units;
use migsight_proto::wire::{
    Client, ClientError, Objective, PredictRequest, RecommendRequest, RequestBody, Response,
};
use std::path::PathBuf;

/// Predict from a features file, without a VM.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// JSON object of CSAP feature columns to numbers (units of the proto schema: MiB, MiB/s, ...).
    #[arg(long)]
    pub features: PathBuf,
    /// Planned migration bandwidth (QEMU max-bandwidth), e.g. 1Gbit, 125MB/s; becomes VM_ptr.
    #[arg(long)]
    pub bandwidth: String,
    /// QEMU downtime-limit of the planned migration.
    #[arg(long, default_value = "300ms")]
    pub downtime_limit: String,
    /// SLA: longest acceptable downtime, e.g. 300ms.
    #[arg(long)]
    pub max_downtime: Option<String>,
    /// SLA: longest acceptable total time, e.g. 60s.
    #[arg(long)]
    pub max_time: Option<String>,
    /// SLA: most data on the wire, e.g. 10GiB.
    #[arg(long)]
    pub max_data: Option<String>,
    /// SLA: lowest acceptable relative performance during migration (0-1).
    #[arg(long)]
    pub min_performance: Option<f64>,
    /// What to optimise: time, downtime, data, performance, cpu.
    #[arg(long, default_value = "time")]
    pub objective: Objective,
    /// Predictor daemon socket.
    #[arg(long, default_value = migsight_predictor::server::DEFAULT_SOCKET, conflicts_with = "model")]
    pub socket: PathBuf,
    /// Predict in-process from this model file instead of asking the daemon.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Print the wire::Recommendation as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: PredictArgs) -> anyhow::Result<()> {
    let features = migsight_predictor::data::read_features_json(&a.features)?;
    let bandwidth_bps = units::parse_bandwidth(&a.bandwidth)?;
    let downtime_limit_ms = units::parse_duration_ms(&a.downtime_limit)?;
    anyhow::ensure!(downtime_limit_ms > 0.0, "--downtime-limit must be positive");
    let sla = migsight_predictor::cli::parse_sla(
        a.max_downtime.as_deref(),
        a.max_time.as_deref(),
        a.max_data.as_deref(),
        a.min_performance,
    )?;
    let req = RecommendRequest {
        predict: PredictRequest {
            features,
            bandwidth_bps,
            downtime_limit_ms,
        },
        sla,
        objective: a.objective,
    };
    let rec = match &a.model {
        Some(path) => {
            let model = migsight_predictor::Model::load(path)?;
            model.recommend(&req).map_err(|e| anyhow::anyhow!("{e}"))?
        }
        None => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut c = Client::connect(&a.socket).await.map_err(|e| {
                    anyhow::anyhow!(
                        "{e} (is the predictor running? `migsight predictor --model FILE`; or pass --model FILE)"
                    )
                })?;
                match c.call(RequestBody::Recommend(req)).await {
                    Ok(Response::Recommendation(r)) => Ok(r),
                    Ok(other) => anyhow::bail!("unexpected reply from the predictor: {other:?}"),
                    Err(ClientError::Server(e)) => anyhow::bail!("the predictor refused the request: {e}"),
                    Err(e) => Err(e.into()),
                }
            })?
        }
    };
    if a.json {
        migsight_predictor::cli::write_stdout(&(serde_json::to_string_pretty(&rec)? + "\n"))?;
    } else {
        migsight_predictor::cli::write_stdout(&table::recommendation_table(&rec))?;
    }
    Ok(())
}
