#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs unit and integration tests.
# Integration tests start their own isolated stack (temporary folder, free ports), so this works while the demo runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  # `npm install` honours package-lock.json; `npm ci` would refuse it, because npm 11 writes locks without the
  # other platforms' optional packages (msgpackr-extract, unrs-resolver) and then reports them missing.
  npm install --no-audit --no-fund
fi
# Debian packages (PostgreSQL, Redis, Orthanc + plugins, DCMTK, dicom3tools, Chromium for the viewer test),
# installed when missing and run as root; the integration tests' global setup then starts an isolated stack.
pkgdir="$(mktemp -d -t aperture-pkg-XXXX)"
STACK_DIR="$pkgdir" WITH_BROWSER=1 bash scripts/stack.sh packages
rm -rf "$pkgdir"
# The de-identifier's sample test (test/deid-samples.itest.ts) also reads the test files of Debian's python3-pydicom.
if [[ ! -d /usr/lib/python3/dist-packages/pydicom/data/test_files ]]; then
  [[ $(id -u) -eq 0 ]] || { echo "missing Debian package python3-pydicom (sudo apt-get install python3-pydicom)" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-pydicom
fi
npx tsc -p tsconfig.json --noEmit
npx jest --selectProjects unit "$@"
# Two workers by default, each with its own stack (test/helpers/global-setup.ts): most of a test waits on servers.
npx jest --selectProjects integration --maxWorkers="${APERTURE_TEST_WORKERS:-2}" "$@"
