#!/usr/bin/env bash
# README command 2: set up everything the tests need (Python extras, Docker engine packages,
# headless Chromium), then run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ -x .ci/docker-setup.sh ]; then
  .ci/docker-setup.sh
fi
scripts/venv.sh all,dev
. .venv/bin/activate
exec python -m pytest -q -ra "$@"
