//! Ridge-regularised linear regression on standardized inputs.
#![allow(clippy::needless_range_loop)]

use crate::prep::Standardizer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    pub scaler: Standardizer,
    pub intercept: f64,
    pub weights: Vec<f64>,
    /// Predictions are clamped to the training targets' range widened by half
    /// of it on each side (a linear model extrapolates without bound).
    pub lo: f64,
    pub hi: f64,
}

/// Solves the symmetric positive-definite system `a x = b` (Cholesky);
/// `None` if `a` is not positive definite.
pub fn solve_spd(a: &[Vec<f64>], b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i][j];
            for k in 0..j {
                s -= l[i][k] * l[j][k];
            }
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[i][j] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    let mut z = vec![0.0; n];
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i][k] * z[k];
        }
        z[i] = s / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = z[i];
        for k in i + 1..n {
            s -= l[k][i] * x[k];
        }
        x[i] = s / l[i][i];
    }
    Some(x)
}

impl Linear {
    /// `ridge`: the L2 penalty per row (λ = ridge · n) on standardized inputs.
    pub fn fit(x: &[Vec<f64>], y: &[f64], allowed: &[usize], ridge: f64) -> Linear {
        let scaler = Standardizer::fit(x, allowed);
        let n = x.len().max(1) as f64;
        let ymean = y.iter().sum::<f64>() / n;
        let rows: Vec<Vec<f64>> = x.iter().map(|r| scaler.transform(r)).collect();
        let p = scaler.cols.len();
        let lambda = ridge * n;
        let mut a = vec![vec![0.0; p]; p];
        let mut b = vec![0.0; p];
        for (r, &t) in rows.iter().zip(y) {
            for i in 0..p {
                b[i] += r[i] * (t - ymean);
                for j in 0..=i {
                    a[i][j] += r[i] * r[j];
                }
            }
        }
        for i in 0..p {
            a[i][i] += lambda;
            for j in 0..i {
                a[j][i] = a[i][j];
            }
        }
        let weights = solve_spd(&a, &b).unwrap_or_else(|| vec![0.0; p]);
        let ymin = y.iter().cloned().fold(f64::INFINITY, f64::min);
        let ymax = y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let half = if ymax >= ymin {
            (ymax - ymin) / 2.0
        } else {
            0.0
        };
        Linear {
            scaler,
            intercept: ymean,
            weights,
            lo: if ymin.is_finite() {
                ymin - half
            } else {
                f64::NEG_INFINITY
            },
            hi: if ymax.is_finite() {
                ymax + half
            } else {
                f64::INFINITY
            },
        }
    }

    pub fn predict(&self, x: &[f64]) -> f64 {
        let mut s = self.intercept;
        for k in 0..self.weights.len() {
            let v = x[self.scaler.cols[k]];
            let v = if v.is_finite() {
                v
            } else {
                self.scaler.fill[k]
            };
            s += self.weights[k] * (v - self.scaler.mean[k]) / self.scaler.scale[k];
        }
        s.clamp(self.lo.min(self.hi), self.hi.max(self.lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn recovers_a_linear_function() {
        let x: Vec<Vec<f64>> = (0..50)
            .map(|i| vec![i as f64, (i * 7 % 11) as f64, 3.0])
            .collect();
        let y: Vec<f64> = x.iter().map(|r| 2.0 * r[0] - r[1] + 5.0).collect();
        let m = Linear::fit(&x, &y, &[0, 1, 2], 1e-6);
        assert_eq!(m.scaler.cols, vec![0, 1], "constant column dropped");
        assert!((m.predict(&[10.0, 4.0, 3.0]) - 21.0).abs() < 0.05);
    }
}
