#!/usr/bin/env bash
# The paper's ablations in miniature on SynthWorld (bench/README.md, "The paper's ablations in
# miniature"): every variant trained with the same world, VAE, steps and seed, and scored on the
# same held-out clips. Needs the world and VAE that bench/synthworld.sh writes first.
#
#   bash bench/synthworld_ablations.sh runs/synthworld-data runs/ablations
#   SIZE=128 VAE=aa2/synthworld/weights/aa2-synthworld.safetensors \
#     bash bench/synthworld_ablations.sh runs/sw128v2-data runs/ablations128   # at the shipped run's size
#   python bench/synthworld_table.py runs/ablations/*
#   ROWS="aa2 precise" bash bench/synthworld_ablations.sh ...   # only these rows (one process per core)
#   SEED=1 bash bench/synthworld_ablations.sh ... runs/ablations-seed1   # another training seed
#
# Resumable: finished stages and scores are skipped. On one CPU thread a variant takes about 12 minutes
# at SIZE=64 and 20-40 minutes at SIZE=128.
set -euo pipefail
cd "$(dirname "$0")/.."
world="${1:-runs/synthworld-data}"
runs="${2:-runs/ablations}"
image_steps="${IMAGE_STEPS:-600}"; motion_steps="${MOTION_STEPS:-150}"; eval_steps="${EVAL_STEPS:-10}"
size="${SIZE:-64}"                 # the world's clip side
seed="${SEED:-0}"                  # initialisation and training; scoring noise stays seed 0 so rows share it
vae="${VAE:-$world/vae}"           # a train.vae folder, a VAE file or a pack checkpoint
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

one() {  # one NAME VARIANT ENV_MASK
  local run="$runs/$1" variant="$2" mask="$3"
  mkdir -p "$run"
  echo "== $1 ($variant, $mask) $(date -u +%H:%M:%S)"
  [ -f "$run/base.safetensors" ] || python -m train.init_model --preset synthworld --variant "$variant" \
    --vae "$vae" --out "$run/base.safetensors" --seed "$seed"
  for stage in image motion; do
    local start="$run/base.safetensors" steps="$image_steps"
    [ "$stage" = motion ] && start="$run/image/aa2-final.safetensors" steps="$motion_steps"
    [ -f "$run/$stage/aa2-final.safetensors" ] || python -m train.train --config train/recipes/synthworld.yaml \
      --stage "$stage" --data "$world/train" --out "$run/$stage" --set "model.base=$start" \
      --set "optim.steps=$steps" --set "data.environment_mask=$mask" --set "data.size=[$size,$size]" \
      --set "optim.seed=$seed" --set run.log_every=50
  done
  score() {  # score NAME [EXTRA...]
    local name="$1"; shift
    [ -f "$run/scores/$name/metrics.json" ] || python -m train.synthworld_eval \
      --checkpoint "$run/motion/aa2-final.safetensors" --data "$world/heldout" --out "$run/scores/$name" \
      --steps "$eval_steps" --environment-mask "$mask" "$@"
  }
  if [ "$variant" = aa1 ]; then  # Table 3's baseline is always pasted into the driving frames
    score trained --composite
    score trained-cross --composite --cross-identity
  else
    score trained
    score trained-cross --cross-identity
  fi
  [ "$1" = aa2 ] && score trained-composite --composite  # AA2 pasted the same way: Table 3's like-for-like row
  return 0
}

declare -A rows=([aa2]="aa2 agnostic" [aa1]="aa1 agnostic" [precise]="aa2 precise" [box]="aa2 box"
                  [no_depth]="no_depth agnostic" [no_objects]="no_objects agnostic"
                  [no_blending]="no_blending agnostic")
for name in ${ROWS:-aa2 aa1 precise box no_depth no_objects no_blending}; do  # ROWS="aa2 precise": two runs side by side
  [ -n "${rows[$name]:-}" ] || { echo "unknown row $name; rows: ${!rows[*]}" >&2; exit 2; }
  # shellcheck disable=SC2086
  one "$name" ${rows[$name]}
done
echo "== done $(date -u +%H:%M:%S)"
