#!/usr/bin/env bash
# Model-checks the shared-memory ring with loom: the production code, built
# with `--cfg tern_loom` so its atomics come from loom. A separate target dir
# keeps these flags from invalidating the normal build cache.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=target/loom
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
RUSTFLAGS="--cfg tern_loom" cargo test -p loom-tests --release --locked
