#!/usr/bin/env bash
# Compiles the TypeScript sources to JavaScript in dist/ (what bin/reapi.mjs runs: a command starts
# in a fraction of the time on-the-fly compilation takes), with the files the code reads next to
# itself (protos, Lua scripts, the build-script trampoline). `npm run build`; scripts/bootstrap.sh
# runs it when dist/ is missing or older than a source. tsx stays for development and the tests.
#   scripts/build.sh [--out DIR]   (default dist; the tests build elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist
[[ "${1:-}" == "--out" ]] && out=$2
tmp="$out.tmp"
rm -rf "$tmp"
npx tsc -p tsconfig.build.json --outDir "$tmp"
while IFS= read -r f; do
  mkdir -p "$tmp/$(dirname "$f")"
  cp "$f" "$tmp/$f"
done < <(git ls-files 'protos/*.proto' 'protos/**/*.proto' 'scheduler/**/*.lua' 'clients/**/*.mjs' 2>/dev/null || find protos scheduler clients -name '*.proto' -o -name '*.lua' -o -name '*.mjs')
# Marks when this build was made: bin/reapi.mjs runs it only while no source is newer.
touch "$tmp/.built"
rm -rf "$out"
mv "$tmp" "$out"
echo "build: $out/ ready" >&2
