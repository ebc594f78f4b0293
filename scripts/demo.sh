#!/usr/bin/env bash
# migsight in five minutes, on a fresh Debian 12 machine, as root:
#
#   bash scripts/demo.sh [--qemu 10|7.2] [--accel tcg|kvm] [--bandwidth 100MB/s] [--window 5s] [--keep]
#
# It installs what is missing, builds migsight, trains the default model from
# data/lab.csv (cached), builds the guest image (cached), boots a small guest
# running a synthetic workload under QEMU, starts the agent and the predictor
# daemons on sockets in a temporary directory, runs `migsight plan` on the
# guest, starts a destination QEMU, runs `migsight migrate` with the
# recommended algorithm and shows predicted vs actual. Everything it starts is
# stopped on exit, Ctrl-C included (--keep keeps the logs).
#
# --qemu 10 (default) uses the system QEMU (10.x from bookworm-backports,
# installed by scripts/deps.sh); --qemu 7.2 the QEMU 7.2 that deps.sh unpacks
# (Debian 12's own), so the same demo shows what each release offers.
#
# Environment: MIGSIGHT_CACHE (default ~/.cache/migsight), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

ACCEL=tcg
QEMU_RELEASE=10
BANDWIDTH=100MB/s
WINDOW=5s
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --accel) ACCEL=$2; shift 2 ;;
        --qemu) QEMU_RELEASE=$2; shift 2 ;;
        --bandwidth) BANDWIDTH=$2; shift 2 ;;
        --window) WINDOW=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$ACCEL" in tcg|kvm) ;; *) echo "demo: --accel must be tcg or kvm" >&2; exit 2 ;; esac
case "$QEMU_RELEASE" in 10|7.2) ;; *) echo "demo: --qemu must be 10 or 7.2" >&2; exit 2 ;; esac

T0=$(date +%s)
step() { printf '\n\033[1m==> [%3ss] %s\033[0m\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { printf '\ndemo: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs Debian packages and reads guest memory): sudo bash scripts/demo.sh"

# ------------------------------------------------------------------ setup --
step "Installing missing Debian packages (scripts/deps.sh: QEMU 10 and 7.2)"
bash scripts/deps.sh
if [ "$QEMU_RELEASE" = 7.2 ]; then
    MIGSIGHT_QEMU=$(bash scripts/deps.sh --print-qemu-7.2)
    export MIGSIGHT_QEMU
    QEMU_BIN=$MIGSIGHT_QEMU
else
    unset MIGSIGHT_QEMU
    QEMU_BIN=qemu-system-x86_64
fi
QEMU_VERSION=$("$QEMU_BIN" --version | head -n1)
echo "   using $QEMU_VERSION ($QEMU_BIN)" >&2

if ! command -v cargo >/dev/null; then
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null; then
    echo "demo: cargo not found: install a Rust toolchain >= 1.80 (rustup's stable) and run again" >&2
    exit 1
fi

step "Building migsight (cargo build --release)"
cargo build --release -p migsight -p migsight-lab >&2
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/migsight
[ -x "$BIN" ] || die "no binary at $BIN after the build"

CACHE=${MIGSIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/migsight}
mkdir -p "$CACHE/models"
DATA=$REPO/data/lab.csv
[ -s "$DATA" ] || die "$DATA is missing: record data first (migsight lab --samples 50 --out $DATA)"
KEY=$(cat "$DATA" "$BIN" | sha256sum | cut -c1-16)
MODEL=$CACHE/models/model-$KEY.msm
if [ -f "$MODEL" ]; then
    step "Using the cached model $MODEL"
else
    step "Training the default model from $DATA ($(($(wc -l < "$DATA") - 1)) migrations; cached as $MODEL)"
    "$BIN" train --data "$DATA" --out "$MODEL.tmp" > "$CACHE/models/train.log" 2>&1 \
        || { cat "$CACHE/models/train.log" >&2; die "training failed"; }
    head -1 "$CACHE/models/train.log" | sed 's/^/   /' >&2
    mv "$MODEL.tmp" "$MODEL"
fi

step "Building the guest image (lab/guest/build-image.sh; cached after the first run)"
bash lab/guest/build-image.sh >/dev/null

# ------------------------------------------------------- run-time pieces --
RUN=$(mktemp -d /tmp/migsight-demo.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    step "Cleaning up (stopping ${#PIDS[@]} processes)"
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then
        echo "demo: logs kept in $RUN" >&2
    else
        rm -rf "$RUN"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # PATH PID WHAT LOG
    local i
    for i in $(seq 1 300); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || { cat "$4" >&2 2>/dev/null; die "$3 exited during start-up (log above)"; }
        sleep 0.1
    done
    die "$3 did not create $1 within 30 s"
}

GUEST=(MODE=synthetic WS_MB=32 RATE=3000 BYTES=512 ENTROPY=4 COLD_MB=32 COLD_ENTROPY=6 SEED=1)
step "Booting the source guest (256 MiB, $ACCEL, $QEMU_VERSION, workload: ${GUEST[*]})"
bash lab/guest/boot.sh --name src --run-dir "$RUN" --mem 256M --accel "$ACCEL" "${GUEST[@]}" \
    -- -qmp "unix:$RUN/src.agent.qmp,server=on,wait=off" 2>"$RUN/src.log" &
PIDS+=($!)
wait_for "$RUN/src.agent.qmp" "${PIDS[-1]}" "the source QEMU" "$RUN/src.log"
echo "   QMP sockets: $RUN/src.qmp (migsight migrate) and $RUN/src.agent.qmp (the agent)" >&2

step "Starting the predictor daemon (model $MODEL)"
"$BIN" predictor --model "$MODEL" --socket "$RUN/predictor.sock" >"$RUN/predictor.log" 2>&1 &
PIDS+=($!)
wait_for "$RUN/predictor.sock" "${PIDS[-1]}" "the predictor" "$RUN/predictor.log"

step "Starting the agent daemon"
"$BIN" agent --socket "$RUN/agent.sock" --predictor "$RUN/predictor.sock" >"$RUN/agent.log" 2>&1 &
PIDS+=($!)
wait_for "$RUN/agent.sock" "${PIDS[-1]}" "the agent" "$RUN/agent.log"

BOOT_WAIT=12
[ "$ACCEL" = kvm ] && BOOT_WAIT=4
step "Letting the guest boot and its workload warm up (${BOOT_WAIT}s)"
sleep "$BOOT_WAIT"

# ------------------------------------------------------------- the story --
SLA=(--max-downtime 300ms --max-time 60s)
step "migsight plan qmp:$RUN/src.agent.qmp --bandwidth $BANDWIDTH ${SLA[*]} --window $WINDOW"
"$BIN" plan "qmp:$RUN/src.agent.qmp" --bandwidth "$BANDWIDTH" "${SLA[@]}" --window "$WINDOW" \
    --agent "$RUN/agent.sock" | tee "$RUN/plan.txt"
ALGO=$(awk '$1 == "*" { print $2; exit }' "$RUN/plan.txt")
case "$ALGO" in
    precopy|auto-converge|xbzrle|compress|postcopy|multifd|multifd-zstd|postcopy-preempt|dirty-limit) ;;
    *) echo "demo: could not read the recommendation from the table; migrate will choose (auto)" >&2; ALGO=auto ;;
esac

PORT=
for _ in $(seq 1 50); do
    p=$(( 40000 + RANDOM % 20000 ))
    ss -ltn 2>/dev/null | grep -q ":$p " || { PORT=$p; break; }
done
[ -n "$PORT" ] || die "no free TCP port"
step "Starting the destination QEMU (-incoming defer, same machine options)"
bash lab/guest/boot.sh --name dst --run-dir "$RUN" --mem 256M --accel "$ACCEL" --incoming "${GUEST[@]}" 2>"$RUN/dst.log" &
PIDS+=($!)
wait_for "$RUN/dst.qmp" "${PIDS[-1]}" "the destination QEMU" "$RUN/dst.log"

step "migsight migrate ... --to tcp:127.0.0.1:$PORT --algorithm $ALGO (recommended)"
"$BIN" migrate "qmp:$RUN/src.agent.qmp" --qmp "$RUN/src.qmp" --dst-qmp "$RUN/dst.qmp" \
    --to "tcp:127.0.0.1:$PORT" --algorithm "$ALGO" --bandwidth "$BANDWIDTH" "${SLA[@]}" \
    --window "$WINDOW" --agent "$RUN/agent.sock" --outcomes "$RUN/outcomes.csv" --guest-ops --yes --brief

step "The outcome row migsight appended (CSAP schema, same header as data/lab.csv)"
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) h[i] = $i }
         NR == 2 { for (i = 1; i <= 24; i++) printf "   %-14s %s\n", h[i], $i }' "$RUN/outcomes.csv" >&2
echo "   ... plus $(( $(head -1 "$RUN/outcomes.csv" | tr , '\n' | wc -l) - 24 )) columns of context (status, wire bytes, throttle, QEMU version, ...)" >&2
echo "   On a host, rows go to /var/lib/migsight/outcomes.csv; retrain with:" >&2
echo "   migsight train --data data/lab.csv --data /var/lib/migsight/outcomes.csv --out /var/lib/migsight/model.msm" >&2

step "Done in $(( $(date +%s) - T0 ))s on $QEMU_VERSION, migrated with $ALGO. Next: migsight install, then systemctl enable --now migsight-predictor migsight-agent"
