#!/usr/bin/env bash
# A first look, from a fresh machine: installs what is missing, builds, and runs `fanbench demo`:
# the whole stack (throwaway PostgreSQL, provider simulator, the naive sync server) and one sign-up
# through it over real HTTP. The main job, both designs under load, is scripts/compare.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo build --release --locked -p fanbench
exec target/release/fanbench demo "$@"
