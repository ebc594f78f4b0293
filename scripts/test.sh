#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks formatting and lints,
# builds the guest image, then runs unit, integration and end-to-end tests.
# `.ci/run` calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "system packages"
bash scripts/deps.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "guest image"
bash lab/guest/build-image.sh

step "cargo test"
# Fuzz targets (proto/tests/fuzz.rs, predictor/tests/fuzz.rs) run this many
# seconds each (about a minute in all).
export MIGSIGHT_FUZZ_SECONDS="${MIGSIGHT_FUZZ_SECONDS:-3}"
cargo test --workspace
