#!/usr/bin/env bash
# The main job, from a fresh machine: installs what is missing, builds in release mode, and runs
# `fanbench compare` with the default scenario (scenarios/peak-registration.toml): both designs
# under a sign-up spike, side by side. Extra arguments go to `fanbench compare`, e.g.
#   scripts/compare.sh --scenario scenarios/smoke.toml
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo build --release --locked -p fanbench
exec target/release/fanbench compare "$@"
