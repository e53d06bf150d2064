#!/usr/bin/env bash
# Compiles the TypeScript sources to JavaScript in dist/ (what bin/reapi.mjs runs: a command starts
# in a fraction of the time on-the-fly compilation takes), with the files the code reads next to
# itself (protos, Lua scripts, thread scripts). `npm run build`; scripts/bootstrap.sh runs it when
# dist/ is missing or older than a source. tsx stays for development and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist.tmp
npx tsc -p tsconfig.build.json --outDir dist.tmp
while IFS= read -r f; do
  mkdir -p "dist.tmp/$(dirname "$f")"
  cp "$f" "dist.tmp/$f"
done < <(git ls-files 'protos/*.proto' 'protos/**/*.proto' 'scheduler/**/*.lua' 'clients/**/*.mjs' 2>/dev/null || find protos scheduler clients -name '*.proto' -o -name '*.lua' -o -name '*.mjs')
# Marks when this build was made: bin/reapi.mjs runs it only while no source is newer.
touch dist.tmp/.built
rm -rf dist
mv dist.tmp dist
echo "build: dist/ ready" >&2
