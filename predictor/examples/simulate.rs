//! Writes a simulated CSAP-schema CSV (TEST FIXTURE ONLY — never evidence of
//! accuracy): `cargo run -p migsight-predictor --example simulate -- OUT.csv [GROUPS] [SEED]`.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).map(String::as_str).unwrap_or("sim.csv");
    let groups = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let ds = migsight_predictor::testdata::simulate(groups, seed, true);
    migsight_proto::csv::write_atomic(std::path::Path::new(out), &ds.samples, &[])?;
    eprintln!("wrote {} simulated rows to {out}", ds.samples.len());
    Ok(())
}
