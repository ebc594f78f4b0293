//! `migsight predict`: a feature vector straight to the predictor daemon (or,
//! with `--model`, to a model loaded in-process), printed as the plan table
//! or, with `--json`, as the `wire::Recommendation` JSON.

use crate::table;
use migsight_proto::units;
use migsight_proto::wire::QemuInfo;
use migsight_proto::wire::{
    Client, ClientError, PredictRequest, RecommendRequest, RequestBody, Response,
};
use migsight_qemu::process::Accel;
use migsight_qemu::{HostSupport, QemuVersion};
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
    /// SLA limits, objective and QEMU downtime-limit (the same flags as `plan`).
    #[command(flatten)]
    pub sla: crate::plan::SlaArgs,
    /// Predictor daemon socket.
    #[arg(long, default_value = migsight_predictor::server::DEFAULT_SOCKET, conflicts_with = "model")]
    pub socket: PathBuf,
    /// Longest wait for the daemon's answer, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", conflicts_with = "model")]
    pub timeout: String,
    /// Predict in-process from this model file instead of asking the daemon.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The source's QEMU version (e.g. 10.0, 7.2.22): only what it offers is predicted.
    /// Default: this host's qemu-system-x86_64 (or $MIGSIGHT_QEMU), if there is one.
    #[arg(long, value_name = "VERSION", value_parser = qemu_version)]
    pub qemu: Option<QemuVersion>,
    /// The source's accelerator: kvm, kvm-dirty-ring (KVM with a dirty ring: dirty-limit) or tcg.
    #[arg(long, default_value = "kvm", value_parser = accel)]
    pub accel: Accel,
    /// Print the wire::Recommendation as JSON.
    #[arg(long)]
    pub json: bool,
}

fn qemu_version(s: &str) -> Result<QemuVersion, String> {
    QemuVersion::parse(s)
        .ok_or_else(|| format!("{s:?} is not a QEMU version (e.g. 10.0 or 7.2.22)"))
}

fn accel(s: &str) -> Result<Accel, String> {
    s.parse()
}

/// The source QEMU the prediction is for: `--qemu`, else this host's binary.
fn source_qemu(a: &PredictArgs) -> Option<QemuInfo> {
    let version = match a.qemu {
        Some(v) => v,
        None => match migsight_qemu::process::binary_version() {
            Ok(v) => {
                eprintln!(
                    "migsight: predicting for QEMU {v} ({}; --qemu VERSION for another)",
                    migsight_qemu::process::binary()
                );
                v
            }
            Err(_) => {
                eprintln!("migsight: no QEMU on this host and no --qemu: predicting every algorithm the model has data for");
                return None;
            }
        },
    };
    let args = ["qemu".to_string(), "-accel".into(), a.accel.arg().into()];
    Some(HostSupport::from_version(version, &args).info())
}

pub fn run(a: PredictArgs) -> anyhow::Result<()> {
    let features = migsight_predictor::data::read_features_json(&a.features)?;
    let bandwidth_bps = units::parse_bandwidth(&a.bandwidth)?;
    let timeout_ms = units::parse_duration_ms(&a.timeout)?;
    anyhow::ensure!(
        timeout_ms > 0.0 && timeout_ms <= 86_400_000.0,
        "--timeout must be between 1 ms and 24 h, got {}",
        a.timeout
    );
    let timeout = std::time::Duration::from_secs_f64(timeout_ms / 1000.0);
    let downtime_limit_ms = a.sla.downtime_limit_ms();
    anyhow::ensure!(downtime_limit_ms > 0.0, "--downtime-limit must be positive");
    let sla = a.sla.sla();
    let req = RecommendRequest {
        predict: PredictRequest {
            features,
            bandwidth_bps,
            downtime_limit_ms,
            qemu: source_qemu(&a),
        },
        sla,
        objective: a.sla.objective,
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
                c.set_timeout(Some(timeout));
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
