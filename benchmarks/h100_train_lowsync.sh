#!/usr/bin/env bash
# The raw Unsloth loop, `medchat finetune` as shipped and with PROBE_LOWSYNC=1 (no per-micro-batch NaN check or
# token-count read-back), alternately, ROUNDS times, unprofiled, in one command.
# usage (on the GPU machine, checkout root): source .gpu/env.sh; bash benchmarks/h100_train_lowsync.sh OUTDIR [ROUNDS]
set -u
out=${1:-/tmp/train-lowsync}; rounds=${2:-2}
mkdir -p "$out"
[ -d /tmp/l8b ] || python3 .gpu/mkmodel.py /tmp/l8b 8b > "$out/mkmodel.log" 2>&1
for r in $(seq "$rounds"); do
  python3 .gpu/bench.py /tmp/l8b unsloth 2048 2 8 16 2>> "$out/raw.err" | grep RESULT | tee -a "$out/results.txt"
  PROBE_PROFILE=0 python3 benchmarks/train_probe.py medchat /tmp/l8b --steps 20 2>> "$out/medchat.err" | grep RESULT | tee -a "$out/results.txt"
  PROBE_LOWSYNC=1 PROBE_PROFILE=0 python3 benchmarks/train_probe.py medchat /tmp/l8b --steps 20 2>> "$out/lowsync.err" | grep RESULT | tee -a "$out/results.txt"
done
