#!/usr/bin/env python3
"""Side-by-side of `migsight eval` and the scikit-learn reference (stdlib only).

compare.py MIGSIGHT.csv SKLEARN.csv SKLEARN.err BENCH.txt
"""
import csv
import math
import sys


def load(path):
    try:
        with open(path, newline="") as f:
            return {(r["model"], r.get("qemu", "all"), r["algorithm"], r["metric"]): r for r in csv.DictReader(f)}
    except (FileNotFoundError, KeyError):
        return {}


def num(r, k):
    try:
        v = float(r[k])
        return v if math.isfinite(v) else None
    except (TypeError, ValueError, KeyError):
        return None


def gmean(v):
    v = [x for x in v if x and x > 0]
    return math.exp(sum(map(math.log, v)) / len(v)) if v else None


def f(v, p=3):
    return "-" if v is None else f"{v:.{p}f}"


ALGS = ["precopy", "auto-converge", "xbzrle", "compress", "postcopy",
        "multifd", "multifd-zstd", "postcopy-preempt", "dirty-limit"]
METRICS = ["TT", "DT", "TD", "PERF", "CPU", "MEM"]


def side_by_side(ms, sk, scope):
    """The gMRE table and targets for one QEMU scope (`all`, `7.2`, `10.0`)."""
    g = lambda model, a, m, k="gMRE": num(ms.get((model, scope, a, m), {}), k)
    s = lambda model, a, m: num(sk.get((model, scope, a, m), {}), "gMRE")
    print(f"\n== QEMU {scope}: gMRE side by side (same folds; ratio = migsight / reference, < 1 is better)")
    hdr = f"{'algorithm':<16} {'metric':<5} {'n':>4} | {'gbdt':>6} {'sk-hgb':>6} {'ratio':>5} | {'svr':>6} {'sk-svr':>6} {'ratio':>5} | {'linear':>6} {'analyt':>6} {'gbdt/an':>7} | {'cov':>5}"
    print(hdr)
    print("-" * len(hdr))
    ratios_hgb, ratios_an_pre, covs = [], [], []
    per_alg = {}
    worst = (0.0, None)
    for a in ALGS:
        for m in METRICS:
            r = ms.get(("gbdt", scope, a, m))
            if r is None:
                continue
            gb, hg = g("gbdt", a, m), s("sklearn-hgb", a, m)
            sv, ss = g("svr", a, m), s("sklearn-svr", a, m)
            li, an = g("linear", a, m), g("analytic", a, m)
            cov = g("gbdt", a, m, "coverage")
            rh = gb / hg if gb and hg else None
            rs = sv / ss if sv and ss else None
            ra = gb / an if gb and an else None
            if m in ("TT", "DT", "TD") and rh:
                ratios_hgb.append(rh)
                per_alg.setdefault(a, []).append(rh)
                if rh > worst[0]:
                    worst = (rh, f"{a} {m}")
            if a in ("precopy", "auto-converge", "xbzrle", "compress", "multifd", "multifd-zstd") and m in ("TT", "TD") and ra:
                ratios_an_pre.append((a, m, ra))
            if cov is not None:
                covs.append(cov)
            print(f"{a:<16} {m:<5} {r['n']:>4} | {f(gb):>6} {f(hg):>6} {f(rh, 2):>5} | {f(sv):>6} {f(ss):>6} {f(rs, 2):>5} | {f(li):>6} {f(an):>6} {f(ra, 2):>7} | {f(cov, 2):>5}")
    print(f"targets (QEMU {scope}):")
    gm = gmean(ratios_hgb)
    print(f"  gbdt vs sklearn HGB over algorithm x {{TT,DT,TD}}: geometric mean of gMRE ratios {f(gm)} (target <= 0.9), worst {f(worst[0], 2)} at {worst[1]} (target none > 1.15)")
    for a, rs in per_alg.items():
        print(f"    {a:<16} geometric mean over TT/DT/TD {f(gmean(rs))}, worst {f(max(rs), 2)}")
    if ratios_an_pre:
        print("  gbdt / analytic gMRE, pre-copy family TT/TD (target <= 0.5): " + ", ".join(f"{a} {m} {r:.2f}" for a, m, r in ratios_an_pre))
    if covs:
        print(f"  gbdt interval coverage: min {min(covs):.3f}, median {sorted(covs)[len(covs)//2]:.3f}, max {max(covs):.3f} (target 0.85-0.95)")


def main():
    ms, sk = load(sys.argv[1]), load(sys.argv[2])
    scopes = sorted({k[1] for k in ms}, key=lambda s: (s != "all", s))
    for scope in scopes:
        side_by_side(ms, sk, scope)
    # Training time ratios.
    fits = {}
    for path in sys.argv[3:5]:
        try:
            for line in open(path):
                p = line.strip().split(",")
                if len(p) == 3 and p[0] == "fit":
                    fits[p[1]] = float(p[2])
        except FileNotFoundError:
            pass
    if fits:
        print("\ntraining time, one fit of all 30 algorithm x metric regressors on all rows:")
        print("  (migsight single-threaded; sklearn HGB with its default OpenMP threads, and with OMP_NUM_THREADS=1)")
        for ours, ref in (("migsight-gbdt", "sklearn-hgb"), ("migsight-gbdt", "sklearn-hgb-1thread"), ("migsight-svr", "sklearn-svr"), ("migsight-linear", None), ("migsight-analytic", None)):
            if ours in fits:
                line = f"  {ours:<18} {fits[ours]:8.3f} s"
                if ref and ref in fits:
                    line += f"   {ref:<12} {fits[ref]:8.3f} s   ratio {fits[ours] / fits[ref]:.2f}"
                print(line)


if __name__ == "__main__":
    main()
