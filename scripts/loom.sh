#!/usr/bin/env bash
# Model-checks the shared-memory ring with loom: the production code, built
# with `--cfg tern_loom` so its atomics, locks and cells come from loom.
#
# 1. The models (loom-tests/tests/ring.rs) must pass.
# 2. With `--cfg tern_loom_weak_publish` the store that publishes records is
#    Relaxed instead of Release; the stream model must then FAIL with a loom
#    causality violation (the test `weakened_publish_is_caught` asserts that).
#    If the weakened model passes, the models cannot see the bug they exist
#    for, and this script fails.
#
# Separate target dirs keep these flags from invalidating the normal build
# cache (and each other's). LOOM_MAX_PREEMPTIONS bounds the search; 4 runs
# in seconds, 5 in under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-4}"

echo "loom: ring models (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg tern_loom" \
  cargo test -p loom-tests --release --locked --test ring

echo "loom: the models must catch a Relaxed publish store"
CARGO_TARGET_DIR=target/loom-weak RUSTFLAGS="--cfg tern_loom --cfg tern_loom_weak_publish" \
  cargo test -p loom-tests --release --locked --test ring -- weakened_publish_is_caught
