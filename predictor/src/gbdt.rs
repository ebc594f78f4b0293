//! A small histogram gradient-boosted-trees implementation.
//!
//! Quantile binning to ≤ 255 bins per column plus a bin for missing values
//! (whose direction each split learns), depth-limited trees grown on
//! gradient/hessian histograms, shrinkage, row subsampling with a seeded RNG.
//! Losses: absolute error (gradient sign; leaves refit to the median residual,
//! as in Friedman's LAD-TreeBoost), squared error, and log-loss for the
//! convergence classifier (Newton leaves). See `predictor/README.md` for why
//! migsight carries its own trees.

use migsight_proto::rng::Rng;
use migsight_proto::stats::median;
use serde::{Deserialize, Serialize};

/// Training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loss {
    /// Absolute error (median regression).
    L1,
    /// Squared error.
    L2,
    /// Binary log-loss; targets 0/1, outputs a logit.
    LogLoss,
}

/// What boosting starts from for TT, DT and TD (other metrics and the
/// classifier always start from the median).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Base {
    /// The median of the training targets: plain trees.
    Median,
    /// The analytic series times one fitted factor.
    Scaled,
    /// The series times one factor, after taking out a fitted fixed part
    /// `a` from `y = a + b × series` (the target becomes `ln(y − a)`, see
    /// [`crate::family::Transform::Offset`]).
    Affine,
}

/// The scale a regression target is fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// `ln y` (shifted for deltas): the errors the trees weigh are relative,
    /// as gMRE is (migsight's default).
    Log,
    /// `y` itself, with the median base: scikit-learn's default setting,
    /// kept as an ablation (`--gbdt-target raw`).
    Raw,
}

/// Hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbdtParams {
    pub loss: Loss,
    pub n_trees: usize,
    pub learning_rate: f64,
    pub max_depth: usize,
    /// Minimum rows in a leaf; `0` = automatic (n/40 clamped to 2..=20).
    pub min_leaf: usize,
    pub max_bins: usize,
    pub subsample: f64,
    pub lambda: f64,
    /// Regression on TT/DT/TD: what the trees boost the residual of.
    pub base: Base,
    /// Regression: the scale the trees fit the target on.
    pub target: Target,
}

impl GbdtParams {
    /// migsight's default regression settings (log target, absolute error).
    pub fn regression() -> Self {
        GbdtParams {
            loss: Loss::L1,
            n_trees: 100,
            learning_rate: 0.1,
            max_depth: 4,
            min_leaf: 0,
            max_bins: 255,
            subsample: 0.8,
            lambda: 1.0,
            base: Base::Affine,
            target: Target::Log,
        }
    }

    /// The convergence classifier's settings.
    pub fn classifier() -> Self {
        GbdtParams {
            loss: Loss::LogLoss,
            n_trees: 60,
            learning_rate: 0.1,
            max_depth: 2,
            min_leaf: 0,
            max_bins: 255,
            subsample: 0.8,
            lambda: 5.0,
            base: Base::Median,
            target: Target::Log,
        }
    }
}

const LEAF: u16 = u16::MAX;

/// One tree node; a leaf has `feature == u16::MAX`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub feature: u16,
    pub missing_left: bool,
    pub left: u32,
    pub right: u32,
    /// Go left when `x <= threshold`.
    pub threshold: f64,
    /// Output of this node (leaf) or of the subtree as a whole (internal), shrunk.
    pub value: f64,
    /// Bin of the threshold (training-time fast path).
    pub bin: u8,
}

/// A regression tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    #[inline]
    fn leaf_index(&self, x: &[f64]) -> usize {
        let mut i = 0usize;
        loop {
            let n = &self.nodes[i];
            if n.feature == LEAF {
                return i;
            }
            let v = x[n.feature as usize];
            let left = if v.is_nan() {
                n.missing_left
            } else {
                v <= n.threshold
            };
            i = if left { n.left } else { n.right } as usize;
        }
    }

    #[inline]
    pub fn eval(&self, x: &[f64]) -> f64 {
        self.nodes[self.leaf_index(x)].value
    }

    fn eval_binned(&self, bins: &Binned, row: usize) -> f64 {
        let mut i = 0usize;
        loop {
            let n = &self.nodes[i];
            if n.feature == LEAF {
                return n.value;
            }
            let b = bins.bin(n.feature as usize, row);
            let left = if b == 0 { n.missing_left } else { b <= n.bin };
            i = if left { n.left } else { n.right } as usize;
        }
    }
}

/// A fitted boosted ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gbdt {
    pub loss: Loss,
    pub base: f64,
    pub trees: Vec<Tree>,
    pub n_features: usize,
}

/// Column-major binned matrix.
pub struct Binned {
    n: usize,
    bins: Vec<u8>,
    /// Per column: upper edges of bins 1..; bin count = edges.len() + 2 (with missing).
    edges: Vec<Vec<f64>>,
}

impl Binned {
    pub fn new(x: &[Vec<f64>], n_features: usize, max_bins: usize) -> Binned {
        let n = x.len();
        let max_bins = max_bins.clamp(2, 255);
        let mut bins = vec![0u8; n * n_features];
        let mut edges = Vec::with_capacity(n_features);
        for f in 0..n_features {
            let mut vals: Vec<f64> = x.iter().map(|r| r[f]).filter(|v| !v.is_nan()).collect();
            vals.sort_by(|a, b| a.total_cmp(b));
            let mut uniq = vals.clone();
            uniq.dedup();
            let e: Vec<f64> = if uniq.len() <= max_bins {
                uniq.windows(2)
                    .map(|w| w[0] + (w[1] - w[0]) / 2.0)
                    .collect()
            } else {
                let mut e: Vec<f64> = (1..max_bins)
                    .map(|k| {
                        let i = k * vals.len() / max_bins;
                        let (a, b) = (vals[i.saturating_sub(1)], vals[i]);
                        a + (b - a) / 2.0
                    })
                    .collect();
                e.dedup();
                e
            };
            for (i, r) in x.iter().enumerate() {
                let v = r[f];
                bins[f * n + i] = if v.is_nan() {
                    0
                } else {
                    1 + e.partition_point(|edge| *edge < v) as u8
                };
            }
            edges.push(e);
        }
        Binned { n, bins, edges }
    }

    #[inline]
    fn bin(&self, f: usize, row: usize) -> u8 {
        self.bins[f * self.n + row]
    }

    fn n_bins(&self, f: usize) -> usize {
        self.edges[f].len() + 2
    }
}

struct Grower<'a> {
    p: &'a GbdtParams,
    binned: &'a Binned,
    grad: &'a [f64],
    hess: &'a [f64],
    resid: &'a [f64],
    min_leaf: usize,
    hist: Vec<[f64; 3]>,
    nodes: Vec<Node>,
}

impl Grower<'_> {
    fn node_value(&self, rows: &[u32]) -> f64 {
        match self.p.loss {
            Loss::L1 => {
                let mut r: Vec<f64> = rows.iter().map(|&i| self.resid[i as usize]).collect();
                median(&mut r).unwrap_or(0.0)
            }
            Loss::L2 | Loss::LogLoss => {
                let (g, h) = rows.iter().fold((0.0, 0.0), |(g, h), &i| {
                    (g + self.grad[i as usize], h + self.hess[i as usize])
                });
                -g / (h + self.p.lambda)
            }
        }
    }

    /// Grows the subtree over `rows`; returns its node index.
    fn grow(&mut self, rows: &mut [u32], depth: usize) -> u32 {
        let idx = self.nodes.len();
        let value = self.node_value(rows) * self.p.learning_rate;
        self.nodes.push(Node {
            feature: LEAF,
            missing_left: false,
            left: 0,
            right: 0,
            threshold: 0.0,
            value,
            bin: 0,
        });
        if depth >= self.p.max_depth || rows.len() < 2 * self.min_leaf {
            return idx as u32;
        }
        let Some((f, b, missing_left)) = self.best_split(rows) else {
            return idx as u32;
        };
        let binned = self.binned;
        let goes_left = |i: u32| {
            let v = binned.bin(f, i as usize);
            if v == 0 {
                missing_left
            } else {
                v <= b
            }
        };
        // Partition rows in place: left first.
        let mut k = 0;
        for j in 0..rows.len() {
            if goes_left(rows[j]) {
                rows.swap(j, k);
                k += 1;
            }
        }
        let (l, r) = rows.split_at_mut(k);
        let left = self.grow(l, depth + 1);
        let right = self.grow(r, depth + 1);
        let node = &mut self.nodes[idx];
        node.feature = f as u16;
        node.missing_left = missing_left;
        node.left = left;
        node.right = right;
        node.bin = b;
        node.threshold = self.binned.edges[f][b as usize - 1];
        idx as u32
    }

    fn best_split(&mut self, rows: &[u32]) -> Option<(usize, u8, bool)> {
        let lambda = self.p.lambda;
        let (mut gt, mut ht) = (0.0, 0.0);
        for &i in rows.iter() {
            gt += self.grad[i as usize];
            ht += self.hess[i as usize];
        }
        let nt = rows.len() as f64;
        let parent = gt * gt / (ht + lambda);
        let min_leaf = self.min_leaf as f64;
        let min_hess = 1e-3;
        let mut best: Option<(f64, usize, u8, bool)> = None;
        for f in 0..self.binned.edges.len() {
            let nb = self.binned.n_bins(f);
            if nb <= 2 {
                continue;
            }
            let hist = &mut self.hist[..nb];
            hist.iter_mut().for_each(|h| *h = [0.0; 3]);
            let col = &self.binned.bins[f * self.binned.n..(f + 1) * self.binned.n];
            for &i in rows.iter() {
                let h = &mut hist[col[i as usize] as usize];
                h[0] += self.grad[i as usize];
                h[1] += self.hess[i as usize];
                h[2] += 1.0;
            }
            let miss = hist[0];
            let (mut gl, mut hl, mut nl) = (0.0, 0.0, 0.0);
            #[allow(clippy::needless_range_loop)]
            for b in 1..nb - 1 {
                gl += hist[b][0];
                hl += hist[b][1];
                nl += hist[b][2];
                if hist[b][2] == 0.0 && b > 1 {
                    // Same partition as the previous bin.
                    continue;
                }
                for missing_left in [false, true] {
                    if missing_left && miss[2] == 0.0 {
                        continue;
                    }
                    let (g_l, h_l, n_l) = if missing_left {
                        (gl + miss[0], hl + miss[1], nl + miss[2])
                    } else {
                        (gl, hl, nl)
                    };
                    let (g_r, h_r, n_r) = (gt - g_l, ht - h_l, nt - n_l);
                    if n_l < min_leaf || n_r < min_leaf || h_l < min_hess || h_r < min_hess {
                        continue;
                    }
                    let gain = g_l * g_l / (h_l + lambda) + g_r * g_r / (h_r + lambda) - parent;
                    if gain > 1e-9 && !matches!(best, Some((bg, ..)) if gain <= bg) {
                        best = Some((gain, f, b as u8, missing_left));
                    }
                }
            }
        }
        best.map(|(_, f, b, m)| (f, b, m))
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Gbdt {
    /// Fits on rows `x` (each `n_features` long, NaN = missing) and targets `y`.
    pub fn fit(x: &[Vec<f64>], y: &[f64], n_features: usize, p: &GbdtParams, seed: u64) -> Gbdt {
        let n = x.len();
        assert_eq!(n, y.len());
        let base = match p.loss {
            Loss::L1 => median(&mut y.to_vec()).unwrap_or(0.0),
            Loss::L2 => y.iter().sum::<f64>() / n.max(1) as f64,
            Loss::LogLoss => {
                let m = (y.iter().sum::<f64>() / n.max(1) as f64).clamp(1e-3, 1.0 - 1e-3);
                (m / (1.0 - m)).ln()
            }
        };
        let mut model = Gbdt {
            loss: p.loss,
            base,
            trees: Vec::with_capacity(p.n_trees),
            n_features,
        };
        if n < 2 {
            return model;
        }
        let binned = Binned::new(x, n_features, p.max_bins);
        let min_leaf = if p.min_leaf == 0 {
            (n / 40).clamp(2, 20)
        } else {
            p.min_leaf
        };
        let mut pred = vec![base; n];
        let mut grad = vec![0.0; n];
        let mut hess = vec![1.0; n];
        let mut resid = vec![0.0; n];
        let mut rng = Rng::new(seed);
        let k = ((p.subsample.clamp(0.05, 1.0) * n as f64).ceil() as usize).clamp(1, n);
        let mut hist_buf = vec![[0.0; 3]; 257];
        for _ in 0..p.n_trees {
            for i in 0..n {
                match p.loss {
                    Loss::L1 => {
                        resid[i] = y[i] - pred[i];
                        grad[i] = if resid[i] > 0.0 {
                            -1.0
                        } else if resid[i] < 0.0 {
                            1.0
                        } else {
                            0.0
                        };
                    }
                    Loss::L2 => grad[i] = pred[i] - y[i],
                    Loss::LogLoss => {
                        let q = sigmoid(pred[i]);
                        grad[i] = q - y[i];
                        hess[i] = (q * (1.0 - q)).max(1e-6);
                    }
                }
            }
            let mut rows: Vec<u32> = if k < n {
                rng.sample_without_replacement(n, k)
                    .into_iter()
                    .map(|i| i as u32)
                    .collect()
            } else {
                (0..n as u32).collect()
            };
            let mut g = Grower {
                p,
                binned: &binned,
                grad: &grad,
                hess: &hess,
                resid: &resid,
                min_leaf,
                hist: std::mem::take(&mut hist_buf),
                nodes: Vec::new(),
            };
            g.grow(&mut rows, 0);
            hist_buf = std::mem::take(&mut g.hist);
            let tree = Tree { nodes: g.nodes };
            for (i, pi) in pred.iter_mut().enumerate() {
                *pi += tree.eval_binned(&binned, i);
            }
            model.trees.push(tree);
        }
        model
    }

    /// Raw output (a logit for log-loss).
    #[inline]
    pub fn predict(&self, x: &[f64]) -> f64 {
        let mut s = self.base;
        for t in &self.trees {
            s += t.eval(x);
        }
        s
    }

    /// Outputs after 0, 1, …, `trees.len()` trees.
    pub fn predict_staged(&self, x: &[f64]) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.trees.len() + 1);
        let mut s = self.base;
        out.push(s);
        for t in &self.trees {
            s += t.eval(x);
            out.push(s);
        }
        out
    }

    /// Keeps the first `k` trees (the model boosting would have built with `k`).
    pub fn truncate(&mut self, k: usize) {
        self.trees.truncate(k);
    }

    /// Probability, for a log-loss model.
    pub fn predict_proba(&self, x: &[f64]) -> f64 {
        sigmoid(self.predict(x))
    }

    /// Adds each input's contribution to the output (path attribution:
    /// the change of node value along the decision path, credited to the
    /// split's input) into `out`; returns the bias (the sum of root values).
    pub fn contributions(&self, x: &[f64], out: &mut [f64]) -> f64 {
        let mut bias = self.base;
        for t in &self.trees {
            let mut i = 0usize;
            bias += t.nodes[0].value;
            loop {
                let n = &t.nodes[i];
                if n.feature == LEAF {
                    break;
                }
                let v = x[n.feature as usize];
                let left = if v.is_nan() {
                    n.missing_left
                } else {
                    v <= n.threshold
                };
                let c = if left { n.left } else { n.right } as usize;
                out[n.feature as usize] += t.nodes[c].value - n.value;
                i = c;
            }
        }
        bias
    }

    /// Number of nodes, for sizes in docs and benches.
    pub fn node_count(&self) -> usize {
        self.trees.iter().map(|t| t.nodes.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut r = Rng::new(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            let a = r.unit() * 10.0;
            let b = r.unit() * 10.0;
            let c = if r.unit() < 0.2 { f64::NAN } else { r.unit() };
            y.push(if a > 5.0 { 3.0 } else { 1.0 } + 0.3 * b + if c.is_nan() { 2.0 } else { 0.0 });
            x.push(vec![a, b, c]);
        }
        (x, y)
    }

    #[test]
    fn fits_a_step_function_and_missing_values() {
        let (x, y) = data(400, 1);
        for loss in [Loss::L1, Loss::L2] {
            let p = GbdtParams {
                loss,
                ..GbdtParams::regression()
            };
            let m = Gbdt::fit(&x, &y, 3, &p, 7);
            let (xt, yt) = data(200, 2);
            let mae: f64 = xt
                .iter()
                .zip(&yt)
                .map(|(r, t)| (m.predict(r) - t).abs())
                .sum::<f64>()
                / 200.0;
            assert!(mae < 0.3, "{loss:?} mae {mae}");
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let (x, y) = data(200, 3);
        let p = GbdtParams::regression();
        let a = Gbdt::fit(&x, &y, 3, &p, 11);
        let b = Gbdt::fit(&x, &y, 3, &p, 11);
        assert_eq!(a, b);
        let c = Gbdt::fit(&x, &y, 3, &p, 12);
        assert_ne!(a, c);
    }

    #[test]
    fn classifier_separates() {
        let (x, _) = data(300, 4);
        let y: Vec<f64> = x
            .iter()
            .map(|r| if r[0] > 6.0 { 1.0 } else { 0.0 })
            .collect();
        let m = Gbdt::fit(&x, &y, 3, &GbdtParams::classifier(), 1);
        assert!(m.predict_proba(&[9.0, 1.0, 0.5]) > 0.9);
        assert!(m.predict_proba(&[1.0, 1.0, 0.5]) < 0.1);
    }

    #[test]
    fn contributions_sum_to_the_prediction() {
        let (x, y) = data(200, 5);
        let m = Gbdt::fit(&x, &y, 3, &GbdtParams::regression(), 1);
        let mut c = vec![0.0; 3];
        let bias = m.contributions(&x[0], &mut c);
        let total = bias + c.iter().sum::<f64>();
        assert!((total - m.predict(&x[0])).abs() < 1e-9);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let m = Gbdt::fit(&[], &[], 2, &GbdtParams::regression(), 1);
        assert_eq!(m.trees.len(), 0);
        let x = vec![vec![f64::NAN, 1.0]; 10];
        let y = vec![5.0; 10];
        let m = Gbdt::fit(&x, &y, 2, &GbdtParams::regression(), 1);
        assert_eq!(m.predict(&[f64::NAN, 1.0]), 5.0);
    }
}
