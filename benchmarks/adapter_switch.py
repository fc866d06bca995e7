"""Decode speed with a LoRA adapter kept unmerged in the fast loop, and how long an adapter switch takes.

One model load (the chat backend as `medchat` opens it: shipped defaults, so int4 + CUDA graphs on a GPU),
then, each reply a 256-token greedy answer timed through ``stream_events`` (text reaching the consumer):

  1. no adapter (two replies: warm-up, then the reported one);
  2. switch to adapter A (read from its folder, copied to the GPU): seconds; the first reply after it
     (captures the CUDA graphs again: the matrices are new) and a second one;
  3. A → B (same shapes: copied into the same buffers, graphs kept), B → none, none → A: seconds each
     and the reply after each; the greedy text must come back the same for the same adapter.

The adapters are random LoRA matrices (rank ``--rank``, every linear layer of every block, B drawn from
N(0, ``--b-std``)) written straight to ``adapter_model.safetensors`` for the model's shape: they cost the
decode loop exactly what a trained adapter of that rank costs. Pair it, in the same call, with
``medchat bench --model MODEL --adapter ADAPTER_A`` (a fresh load with the adapter: the load-time fidelity
probe, and Unsloth ``for_inference`` with the same adapter).

usage: python benchmarks/adapter_switch.py MODEL [--rank 16] [--tokens 256] [--lora-op addmm|mv] [--keep-adapters DIR]
                                           [--out FILE | --save]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import harness


def write_adapter(model: str, folder: Path, *, rank: int, seed: int, b_std: float) -> Path:
    """A random LoRA adapter for ``model``'s shape, saved as PEFT saves one (no model load)."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model)
    heads, kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    h, inter = cfg.hidden_size, cfg.intermediate_size
    shapes = {"q_proj": (h, heads * hd), "k_proj": (h, kv * hd), "v_proj": (h, kv * hd), "o_proj": (heads * hd, h),
              "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(cfg.num_hidden_layers):
        for proj, (fan_in, fan_out) in shapes.items():
            block = "mlp" if proj in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            key = f"base_model.model.model.layers.{layer}.{block}.{proj}"
            tensors[f"{key}.lora_A.weight"] = (torch.randn(rank, fan_in, generator=gen) / fan_in**0.5).bfloat16()
            tensors[f"{key}.lora_B.weight"] = (torch.randn(fan_out, rank, generator=gen) * b_std).bfloat16()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    LoraConfig(r=rank, lora_alpha=rank, target_modules=list(shapes), task_type="CAUSAL_LM",
               base_model_name_or_path=model).save_pretrained(str(folder))
    return folder


def reply(backend, settings) -> dict:
    from medchat.bench.measure import QUESTION
    from medchat.chatformat.messages import Message
    from medchat.engine.events import AnswerDelta, GenerationDone, GenerationFailed, ReasoningDelta
    from medchat.engine.session import stream_events

    start = time.perf_counter()
    first = last = done = None
    for ev in stream_events(backend, [Message("user", QUESTION)], settings.generation):
        if isinstance(ev, (ReasoningDelta, AnswerDelta)) and ev.text:
            last = time.perf_counter()
            first = first or last
        elif isinstance(ev, GenerationDone):
            done = ev
        elif isinstance(ev, GenerationFailed):
            raise RuntimeError(ev.error)
    n = done.stats.completion_tokens
    tok_s = (n - 1) / (last - first) if first and last and last > first else 0.0
    return {"ttft_s": round((first or start) - start, 4), "decode_tok_s": round(tok_s, 1), "tokens": n,
            "wall_s": round(time.perf_counter() - start, 3), "text": done.reasoning + done.answer}


OPS = ("fused", "addmm", "mv")


def use_op(backend, op: str) -> None:
    """Switch the running decoder's LoRA op (its graphs are captured again on the next reply)."""
    import medchat.models.fastdecode as fastdecode

    fastdecode.LORA_OP = op
    decoder = backend.decoder
    decoder._lora_kernels = fastdecode._lora_kernels() if decoder.fused_ops and decoder.device.type == "cuda" else None
    decoder._drop_graphs()


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("model", help="model folder (e.g. a random-init 8B from benchmarks/make_model.py --fit-vocab)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--b-std", type=float, default=0.01)
    p.add_argument("--lora-op", default="fused", choices=OPS,
                   help="how the decode loop computes one token's LoRA products (fastdecode.LORA_OP)")
    p.add_argument("--compare-ops", action="store_true",
                   help="then, with adapter A, time every LoRA op in turn in this process (and no adapter again)")
    p.add_argument("--keep-adapters", metavar="DIR", help="write the two adapters here (kept) instead of a temp dir")
    args = p.parse_args(argv)
    rec = harness.recorder("adapter_switch", args)

    import medchat.models.fastdecode as fastdecode
    from medchat.config import load_settings
    from medchat.engine.backends import open_local

    fastdecode.LORA_OP = args.lora_op

    where = Path(args.keep_adapters or tempfile.mkdtemp(prefix="adapters-"))
    a = write_adapter(args.model, where / "adapter-a", rank=args.rank, seed=1, b_std=args.b_std)
    b = write_adapter(args.model, where / "adapter-b", rank=args.rank, seed=2, b_std=args.b_std)
    settings = load_settings({"model": args.model, "generation.temperature": 0.0,
                              "generation.max_new_tokens": args.tokens, "generation.repetition_penalty": 1.0})
    t0 = time.perf_counter()
    backend = open_local(settings, lambda m: print(m, file=sys.stderr, flush=True))
    load_s = time.perf_counter() - t0
    figures: dict = {"load_s": round(load_s, 1), "decoder": backend.info.decoder, "rank": args.rank}
    reply(backend, settings)  # warm-up: graphs, allocator
    figures["no_adapter"] = reply(backend, settings)

    def switch(to: Path | None, label: str) -> None:
        harness.sync()
        t = time.perf_counter()
        backend.set_adapter(str(to) if to else None)
        harness.sync()
        figures[f"switch_{label}_s"] = round(time.perf_counter() - t, 3)
        figures[f"after_{label}_first"] = reply(backend, settings)
        figures[f"after_{label}"] = reply(backend, settings)

    switch(a, "none_to_a")
    switch(b, "a_to_b")
    switch(None, "b_to_none")
    switch(a, "none_to_a_again")
    texts = {k: v.pop("text") for k, v in figures.items() if isinstance(v, dict)}
    figures["same_text_back"] = {  # greedy: the same adapter gives the same text, whatever came between
        "adapter_a": texts["after_none_to_a"] == texts["after_none_to_a_again"],
        "no_adapter": texts["no_adapter"] == texts["after_b_to_none"],
        "adapter_changes_text": texts["after_none_to_a"] != texts["no_adapter"],
    }
    with_a, none = figures["after_none_to_a"]["decode_tok_s"], figures["no_adapter"]["decode_tok_s"]
    figures["adapter_vs_none"] = round(with_a / none, 3) if none else None
    if args.compare_ops:  # one load, adapter A on: each op twice (warm-up reply, timed reply), in turn
        ops: dict = {}
        for op in OPS + OPS:
            use_op(backend, op)
            reply(backend, settings)
            got = reply(backend, settings)
            ops.setdefault(op, []).append(got["decode_tok_s"])
            ops.setdefault(f"{op}_same_text_as_fused", []).append(got.pop("text") == texts["after_none_to_a"])
        backend.set_adapter(None)
        reply(backend, settings)
        ops["no_adapter_again"] = reply(backend, settings)["decode_tok_s"]
        figures["ops_tok_s"] = ops
    figures["gpu_memory_gib"] = harness.gpu_memory_gib(peak=True)
    rec.emit(**figures)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
