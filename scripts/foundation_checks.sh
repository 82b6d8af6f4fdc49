#!/usr/bin/env bash
# Reproduces the figures quoted for the foundation: default runs on bit-xor, digits and ucr:GunPoint, and
# pretrained vs random-init minilm at the same step budget on bit-memory and listops over 3 seeds.
# Usage: scripts/foundation_checks.sh [OUT_DIR]   (about 45 minutes on a 2-core CPU)
set -euo pipefail
out=${1:-runs/foundation}
fpt=${FPT:-fpt}
$fpt train --task bit-xor --backbone minilm --seed 0 --out "$out/bit-xor" --quiet
$fpt train --task digits --backbone minilm --seed 0 --out "$out/digits" --quiet
$fpt train --task ucr:GunPoint --backbone minilm --seed 0 --out "$out/gunpoint" --quiet
for seed in 0 1 2; do
  for init in pretrained random; do
    $fpt train --task listops --init "$init" --seed "$seed" --steps 500 --patience null \
      --out "$out/listops-$init-s$seed" --quiet
  done
done
for seed in 0 1 2; do
  for init in pretrained random; do
    $fpt train --task bit-memory --init "$init" --seed "$seed" --steps 300 --batch-size 16 --patience null \
      --out "$out/bit-memory-$init-s$seed" --quiet
  done
done
