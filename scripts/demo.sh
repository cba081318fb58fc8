#!/usr/bin/env bash
# Fresh machine -> a rendered demo video: install into a venv, then run `python -m aa2 demo`.
# Torch: one already importable in the venv is kept (or AA2_TORCH=skip); otherwise torch is installed
# first (AA2_TORCH_VERSION, default ==2.13.0), so the project's install never chooses it.
# With the shipped SynthWorld weights the demo animates a held-out SynthWorld clip and writes metrics.json
# beside the video; without them it runs tiny random weights, which prove the install only (README "Demo").
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${AA2_VENV:-.venv}"
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
if [ "${AA2_TORCH:-cpu}" != "skip" ] && ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q "torch${AA2_TORCH_VERSION:-==2.13.0}"
fi
python -m pip install -q -e .
python -m aa2 demo --out "${1:-demo.mp4}"
