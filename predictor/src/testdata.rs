//! A crude physical simulator of migrations, producing CSAP-schema samples.
//!
//! **Test fixture only**: it exists so unit tests and benches have labelled
//! data with the right shape before (or without) the lab's real data. Its
//! numbers are never evidence of accuracy; accuracy claims come only from
//! `migsight eval` on lab data.

use crate::analytic;
use migsight_proto::csv::{Dataset, Sample};
use migsight_proto::feature::MIB;
use migsight_proto::rng::Rng;
use migsight_proto::{Algorithm, Feature, FeatureVector, Metric};

fn lognormal(rng: &mut Rng, sigma: f64) -> f64 {
    // Box-Muller.
    let u1 = rng.unit().max(1e-12);
    let u2 = rng.unit();
    let g = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (sigma * g).exp()
}

/// `groups` VM states, each migrated with all five algorithms (paired rows
/// sharing a `group_id`). Some features are dropped when `full` is false.
pub fn simulate(groups: usize, seed: u64, full: bool) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut samples = Vec::new();
    for g in 0..groups {
        let size = 512.0 + rng.unit() * 3584.0;
        let wss = size * (0.05 + rng.unit() * 0.5);
        let pdr = if rng.unit() < 0.15 {
            rng.unit() * 2.0
        } else {
            rng.unit() * 140.0
        };
        let ptr = [30.0, 60.0, 118.0][rng.below(3)];
        let wse = 0.2 + rng.unit() * 0.8;
        let nwse = 0.1 + rng.unit() * 0.6;
        let mwpp = 64.0 + rng.unit() * 4000.0;
        let cpu = 5.0 + rng.unit() * 300.0;
        let mut fv = FeatureVector::new()
            .with(Feature::VmSize, size)
            .with(Feature::VmPdr, pdr)
            .with(Feature::VmWss, wss)
            .with(Feature::VmWse, wse)
            .with(Feature::VmMwpp, mwpp)
            .with(Feature::VmPtr, ptr)
            .with(Feature::VmCpuUtil, cpu);
        if full {
            fv = fv
                .with(Feature::VmNwse, nwse)
                .with(Feature::VmPmuInstr, 1e9 + rng.unit() * 3e9)
                .with(Feature::VmNetUtil, rng.unit() * 20.0)
                .with(Feature::SrcCpuAvail, 100.0 + rng.unit() * 300.0)
                .with(Feature::DstCpuAvail, 100.0 + rng.unit() * 300.0)
                .with(Feature::SrcMemAvail, 4000.0 + rng.unit() * 12000.0)
                .with(Feature::DstMemAvail, 4000.0 + rng.unit() * 12000.0);
        }
        // The seed's five, as on QEMU 7.2 (the newer algorithms have no rows:
        // tests see a model that does not predict them).
        for a in Algorithm::SEED {
            let (eff_pdr, eff_bw, eff_wss) = match a {
                Algorithm::AutoConverge => (pdr * 0.35, ptr, wss),
                Algorithm::Xbzrle => (pdr * (mwpp / 4096.0).max(0.1), ptr, wss),
                Algorithm::Compress => (pdr, ptr / wse.max(0.3) * 0.8, wss),
                _ => (pdr, ptr, wss),
            };
            let e = if a == Algorithm::Postcopy {
                analytic::postcopy(
                    Some(size),
                    Some(eff_pdr),
                    Some(eff_wss),
                    Some(eff_bw),
                    analytic::Dirtying::Linear,
                )
            } else {
                analytic::precopy(
                    Some(size),
                    Some(eff_pdr),
                    Some(eff_wss),
                    Some(eff_bw),
                    300.0,
                    analytic::Dirtying::Linear,
                )
            }
            .unwrap();
            let mut s = Sample {
                algorithm: Some(a),
                workload_type: Some(1),
                features: fv,
                group_id: Some(format!("g{g}")),
                converged: Some(e.converges),
                ..Sample::default()
            };
            let noise = lognormal(&mut rng, 0.12);
            let tt = if e.converges {
                e.tt_ms * noise + 300.0
            } else {
                60_000.0
            };
            s.set_label(Metric::TT, tt);
            s.set_label(
                Metric::DT,
                (e.dt_ms * lognormal(&mut rng, 0.3) + 15.0).max(1.0),
            );
            s.set_label(
                Metric::TD,
                if e.converges {
                    e.td_bytes * noise
                } else {
                    60.0 * ptr * MIB
                },
            );
            let perf = match a {
                Algorithm::AutoConverge => 0.5 + 0.3 * rng.unit(),
                Algorithm::Postcopy => 0.6 + 0.3 * rng.unit(),
                _ => 0.85 + 0.14 * rng.unit(),
            };
            s.set_label(Metric::PERF, perf);
            let extra_cpu = match a {
                Algorithm::Compress => 150.0,
                Algorithm::Xbzrle => 40.0,
                _ => 15.0,
            };
            s.set_label(Metric::CPU, extra_cpu * lognormal(&mut rng, 0.2) - 3.0);
            let mem = if a == Algorithm::Xbzrle { 64.0 } else { 4.0 };
            s.set_label(Metric::MEM, mem * lognormal(&mut rng, 0.3));
            samples.push(s);
        }
    }
    let feature_columns = if full {
        Feature::ALL.to_vec()
    } else {
        vec![
            Feature::VmSize,
            Feature::VmPdr,
            Feature::VmWss,
            Feature::VmWse,
            Feature::VmMwpp,
            Feature::VmPtr,
            Feature::VmCpuUtil,
        ]
    };
    Dataset {
        samples,
        feature_columns,
        extra_columns: vec![],
    }
}
