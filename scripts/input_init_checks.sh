#!/usr/bin/env bash
# The input-layer initialisation on minilm: the paper's (orthogonal, gain 1.41, default bias) vs fpt's matched one,
# on bit-xor with the default budget, 3 seeds each.   Usage: scripts/input_init_checks.sh [OUT_DIR]
set -euo pipefail
out=${1:-runs/input-init}
fpt=${FPT:-fpt}
for seed in 0 1 2; do
  for init in paper matched; do
    name="bit-xor-$init-s$seed"
    [ -f "$out/$name/result.json" ] || $fpt train --task bit-xor --input-init "$init" --seed "$seed" --patience null \
      --out "$out/$name" --quiet
  done
done
