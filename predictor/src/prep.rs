//! Input preparation for the SVR and linear families: keep usable columns,
//! impute the training median for absent values, standardize.

use serde::{Deserialize, Serialize};

/// Fitted column selection, imputation and scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Input columns kept (have data and are not constant).
    pub cols: Vec<usize>,
    pub fill: Vec<f64>,
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
}

impl Standardizer {
    /// Fits on `x`, considering only columns in `allowed`.
    pub fn fit(x: &[Vec<f64>], allowed: &[usize]) -> Standardizer {
        let mut s = Standardizer {
            cols: Vec::new(),
            fill: Vec::new(),
            mean: Vec::new(),
            scale: Vec::new(),
        };
        for &c in allowed {
            let mut vals: Vec<f64> = x.iter().map(|r| r[c]).filter(|v| v.is_finite()).collect();
            if vals.is_empty() {
                continue;
            }
            vals.sort_by(|a, b| a.total_cmp(b));
            let med = vals[vals.len() / 2];
            let filled: Vec<f64> = x
                .iter()
                .map(|r| if r[c].is_finite() { r[c] } else { med })
                .collect();
            let n = filled.len() as f64;
            let mean = filled.iter().sum::<f64>() / n;
            let var = filled.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            if var <= 1e-18 * (1.0 + mean * mean) {
                continue;
            }
            s.cols.push(c);
            s.fill.push(med);
            s.mean.push(mean);
            s.scale.push(var.sqrt());
        }
        s
    }

    /// The standardized row.
    pub fn transform(&self, x: &[f64]) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.cols.len());
        self.transform_into(x, &mut out);
        out
    }

    pub fn transform_into(&self, x: &[f64], out: &mut Vec<f64>) {
        out.clear();
        for k in 0..self.cols.len() {
            let v = x[self.cols[k]];
            let v = if v.is_finite() { v } else { self.fill[k] };
            out.push((v - self.mean[k]) / self.scale[k]);
        }
    }
}
