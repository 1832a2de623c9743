#!/usr/bin/env bash
# Installs what fanbench needs on a fresh Debian/Ubuntu machine, and nothing when it is already there.
# Idempotent; safe to run before every command. Needs root or sudo only when something is missing.
set -euo pipefail

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: '$*' needs root; run it as root or install sudo" >&2; exit 2
  fi
}

missing=()
have_pg_server() {
  [ -n "${FANBENCH_PG_BIN:-}" ] && [ -x "$FANBENCH_PG_BIN/initdb" ] && return 0
  command -v initdb >/dev/null && command -v pg_ctl >/dev/null && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
have_pg_server || missing+=(postgresql)
# The broker design's NATS server with JetStream (Debian's is 2.9.x; FANBENCH_NATS_SERVER may name
# another binary).
have_nats_server() {
  [ -n "${FANBENCH_NATS_SERVER:-}" ] && [ -x "$FANBENCH_NATS_SERVER" ] && return 0
  command -v nats-server >/dev/null
}
have_nats_server || missing+=(nats-server)
command -v curl >/dev/null || missing+=(curl)
command -v pgrep >/dev/null || missing+=(procps)
command -v runuser >/dev/null || missing+=(util-linux)
# Headless Chromium, for the browser check of the HTML report (scripts/check-report.sh).
if [ "${1:-}" = "--browser" ]; then
  command -v chromium >/dev/null || missing+=(chromium)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found; install Rust from https://rustup.rs (1.85 or newer)" >&2
  exit 2
fi
