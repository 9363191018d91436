#!/usr/bin/env bash
# The project's test command (README): everything CI checks, in order of
# cheapest failure first. Run from anywhere; it works in the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
SECONDS=0

step "format"
cargo fmt --all -- --check

step "clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Sans-IO cores must build without their runtimes.
cargo clippy -p wire --no-default-features --locked -- -D warnings
cargo clippy -p libgossip --no-default-features --locked -- -D warnings
cargo clippy -p libtransport --no-default-features --locked -- -D warnings
# The io_uring backend is feature-gated; lint it too.
cargo clippy -p libtransport --features uring --all-targets --locked -- -D warnings
# verifyd with only the two backends that need no cargo feature.
cargo clippy -p verifyd --no-default-features --all-targets --locked -- -D warnings

step "docs (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "tests (nextest)"
cargo nextest run --workspace --locked --no-fail-fast

step "io_uring backend tests (feature uring)"
# The tests skip when the kernel refuses io_uring; CI runs on a kernel that
# allows it, so there a refusal fails them instead of passing silently.
if [[ "${CI:-}" == "true" ]]; then export TERN_REQUIRE_URING=1; fi
cargo nextest run -p libtransport --features uring --locked -E 'test(/uring/)'
unset TERN_REQUIRE_URING

step "libtransport examples run (crates using only libtransport's public API)"
cargo build -p libtransport --examples --locked
for example in "echo" "chat" "bulk 16"; do
  # shellcheck disable=SC2086 # the example's arguments split on purpose
  timeout 120 "${CARGO_TARGET_DIR:-target}/debug/examples/"$example
done

step "libgossip examples run (publish and DMs between three nodes on loopback)"
cargo build -p libgossip --examples --locked
timeout 120 "${CARGO_TARGET_DIR:-target}/debug/examples/gossip_chat"

step "doc tests"
cargo test --workspace --doc --locked

step "loom models"
scripts/loom.sh

step "fuzz targets build and replay their seed corpus"
scripts/fuzz-smoke.sh

echo
echo "all checks passed in ${SECONDS}s"
