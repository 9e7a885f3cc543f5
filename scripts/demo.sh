#!/usr/bin/env bash
# `npm run demo`: install what is missing, start the local services (.stack/dev), then the demo itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  # `npm install` honours package-lock.json; `npm ci` would refuse it, because npm 11 writes locks without the
  # other platforms' optional packages (msgpackr-extract, unrs-resolver) and then reports them missing.
  npm install --no-audit --no-fund
fi
bash scripts/stack.sh up >/dev/null
# The web application the gateway serves at / (issue 13).
npm run --silent build:web >/dev/null
exec node node_modules/tsx/dist/cli.mjs scripts/demo.ts "$@"
