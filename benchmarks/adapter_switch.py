"""The fast decode path with a LoRA adapter, through the chat engine: load with the adapter, stream,
switch to the bare base model and back (each switch rebuilds the decoder), and check that the
adapter's greedy text comes back. Prints one RESULT line per step.

usage: python benchmarks/adapter_switch.py MODEL_DIR [NEW_TOKENS]
"""

import json
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from medchat.config import load_settings
from medchat.chatformat.messages import Message
from medchat.engine.backends import open_local
from medchat.engine.session import stream_events

MODEL = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 64
ADAPTER = Path("/tmp/medchat-random-adapter")
MSGS = [Message("user", "Why does iron deficiency lead to anaemia?")]


def emit(**row):
    print("RESULT " + json.dumps(row), flush=True)


t = time.time()
base = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16)
torch.manual_seed(0)
cfg = LoraConfig(r=16, lora_alpha=16, init_lora_weights=False,
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
peft_model = get_peft_model(base, cfg)
peft_model.save_pretrained(ADAPTER)
del base, peft_model
emit(step="random LoRA r16 saved", s=round(time.time() - t, 1))

settings = load_settings({"model": MODEL, "adapter": str(ADAPTER), "generation.temperature": "0",
                          "generation.max_new_tokens": str(N)})


def reply(backend):
    list(stream_events(backend, MSGS, settings.generation))  # warm-up (graph capture)
    done = list(stream_events(backend, MSGS, settings.generation))[-1]
    return done.reasoning + done.answer, done.stats


t = time.time()
backend = open_local(settings, lambda m: print(m, file=sys.stderr))
emit(step="open with adapter", s=round(time.time() - t, 1), decoder=backend.info.decoder, adapter=backend.info.adapter)
with_adapter, stats = reply(backend)
emit(step="stream with adapter", tokens=stats.completion_tokens, tok_s=round(stats.tok_per_s, 1))
t = time.time()
backend.set_adapter(None)
emit(step="switch to base", s=round(time.time() - t, 1))
plain, stats = reply(backend)
emit(step="stream base", tokens=stats.completion_tokens, tok_s=round(stats.tok_per_s, 1),
     differs_from_adapter=plain != with_adapter)
t = time.time()
backend.set_adapter(str(ADAPTER))
emit(step="switch back to adapter", s=round(time.time() - t, 1))
again, stats = reply(backend)
emit(step="stream adapter again", same_text_as_first=again == with_adapter,
     gpu_mem_gib=round(torch.cuda.memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None)
