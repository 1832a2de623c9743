#!/usr/bin/env bash
# The test command: installs what the tests need, runs every test against real PostgreSQL (a
# throwaway cluster per test process, or DATABASE_URL), runs the smoke comparison with its gates,
# checks its HTML report in headless Chromium, runs a short capacity search and checks its page,
# checks that no cluster or nats-server was left running, then lints. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-deps.sh

echo "==> cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"

echo "==> smoke comparison of the three designs with its gates (scenarios/smoke.toml [gates])"
smoke=$(mktemp -d)
target/debug/fanbench compare --quiet --designs sync,async,broker --scenario scenarios/smoke.toml --out "$smoke" --junit "$smoke/junit.xml"
echo "==> browser check of its HTML report (headless Chromium)"
FANBENCH=target/debug/fanbench scripts/check-report.sh "$smoke"
rm -rf "$smoke"

echo "==> a short capacity search (the sync design, 8 s steps) and the browser check of its page"
cap=$(mktemp -d)
# From 16/s, so every step has over 100 requests: with fewer, one late send is the whole send lag p99.
target/debug/fanbench capacity --designs sync --step-duration 8s --start-rate 16 --max-steps 6 --repeat 2 --out "$cap"
FANBENCH=target/debug/fanbench scripts/check-report.sh "$cap"
rm -rf "$cap"

# Each test process's cluster is removed by its guard once the process exits; give the guards a
# moment, then fail if any throwaway server is still up.
for _ in $(seq 1 100); do
  pgrep -f 'postgres -D /tmp/fanbench-pg-' >/dev/null || break
  sleep 0.1
done
if pgrep -af 'postgres -D /tmp/fanbench-pg-'; then
  echo "error: a throwaway PostgreSQL survived the test run (above)" >&2
  exit 1
fi
echo "==> no throwaway PostgreSQL left running"
# The same for the broker design's throwaway nats-server (its guard removes it likewise).
for _ in $(seq 1 100); do
  pgrep -f 'nats-server .*fanbench-nats-' >/dev/null || break
  sleep 0.1
done
if pgrep -af 'nats-server .*fanbench-nats-'; then
  echo "error: a throwaway nats-server survived the test run (above)" >&2
  exit 1
fi
echo "==> no throwaway nats-server left running"

echo "==> lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
