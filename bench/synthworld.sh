#!/usr/bin/env bash
# SynthWorld end to end (issue "SynthWorld"): the world, its VAE, a small Animate Anyone 2 trained by
# train/ (image stage, then motion stage), and its scores on held-out clips against ground truth.
# This is what made aa2/synthworld/weights/aa2-synthworld.safetensors and the tables in
# bench/README.md. A benchmark, not a test: on 2 CPU cores about 45 minutes at SIZE=64, about
# 100 at SIZE=128 (measured: VAE 23, image stage 36, motion stage 9, the three scorings 33), and
# about 2.5 hours for the shipped weights' run (VAE 35 min, image stage 75 min at 1 thread on a busy box).
#
#   bash bench/synthworld.sh [RUN_DIR]            (default runs/synthworld)
#   VARIANT=aa1 ENV_MASK=agnostic bash bench/synthworld.sh runs/sw-aa1    # an ablation row
#   SIZE=128 WORLD=runs/sw128-data bash bench/synthworld.sh runs/sw128    # clips of 128x128
#   SIZE=128 VAE_STEPS=4000 IMAGE_STEPS=2500 WORLD=runs/sw128v2-data bash bench/synthworld.sh runs/sw-fixes
#                                                  # the shipped weights (their run reused the VAE the earlier
#                                                  #   shipped file held, with VAE=aa2/synthworld/weights/...;
#                                                  #   VAE_STEPS=4000 trains that VAE; then: python -m aa2 convert
#                                                  #   runs/sw-fixes/motion/aa2-final.safetensors OUT --dtype fp16)
#   REFERENCE_FRAMING=frame SNR_WEIGHTING=min_snr ...   # the earlier recipe, before the two reference fixes
#   TRAIN_SET="data.num_workers=8" ...     # more --set for both train.train stages (a GPU machine's cores)
#   VAE=aa2/synthworld/weights/aa2-synthworld.safetensors ...   # reuse a trained VAE (a train.vae folder,
#                                                  #   a VAE file or a pack checkpoint) instead of training one
#
# Every step is seeded and skips work that is already done, so a stopped run continues.
set -euo pipefail
cd "$(dirname "$0")/.."

run="${1:-runs/synthworld}"
variant="${VARIANT:-aa2}"          # train.init_model --variant: aa2, aa1, no_depth, no_objects, no_blending
env_mask="${ENV_MASK:-agnostic}"   # data.environment_mask: agnostic (eq. 2), precise, box
framing="${REFERENCE_FRAMING:-character}"  # data.reference_framing: character (a portrait reference), frame
weighting="${SNR_WEIGHTING:-min_snr_plus_one}"  # loss.snr_weighting: min_snr_plus_one (Moore's), min_snr
image_steps="${IMAGE_STEPS:-1500}"
motion_steps="${MOTION_STEPS:-400}"
eval_steps="${EVAL_STEPS:-20}"
world="${WORLD:-runs/synthworld-data}"  # shared by every variant: the same clips for every row
size="${SIZE:-64}"                 # clip side in pixels (the figure is about 0.4 of it)
vae_crop="${VAE_CROP:-64}"         # the VAE trains on random crops of this side, scored on whole frames
vae_steps="${VAE_STEPS:-2000}"
vae="${VAE:-$world/vae}"           # the VAE baked into the base; trained below when it is the world's own and missing
videos="${VIDEOS:-512}"            # training clips (the held-out set is always the same 24)
read -r -a train_set <<< "${TRAIN_SET:-}"
py="${PYTHON:-python}"            # python3 on the GPU machine
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

say() { printf '\n== %s  (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

say "world: $videos training clips, 24 held-out clips with cross-identity renders (16 frames, ${size}x${size})"
"$py" -m train.synthworld "$world/train" --videos "$videos" --frames 16 --size "$size" --split train
"$py" -m train.synthworld "$world/heldout" --videos 24 --frames 16 --size "$size" --split heldout --cross-identity

if [ "$vae" = "$world/vae" ] && [ ! -f "$world/vae/config.json" ]; then
  say "VAE ($vae_steps steps of 16 crops of ${vae_crop}x${vae_crop})"
  "$py" -m train.vae --data "$world/train" --eval-data "$world/heldout" --out "$world/vae" --steps "$vae_steps" --seed 0 \
    --size "$size" --crop "$vae_crop"
fi

mkdir -p "$run"
[ -f "$run/base.safetensors" ] || "$py" -m train.init_model --preset synthworld --variant "$variant" \
  --vae "$vae" --out "$run/base.safetensors" --seed 0

stage() {  # stage NAME START STEPS
  local out="$run/$1"
  [ -f "$out/aa2-final.safetensors" ] && return 0
  local resume=()
  [ -f "$out/checkpoints/latest" ] && resume=(--resume)
  say "$1 stage ($3 steps)"
  "$py" -m train.train --config train/recipes/synthworld.yaml --stage "$1" --data "$world/train" --out "$out" \
    --set "model.base=$2" --set "optim.steps=$3" --set "data.environment_mask=$env_mask" \
    --set "data.reference_framing=$framing" --set "loss.snr_weighting=$weighting" \
    --set "data.size=[$size,$size]" "${train_set[@]/#/--set=}" "${resume[@]}"
}
stage image "$run/base.safetensors" "$image_steps"
stage motion "$run/image/aa2-final.safetensors" "$motion_steps"

evaluate() {  # evaluate NAME CHECKPOINT [EXTRA...]
  local name="$1" checkpoint="$2"
  shift 2
  say "scores: $name"
  "$py" -m train.synthworld_eval --checkpoint "$checkpoint" --data "$world/heldout" --out "$run/scores/$name" \
    --steps "$eval_steps" --environment-mask "$env_mask" --reference-framing "$framing" "$@"
}
extra=()
[ "$variant" = aa1 ] && extra=(--composite)
evaluate untrained "$run/base.safetensors" "${extra[@]}"
evaluate trained "$run/motion/aa2-final.safetensors" "${extra[@]}"
evaluate trained-cross "$run/motion/aa2-final.safetensors" --cross-identity "${extra[@]}"
say "done: $run/scores/*/metrics.json"
