#!/usr/bin/env python3
"""scikit-learn reference for `migsight eval`, on the very same folds.

Input: the CSV written by `migsight eval --folds-out FILE` (row, algorithm,
qemu, fold, group, converged, the 14 CSAP features and 6 composed features,
then the six labels TT DT TD PERF CPU MEM). For every algorithm x metric it
runs, on the converged rows with that label and exactly the folds in the file:

  sklearn-hgb  HistGradientBoostingRegressor() with default settings on raw targets
  sklearn-svr  the CSAP seed's pipeline: StandardScaler on X and y,
               BaggingRegressor(SVR(C=10.0), n_estimators=64, max_samples=0.9,
               max_features=0.8) (plus median imputation, which the seed's
               complete data did not need)

and prints `model,qemu,algorithm,metric,n,gMRE,MRE,MAE,p90_abs,coverage` with
the seed's evaluate() definitions (coverage is empty: no intervals), like
`migsight eval`: pooled over QEMU releases (`all`), then per release when the
file has several (the predictions are the same; only the rows scored differ).

--fit-times prints, to stderr, `fit,MODEL,SECONDS`: one fit of every
algorithm x metric on all its rows (what `cargo bench` times for migsight).
"""
import argparse
import csv
import math
import sys
import time
import warnings

import numpy as np
from sklearn.ensemble import BaggingRegressor, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

ALGORITHMS = ["precopy", "auto-converge", "xbzrle", "compress", "postcopy",
              "multifd", "multifd-zstd", "postcopy-preempt", "dirty-limit"]
METRICS = ["TT", "DT", "TD", "PERF", "CPU", "MEM"]


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    first_in = header.index("converged") + 1
    first_label = header.index("TT")
    inputs = header[first_in:first_label]
    data = []
    for r in rows[1:]:
        x = [float(v) if v != "" else math.nan for v in r[first_in:first_label]]
        y = {m: (float(r[first_label + k]) if r[first_label + k] != "" else None) for k, m in enumerate(METRICS)}
        data.append({"alg": r[1], "qemu": r[2], "fold": int(r[3]), "conv": r[5] == "1", "x": x, "y": y})
    X = np.array([d["x"] for d in data], dtype=float)
    keep = ~np.all(np.isnan(X), axis=0)  # columns with data, as migsight does
    for d, xr in zip(data, X[:, keep]):
        d["x"] = xr
    return [i for i, k in zip(inputs, keep) if k], data


def hgb():
    return HistGradientBoostingRegressor()


class SeedSvr:
    """The seed's pipeline, y standardised and inverse-transformed."""

    def __init__(self, seed=0):
        self.seed = seed

    def fit(self, X, y):
        self.ys = StandardScaler()
        ys = self.ys.fit_transform(np.asarray(y).reshape(-1, 1)).ravel()
        self.m = make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            StandardScaler(),
            BaggingRegressor(SVR(C=10.0), n_estimators=64, max_samples=0.9, max_features=0.8, random_state=self.seed),
        )
        self.m.fit(X, ys)
        return self

    def predict(self, X):
        return self.ys.inverse_transform(self.m.predict(X).reshape(-1, 1)).ravel()


MODELS = {"sklearn-hgb": hgb, "sklearn-svr": SeedSvr}


def stats(metric, pred, true):
    pred = np.asarray(pred, dtype=float)
    true = np.asarray(true, dtype=float)
    if metric in ("TT", "DT"):
        pred = np.where(pred < 0, true.min(), pred)
    abs_err = np.abs(pred - true)
    nz = true != 0
    rel = np.abs(1 - pred[nz] / true[nz])
    rel_nz = rel[rel > 0]
    gmre = float(np.exp(np.mean(np.log(rel_nz)))) if len(rel_nz) else math.nan
    mre = float(np.mean(rel)) if len(rel) else math.nan
    return len(true), gmre, mre, float(np.mean(abs_err)), float(np.percentile(abs_err, 90))


def fmt(v, p):
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{p}f}"


def main():
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("folds_csv")
    ap.add_argument("--models", default="sklearn-hgb,sklearn-svr")
    ap.add_argument("--fit-times", action="store_true")
    ap.add_argument("--no-cv", action="store_true", help="only --fit-times")
    a = ap.parse_args()
    _, data = load(a.folds_csv)
    models = [m for m in a.models.split(",") if m]
    out = csv.writer(sys.stdout, lineterminator="\n")
    if not a.no_cv:
        out.writerow(["model", "qemu", "algorithm", "metric", "n", "gMRE", "MRE", "MAE", "p90_abs", "coverage"])
    releases = sorted({d["qemu"] for d in data})
    scopes = ["all"] + (releases if len(releases) > 1 else [])
    cv_seconds = {m: 0.0 for m in models}
    fit_seconds = {m: 0.0 for m in models}
    for name in models:
        for alg in ALGORITHMS:
            for metric in METRICS:
                rows = [d for d in data if d["alg"] == alg and d["conv"] and d["y"][metric] is not None]
                if len(rows) < 2:
                    continue
                X = np.array([d["x"] for d in rows])
                y = np.array([d["y"][metric] for d in rows])
                folds = np.array([d["fold"] for d in rows])
                if a.fit_times:
                    t = time.perf_counter()
                    MODELS[name]().fit(X, y)
                    fit_seconds[name] += time.perf_counter() - t
                if a.no_cv:
                    continue
                pred = np.full(len(rows), math.nan)
                t = time.perf_counter()
                for k in sorted(set(folds)):
                    tr, te = folds != k, folds == k
                    if tr.sum() < 2:
                        pred[te] = np.median(y)
                        continue
                    m = MODELS[name]().fit(X[tr], y[tr])
                    pred[te] = m.predict(X[te])
                cv_seconds[name] += time.perf_counter() - t
                qemu = np.array([d["qemu"] for d in rows])
                for scope in scopes:
                    sel = np.ones(len(rows), bool) if scope == "all" else qemu == scope
                    if not sel.any():
                        continue
                    n, gmre, mre, mae, p90 = stats(metric, pred[sel], y[sel])
                    out.writerow([name, scope, alg, metric, n, fmt(gmre, 4), fmt(mre, 4), fmt(mae, 3), fmt(p90, 3), ""])
    for name in models:
        if not a.no_cv:
            print(f"cv,{name},{cv_seconds[name]:.3f}", file=sys.stderr)
        if a.fit_times:
            print(f"fit,{name},{fit_seconds[name]:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
