#!/usr/bin/env bash
# Training throughput on the GPU kit, in one command: the raw Unsloth loop (../shared/gpu/bench.py)
# and `medchat finetune` variants on medical-o1-shaped rows, each in a fresh process.
# usage (on the GPU machine, checkout root): source .gpu/env.sh; bash benchmarks/h100_train.sh [OUTDIR [VARIANT...]]
# OUTDIR defaults to benchmarks/results/<date>-<gpu>/h100_train (python3 benchmarks/harness.py results-dir).
# A VARIANT is a quoted list of `medchat finetune` flags (a leading VAR=VALUE is set in the environment);
# default: the shipped defaults (packed micro-batches of 2 x 2,048 tokens, 2 per optimizer step), then 1 per step.
# The 8B-shape random model goes to /tmp/l8b when it is missing (benchmarks/make_model.py).
set -u
case ${1:-} in -h|--help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;; esac
out=${1:-$(python3 benchmarks/harness.py results-dir)/h100_train}; shift || true
mkdir -p "$out"
[ -d /tmp/l8b ] || python3 benchmarks/make_model.py /tmp/l8b 8b > "$out/make_model.log" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt"
python3 .gpu/bench.py /tmp/l8b unsloth 2048 2 8 16 2> "$out/raw-bench.err" | grep RESULT | tee "$out/raw-bench.txt"
[ "${RAW_PROBE:-1}" = 0 ] || python3 benchmarks/train_probe.py raw /tmp/l8b --steps 12 2> "$out/raw-probe.err" | grep RESULT | tee "$out/raw-probe.txt"
[ $# -gt 0 ] || set -- "" "--grad-accum 1"
i=0
for flags in "$@"; do
  i=$((i + 1))
  flags_env=""
  case $flags in *=*\ *) flags_env=${flags%% *}; flags=${flags#* } ;; esac
  # shellcheck disable=SC2086  # flags are words on purpose
  env $flags_env python3 benchmarks/train_probe.py medchat /tmp/l8b --steps 16 -- $flags 2> "$out/medchat-$i.err" | grep RESULT | tee "$out/medchat-$i.txt"
done
