#!/usr/bin/env bash
# The figure to report: the raw Unsloth loop and `medchat finetune` (shipped defaults, seq 2048)
# alternately, ROUNDS times each, unprofiled, in one command (processes here differ by up to 10 %).
# usage (on the GPU machine, checkout root): source .gpu/env.sh; bash benchmarks/h100_train_ab.sh [OUTDIR [ROUNDS]]
# OUTDIR defaults to benchmarks/results/<date>-<gpu>/h100_train_ab (python3 benchmarks/harness.py results-dir);
# ROUNDS to 2. Every RESULT line goes to OUTDIR/results.txt. The 8B-shape random model goes to /tmp/l8b when it
# is missing (benchmarks/make_model.py).
set -u
case ${1:-} in -h|--help) sed -n '2,7s/^# \{0,1\}//p' "$0"; exit 0 ;; esac
out=${1:-$(python3 benchmarks/harness.py results-dir)/h100_train_ab}; rounds=${2:-2}
mkdir -p "$out"
[ -d /tmp/l8b ] || python3 benchmarks/make_model.py /tmp/l8b 8b > "$out/make_model.log" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt"
for r in $(seq "$rounds"); do
  python3 .gpu/bench.py /tmp/l8b unsloth 2048 2 8 16 2>> "$out/raw.err" | grep RESULT | tee -a "$out/results.txt"
  PROBE_PROFILE=0 python3 benchmarks/train_probe.py medchat /tmp/l8b --steps 20 --note "round $r" 2>> "$out/medchat.err" | tee -a "$out/medchat.log" | grep RESULT | tee -a "$out/results.txt"
done
