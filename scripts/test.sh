#!/usr/bin/env bash
# README command 2: set up everything the tests need, then run the whole test suite.
#   Debian packages: Docker engine, mmdebstrap, docker-registry (.ci/docker-setup.sh; the tests start
#   and stop their own private dockerd), headless Chromium (renders the bench report);
#   Python: every extra in one resolve (scripts/venv.sh all,dev).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
bash .ci/docker-setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
fi
scripts/venv.sh all,dev
. .venv/bin/activate
exec python -m pytest -q -ra --durations=15 "$@"
