#!/usr/bin/env bash
# migsight predictor bench: accuracy side by side with scikit-learn on the
# same folds, training time ratios, in-process prediction latency and the
# daemon under 16 concurrent clients.
#
#   predictor/bench/run.sh [DATA.csv ...]      (default: data/lab.csv)
#
# Env: FOLDS (10), SEED (42), MODELS (gbdt,svr,linear,analytic),
#      MIGSIGHT_CACHE (venv location, default ~/.cache/migsight),
#      SKIP_SKLEARN=1, SKIP_CARGO_BENCH=1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -eq 0 ]; then set -- "$ROOT/data/lab.csv"; fi
DATA_ARGS=()
for d in "$@"; do DATA_ARGS+=(--data "$d"); done
FOLDS=${FOLDS:-10}
SEED=${SEED:-42}
MODELS=${MODELS:-gbdt,svr,linear,analytic}
CACHE=${MIGSIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/migsight}
VENV=$CACHE/venv
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$OUT"

if [ -z "${SKIP_SKLEARN:-}" ] && ! "$VENV/bin/python" -c 'import sklearn, numpy' 2>/dev/null; then
    echo "bench: creating the scikit-learn venv in $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$ROOT/predictor/reference/requirements.txt"
fi

(cd "$ROOT" && cargo build --release -q -p migsight)
BIN=$CARGO_TARGET_DIR/release/migsight

echo "== migsight eval ($MODELS, $FOLDS folds, seed $SEED) on $*"
"$BIN" eval "${DATA_ARGS[@]}" --models "$MODELS" --folds "$FOLDS" --seed "$SEED" \
    --format csv --folds-out "$OUT/folds.csv" >"$OUT/migsight.csv" 2>"$OUT/migsight.err"
cat "$OUT/migsight.err"

if [ -z "${SKIP_SKLEARN:-}" ]; then
    echo "== scikit-learn reference on the same folds"
    "$VENV/bin/python" "$ROOT/predictor/reference/reference.py" "$OUT/folds.csv" --fit-times \
        >"$OUT/sklearn.csv" 2>"$OUT/sklearn.err"
    OMP_NUM_THREADS=1 "$VENV/bin/python" "$ROOT/predictor/reference/reference.py" "$OUT/folds.csv" \
        --fit-times --no-cv --models sklearn-hgb 2>&1 >/dev/null \
        | sed 's/^fit,sklearn-hgb,/fit,sklearn-hgb-1thread,/' >>"$OUT/sklearn.err"
    cat "$OUT/sklearn.err"
else
    : >"$OUT/sklearn.csv"
    : >"$OUT/sklearn.err"
fi

if [ -z "${SKIP_CARGO_BENCH:-}" ]; then
    echo "== cargo bench (training time, prediction latency, daemon throughput)"
    (cd "$ROOT" && MIGSIGHT_BENCH_DATA="$(realpath "$1")" cargo bench -q -p migsight-predictor --bench predictor 2>/dev/null) \
        | grep -vE '^(running|test |$)' | tee "$OUT/bench.txt"
else
    : >"$OUT/bench.txt"
fi

python3 "$ROOT/predictor/bench/compare.py" "$OUT/migsight.csv" "$OUT/sklearn.csv" "$OUT/sklearn.err" "$OUT/bench.txt"
echo "(raw files in $OUT)"
