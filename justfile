# Everything a person types twice. `just --list` shows the recipes.

# The main job from a fresh machine (for now: the whole stack and one sign-up end to end)
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
