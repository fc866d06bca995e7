"""Compare decode paths at batch 1 on one model: transformers generate vs medchat's FastDecoder
variants (bf16 / int4, eager / CUDA graphs / torch.compile), with a random LoRA adapter merged, and
check that each variant keeps the adapter's greedy tokens. Prints one RESULT line per measurement.

usage: python benchmarks/decode_probe.py MODEL_DIR NEW_TOKENS [variants...]
       python benchmarks/decode_probe.py MODEL_DIR NEW_TOKENS unsloth   (Unsloth for_inference only)
variants (default all): hf fast-bf16 fast-int4
"""

from __future__ import annotations

import json
import sys
import threading
import time

MODEL, N = sys.argv[1], int(sys.argv[2])
WANT = set(sys.argv[3:]) or {"hf", "fast-bf16", "fast-int4"}
QUESTION = "Why does iron deficiency lead to anaemia?"


def emit(**row) -> None:
    print("RESULT " + json.dumps(row), flush=True)


def prompt_ids(tok) -> list[int]:
    ids = tok.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                  return_dict=False)
    return list(ids if isinstance(ids, list) else ids["input_ids"])


def agree(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


if "unsloth" in WANT:
    import unsloth  # noqa: F401  (first: it patches transformers)
    import torch
    from unsloth import FastLanguageModel

    t0 = time.time()
    model, tok = FastLanguageModel.from_pretrained(MODEL, max_seq_length=4096, dtype=torch.bfloat16,
                                                   load_in_4bit=True)
    FastLanguageModel.for_inference(model)
    ids = torch.tensor([prompt_ids(tok)], device="cuda")
    load_s = time.time() - t0
    for trial in range(2):
        torch.cuda.synchronize()
        s = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=N,
                             min_new_tokens=N, do_sample=False, use_cache=True)
        torch.cuda.synchronize()
        dt = time.perf_counter() - s
    emit(variant="unsloth-for_inference-4bit", tok_s=round(N / dt, 1), load_s=round(load_s, 1),
         mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))
    sys.exit(0)

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from medchat.config import GenerationSettings
from medchat.models.fastdecode import FastDecoder, merge_adapter, stream_text

tok = AutoTokenizer.from_pretrained(MODEL)
IDS = prompt_ids(tok)
GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=N)
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: a syntax/correctness dry run only


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load(with_adapter: bool):
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16, device_map={"": 0} if DEV == "cuda" else None)
    if with_adapter:
        torch.manual_seed(1234)  # the same random adapter every time
        cfg = LoraConfig(r=16, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False)
        model = get_peft_model(model, cfg)
        for name, p in model.named_parameters():
            if "lora_B" in name:  # large enough to change greedy tokens of a random model
                p.data.normal_(0, 0.05)
    return model.eval(), time.time() - t0


def hf_generate(model, n: int, trials: int = 2):
    ids = torch.tensor([IDS], device=DEV)
    for _ in range(trials):
        sync()
        s = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                 min_new_tokens=n, do_sample=False)
        sync()
        dt = time.perf_counter() - s
    return out[0, len(IDS):].tolist(), n / dt


def fast_run(fd: FastDecoder, settings=GREEDY, trials: int = 2):
    """(tokens, overall tok/s, decode tok/s, TTFT) of the last trial; the first warms up graphs."""
    for _ in range(trials):
        fd._cached_ids = []  # time a full prefill each time
        sync()
        s = time.perf_counter()
        first = None
        got = []
        for t in fd.generate(IDS, settings, threading.Event(), eos_ids=()):
            if first is None:
                first = time.perf_counter() - s
            got.append(t)
        dt = time.perf_counter() - s
    return got, len(got) / dt, (len(got) - 1) / (dt - first), first


def text_run(fd: FastDecoder, trials: int = 2):
    for _ in range(trials):
        fd._cached_ids = []
        s = time.perf_counter()
        first = None
        pieces = 0
        ntok = 0
        for text, n in stream_text(fd, tok, IDS, GREEDY, threading.Event(), eos_ids=()):
            if first is None and text:
                first = time.perf_counter() - s
            pieces += 1
            ntok += n
        dt = time.perf_counter() - s
    return ntok, (ntok - 1) / (dt - first), first


ref = {}
if "hf" in WANT:
    model, load_s = load(False)
    plain, tps = hf_generate(model, N)
    emit(variant="hf-generate-bf16", tok_s=round(tps, 1), load_s=round(load_s, 1))
    del model
    torch.cuda.empty_cache()
model, load_s = load(True)
ref_lora, tps = hf_generate(model, min(N, 64), trials=1)
emit(variant="hf-generate-bf16+lora(unmerged)", tok_s=round(tps, 1), tokens=len(ref_lora))
if "hf" in WANT:
    emit(check="adapter changes greedy tokens", agree_with_plain=agree(ref_lora, plain), of=len(ref_lora))

if "fast-bf16" in WANT:
    t0 = time.time()
    fd = FastDecoder(merge_adapter(model), quantize="none", cuda_graphs=False)
    del model
    build_s = time.time() - t0
    combos = ((False, False), (True, False)) if DEV == "cuda" else ((False, False),)
    if "compile" in WANT:
        combos += ((True, True),)
    for graphs, comp in combos:
        try:
            fd.cuda_graphs = graphs
            fd._graphs.clear()
            if comp:
                from medchat.models import fastdecode as F

                fd._pre_c = torch.compile(F._pre_attention, fullgraph=True, dynamic=False)
                fd._post_c = torch.compile(F._post_attention, fullgraph=True, dynamic=False)
                fd.compiled = True
            c0 = time.time()
            got, tps, dec, ttft = fast_run(fd)
            emit(variant="fast-bf16" + ("+graphs" if graphs else "") + ("+compile" if comp else ""),
                 tok_s=round(tps, 1), decode_tok_s=round(dec, 1), ttft_s=round(ttft, 4),
                 agree_with_hf_lora=agree(got, ref_lora), of=len(ref_lora), build_s=round(build_s, 1),
                 warm_and_run_s=round(time.time() - c0, 1),
                 mem_gib=round(torch.cuda.memory_allocated() / 2**30, 2) if DEV == "cuda" else None)
        except Exception as exc:  # noqa: BLE001
            emit(variant=f"fast-bf16 graphs={graphs} compile={comp}", error=f"{type(exc).__name__}: {exc}"[:500])
    del fd
else:
    del model
if DEV == "cuda":
    torch.cuda.empty_cache()

if "fast-int4" in WANT and DEV == "cuda":
    model, _ = load(True)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    fd = FastDecoder(merge_adapter(model), quantize="int4")
    del model
    torch.cuda.empty_cache()
    build_s = time.time() - t0
    for comp in (False, True) if "compile" in WANT else (False,):
        try:
            if comp:
                from medchat.models import fastdecode as F

                fd._pre_c = torch.compile(F._pre_attention, fullgraph=True, dynamic=False)
                fd._post_c = torch.compile(F._post_attention, fullgraph=True, dynamic=False)
                fd.compiled = True
                fd._graphs.clear()
            c0 = time.time()
            got, tps, dec, ttft = fast_run(fd)
            emit(variant="fast-int4+graphs" + ("+compile" if comp else ""), tok_s=round(tps, 1),
                 decode_tok_s=round(dec, 1), ttft_s=round(ttft, 4), agree_with_hf_lora_bf16=agree(got, ref_lora),
                 of=len(ref_lora), build_s=round(build_s, 1), warm_and_run_s=round(time.time() - c0, 1),
                 mem_gib=round(torch.cuda.memory_allocated() / 2**30, 2),
                 peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))
            ntok, dec_text, ttft_text = text_run(fd)
            emit(variant="fast-int4+graphs" + ("+compile" if comp else "") + " text (detokenised)",
                 tokens=ntok, decode_tok_s=round(dec_text, 1), ttft_s=round(ttft_text, 4))
            sampled = GenerationSettings(temperature=0.6, top_p=0.95, max_new_tokens=N, seed=1)
            got, tps, dec, ttft = fast_run(fd, sampled)
            emit(variant="fast-int4+graphs" + ("+compile" if comp else "") + " sampling t=0.6 p=0.95",
                 tok_s=round(tps, 1), decode_tok_s=round(dec, 1))
        except Exception as exc:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            emit(variant=f"fast-int4 compile={comp}", error=f"{type(exc).__name__}: {exc}"[:500])
