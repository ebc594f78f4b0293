//! Serving: a request's rows built as in training, a prediction for every
//! algorithm the source can run and the model has data for, where the
//! request lies outside the training data, P(meets SLA), and the ranking.

use super::metric::{AlgorithmModel, Transformed};
use super::Model;
use crate::data;
use crate::inputs;
use migsight_proto::wire::{
    AlgorithmPrediction, AlgorithmSupport, ErrorKind, ErrorReply, Interval, PredictRequest,
    Prediction, RecommendRequest, Recommendation,
};
use migsight_proto::{Algorithm, Feature, FeatureVector, Metric};

impl Model {
    fn check_request(req: &PredictRequest) -> Result<(), ErrorReply> {
        req.features
            .validate()
            .map_err(|e| ErrorReply::new(ErrorKind::InvalidFeature, e.to_string()))?;
        if !req.bandwidth_bps.is_finite() || req.bandwidth_bps <= 0.0 {
            return Err(ErrorReply::new(
                ErrorKind::BadRequest,
                format!(
                    "bandwidth_bps = {} must be a positive, finite number of bytes/s",
                    req.bandwidth_bps
                ),
            ));
        }
        if !req.downtime_limit_ms.is_finite() || req.downtime_limit_ms <= 0.0 {
            return Err(ErrorReply::new(
                ErrorKind::BadRequest,
                format!(
                    "downtime_limit_ms = {} must be a positive, finite number of ms",
                    req.downtime_limit_ms
                ),
            ));
        }
        Ok(())
    }

    /// Predicts every metric of every algorithm the source can run and the
    /// model has data for.
    pub fn predict(&self, req: &PredictRequest) -> Result<Prediction, ErrorReply> {
        self.predict_inner(req).map(|(p, _)| p)
    }

    /// Why `am` is not predicted for `req`: the source cannot run it, or no
    /// training row is behind it (a prediction would be the bare series).
    fn not_predicted(&self, am: &AlgorithmModel, req: &PredictRequest) -> Option<String> {
        if let Some(why) = req.qemu.as_ref().and_then(|q| q.unavailable(am.algorithm)) {
            return Some(why.to_string());
        }
        if am.rows == 0 {
            return Some(format!(
                "no training data for {} in this model",
                am.algorithm
            ));
        }
        (!am.is_trained()).then(|| {
            format!(
                "only {} converged {} rows in training: too few to predict",
                am.metrics[Metric::TT.index()].n,
                am.algorithm
            )
        })
    }

    /// The prediction and, per predicted algorithm, its model and each
    /// metric's transformed value.
    fn predict_inner(
        &self,
        req: &PredictRequest,
    ) -> Result<(Prediction, Vec<Transformed<'_>>), ErrorReply> {
        Self::check_request(req)?;
        let fv = data::with_bandwidth(
            &req.features.restricted(&self.raw_features),
            req.bandwidth_bps,
        );
        let qemu_major = req
            .qemu
            .as_ref()
            .and_then(|q| q.major_minor())
            .map(|(m, _)| f64::from(m));
        let mut algorithms = Vec::with_capacity(self.algorithms.len());
        let mut not_predicted = Vec::new();
        let mut zs = Vec::with_capacity(self.algorithms.len());
        for am in &self.algorithms {
            if let Some(why) = self.not_predicted(am, req) {
                not_predicted.push(AlgorithmSupport {
                    algorithm: am.algorithm,
                    unavailable: Some(why),
                });
                continue;
            }
            let mut x = inputs::row(&fv, am.algorithm, req.downtime_limit_ms, qemu_major);
            let (preds, p_converge) = am.predict_metrics(&mut x);
            let metrics = preds.map(|p| Interval {
                value: p.value,
                lo: p.lo,
                hi: p.hi,
            });
            let z = preds.map(|p| p.z);
            let explanation = super::explain::explain(am, &x, &fv);
            algorithms.push(AlgorithmPrediction {
                algorithm: am.algorithm,
                metrics,
                p_converge,
                explanation,
            });
            zs.push((am, z));
        }
        if algorithms.is_empty() {
            return Err(ErrorReply::new(
                ErrorKind::NoModel,
                format!(
                    "this model predicts none of the algorithms the source offers ({})",
                    not_predicted
                        .iter()
                        .map(|n| format!(
                            "{}: {}",
                            n.algorithm,
                            n.unavailable.as_deref().unwrap_or("")
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ));
        }
        let predicted: Vec<&AlgorithmModel> = zs.iter().map(|(am, _)| *am).collect();
        let out_of_domain = self.out_of_domain(&fv, req, qemu_major, &predicted);
        let missing_features = self
            .raw_features
            .iter()
            .copied()
            .filter(|f| *f != Feature::VmPtr && fv.get(*f).is_none())
            .collect();
        Ok((
            Prediction {
                bandwidth_bps: req.bandwidth_bps,
                downtime_limit_ms: req.downtime_limit_ms,
                algorithms,
                not_predicted,
                out_of_domain,
                missing_features,
                model_family: self.family.name().to_string(),
            },
            zs,
        ))
    }

    /// Where a request lies outside the training data, in words.
    fn out_of_domain(
        &self,
        fv: &FeatureVector,
        req: &PredictRequest,
        qemu_major: Option<f64>,
        predicted: &[&AlgorithmModel],
    ) -> Vec<String> {
        // The algorithm-independent inputs of any row (the series' columns
        // are not checked here).
        let x = inputs::row(fv, Algorithm::Precopy, req.downtime_limit_ms, qemu_major);
        let mut out: Vec<String> = self
            .domain
            .excess(&x)
            .iter()
            .map(crate::domain::describe)
            .collect();
        if out.is_empty() {
            if let Some(d) = self.domain.joint_distance(&x).filter(|d| *d > 1.5) {
                out.push(format!(
                    "no training migration combined a VM this size with this bandwidth and dirty rate (nearest is {d:.1} steps away, a step being 2× in size or bandwidth or 0.25 of dirty rate / bandwidth)"
                ));
            }
        }
        if let Some(q) = &req.qemu {
            let release = q
                .major_minor()
                .map(|(a, b)| format!("{a}.{b}"))
                .unwrap_or_else(|| q.version.clone());
            let accel = q.accel.as_deref();
            if !self.domain.has_platform(&release, accel) {
                let trained: Vec<String> = self
                    .domain
                    .platforms
                    .iter()
                    .map(|p| format!("{} under {} ({} rows)", p.release, p.accel, p.rows))
                    .collect();
                out.push(format!(
                    "QEMU {release}{}: no training rows on this platform (trained on QEMU {})",
                    accel.map(|a| format!(" under {a}")).unwrap_or_default(),
                    trained.join(", ")
                ));
            }
            if self.domain.has_platform(&release, None) {
                // The model knows this release, but an algorithm may not:
                // QEMU 7.2 offers multifd, the lab ran it on 10.0 only.
                for am in predicted {
                    if !am.domain.has_platform(&release, None) {
                        let trained: Vec<String> = am
                            .domain
                            .platforms
                            .iter()
                            .map(|p| format!("{} ({} rows)", p.release, p.rows))
                            .collect();
                        out.push(format!(
                            "{}: no training rows on QEMU {release}; its figures come from QEMU {}",
                            am.algorithm,
                            trained.join(", ")
                        ));
                    }
                }
            }
        }
        out
    }

    /// P(converges and meets every SLA limit) per predicted algorithm, from
    /// P(converges) and each limit's probability under the held-out residual
    /// distribution (limits treated as independent).
    pub fn p_meets_sla(
        sla: &migsight_proto::wire::Sla,
        p_converge: &[f64],
        zs: &[Transformed<'_>],
    ) -> Vec<f64> {
        zs.iter()
            .enumerate()
            .map(|(i, (am, z))| {
                let mut p = p_converge[i];
                for (metric, limit, upper) in sla.limits() {
                    let mm = &am.metrics[metric.index()];
                    p *= mm.p_within(
                        z[metric.index()],
                        limit,
                        upper,
                        crate::ranking::near_edge(p_converge[i]),
                    );
                }
                p
            })
            .collect()
    }

    /// Predicts and ranks the algorithms under an SLA.
    pub fn recommend(&self, req: &RecommendRequest) -> Result<Recommendation, ErrorReply> {
        req.sla
            .validate()
            .map_err(|e| ErrorReply::new(ErrorKind::BadRequest, e))?;
        let (prediction, zs) = self.predict_inner(&req.predict)?;
        let pc: Vec<f64> = prediction.algorithms.iter().map(|a| a.p_converge).collect();
        let p = Self::p_meets_sla(&req.sla, &pc, &zs);
        let release = req
            .predict
            .qemu
            .as_ref()
            .and_then(|q| q.major_minor())
            .map(|(a, b)| format!("{a}.{b}"));
        Ok(crate::recommend::rank(
            prediction,
            &p,
            req.sla,
            req.objective,
            self.decision(req.objective, release.as_deref()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Data;
    use crate::family::FamilyKind;
    use crate::model::metric::{ConvergeModel, MetricStatus};
    use crate::model::testutil::*;
    use crate::testdata::simulate;
    use migsight_proto::wire::{Objective, Sla};
    #[test]
    fn csv_with_missing_feature_columns() {
        let m = Model::train(&data(20, 2, false), &fast(FamilyKind::Gbdt, 1));
        assert!(!m.inputs_used.contains(&Feature::VmPmuInstr.index()));
        assert!(m.inputs_used.contains(&Feature::VmPdr.index()));
        assert!(
            m.notes.iter().any(|n| n.contains("VM_pmu_instr")),
            "{:?}",
            m.notes
        );
        // A richer request is fine; a poorer one reports what it lacks.
        let full = vm().with(Feature::VmPmuInstr, 2e9);
        assert!(m
            .predict(&request(full))
            .unwrap()
            .missing_features
            .is_empty());
        let mut poor = vm();
        poor.set(Feature::VmWss, None);
        let p = m.predict(&request(poor)).unwrap();
        assert_eq!(p.missing_features, vec![Feature::VmWss]);
        assert!(p
            .algorithms
            .iter()
            .all(|a| a.metrics.iter().all(|i| i.value.is_finite())));
    }

    #[test]
    fn total_time_is_predicted_from_the_transferred_data_prediction() {
        let m = Model::train(&data(60, 4, true), &fast(FamilyKind::Gbdt, 1));
        assert!(m.inputs_used.contains(&inputs::TD_TIME));
        let r = &data(5, 9, true).rows[0];
        let am = &m.algorithms[r.algorithm.index()];
        let mut x = r.x.clone();
        assert!(x[inputs::TD_TIME].is_nan(), "a data row never carries it");
        let (p, _) = am.predict_metrics(&mut x);
        let td = p[Metric::TD.index()].value;
        assert_eq!(x[inputs::TD_TIME], inputs::td_time(&x, td));
        let bw = x[Feature::VmPtr.index()];
        let ms = td / (bw * migsight_proto::feature::MIB) * 1000.0;
        assert!((x[inputs::TD_TIME].exp() / ms - 1.0).abs() < 1e-9);
        // The daemon's path gives the same numbers.
        let fv = r.features;
        let pred = m.predict(&request(fv)).unwrap();
        assert!(pred
            .algorithms
            .iter()
            .all(|a| a.metrics[Metric::TT.index()].value > 0.0));
    }

    #[test]
    fn total_time_and_data_extrapolate_with_memory_size() {
        // Training sizes are 0.5–4 GiB; trees alone would flatten beyond
        // that, the analytic base keeps scaling (a 64-GiB VM is common).
        let m = Model::train(&data(60, 4, true), &fast(FamilyKind::Gbdt, 1));
        let at = |size: f64| {
            let p = m
                .predict(&request(vm().with(Feature::VmSize, size)))
                .unwrap();
            let a = &p.algorithms[Algorithm::Precopy.index()];
            (
                a.metrics[Metric::TT.index()].value,
                a.metrics[Metric::TD.index()].value,
            )
        };
        let (tt4, td4) = at(4096.0);
        let (tt40, td40) = at(40_960.0);
        for (name, r) in [("TT", tt40 / tt4), ("TD", td40 / td4)] {
            assert!(
                (6.0..14.0).contains(&r),
                "{name} grew ×{r:.2} for ×10 memory"
            );
        }
    }

    #[test]
    fn degenerate_data_never_panics() {
        // One group: one row per algorithm, no labels at all for some
        // metrics, all converged. Too few to predict anything: every family
        // trains without panicking, the model says it is unusable (train
        // writes nothing) and a prediction is a typed refusal.
        let mut ds = simulate(1, 1, true);
        for s in &mut ds.samples {
            s.labels[Metric::MEM.index()] = None;
            s.converged = Some(true);
        }
        for fam in FamilyKind::ALL {
            let m = Model::train(&Data::from_dataset(&ds, "tiny"), &fast(fam, 1));
            let why = m.check_usable().unwrap_err();
            assert!(why.contains("too little data"), "{why}");
            let e = m.predict(&request(vm())).unwrap_err();
            assert_eq!(e.kind, ErrorKind::NoModel);
            assert!(e.message.contains("too few to predict"), "{}", e.message);
            assert!(matches!(
                m.algorithms[0].converge,
                ConvergeModel::Constant { .. }
            ));
            assert_eq!(
                m.algorithms[0].metrics[Metric::MEM.index()].status,
                MetricStatus::NoData
            );
        }
        // Four groups: every seed algorithm predicted (a calibrated series),
        // the newer ones refused for want of data; all finite.
        let ds = simulate(4, 1, true);
        for fam in FamilyKind::ALL {
            let m = Model::train(&Data::from_dataset(&ds, "small"), &fast(fam, 1));
            assert!(m.check_usable().is_ok());
            let rec = m
                .recommend(&RecommendRequest {
                    predict: request(vm()),
                    sla: Sla {
                        max_downtime_ms: Some(300.0),
                        ..Sla::default()
                    },
                    objective: Objective::Time,
                })
                .unwrap();
            let predicted = rec.prediction.algorithms.len();
            assert_eq!(rec.ranked.len(), predicted);
            assert_eq!(
                predicted + rec.prediction.not_predicted.len(),
                Algorithm::ALL.len()
            );
            assert!(rec.prediction.not_predicted.iter().any(|n| n.algorithm
                == Algorithm::DirtyLimit
                && n.unavailable
                    .as_deref()
                    .is_some_and(|w| w.contains("no training data"))));
            for a in &rec.prediction.algorithms {
                for iv in a.metrics {
                    assert!(
                        iv.value.is_finite() && iv.lo.is_finite() && iv.hi.is_finite(),
                        "{fam}: {iv:?}"
                    );
                }
                assert!((0.0..=1.0).contains(&a.p_converge));
            }
        }
        // No rows at all: nothing to predict, said with a typed error.
        let m = Model::train(&Data::default(), &fast(FamilyKind::Gbdt, 1));
        assert!(m.check_usable().is_err());
        let e = m.predict(&request(vm())).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoModel);
        assert!(e.message.contains("no training data"), "{}", e.message);
    }

    #[test]
    fn requests_outside_the_training_data_are_flagged_and_widened() {
        let m = Model::train(&data(30, 3, true), &fast(FamilyKind::Gbdt, 1));
        let inside = m.predict(&request(vm())).unwrap();
        assert!(
            inside.out_of_domain.is_empty(),
            "{:?}",
            inside.out_of_domain
        );
        let huge = vm()
            .with(Feature::VmSize, 65536.0)
            .with(Feature::VmPdr, 900.0);
        let mut r = request(huge);
        r.bandwidth_bps = 1.25e9;
        let out = m.predict(&r).unwrap();
        assert!(
            out.out_of_domain
                .iter()
                .any(|s| s.starts_with("VM_size 65536 MiB is")
                    && s.contains("the largest VM in training")),
            "{:?}",
            out.out_of_domain
        );
        // The same VM at the edge of the data and far outside it: the
        // relative interval is wider outside.
        let rel = |p: &Prediction, a: Algorithm| {
            let iv = p
                .algorithms
                .iter()
                .find(|x| x.algorithm == a)
                .unwrap()
                .metrics[Metric::TD.index()];
            iv.hi / iv.lo
        };
        let edge_size = m.domain.ranges[0].hi;
        let edge = m
            .predict(&request(vm().with(Feature::VmSize, edge_size)))
            .unwrap();
        let far = m
            .predict(&request(vm().with(Feature::VmSize, edge_size * 20.0)))
            .unwrap();
        assert!(
            far.out_of_domain.iter().any(|s| s.contains("20.0×")),
            "{:?}",
            far.out_of_domain
        );
        assert!(rel(&far, Algorithm::Precopy) > rel(&edge, Algorithm::Precopy) * 1.2);
        // And it scales: twenty times the memory, well over ten times the data.
        let td = |p: &Prediction| {
            p.algorithms
                .iter()
                .find(|x| x.algorithm == Algorithm::Postcopy)
                .unwrap()
                .metrics[Metric::TD.index()]
            .value
        };
        assert!(td(&far) > 10.0 * td(&edge), "{} vs {}", td(&far), td(&edge));
        // A QEMU platform the model never saw is said.
        let mut r = request(vm());
        r.qemu = Some(migsight_proto::wire::QemuInfo {
            version: "10.0.2".into(),
            accel: Some("kvm".into()),
            source: "qmp".into(),
            algorithms: vec![],
        });
        let e = m.predict(&r).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoModel, "an empty list offers nothing");
    }

    #[test]
    fn an_algorithm_without_rows_on_the_release_says_so() {
        use crate::domain::Platform;
        let mut m = Model::train(&data(20, 2, false), &fast(FamilyKind::Gbdt, 1));
        let platform = |release: &str| Platform {
            release: release.into(),
            accel: "tcg".into(),
            rows: 45,
        };
        // The model knows 7.2 and 10.0; one algorithm was run on 10.0 only
        // (as the lab ran multifd).
        m.domain.platforms = vec![platform("10.0"), platform("7.2")];
        for am in &mut m.algorithms {
            am.domain.platforms = if am.algorithm == Algorithm::Xbzrle {
                vec![platform("10.0")]
            } else {
                vec![platform("10.0"), platform("7.2")]
            };
        }
        let mut r = request(vm());
        r.qemu = Some(migsight_proto::wire::QemuInfo::describe(
            "7.2.22".into(),
            Some("tcg".into()),
            "qmp".into(),
            |_| None,
        ));
        let p = m.predict(&r).unwrap();
        let notes = p.out_of_domain.join("\n");
        assert!(p
            .algorithms
            .iter()
            .any(|a| a.algorithm == Algorithm::Xbzrle));
        assert!(
            notes.contains(
                "xbzrle: no training rows on QEMU 7.2; its figures come from QEMU 10.0 (45 rows)"
            ),
            "{notes}"
        );
        assert!(!notes.contains("precopy:"), "{notes}");
        assert!(
            !notes.contains("no training rows on this platform"),
            "{notes}"
        );
    }

    #[test]
    fn invalid_requests_are_typed_errors() {
        let m = Model::train(&data(10, 1, true), &fast(FamilyKind::Linear, 1));
        let e = m
            .predict(&request(vm().with(Feature::VmPdr, f64::NAN)))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidFeature);
        let e = m
            .predict(&request(vm().with(Feature::VmSize, -5.0)))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidFeature);
        for bw in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            let mut r = request(vm());
            r.bandwidth_bps = bw;
            assert_eq!(m.predict(&r).unwrap_err().kind, ErrorKind::BadRequest);
        }
        let e = m
            .recommend(&RecommendRequest {
                predict: request(vm()),
                sla: Sla {
                    max_time_ms: Some(f64::NAN),
                    ..Sla::default()
                },
                objective: Objective::Data,
            })
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
    }

    #[test]
    fn recommendation_respects_the_sla() {
        let m = Model::train(&data(60, 6, true), &fast(FamilyKind::Gbdt, 1));
        let rec = |sla: Sla, objective| {
            m.recommend(&RecommendRequest {
                predict: request(vm()),
                sla,
                objective,
            })
            .unwrap()
        };
        let r = rec(Sla::default(), Objective::Time);
        assert!(r.reason.contains(r.recommended.name()), "{}", r.reason);
        let p: Vec<f64> = r.ranked.iter().map(|x| x.p_meets_sla).collect();
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
        // An impossible SLA: nobody is likely to meet it, and the reason says so.
        let r = rec(
            Sla {
                max_time_ms: Some(1.0),
                ..Sla::default()
            },
            Objective::Time,
        );
        assert!(r.ranked.iter().all(|x| x.p_meets_sla < 0.5));
        assert!(!r.meets_sla);
        assert!(r.reason.starts_with("No algorithm"), "{}", r.reason);
        // Downtime objective under a loose limit picks the lowest predicted downtime among the likely.
        let r = rec(
            Sla {
                max_downtime_ms: Some(5_000.0),
                ..Sla::default()
            },
            Objective::Downtime,
        );
        let likely: Vec<_> = r.ranked.iter().filter(|x| x.p_meets_sla >= 0.5).collect();
        if let Some(first) = likely.first() {
            assert!(likely
                .iter()
                .all(|x| x.objective_value >= first.objective_value));
        }
    }

    #[test]
    fn explanations_are_words() {
        let m = Model::train(&data(60, 7, true), &fast(FamilyKind::Gbdt, 1));
        let p = m.predict(&request(vm())).unwrap();
        let pre = &p.algorithms[0];
        assert!(!pre.explanation.is_empty());
        assert!(
            pre.explanation.iter().any(|e| e.contains("total time")),
            "{:?}",
            pre.explanation
        );
    }
}
