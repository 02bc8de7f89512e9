#!/usr/bin/env bash
# README command 1: set up, then LoRA-fine-tune SmolLM2-135M-Instruct on this CPU and verify the outputs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/venv.sh train
. .venv/bin/activate
ftlaunch --cloud local examples/quickstart.yaml

ftlaunch fetch --dest outputs/quickstart   # the job just run; every file checked against manifest.json
