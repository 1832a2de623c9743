# Everything a person types twice. `just --list` shows the recipes.

# The main job from a fresh machine: both designs under the peak-registration spike, side by side
compare *ARGS:
    scripts/compare.sh {{ARGS}}

# The short CI scenario
smoke:
    scripts/compare.sh --scenario scenarios/smoke.toml

# The whole stack and one sign-up end to end, in a few seconds
demo:
    scripts/demo.sh

# All tests against real PostgreSQL, the leftover-cluster check, then lint (what CI runs)
test:
    scripts/test.sh

# Format check and clippy, warnings as errors
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# The provider simulator on 127.0.0.1:7001
serve-providers *ARGS:
    cargo run --release -p fanbench -- serve providers {{ARGS}}

# The naive sync server on 127.0.0.1:7002 (throwaway PostgreSQL unless DATABASE_URL is set)
serve-sync *ARGS:
    cargo run --release -p fanbench -- serve sync --providers-url http://127.0.0.1:7001 {{ARGS}}

# The queue-backed async server on 127.0.0.1:7003
serve-async *ARGS:
    cargo run --release -p fanbench -- serve async --providers-url http://127.0.0.1:7001 {{ARGS}}

# The smoke comparison and its gates, as CI runs them (exit 1 when a gate fails); JUnit in reports/junit.xml
gate *ARGS:
    cargo build --release -p fanbench
    target/release/fanbench compare --quiet --scenario scenarios/smoke.toml --junit reports/junit.xml {{ARGS}}

# Promote a run to the committed baseline for regression gates
baseline RUN_DIR:
    target/release/fanbench baseline update {{RUN_DIR}}

# Benchmarks against references, release build: `just bench driver`, `just bench ingest`, `just bench e2e`
bench *ARGS:
    cargo build --release -p fanbench
    target/release/fanbench bench {{ARGS}}
