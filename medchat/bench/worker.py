"""`medchat bench`'s measurements, one per fresh interpreter: ``python -m medchat.bench.worker KIND SPEC.json``
prints one ``BENCH {json}`` line (``medchat.bench.measure`` starts it and reads that line)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medchat.bench.measure import MARK, QUESTION


def _environment() -> tuple[dict, dict]:
    import importlib.metadata as md

    import torch

    versions = {"python": platform.python_version()}
    for name in ("medchat", "torch", "transformers", "peft", "trl", "torchao", "bitsandbytes", "unsloth"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            if name == "medchat":
                from medchat import __version__

                versions[name] = __version__
    if "unsloth" not in versions and torch.cuda.is_available():
        import importlib.util

        if importlib.util.find_spec("unsloth"):
            versions["unsloth"] = "present"
    cuda = torch.cuda.is_available()
    device = {"cuda": cuda, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "name": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine()}
    if cuda:
        device["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return device, versions


def _settings(spec: dict):
    from medchat.config import load_settings

    flat = {k: v for k, v in spec["settings"].items() if k != "generation"}
    flat.update({f"generation.{k}": v for k, v in spec["settings"]["generation"].items()})
    return load_settings(flat)


def _messages(settings: Any):
    from medchat.chatformat.messages import Message

    msgs = [Message("system", settings.system_prompt)] if settings.system_prompt else []
    return msgs + [Message("user", QUESTION)]


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def worker_engine(spec: dict) -> dict:
    from medchat.engine.backends import open_backend
    from medchat.engine.events import AnswerDelta, GenerationDone, GenerationFailed, ReasoningDelta
    from medchat.engine.session import stream_events

    settings = _settings(spec)
    device, versions = _environment()
    t0 = time.perf_counter()
    backend = open_backend(settings, progress=lambda m: print(m, file=sys.stderr, flush=True))
    load_s = time.perf_counter() - t0
    runs = []
    for _ in range(2):  # the first run warms up (CUDA graphs, allocator); the second is reported
        start = time.perf_counter()
        first = last = None
        done = None
        for ev in stream_events(backend, _messages(settings), settings.generation):
            if isinstance(ev, (ReasoningDelta, AnswerDelta)) and ev.text:
                now = time.perf_counter()
                first = first if first is not None else now
                last = now
            elif isinstance(ev, GenerationDone):
                done = ev
            elif isinstance(ev, GenerationFailed):
                raise RuntimeError(ev.error)
        n = done.stats.completion_tokens
        if first is None:  # the model produced no decodable text: nothing reached the consumer
            raise RuntimeError(f"the model produced {n} tokens but no text (a random-init model? see "
                               "benchmarks/fit_vocab.py)")
        runs.append({"ttft_s": round(first - start, 4),
                     "decode_tok_s": round((n - 1) / (last - first), 1) if n > 1 and last > first else 0.0,
                     "completion_tokens": n, "prompt_tokens": done.stats.prompt_tokens,
                     "finish_reason": done.stats.finish_reason})
    import torch

    out = {**runs[-1], "load_s": round(load_s, 1), "device": device, "versions": versions,
           "backend_info": asdict(backend.info)}
    if torch.cuda.is_available():
        out["gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _adapter_path(settings: Any) -> Path | None:
    from medchat.store import adapters as store

    name = "" if settings.adapter.lower() == store.NO_ADAPTER else settings.adapter
    return store.resolve_adapter(name) if name else None


def _time_generate(model: Any, tokenizer: Any, settings: Any, tokens: int, style: str) -> dict:
    import torch

    from medchat.chatformat.prompt import render_prompt

    prompt = render_prompt(tokenizer, _messages(settings), style)
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)

    def gen(n: int) -> float:
        _sync()
        s = time.perf_counter()
        with torch.inference_mode():
            model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                           pad_token_id=tokenizer.pad_token_id)
        _sync()
        return time.perf_counter() - s

    gen(tokens)  # warm-up
    ttft = min(gen(1), gen(1))
    total = gen(tokens)
    out = {"ttft_s": round(ttft, 4), "decode_tok_s": round((tokens - 1) / max(total - ttft, 1e-9), 1),
           "completion_tokens": tokens, "prompt_tokens": int(enc["input_ids"].shape[1])}
    if torch.cuda.is_available():
        out["gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def worker_generate(spec: dict) -> dict:
    from medchat.models.adapters import adapter_prompt_style, attach_adapter, check_adapter_base
    from medchat.models.catalog import resolve_model
    from medchat.models.loading import load_hf_model, pick_device

    settings = _settings(spec)
    device = pick_device(settings.device)
    resolved = resolve_model(settings.model, device=device, offline=settings.offline)
    adapter = _adapter_path(settings)
    if adapter is not None:
        check_adapter_base(adapter, resolved)  # before any weights load, as the chat does
    model, tokenizer = load_hf_model(resolved, device=device, dtype=settings.dtype, quantize=settings.quantize)
    if adapter is not None:
        model = attach_adapter(model, adapter, resolved).eval()
    out = _time_generate(model, tokenizer, settings, spec["tokens"], adapter_prompt_style(adapter, resolved))
    out["how"] = "transformers generate, loaded as medchat's generate path loads it (nf4 4-bit on CUDA)"
    return out


def worker_unsloth(spec: dict) -> dict:
    import unsloth  # noqa: F401  (first: it patches transformers)
    from unsloth import FastLanguageModel

    from medchat.models.adapters import adapter_prompt_style, attach_adapter, check_adapter_base
    from medchat.models.catalog import resolve_model
    from medchat.models.loading import load_unsloth_model

    settings = _settings(spec)
    resolved = resolve_model(settings.model, device="cuda", offline=settings.offline)
    adapter = _adapter_path(settings)
    if adapter is not None:
        check_adapter_base(adapter, resolved)
    model, tokenizer = load_unsloth_model(resolved, dtype=settings.dtype, quantize=settings.quantize)
    if adapter is not None:
        model = attach_adapter(model, adapter, resolved)
    FastLanguageModel.for_inference(model)
    out = _time_generate(model, tokenizer, settings, spec["tokens"], adapter_prompt_style(adapter, resolved))
    out["how"] = "Unsloth FastLanguageModel (4-bit) + for_inference, generate"
    return out


WORKERS = {"engine": worker_engine, "generate": worker_generate, "unsloth": worker_unsloth}


def main(argv: list[str]) -> None:
    kind, spec_file = argv[1], argv[2]
    spec = json.loads(Path(spec_file).read_text())
    result = WORKERS[kind](spec)
    print(MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv)
