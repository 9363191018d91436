#!/usr/bin/env bash
# Builds the fuzz targets (stable toolchain, no sanitizer) and replays each
# committed seed corpus through its target, so a decoder that panics on a seed
# fails CI; then gives each target a short, seeded mutation run (bounded by
# runs and time) from a scratch copy of its corpus. Real fuzzing is a manual
# command: see fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# One target per line, so branches adding targets merge without conflict.
targets=(
  frame_decoder
  schema_hello
  schema_error
  schema_verify
  schema_relay
  schema_admin
  schema_client
  verify_request
  ack_message
  stream_decoder
  gossip_message
  gossip_node_ops
)
runs="${FUZZ_SMOKE_RUNS:-3000}"
seconds="${FUZZ_SMOKE_SECONDS:-4}"

cargo build --manifest-path fuzz/Cargo.toml --bins
bin="${CARGO_TARGET_DIR:-fuzz/target}/debug"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  n="$(find "$corpus" -type f | wc -l)"
  if [[ "$n" -eq 0 ]]; then
    echo "fuzz-smoke: no seeds in $corpus" >&2
    exit 1
  fi
  # -runs=0: execute every seed once, then stop. Crashes land in $work.
  if ! "$bin/$t" -runs=0 -artifact_prefix="$work/" "$corpus" >"$work/$t.replay.log" 2>&1; then
    cat "$work/$t.replay.log" >&2
    echo "fuzz-smoke: $t crashed replaying its seed corpus" >&2
    exit 1
  fi
  cp -r "$corpus" "$work/$t.corpus"
  if ! "$bin/$t" -runs="$runs" -max_total_time="$seconds" -max_len=65536 -seed=1 \
      -artifact_prefix="$work/" "$work/$t.corpus" >"$work/$t.run.log" 2>&1; then
    cat "$work/$t.run.log" >&2
    echo "fuzz-smoke: $t crashed in the mutation run (seed 1)" >&2
    exit 1
  fi
  echo "fuzz-smoke: $t ok ($n seeds replayed, $(grep -o 'Done [0-9]* runs' "$work/$t.run.log" | tail -1))"
done
echo "fuzz-smoke: all ${#targets[@]} targets passed"
