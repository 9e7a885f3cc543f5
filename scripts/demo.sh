#!/usr/bin/env bash
# `npm run demo`: install what is missing, start the local services (.stack/dev), then the demo itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
bash scripts/stack.sh up >/dev/null
exec node node_modules/tsx/dist/cli.mjs scripts/demo.ts "$@"
