"""CPU decode, interleaved A/B in one process (so that load from other jobs hits every variant alike):
transformers generate vs medchat's loop (exact ops, and CUDA's fused ops), on one model folder.

usage: python benchmarks/cpu_ab.py MODEL_DIR [NEW_TOKENS] [ROUNDS]
"""

import json
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from medchat.config import GenerationSettings
from medchat.models.fastdecode import FastDecoder

MODEL = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 64
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
tok = AutoTokenizer.from_pretrained(MODEL)
ids = tok.apply_chat_template([{"role": "user", "content": "Why does iron deficiency cause anaemia?"}],
                              add_generation_prompt=True, return_dict=False)
ids = list(ids if isinstance(ids, list) else ids["input_ids"])


def load():
    return AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16).eval()


hf = load()
exact, fused = FastDecoder(load()), FastDecoder(load(), fused_ops=True)
greedy = GenerationSettings(temperature=0.0, max_new_tokens=N)
x = torch.tensor([ids])


def run_hf():
    with torch.inference_mode():
        hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N, min_new_tokens=N, do_sample=False)


def run(dec):
    dec._cached_ids = []
    list(dec.generate(ids, greedy))


variants = {"generate": run_hf, "loop-exact": lambda: run(exact), "loop-fused": lambda: run(fused)}
times = {k: [] for k in variants}
for fn in variants.values():
    fn()  # warm-up
for _ in range(ROUNDS):
    for name, fn in variants.items():
        s = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - s)
res = {k: round(N / statistics.median(v), 2) for k, v in times.items()}
res["loop_exact_vs_generate"] = round(res["loop-exact"] / res["generate"], 2)
res["loop_fused_vs_generate"] = round(res["loop-fused"] / res["generate"], 2)
print("RESULT " + json.dumps({"new_tokens": N, "rounds": ROUNDS, "threads": torch.get_num_threads(), **res}))
