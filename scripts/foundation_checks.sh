#!/usr/bin/env bash
# Reproduces the figures quoted for the foundation: default runs on bit-xor, digits and ucr:GunPoint, and
# pretrained vs random-init minilm at the same step budget on listops and bit-memory over 3 seeds.
# Usage: scripts/foundation_checks.sh [OUT_DIR]   (about 40 minutes on an idle 2-core CPU)
# A run whose result.json exists is skipped and a half-done one resumes from its checkpoint, so the script can be
# stopped and started again.
set -euo pipefail
out=${1:-runs/foundation}
fpt=${FPT:-fpt}
run() {  # run NAME fpt-train-options...
  local name=$1; shift
  local resume=()
  [ -f "$out/$name/checkpoint.safetensors" ] && resume=(--resume)
  [ -f "$out/$name/result.json" ] || $fpt train "$@" --out "$out/$name" --quiet "${resume[@]}"
}
run bit-xor --task bit-xor --backbone minilm --seed 0
run digits --task digits --backbone minilm --seed 0
run gunpoint --task ucr:GunPoint --backbone minilm --seed 0
for seed in 0 1 2; do
  for init in pretrained random; do
    run "listops-$init-s$seed" --task listops --init "$init" --seed "$seed" --steps 300 --patience null
  done
done
for seed in 0 1 2; do
  for init in pretrained random; do
    run "bit-memory-$init-s$seed" --task bit-memory --init "$init" --seed "$seed" --steps 250 --batch-size 16 \
      --patience null --task-args '{val_size: 250}'
  done
done
