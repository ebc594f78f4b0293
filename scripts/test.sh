#!/usr/bin/env bash
# The whole test suite: installs what it needs (both QEMU releases, the
# guest image), checks formatting and lints, then runs unit, integration
# and end-to-end tests, and prints each step's wall time at the end.
# `.ci/run` calls exactly this script.
#
# Every test that needs QEMU, the guest image or the training data is
# required here (MIGSIGHT_REQUIRE_QEMU=1): a missing piece is a failure,
# not a skip. A developer running one crate's tests by hand without QEMU
# gets a loud skip instead.
set -euo pipefail
cd "$(dirname "$0")/.."

export MIGSIGHT_REQUIRE_QEMU=1
TIMES=()
STEP=""
T_STEP=0
T_ALL=$(date +%s)
end_step() {
    if [ -n "$STEP" ]; then
        TIMES+=("$(printf '%6ss  %s' "$(($(date +%s) - T_STEP))" "$STEP")")
    fi
}
step() {
    end_step
    STEP="$*"
    T_STEP=$(date +%s)
    printf '\n==> %s\n' "$*" >&2
}
report() {
    local rc=$?
    end_step
    printf '\n==> step times (wall)\n' >&2
    printf '%s\n' "${TIMES[@]}" >&2
    printf '%6ss  total%s\n' "$(($(date +%s) - T_ALL))" "$([ $rc = 0 ] || echo " (FAILED at: $STEP)")" >&2
}
trap report EXIT

step "system packages (scripts/deps.sh: QEMU 10 system-wide, QEMU 7.2 unpacked)"
bash scripts/deps.sh
MIGSIGHT_QEMU_7_2=$(bash scripts/deps.sh --print-qemu-7.2)
export MIGSIGHT_QEMU_7_2

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "guest image"
bash lab/guest/build-image.sh

step "cargo build (tests, binaries)"
cargo test --workspace --no-run --quiet

step "cargo test"
# Fuzz targets (proto/tests/fuzz.rs, predictor/tests/fuzz.rs) run this many
# seconds each (about a minute in all).
export MIGSIGHT_FUZZ_SECONDS="${MIGSIGHT_FUZZ_SECONDS:-3}"
cargo test --workspace
