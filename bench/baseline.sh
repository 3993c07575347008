#!/usr/bin/env bash
# Builds the `crawler` binary of a git revision into DEST, in the workspace's target directory
# (the dependencies are shared, so only the workspace's crates are rebuilt).
#
#   bench/baseline.sh REV DEST
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REV=$1
DEST=$2
SRC=$ROOT/bench/out/baseline-src
# Already built from this revision: keep it.
if [ -x "$DEST" ] && [ "$(cat "$DEST.rev" 2>/dev/null)" = "$(git rev-parse "$REV")" ]; then exit 0; fi
echo "building the baseline $REV (release)..." >&2
rm -rf "$SRC" && git worktree prune
git worktree add -q --detach "$SRC" "$REV"
(cd "$SRC" && CARGO_TARGET_DIR=$ROOT/target cargo build --release --locked -q -p crawler)
mkdir -p "$(dirname "$DEST")"
cp "$ROOT/target/release/crawler" "$DEST"
# Cargo names a workspace crate's artifacts by its path relative to the workspace root and
# records its sources relative to the crate, so the current tree's next build would take the
# baseline's artifacts as up to date for every crate whose files are older than them (it
# linked the baseline's crawler-coord into the current worker, which then failed to compile;
# a crate whose API had not changed would have been measured as the baseline's, silently).
# Newer sources make it rebuild the workspace's crates.
find "$ROOT/crates" -name '*.rs' -exec touch {} +
git rev-parse "$REV" > "$DEST.rev"
git worktree remove --force "$SRC"
