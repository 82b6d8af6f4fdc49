#!/usr/bin/env bash
# Reproduces the serving figures: four short minilm runs exported as patches (patch size vs the backbone on disk),
# reloaded and served predictions vs the trained runs, memory for N = 1, 10, 100 tasks, and the load test with and
# without cross-task batching (3 short tasks at 6 and 32 clients; 4 tasks with listops at 8 clients).
# Usage: scripts/serve_checks.sh [OUT_DIR] [RESULTS_DIR]   (about 25 minutes on a 2-core CPU)
# A finished run is skipped and a killed one resumed, so the script can be stopped and started again.
set -euo pipefail
out=${1:-runs/serve}
results=${2:-results/serve}
fpt=${FPT:-fpt}
python=${PYTHON:-python}
run() {  # run NAME fpt-train-options...
  local name=$1; shift
  [ -f "$out/$name/result.json" ] || $fpt train "$@" --threads 1 --resume --out "$out/$name" --quiet
  [ -f "$out/$name.fpt.safetensors" ] || $fpt export "$out/$name" --out "$out/$name.fpt.safetensors"
}
run xor --task bit-xor --steps 150 --eval-every 50 --task-args '{val_size: 200, test_size: 500}'
run digits --task digits --steps 200 --eval-every 100
run listops --task listops --steps 100 --eval-every 50 --task-args '{train_size: 2000, val_size: 100, test_size: 200}'
run gunpoint --task ucr:GunPoint --task-args '{patch: 5}' --steps 100 --eval-every 50
short=(--patch "$out/xor.fpt.safetensors" --patch "$out/digits.fpt.safetensors" --patch "$out/gunpoint.fpt.safetensors")
all=("${short[@]}" --patch "$out/listops.fpt.safetensors")
$python scripts/loadtest.py --verify "${all[@]}" --out "$results/verify.json"
$python scripts/loadtest.py --memory "${all[@]}" --out "$results/memory.json"
load=(--duration 15 --repeat 2)
$python scripts/loadtest.py "${short[@]}" --clients 6 "${load[@]}" --out "$results/loadtest-3tasks-6clients.json"
$python scripts/loadtest.py "${short[@]}" --clients 32 "${load[@]}" --out "$results/loadtest-3tasks-32clients.json"
$python scripts/loadtest.py "${all[@]}" --clients 8 "${load[@]}" --out "$results/loadtest-4tasks-8clients.json"
