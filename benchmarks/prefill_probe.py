"""Where the fast path's time to first token goes: prefill of a ~300-token prompt with int4 weights,
for several prefill chunk sizes, plus a kernel profile of one prefill. Prints RESULT lines.

usage: python benchmarks/prefill_probe.py MODEL_DIR [PROMPT_TOKENS]
"""

import json
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM

import medchat.models.fastdecode as fastdecode
from medchat.config import GenerationSettings

MODEL = sys.argv[1]
T = int(sys.argv[2]) if len(sys.argv) > 2 else 304
CUDA = torch.cuda.is_available()  # CPU: a dry run with bf16 weights
model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16, device_map={"": 0} if CUDA else None)
fd = fastdecode.FastDecoder(model, quantize="int4" if CUDA else "none")
del model


def sync():
    if CUDA:
        torch.cuda.synchronize()

prompt = [(i * 37) % 300 + 5 for i in range(T)]
greedy = GenerationSettings(temperature=0.0, max_new_tokens=4)
list(fd.generate(prompt, greedy))  # warm-up: graphs, kernels
fd._ensure_capacity(T + 8)


def timed(fn, n=5):
    out = []
    for _ in range(n):
        fd._cached_ids = []
        sync()
        s = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - s)
    return round(statistics.median(out) * 1000, 2)


with torch.inference_mode():
    for chunk in (512, 256, 128, 64, 32, 16):
        fastdecode.PREFILL_CHUNK = chunk
        print("RESULT " + json.dumps({"prefill_chunk": chunk, "prompt_tokens": T,
                                      "prefill_ms": timed(lambda: fd._prefill(prompt))}), flush=True)
    fastdecode.PREFILL_CHUNK = 512

    def first_token():
        for _ in fd.generate(prompt, greedy):
            break

    print("RESULT " + json.dumps({"first_token_ms_via_generate": timed(first_token)}), flush=True)
    x = torch.randn(T, fd.embed.shape[1], dtype=torch.bfloat16, device=fd.device)
    for rows in (1, 16, 64, 304):
        print("RESULT " + json.dumps({"qkv_int4_mm_rows": rows,
                                      "ms": timed(lambda: [fd.layers[0].qkv(x[:rows]) for _ in range(10)], 3) / 10}),
              flush=True)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU] if CUDA else [ProfilerActivity.CPU]) as prof:
        fd._cached_ids = []
        fd._prefill(prompt)
        sync()
    print(prof.key_averages().table(sort_by="cuda_time_total" if CUDA else "cpu_time_total", row_limit=12), flush=True)
