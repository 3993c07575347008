#!/usr/bin/env bash
# Runs every check and test of the workspace, offline, on 127.0.0.1 only.
# First installs what is missing (protoc, etcd, MariaDB, the browsers) with scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

command -v cargo >/dev/null || { echo "test.sh: cargo not found; install Rust (rustup)" >&2; exit 1; }
for c in clippy rustfmt; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" >/dev/null 2>&1 || true
done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
