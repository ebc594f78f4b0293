#!/usr/bin/env bash
# How predictions hold outside the training data: held-out regions of the
# input space against the in-range cross-validation, on the same data.
#
#   predictor/bench/extrapolation.sh [DATA.csv ...]     (default: data/lab.csv)
#
# For each split (HOLDOUTS, one `migsight eval --holdout EXPR` each) it
# prints, per algorithm, the held-out TT/TD/DT gMRE over the in-range
# 10-fold figure (target: TT/TD within 2x) and the held-out 90 % interval
# coverage (target: >= 0.80). Env: HOLDOUTS (';'-separated expressions),
# MODELS (gbdt), FOLDS (10), SEED (42), THREADS (2).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -eq 0 ]; then set -- "$ROOT/data/lab.csv"; fi
DATA_ARGS=()
for d in "$@"; do DATA_ARGS+=(--data "$d"); done
HOLDOUTS=${HOLDOUTS:-"VM_size>=400;VM_size>=1024;VM_ptr>=60;VM_pdr>=10;VM_ptr<20"}
MODELS=${MODELS:-gbdt}
FOLDS=${FOLDS:-10}
SEED=${SEED:-42}
THREADS=${THREADS:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$(mktemp -d)
(cd "$ROOT" && cargo build --release -q -p migsight)
BIN=$CARGO_TARGET_DIR/release/migsight

echo "== in range: $FOLDS-fold cross-validation on $*" >&2
"$BIN" eval "${DATA_ARGS[@]}" --models "$MODELS" --folds "$FOLDS" --seed "$SEED" \
    --threads "$THREADS" --format csv >"$OUT/cv.csv" 2>"$OUT/cv.err"
i=0
IFS=';' read -r -a EXPRS <<<"$HOLDOUTS"
for h in "${EXPRS[@]}"; do
    i=$((i + 1))
    echo "== holdout $h" >&2
    if ! "$BIN" eval "${DATA_ARGS[@]}" --models "$MODELS" --holdout "$h" --seed "$SEED" \
        --threads "$THREADS" --format csv >"$OUT/h$i.csv" 2>"$OUT/h$i.err"; then
        echo "   (no rows or no training rows on one side: $(tail -n1 "$OUT/h$i.err"))" >&2
        : >"$OUT/h$i.csv"
    fi
    printf '%s\n' "$h" >"$OUT/h$i.expr"
done
python3 - "$OUT" "$i" <<'EOF'
import csv, math, sys
out, n = sys.argv[1], int(sys.argv[2])
def load(p):
    try:
        return {(r["model"], r["qemu"], r["algorithm"], r["metric"]): r for r in csv.DictReader(open(p))}
    except (FileNotFoundError, KeyError):
        return {}
def num(r, k):
    try:
        v = float(r[k]); return v if math.isfinite(v) else None
    except (TypeError, ValueError, KeyError):
        return None
cv = load(f"{out}/cv.csv")
for k in range(1, n + 1):
    h = load(f"{out}/h{k}.csv")
    expr = open(f"{out}/h{k}.expr").read().strip()
    print(f"\n{expr}: held-out gMRE / in-range gMRE (coverage held out); n held out")
    print(f"{'model':<7} {'algorithm':<17} {'TT':>16} {'TD':>16} {'DT':>16}")
    worst_ratio, worst_cov = 0.0, 1.0
    for (model, qemu, alg, metric), r in sorted(h.items()):
        if qemu != "all" or metric != "TT":
            continue
        cells = []
        for m in ("TT", "TD", "DT"):
            rh, rc = h.get((model, qemu, alg, m)), cv.get((model, qemu, alg, m))
            g, g0, cov = num(rh, "gMRE"), num(rc, "gMRE"), num(rh, "coverage")
            if g is None or g0 is None:
                cells.append("-"); continue
            ratio = g / g0
            if m != "DT":
                worst_ratio = max(worst_ratio, ratio)
                if cov is not None: worst_cov = min(worst_cov, cov)
            cells.append(f"{ratio:5.2f} ({cov:.2f}) {rh['n']:>3}")
        print(f"{model:<7} {alg:<17} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16}")
    if h:
        print(f"  worst TT/TD ratio {worst_ratio:.2f} (target <= 2), worst TT/TD coverage {worst_cov:.2f} (target >= 0.80)")
EOF
echo "(raw files in $OUT)" >&2
