"""`medchat bench`: speed on this machine, in one run, with one prompt and one set of settings.

Measured, each in its own subprocess (so that loads, memory and Unsloth's patches do not leak
between them):
* engine   - medchat's chat engine: ``stream_events`` over the backend the settings open (text
             reaching the consumer): time to first text, decode tokens/s;
* generate - the same model loaded the way medchat's generate() path loads it, then plain
             ``model.generate`` for the same number of tokens;
* unsloth  - Unsloth ``FastLanguageModel.for_inference`` + generate (CUDA, when installed);
* startup  - ``medchat --help`` in a fresh interpreter;
* train    - with ``--train``: ``medchat finetune`` on generated medical-o1-shaped rows (median about
             800 tokens, tail about 1,500), effective (non-padding) tokens/s and peak GPU memory.
Decode figures are greedy, after one warm-up run; tokens/s excludes the first token (that is TTFT).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

QUESTION = (
    "A 58-year-old man has crushing chest pain radiating to his left arm, sweating and nausea for "
    "30 minutes. What is the most likely diagnosis and what should be done first?"
)
MARK = "BENCH "


# -------------------------------------------------------------------------------------------------
# Orchestration (no torch imported here)

def run_bench(settings: Any, *, new_tokens: int, train: bool, train_steps: int, references: bool,
              as_json: bool, say=None) -> dict:
    say = say or (lambda m: print(f"medchat: {m}", file=sys.stderr, flush=True))
    settings = replace(settings, generation=replace(settings.generation, temperature=0.0,
                                                    max_new_tokens=new_tokens, repetition_penalty=1.0))
    spec = {"settings": _settings_dict(settings)}
    result: dict[str, Any] = {"device": {}, "versions": {}, "settings": {
        "model": settings.model, "adapter": settings.adapter, "backend": settings.backend,
        "decoder": settings.decoder, "device": settings.device, "quantize": settings.quantize,
        "endpoint": settings.endpoint,
        "max_new_tokens": new_tokens, "greedy": True, "question": QUESTION,
    }, "figures": {}, "ratios": {}}
    say("timing `medchat --help` start-up")
    result["figures"]["startup_help_s"] = startup_time()
    say("measuring the engine (stream_events over the chat backend)")
    engine = _worker("engine", spec, say)
    result["device"] = engine.pop("device", {})
    result["versions"] = engine.pop("versions", {})
    result["backend_info"] = engine.pop("backend_info", {})
    result["figures"]["engine"] = engine
    tokens = engine.get("completion_tokens", new_tokens)
    if references and tokens > 1 and not settings.endpoint:  # an endpoint has no local model to compare
        spec_ref = {**spec, "tokens": tokens}
        say(f"measuring plain model.generate ({tokens} tokens)")
        result["figures"]["generate"] = _worker("generate", spec_ref, say)
        if result["device"].get("cuda") and result["versions"].get("unsloth"):
            say(f"measuring Unsloth for_inference ({tokens} tokens)")
            result["figures"]["unsloth"] = _worker("unsloth", spec_ref, say)
    if train:
        say(f"measuring training: medchat finetune, {train_steps} steps on generated rows")
        result["figures"]["train"] = train_figures(settings, train_steps, say)
    result["ratios"] = ratios(result["figures"])
    if as_json:
        print(json.dumps(result, indent=None))
    else:
        print_table(result)
    return result


SETTING_KEYS = ("model", "adapter", "backend", "decoder", "device", "quantize", "dtype", "offline",
                "system_prompt", "endpoint", "api_key")


def _settings_dict(settings: Any) -> dict:
    return {k: getattr(settings, k) for k in SETTING_KEYS} | {"generation": asdict(settings.generation)}


def _worker(kind: str, spec: dict, say) -> dict:
    """Run one measurement in a fresh interpreter; its last BENCH line is the result."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    try:
        proc = subprocess.run([sys.executable, "-m", "medchat.bench", kind, fh.name], capture_output=True,
                              text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        os.unlink(fh.name)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    say(f"{kind} measurement failed: {tail}")
    return {"error": tail}


def startup_time(runs: int = 5) -> float:
    """Median wall time of `medchat --help` in a fresh interpreter (imports included)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "medchat", "--help"], capture_output=True, check=False)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 3)


def ratios(fig: dict) -> dict:
    out: dict[str, float] = {}
    eng = fig.get("engine", {})

    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    for ref in ("generate", "unsloth"):
        r = fig.get(ref, {})
        if r and "error" not in r:
            out[f"engine_vs_{ref}_decode"] = ratio(eng.get("decode_tok_s"), r.get("decode_tok_s"))
            out[f"{ref}_vs_engine_ttft"] = ratio(r.get("ttft_s"), eng.get("ttft_s"))
    return {k: v for k, v in out.items() if v is not None}


def print_table(result: dict) -> None:
    fig = result["figures"]
    dev = result["device"]
    print(f"device: {dev.get('name', '?')}   model: {result['settings']['model']}"
          f"   decoder: {result.get('backend_info', {}).get('decoder', '?')}")
    print(f"{'measurement':<34}{'TTFT s':>10}{'decode tok/s':>15}{'tokens':>8}")
    names = {"engine": "medchat engine (stream_events)", "generate": "plain model.generate",
             "unsloth": "Unsloth for_inference"}
    for key, label in names.items():
        r = fig.get(key)
        if not r:
            continue
        if "error" in r:
            print(f"{label:<34}  failed: {r['error']}")
            continue
        print(f"{label:<34}{r.get('ttft_s', 0):>10.3f}{r.get('decode_tok_s', 0):>15.1f}{r.get('completion_tokens', 0):>8}")
    print(f"{'medchat --help start-up':<34}{fig['startup_help_s']:>10.3f} s")
    train = fig.get("train")
    if train:
        if "error" in train:
            print(f"training: failed: {train['error']}")
        else:
            print(f"training: {train.get('tokens_per_second')} tok/s non-padding "
                  f"({train.get('steady_tokens_per_second')} after warm-up), peak GPU "
                  f"{train.get('peak_gpu_gib')} GiB, {train.get('steps')} steps, backend {train.get('backend')}")
    for k, v in result["ratios"].items():
        print(f"ratio {k}: {v}x")


# -------------------------------------------------------------------------------------------------
# Training figure: the real finetune pipeline on generated rows

SENTENCES = (
    "The patient is a 64-year-old woman with progressive exertional dyspnoea over three months.",
    "Her haemoglobin is 8.1 g/dL with a mean corpuscular volume of 71 fL and low ferritin.",
    "Iron deficiency limits haem synthesis, so red cells are small and carry less haemoglobin.",
    "Occult gastrointestinal blood loss must be excluded in any older adult with iron deficiency.",
    "First, consider the differential diagnosis: thalassaemia trait, anaemia of chronic disease, sideroblastic anaemia.",
    "A low ferritin is specific for depleted iron stores, whereas inflammation raises it.",
    "Next, weigh the urgency: chest pain or syncope would call for transfusion and admission.",
    "Oral iron on alternate days improves absorption and tolerability compared with daily dosing.",
    "Colonoscopy and gastroscopy are indicated to look for a bleeding lesion or malignancy.",
    "So the most likely diagnosis is iron deficiency anaemia from chronic blood loss.",
)


def make_rows(path: Path, tokenizer: Any, n: int, seed: int = 0) -> list[int]:
    """Write ``n`` medical-o1-shaped rows (Question, Complex_CoT, Response) whose token lengths follow
    a log-normal law with median about 800 and a tail to about 1,500; returns the lengths."""
    import random

    rng = random.Random(seed)
    lengths = []
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(n):
            target = int(min(max(rng.lognormvariate(6.685, 0.33), 250), 1550))  # e^6.685 = 800
            parts = {"Question": [], "Complex_CoT": [], "Response": []}
            count = 0
            while count < target:
                key = "Question" if count < target * 0.1 else ("Complex_CoT" if count < target * 0.85 else "Response")
                sentence = rng.choice(SENTENCES)
                parts[key].append(sentence)
                count += len(tokenizer(sentence + " ", add_special_tokens=False)["input_ids"])
            for key in parts:
                parts[key] = parts[key] or [SENTENCES[0]]
            row = {k: " ".join(v) for k, v in parts.items()}
            fh.write(json.dumps(row) + "\n")
            lengths.append(count)
    return lengths


def train_figures(settings: Any, steps: int, say) -> dict:
    from medchat.models.loading import pick_device
    from medchat.models.catalog import resolve_model

    device = pick_device(settings.device)
    resolved = resolve_model(settings.model, device=device, offline=settings.offline, progress=say)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolved.source, local_files_only=resolved.local_only)
    with tempfile.TemporaryDirectory(prefix="medchat-bench-") as tmp:
        rows = Path(tmp) / "rows.jsonl"
        lengths = make_rows(rows, tokenizer, n=max(16, steps * 8))
        home = Path(tmp) / "home"
        cmd = [sys.executable, "-m", "medchat", "finetune", "--model", settings.model, "--dataset", str(rows),
               "--max-steps", str(steps), "--name", "bench", "--save-steps", "0", "--eval-rows", "0",
               "--backend", settings.backend, "--device", settings.device, "--quantize", settings.quantize]
        if device == "cuda":
            # The shipped defaults at the raw QLoRA loop's sequence length: packed micro-batches of
            # 2 x 2,048 tokens, like its 2 x 2,048 rows.
            cmd += ["--max-seq-length", "2048"]
        else:
            cmd += ["--max-seq-length", "1024", "--batch-size", "1", "--grad-accum", "1"]
        env = {**os.environ, "MEDCHAT_HOME": str(home)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        manifests = list(home.rglob("medchat.json"))
        if proc.returncode != 0 or not manifests:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"error": tail, "command": " ".join(cmd[2:])}
        manifest = json.loads(manifests[0].read_text())
    t = manifest.get("training", {})
    return {
        "command": "medchat " + " ".join(cmd[3:]),
        "backend": manifest.get("hardware", {}).get("backend", settings.backend),
        "batching": t.get("batching"),
        **{k: manifest.get("settings", {}).get("finetune", {}).get(k) for k in ("batch_size", "grad_accum")},
        "rows_median_tokens": int(statistics.median(lengths)), "rows_max_tokens": max(lengths),
        **{k: t.get(k) for k in ("steps", "tokens", "seconds", "tokens_per_second",
                                 "steady_tokens_per_second", "peak_gpu_gib")},
    }


# -------------------------------------------------------------------------------------------------
# Workers (run as `python -m medchat.bench KIND SPEC.json`)

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


def _style(resolved: Any, settings: Any) -> str:
    """The prompt style chat would use: the adapter's recorded one, else the model's."""
    from medchat.models.adapters import adapter_prompt_style
    from medchat.store import adapters as store

    return adapter_prompt_style(store.resolve_adapter(settings.adapter) if settings.adapter else None, resolved)


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
    from medchat.store import adapters as store
    from medchat.models.loading import load_hf_model, pick_device
    from medchat.models.catalog import resolve_model

    settings = _settings(spec)
    device = pick_device(settings.device)
    resolved = resolve_model(settings.model, device=device, offline=settings.offline)
    model, tokenizer = load_hf_model(resolved, device=device, dtype=settings.dtype, quantize=settings.quantize)
    if settings.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(store.resolve_adapter(settings.adapter))).eval()
    out = _time_generate(model, tokenizer, settings, spec["tokens"], _style(resolved, settings))
    out["how"] = "transformers generate, loaded as medchat's generate path loads it (nf4 4-bit on CUDA)"
    return out


def worker_unsloth(spec: dict) -> dict:
    import unsloth  # noqa: F401  (first: it patches transformers)
    from unsloth import FastLanguageModel

    from medchat.store import adapters as store
    from medchat.models.loading import load_unsloth_model
    from medchat.models.catalog import resolve_model

    settings = _settings(spec)
    resolved = resolve_model(settings.model, device="cuda", offline=settings.offline)
    model, tokenizer = load_unsloth_model(resolved, dtype=settings.dtype, quantize=settings.quantize)
    if settings.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(store.resolve_adapter(settings.adapter)))
    FastLanguageModel.for_inference(model)
    out = _time_generate(model, tokenizer, settings, spec["tokens"], _style(resolved, settings))
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
