"""`medchat bench`'s measurements: each in a fresh interpreter (``medchat.bench.worker``), collected into
one result dict with the device, library versions, settings, figures and ratios. No torch here."""

from __future__ import annotations

import json
import os
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
MARK = "BENCH "  # a worker's result line: MARK + JSON
WORKER = "medchat.bench.worker"

SETTING_KEYS = ("model", "adapter", "backend", "decoder", "device", "quantize", "dtype", "offline",
                "system_prompt", "endpoint", "api_key")


def run_bench(settings: Any, *, new_tokens: int, train: bool, train_steps: int, references: bool,
              as_json: bool, say=None) -> dict:
    """Measure and return the result; with ``as_json`` also print it as one JSON object (otherwise the
    caller shows it: ``medchat.cli.bench.print_table``)."""
    say = say or (lambda m: print(f"medchat: {m}", file=sys.stderr, flush=True))
    settings = replace(settings, generation=replace(settings.generation, temperature=0.0,
                                                    max_new_tokens=new_tokens, repetition_penalty=1.0))
    if not settings.adapter:  # the bare model, not the embedded model's default demo adapter: the
        settings = replace(settings, adapter="none")  # engine and generate then run the same weights
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
    return result


def _settings_dict(settings: Any) -> dict:
    return {k: getattr(settings, k) for k in SETTING_KEYS} | {"generation": asdict(settings.generation)}


def _worker(kind: str, spec: dict, say) -> dict:
    """Run one measurement in a fresh interpreter; its last MARK line is the result."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    try:
        proc = subprocess.run([sys.executable, "-m", WORKER, kind, fh.name], capture_output=True,
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
    out: dict[str, float | None] = {}
    eng = fig.get("engine", {})

    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    for ref in ("generate", "unsloth"):
        r = fig.get(ref, {})
        if r and "error" not in r:
            out[f"engine_vs_{ref}_decode"] = ratio(eng.get("decode_tok_s"), r.get("decode_tok_s"))
            out[f"{ref}_vs_engine_ttft"] = ratio(r.get("ttft_s"), eng.get("ttft_s"))
    return {k: v for k, v in out.items() if v is not None}


# -------------------------------------------------------------------------------------------------
# Training figure: the real finetune pipeline on generated rows

def train_figures(settings: Any, steps: int, say) -> dict:
    from transformers import AutoTokenizer

    from medchat.bench.rows import make_rows
    from medchat.models.catalog import resolve_model
    from medchat.models.loading import pick_device
    from medchat.store.manifest import FILENAME, read_manifest

    device = pick_device(settings.device)
    resolved = resolve_model(settings.model, device=device, offline=settings.offline, progress=say)
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
        found = sorted(home.rglob(FILENAME))
        manifest = read_manifest(found[0].parent) if proc.returncode == 0 and found else None
        if manifest is None:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"error": tail, "command": " ".join(cmd[2:])}
    t = manifest.training
    return {
        "command": "medchat " + " ".join(cmd[3:]),
        "backend": manifest.hardware.get("backend", settings.backend),
        "batching": t.batching or None,
        **{k: manifest.finetune_setting(k) for k in ("batch_size", "grad_accum")},
        "rows_median_tokens": int(statistics.median(lengths)), "rows_max_tokens": max(lengths),
        "steps": t.steps, "tokens": t.tokens, "seconds": t.seconds, "tokens_per_second": t.tokens_per_second,
        "steady_tokens_per_second": t.steady_tokens_per_second, "peak_gpu_gib": t.peak_gpu_gib,
    }
