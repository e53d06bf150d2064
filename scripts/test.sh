#!/usr/bin/env bash
# `npm test`: bootstrap what is missing, then every test: unit (one layer), integration (real
# gRPC, bwrap, Redis) and e2e (real Bazel). Pass file paths to run only those.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test
if (( $# )); then
  files=("$@")
else
  files=(test/unit/*.test.ts test/integration/*.test.ts test/e2e/*.test.ts)
fi
exec node --import tsx --test --test-timeout=900000 --test-reporter=spec "${files[@]}"
