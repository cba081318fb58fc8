#!/usr/bin/env bash
# Issue 12 in one device call: our pipeline against Moore-AnimateAnyone's Pose2VideoPipeline on one GPU,
# same random SD1.5-shaped weights in Moore's four-file layout, 512x768, 16 frames, 25 DDIM steps,
# cfg 3.5, fp16. Per side, in a fresh process: load, the first call, the warm call (s/step), 48 frames
# warm, peak VRAM allocated, peak host RSS; plus our low-VRAM mode (SamplingSettings(offload="model"))
# at 16 and 64 frames. One table (tools.moore_bench); with $OUT set, gpu_check.json and gpu_check.txt
# land there. About 4 minutes expected (an estimate: bench/README.md); BUDGET guards the sides.
#
# Before the device call, once, from the repo root on this machine (both ignored; 6.5 MB to carry):
#   printf '/.moore/\n/.whl/\n' >> .git/info/exclude
#   mkdir -p .moore && git -C MOORE_CLONE archive HEAD \
#       src configs/inference/inference_v2.yaml | tar -x -C .moore      # MOORE_CLONE: a Moore-AnimateAnyone checkout
#   git -C MOORE_CLONE rev-parse HEAD > .moore/COMMIT
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl diffusers==0.42.1       # the device has torch, transformers, accelerate, einops, safetensors,
#                                       # opencv, pyyaml, pillow, tqdm; not diffusers
# The device call (carry [".whl", ".moore"], timeout_s 540):
#   bash bench/gpu_check.sh 2>&1 | tee $OUT/gpu_check.log
#
# On a CPU, the same plumbing in about a minute (tiny widths):
#   PYTHON=.venv/bin/python PRESET=tiny DEVICE=cpu DTYPE=fp32 SIZE=64x64 FRAMES=4 STEPS=2 \
#       LONG=2 LOWVRAM_LONG=3 bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

py="${PYTHON:-python3}"                  # the device's python3 holds torch
preset="${PRESET:-sd15}"                 # sd15: random SD1.5 + AnimateDiff v2 + CLIP ViT-L/14 shapes; tiny
device="${DEVICE:-cuda}"
dtype="${DTYPE:-fp16}"                   # Moore's shipped weight_dtype
size="${SIZE:-512x768}"                  # HxW
frames="${FRAMES:-16}"                   # the 1x video, also both sides' clip / window length
steps="${STEPS:-25}"
cfg="${CFG:-3.5}"
long="${LONG:-3}"                        # ours and Moore's long video: LONG x FRAMES (48), warm
lowvram_long="${LOWVRAM_LONG:-4}"        # low-VRAM's long video: 64 frames, the target's "4x the length"
sides="${SIDES:-aa2,moore,aa2-lowvram}"
moore="${MOORE:-.moore}"
weights="${WEIGHTS:-${TMPDIR:-/tmp}/aa2-bench-weights}"
budget="${BUDGET:-420}"                  # seconds for the sides; a side past it is stopped, its calls kept
vae_chunk="${VAE_CHUNK:-0}"              # our frames per VAE call; 0: as many as free GPU memory allows
flops=(); [ "${FLOPS:-0}" = 1 ] || flops=(--no-flops)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}" PYTHONUNBUFFERED=1

say() { printf '\n== %s  (%s)\n' "$*" "$(date -u +%H:%M:%S)" >&2; }

if ! "$py" -c "import diffusers" 2>/dev/null; then
  wheel=$(ls .whl/diffusers-*.whl 2>/dev/null | head -n 1)
  [ -n "$wheel" ] || { echo "no diffusers here and no .whl/diffusers-*.whl to install: see the top of $0" >&2; exit 2; }
  site="${TMPDIR:-/tmp}/aa2-site"  # scratch for the wheel: the device machine has no diffusers
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheel"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [[ ",$sides," == *",moore,"* && ! -f "$moore/src/pipelines/pipeline_pose2vid.py" ]]; then
  echo "no Moore-AnimateAnyone work tree at $moore: see the top of $0 (or SIDES=aa2,aa2-lowvram)" >&2; exit 2
fi
"$py" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" >&2
[ "$device" != cuda ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true

if [ "$preset" != tiny ]; then
  say "random $preset weights in Moore's layout under $weights/$preset (made on $device, reused when complete)"
  "$py" -m tools.moore_bench_weights "$weights/$preset" --preset "$preset" --device "$device" \
    || "$py" -m tools.moore_bench_weights "$weights/$preset" --preset "$preset" --device cpu
fi

say "sides: $sides, $preset $size, $frames frames, $steps steps, cfg $cfg, $dtype on $device"
json=(); [ -z "${OUT:-}" ] || json=(--out "$OUT/gpu_check.json")
set +e
"$py" -m tools.moore_bench "$moore" --presets "$preset" --device "$device" --dtype "$dtype" --size "$size" \
  --frames "$frames" --steps "$steps" --cfg "$cfg" --long "$long" --long-presets "$preset" \
  --lowvram-long "$lowvram_long" --sides "$sides" --weights-dir "$weights" --vae-chunk "$vae_chunk" \
  --budget "$budget" "${flops[@]}" "${json[@]}" | tee "${OUT:-/tmp}/gpu_check.txt"
status=${PIPESTATUS[0]}
say "done (exit $status)"
exit "$status"
