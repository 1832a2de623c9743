#!/usr/bin/env bash
# The main job, from a fresh machine: installs what is missing, builds, and runs fanbench.
# Until the load driver lands this is `fanbench demo`: the whole stack (throwaway PostgreSQL,
# provider simulator, the naive sync server) and one sign-up through it over real HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo build --release --locked -p fanbench
exec target/release/fanbench demo "$@"
