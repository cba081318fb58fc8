#!/usr/bin/env bash
# By hand, in a real ComfyUI server: AA2 Sampler's LATENT through ComfyUI's own VAELoader + VAE Decode
# must give the sampler's own frames (issue "ComfyUI-native": the host's LATENT contract). The suite
# tests the same against a re-statement of VAEDecode (tests/comfy_contract.py); this runs the host's.
#
#   COMFY_E2E_CACHE=DIR bash tools/comfy_latent_check/check.sh --comfy-git-dir BARE_COMFYUI_GIT
#
# Makes tiny pack weights plus a random VAE of SD1.5's shape (ComfyUI's VAELoader builds SD1.5's
# architecture, so a tiny VAE would not load there) in a temporary models folder, runs workflow.json
# through ../shared/comfyui-host/comfy_e2e.sh, then compares the two sets of saved PNGs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$repo/.ci-venv/bin/python}"
e2e="${COMFY_E2E:-$repo/../shared/comfyui-host/comfy_e2e.sh}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

"$python" -m aa2 make-tiny-weights "$work/models" > /dev/null
"$python" "$here/make_sd15_shaped_vae.py" "$work/models/vae/sd15-shaped-random-vae.safetensors"
mkdir -p "$work/wf"
cp "$here/workflow.json" "$work/wf/aa2_sampler_core_vae_decode.json"
echo '{"outcome": "success", "min_output_files": 8}' > "$work/wf/aa2_sampler_core_vae_decode.expect.json"
"$e2e" --project "$repo" --expect-nodes LoadAA2Model,AA2Sampler --models-dir "$work/models" \
  --run-dir "$work/run" "$@" "$work/wf/aa2_sampler_core_vae_decode.json"
"$python" "$here/compare.py" "$work/run"
