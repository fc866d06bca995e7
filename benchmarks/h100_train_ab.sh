#!/usr/bin/env bash
# The figure to report: the raw Unsloth loop and `medchat finetune` (shipped defaults, seq 2048)
# alternately, ROUNDS times each, unprofiled, in one command (processes here differ by up to 10 %).
# usage (on the GPU machine, checkout root): source .gpu/env.sh; bash benchmarks/h100_train_ab.sh OUTDIR [ROUNDS]
set -u
out=${1:-/tmp/train-ab}; rounds=${2:-2}
mkdir -p "$out"
[ -d /tmp/l8b ] || python3 .gpu/mkmodel.py /tmp/l8b 8b > "$out/mkmodel.log" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt"
for r in $(seq "$rounds"); do
  python3 .gpu/bench.py /tmp/l8b unsloth 2048 2 8 16 2>> "$out/raw.err" | grep RESULT | tee -a "$out/results.txt"
  PROBE_PROFILE=0 python3 benchmarks/train_probe.py medchat /tmp/l8b --steps 20 2>> "$out/medchat.err" | tee -a "$out/medchat.log" | grep RESULT | tee -a "$out/results.txt"
done
