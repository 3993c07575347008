#!/usr/bin/env bash
# Runs every check and test of the workspace, offline, on 127.0.0.1 only.
# First installs what is missing (protoc, etcd) with scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

command -v cargo >/dev/null || { echo "test.sh: cargo not found; install Rust (rustup)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
