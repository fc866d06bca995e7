"""Every seed recipe (A-E) end to end on its own base's shape: `medchat finetune --recipe X`, then its checks.

For each bundled recipe this runs `medchat finetune --recipe X` on a random-init model of the shape of the
base the recipe names (R1-Distill-Llama-8B -> 8b for A, B and D; R1-Distill-Qwen-1.5B -> qwen1.5b, a Qwen2
with q/k/v biases, for C; Llama-3.2-3B-Instruct -> 3b, tied output layer, for E; made with
make_model.py, one per shape, reused when the folder exists), on generated rows of the shape the recipe
reads: medical-o1 (Question / Complex_CoT / Response; Chinese sentences for C's `zh` subset) or Alpaca
(instruction / input / output, medical-flashcard lengths, for E). Every recipe setting stays as shipped
(rank, alpha, rsLoRA, learning rate and schedule, sequence length, batch x accumulation, prompt style,
target modules, precision, optimizer, packing, row selection); the command line only changes what a
benchmark must: the model folder, the data file, the number of steps, no held-out report card
(--eval-rows 0: a random model never ends a reply), no periodic checkpoints, --report-to none (no W&B
on an offline machine) and --offline. Then:
  C  its merged 16-bit folder (`--merge`, after the merge's parity gate) is loaded back with
     transformers and runs one forward pass; when the gate refuses the 16-bit folder (a short run's
     adapter can be fainter than bfloat16 rounding; the figures are in the notes), a float32
     `medchat export --merged` is made and loaded instead, and the status says so;
  E  the adapter is served by `medchat serve` on 127.0.0.1 (a free port) and answers one
     /v1/chat/completions request from an HTTP client (httpx).
Each recipe records: the recipe, the shape, steps, the steady tokens/s and peak GPU memory (from the
adapter's manifest), the settings the run used (checked against the recipe file and the adapter's
adapter_config.json), what it wrote (adapter files, merged folder, GGUF if any), the manifest's notes
and the wall time end to end (finetune + checks). A recipe that fails or runs out of its time is
recorded with the last lines of its stderr, and the next one runs. Output: one `RESULT {json}` line
per recipe (and --out FILE / --save), then a markdown table (also written to --table FILE).
The runs share one MEDCHAT_HOME: a later recipe on the same shape finds the compile caches warm.

On the GPU kit (checkout root), in two calls of under 10 minutes each:
  source .gpu/env.sh; python3 benchmarks/recipes.py --only A,B,D --out $OUT/recipes.jsonl --table $OUT/recipes.md
  source .gpu/env.sh; python3 benchmarks/recipes.py --only C,E --out $OUT/recipes.jsonl --table $OUT/recipes.md
  python3 benchmarks/recipes.py --from-jsonl a.jsonl b.jsonl --table recipes.md     # one table of both
Without a GPU, every recipe on the tiny shape, 2 steps each (4-bit loading needs CUDA: --quantize none):
  python benchmarks/recipes.py --cpu-smoke
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import harness

LETTERS = ("A", "B", "C", "D", "E")
# The recipe's base model (lower-cased hub id) -> the random-init shape that stands in for it.
BASE_SHAPES = (("qwen-1.5b", "qwen1.5b"), ("llama-3.2-3b", "3b"), ("llama-8b", "8b"))
# Short runs that fit one GPU call; C runs its recipe's own 60 steps (a 1.5B step is short, and its
# merged model then carries a trained adapter through the merge's parity gate).
DEFAULT_STEPS = {"A": 12, "B": 12, "C": 60, "D": 12, "E": 30}
# Settings a benchmark run changes on purpose (everything else must be the recipe's).
OVERRIDDEN = {"model", "offline", "finetune.dataset", "finetune.max_steps", "finetune.eval_rows",
              "finetune.save_steps", "finetune.report_to"}
QUESTION = "A 64-year-old woman has exertional dyspnoea, haemoglobin 8.1 g/dL and low ferritin. What next?"
ZH_SENTENCES = (
    "患者为六十四岁女性，近三个月来活动后气短逐渐加重。",
    "血红蛋白八点一克每分升，平均红细胞体积七十一飞升，铁蛋白降低。",
    "缺铁限制了血红素的合成，因此红细胞体积小、血红蛋白含量低。",
    "老年缺铁患者必须排除隐匿性消化道出血。",
    "首先考虑鉴别诊断：地中海贫血、慢性病贫血、铁粒幼细胞贫血。",
    "铁蛋白降低对储存铁耗竭有特异性，而炎症会使其升高。",
    "其次评估紧急程度：胸痛或晕厥需要输血并住院。",
    "隔日口服铁剂比每日服用吸收更好、耐受性更佳。",
    "应行结肠镜和胃镜检查，寻找出血病灶或恶性肿瘤。",
    "因此最可能的诊断是慢性失血引起的缺铁性贫血。",
)
FLASHCARD_QUESTIONS = (
    "What is the most common cause of iron deficiency anaemia in adults?",
    "Which laboratory finding is most specific for depleted iron stores?",
    "What does a low mean corpuscular volume suggest?",
    "Why should older adults with iron deficiency undergo endoscopy?",
    "How does inflammation affect serum ferritin?",
)


# -------------------------------------------------------------------------------------------------
# Recipes, shapes, models, rows

def shape_for(model_id: str) -> str:
    low = model_id.lower()
    for pattern, shape in BASE_SHAPES:
        if pattern in low:
            return shape
    raise SystemExit(f"no benchmark shape for the recipe's base {model_id!r}: add it to BASE_SHAPES")


def parse_steps(text: str) -> dict[str, int]:
    """'12' (every recipe) or 'A=12,C=60' (these recipes; the others keep DEFAULT_STEPS)."""
    if text.strip().isdigit():
        return dict.fromkeys(LETTERS, int(text))
    steps = dict(DEFAULT_STEPS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        letter, _, n = part.partition("=")
        if letter.upper() not in LETTERS or not n.strip().isdigit():
            raise SystemExit(f"--steps: expected N or LETTER=N[,LETTER=N], got {part!r}")
        steps[letter.upper()] = int(n)
    return steps


def ensure_model(folder: Path, shape: str, device: str, log: Path, timeout: float) -> dict[str, Any]:
    """The shape's random-init model in ``folder`` (made unless it is there): what was made, or reused."""
    if (folder / "config.json").is_file():
        return {"shape": shape, "folder": str(folder), "reused": True}
    cmd = [sys.executable, str(harness.BENCH_DIR / "make_model.py"), str(folder), shape]
    # Decodable greedy text (E's served reply). The others get trained-like norms too, for C's merge gate and
    # E's reply; /tmp/l8b stays as multigpu.py and time_to_adapter.py make it, for them to reuse.
    cmd += ["--fit-vocab"] if shape == "8b" else ["--fit-vocab", "--unit-norms"]
    cmd += ["--device", "cpu"] if device == "cpu" else []
    code, wall, out, tail = run_logged(cmd, dict(os.environ), log, timeout)
    if code != 0:
        raise RuntimeError(f"make_model.py {shape} failed (exit {code}): {tail}")
    return {"shape": shape, "folder": str(folder), "reused": False, "s": round(wall, 1)}


def write_rows(path: Path, tokenizer_json: Path, n: int, kind: str, seed: int = 0) -> dict[str, Any]:
    """``n`` generated rows as a JSON array (as the hub's files are), of ``kind``: medical-o1 (en or zh;
    token lengths log-normal, median ~800, tail to ~1,500, as medchat/bench/rows.py) or alpaca
    (medical-flashcard lengths, median ~100 tokens). Token counts come from the model's own tokenizer
    (the `tokenizers` library: no torch in this process)."""
    from tokenizers import Tokenizer

    from medchat.bench.rows import SENTENCES

    tok = Tokenizer.from_file(str(tokenizer_json))
    pool = ZH_SENTENCES if kind == "medical-o1-zh" else SENTENCES
    cost = {s: len(tok.encode(s + " ", add_special_tokens=False).ids) for s in (*pool, *FLASHCARD_QUESTIONS)}
    joiner = "" if kind == "medical-o1-zh" else " "
    rng = random.Random(seed)
    rows, lengths = [], []
    for _ in range(n):
        if kind == "alpaca":
            question = rng.choice(FLASHCARD_QUESTIONS)
            target = int(min(max(rng.lognormvariate(math.log(100), 0.45), 30), 400))
            answer, count = [], cost[question]
            while count < target or not answer:
                answer.append(rng.choice(SENTENCES))
                count += cost[answer[-1]]
            rows.append({"instruction": "Answer this question truthfully", "input": question,
                         "output": " ".join(answer)})
        else:
            target = int(min(max(rng.lognormvariate(6.685, 0.33), 250), 1550))  # e^6.685 = 800
            parts: dict[str, list[str]] = {"Question": [], "Complex_CoT": [], "Response": []}
            count = 0
            while count < target:
                key = "Question" if count < target * 0.1 else ("Complex_CoT" if count < target * 0.85 else "Response")
                parts[key].append(rng.choice(pool))
                count += cost[parts[key][-1]]
            rows.append({k: joiner.join(v or [pool[0]]) for k, v in parts.items()})
        lengths.append(count)
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    lengths.sort()
    return {"kind": kind, "rows": n, "file": str(path), "median_tokens": lengths[n // 2], "max_tokens": lengths[-1]}


def rows_needed(ft: dict[str, Any], steps: int) -> int:
    """Enough rows for ``steps`` optimizer steps under the recipe's own row selection."""
    per_step = int(ft.get("batch_size", 2)) * int(ft.get("grad_accum", 4))
    need = steps * per_step
    if float(ft.get("fraction") or 0) > 0:
        return math.ceil(need / float(ft["fraction"]) * 1.05)
    return max(int(ft.get("samples") or 0), need)


def rows_kind(recipe: Any) -> str:
    ft = recipe.values.get("finetune", {})
    if ft.get("prompt_style") == "medical-qa" or "flashcards" in str(ft.get("dataset", "")):
        return "alpaca"  # instruction / input / output, as medalpaca's flashcards
    return "medical-o1-zh" if ft.get("subset") == "zh" else "medical-o1-en"


# -------------------------------------------------------------------------------------------------
# Processes

def run_logged(cmd: list[str], env: dict, log: Path, timeout: float) -> tuple[int, float, str, str]:
    """(exit code, wall seconds, stdout, last lines of stderr); stderr is appended to ``log``.
    A run past ``timeout`` is stopped (its process group: torch's workers too) and exits 124."""
    t0 = time.perf_counter()
    with log.open("a", encoding="utf-8") as err:
        err.write(f"\n$ {shlex.join(cmd)}\n")
        err.flush()
        start = err.tell()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            stop_group(proc)
            out, _ = proc.communicate()
            code = 124
        except BaseException:  # Ctrl+C or SIGTERM on this script: the run in its own session stops too
            stop_group(proc, grace=5.0)
            raise
    return code, time.perf_counter() - t0, out or "", stderr_tail(log, start)


def stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGINT (medchat's Ctrl+C path), then SIGKILL, to the process group ``proc`` leads."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def stderr_tail(log: Path, start: int, lines: int = 25) -> str:
    with log.open("r", encoding="utf-8", errors="replace") as fh:
        fh.seek(start)
        text = fh.read()
    # Progress bars rewrite one line with carriage returns: keep each line's last state.
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


# -------------------------------------------------------------------------------------------------
# What a run wrote, and whether it used the recipe's settings

def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def settings_check(recipe_values: dict[str, Any], manifest: dict[str, Any], overridden: set[str]) -> list[str]:
    """Recipe keys whose value in the run differs from the recipe file (beyond ``overridden``)."""
    used = flat(manifest.get("settings", {}))
    diffs = []
    for key, want in flat(recipe_values).items():
        if key in overridden:
            continue
        got = used.get(key, "(missing)")
        if isinstance(want, list) or isinstance(got, list):
            same = sorted(map(str, want if isinstance(want, list) else [want])) == \
                sorted(map(str, got if isinstance(got, list) else [got]))
        elif isinstance(want, float) or isinstance(got, float):
            same = isinstance(got, (int, float)) and math.isclose(float(want), float(got), rel_tol=1e-9)
        else:
            same = want == got
        if not same:
            diffs.append(f"{key}: recipe {want!r}, run {got!r}")
    return diffs


def adapter_check(folder: Path, ft: dict[str, Any]) -> list[str]:
    """adapter_config.json (what PEFT wrote) against the recipe's LoRA settings."""
    path = folder / "adapter_config.json"
    if not path.is_file():
        return ["no adapter_config.json"]
    cfg = json.loads(path.read_text())
    diffs = []
    for key, cfg_key in (("lora_r", "r"), ("lora_alpha", "lora_alpha"), ("lora_dropout", "lora_dropout"),
                         ("use_rslora", "use_rslora")):
        if key in ft and cfg.get(cfg_key) != ft[key]:
            diffs.append(f"adapter_config {cfg_key}: {cfg.get(cfg_key)!r}, recipe {key} {ft[key]!r}")
    targets = cfg.get("target_modules")
    wanted = set(ft.get("target_modules", []))
    if isinstance(targets, str):  # a regular expression (some Unsloth versions write one)
        missing = {m for m in wanted if m not in targets}
    else:
        missing = wanted ^ set(targets or [])
    if missing:
        diffs.append(f"adapter_config target_modules {targets!r}, recipe {sorted(wanted)}")
    return diffs


def listing(folder: Path) -> dict[str, Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {"files": [str(p.relative_to(folder)) for p in files],
            "mib": round(sum(p.stat().st_size for p in files) / 2**20, 1)}


def written(adapter: Path) -> dict[str, Any]:
    top = sorted(p.name for p in adapter.iterdir() if p.is_file())
    out: dict[str, Any] = {"adapter_files": top,
                           "adapter_mib": round(sum((adapter / n).stat().st_size for n in top) / 2**20, 1)}
    if (adapter / "merged").is_dir():
        out["merged"] = listing(adapter / "merged")
    if (adapter / "evals").is_dir():
        out["evals"] = listing(adapter / "evals")["files"]
    out["gguf"] = [str(p.relative_to(adapter)) for p in adapter.rglob("*.gguf")]
    return out


def used_settings(manifest: dict[str, Any]) -> dict[str, Any]:
    ft = manifest.get("settings", {}).get("finetune", {})
    keys = ("lora_r", "lora_alpha", "lora_dropout", "use_rslora", "learning_rate", "lr_scheduler", "warmup_steps",
            "warmup_ratio", "max_seq_length", "batch_size", "grad_accum", "optimizer", "precision", "packing",
            "gradient_checkpointing", "samples", "fraction", "select", "subset", "target_modules", "merge")
    return {"prompt_style": manifest.get("prompt_style"), "quantize": manifest.get("settings", {}).get("quantize"),
            **{k: ft.get(k) for k in keys}}


# -------------------------------------------------------------------------------------------------
# The checks after training: C's merged folder loads; E's adapter answers through `medchat serve`

def load_check(folder: str) -> int:
    """(In a child process.) Load a merged folder with transformers, run one forward pass, print JSON."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, device_map={"": 0} if cuda else None,
                                                 use_safetensors=True, trust_remote_code=False)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok(QUESTION, return_tensors="pt").input_ids.to(model.device)
    with torch.no_grad():
        logits = model(ids).logits
    attn = model.model.layers[0].self_attn
    print(json.dumps({
        "loaded": True, "architecture": type(model).__name__, "model_type": model.config.model_type,
        "params": sum(p.numel() for p in model.parameters()), "dtype": str(model.dtype).replace("torch.", ""),
        "qkv_bias": all(getattr(attn, n).bias is not None for n in ("q_proj", "k_proj", "v_proj")),
        "tied_output": bool(model.config.tie_word_embeddings), "logits_finite": bool(torch.isfinite(logits).all()),
        "s": round(time.perf_counter() - t0, 1)}))
    return 0


def check_merged(folder: Path, env: dict, log: Path, timeout: float) -> dict[str, Any]:
    if not (folder / "config.json").is_file():
        return {"loaded": False, "why": "no merged folder (see the notes: the merge or its parity gate failed)"}
    code, wall, out, tail = run_logged([sys.executable, __file__, "--load-check", str(folder)], env, log, timeout)
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if code != 0 or not lines:
        return {"loaded": False, "exit": code, "why": tail}
    return {**json.loads(lines[-1]), "wall_s": round(wall, 1)}


def serve_and_ask(model_dir: str, adapter: str, env: dict, log: Path, timeout: float,
                  extra: list[str]) -> dict[str, Any]:
    """`medchat serve --adapter NAME` on 127.0.0.1 (a free port), one chat completion, then Ctrl+C."""
    missing = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        return {"answered": False, "why": f"not installed here: {', '.join(missing)} (`medchat serve` needs them; "
                                          "add them to the GPU kit: ../shared/gpu/prepare.sh NAME==VERSION ...)"}
    import httpx

    cmd = [sys.executable, "-m", "medchat", "serve", "--model", model_dir, "--adapter", adapter, "--port", "0",
           "--offline", "--temperature", "0", "--max-new-tokens", "32", *extra]
    t0 = time.perf_counter()
    lines: deque[str] = deque(maxlen=40)
    found = threading.Event()
    url: list[str] = []
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.PIPE, text=True, start_new_session=True)

        def read() -> None:
            for line in proc.stderr:
                fh.write(line)
                fh.flush()
                lines.append(line.rstrip())
                hit = re.search(r"serving .* at (http://\S+/v1)", line)
                if hit and not url:
                    url.append(hit[1])
                    found.set()
            found.set()  # the server ended before it said where it listens

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        result: dict[str, Any] = {"answered": False}
        try:
            found.wait(timeout)
            if not url:
                why = "exited" if proc.poll() is not None else f"not serving after {timeout:.0f} s"
                return {**result, "why": f"`medchat serve` {why}: " + "\n".join(list(lines)[-15:])}
            result["ready_s"] = round(time.perf_counter() - t0, 1)
            with httpx.Client(base_url=url[0], timeout=max(timeout - result["ready_s"], 60)) as client:
                models = client.get("/models").json()
                served = models["data"][0]["id"]
                t1 = time.perf_counter()
                reply = client.post("/chat/completions", json={
                    "model": served, "max_tokens": 32, "temperature": 0,
                    "messages": [{"role": "user", "content": QUESTION}]})
                answer_s = time.perf_counter() - t1
            body = reply.json()
            message = (body.get("choices") or [{}])[0].get("message", {})
            result.update(answered=reply.status_code == 200 and bool(body.get("choices")), status=reply.status_code,
                          url=url[0], served_model=served, answer_s=round(answer_s, 2), usage=body.get("usage"),
                          finish_reason=(body.get("choices") or [{}])[0].get("finish_reason"),
                          content=(message.get("content") or "")[:200],
                          reasoning_chars=len(message.get("reasoning_content") or ""))
            if reply.status_code != 200:
                result["why"] = json.dumps(body)[:500]
            return result
        except Exception as exc:  # noqa: BLE001 - a failed check is recorded, the next recipe runs
            return {**result, "why": f"{type(exc).__name__}: {exc}; server said: " + "\n".join(list(lines)[-10:])}
        finally:
            stop_group(proc)
            result["stopped_cleanly"] = proc.returncode == 0
            result["serve_wall_s"] = round(time.perf_counter() - t0, 1)
            reader.join(timeout=5)


# -------------------------------------------------------------------------------------------------
# One recipe

def run_recipe(letter: str, args: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    """One recipe end to end: its record, with the wall time from the start (model making included)."""
    t0 = time.perf_counter()
    record: dict[str, Any] = {"recipe": letter}
    try:
        _run_recipe(letter, args, ctx, record)
    except Exception as exc:  # noqa: BLE001 - recorded; the next recipe runs
        record.update(status="failed", why=f"{type(exc).__name__}: {exc}")
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    return record


def _run_recipe(letter: str, args: Any, ctx: dict[str, Any], record: dict[str, Any]) -> None:
    from medchat.finetune.recipes import find_recipe

    recipe = find_recipe(letter)
    ft = recipe.values.get("finetune", {})
    base = recipe.values.get("model", "")
    own_shape = shape_for(base)
    shape = args.shape or own_shape
    steps = ctx["steps"][letter]
    name = f"recipe-{letter.lower()}-{shape.replace('.', '')}-{ctx['stamp']}"
    record.update(recipe_name=recipe.name, title=recipe.title, base=base, shape=shape, base_shape=own_shape,
                  steps_asked=steps, adapter=name)
    log = ctx["work"] / f"recipe-{letter.lower()}.log"
    record["log"] = str(log)
    folder = Path(args.model_dirs.get(shape) or ctx["models"] / shape)
    made = ensure_model(folder, shape, args.device, log, timeout=max(ctx["left"](), 60))
    record["model"] = made
    kind = rows_kind(recipe)
    n = rows_needed(ft, steps)
    rows = ctx["work"] / f"rows-{shape}-{kind}-{n}.json"
    record["rows"] = ctx["rows"].get(rows) or write_rows(rows, folder / "tokenizer.json", n, kind)
    ctx["rows"][rows] = record["rows"]
    overrides = ["--model", str(folder), "--dataset", str(rows), "--max-steps", str(steps), "--eval-rows", "0",
                 "--save-steps", "0", "--report-to", "none", "--offline"]
    overridden = set(OVERRIDDEN)
    if letter == "C":
        overrides.append("--merge")  # the recipe says so too: the flag makes the check explicit
    if args.device == "cpu":
        # 4-bit loading needs bitsandbytes' CUDA kernels; medchat itself falls back to 32-bit AdamW and
        # padded batches on a CPU and says so in the manifest's notes.
        overrides += ["--device", "cpu", "--quantize", "none"]
        overridden |= {"device", "quantize"}
    if letter == "C" and args.cpu_smoke:
        # Two steps at the recipe's 2e-4 leave an adapter too faint for the merge's parity gate to judge.
        overrides += ["--learning-rate", "1e-2"]
        overridden.add("finetune.learning_rate")
    overrides += shlex.split(args.finetune_args)
    record["overrides"] = overrides
    cmd = [sys.executable, "-m", "medchat", "finetune", "--recipe", letter, "--name", name, *overrides]
    record["finetune_command"] = shlex.join(["medchat", *cmd[3:]])
    left = ctx["left"]()
    if left < 45:
        record.update(status="skipped", why=f"budget: {left:.0f} s left")
        return
    code, wall, out, tail = run_logged(cmd, ctx["env"], log, timeout=min(args.timeout, left))
    record.update(exit=code, finetune_wall_s=round(wall, 1), summary=out.strip()[-1500:])
    adapter = ctx["home"] / "data" / "adapters" / name
    manifest_path = adapter / "medchat.json"
    if code != 0 or not manifest_path.is_file():
        why = "timed out" if code == 124 else f"exit {code}"
        record.update(status="failed", why=why, stderr_tail=tail)
        return
    m = json.loads(manifest_path.read_text())
    t = m.get("training", {})
    record.update(
        steps=t.get("steps"), tokens=t.get("tokens"), steady_tok_s=t.get("steady_tokens_per_second"),
        tok_s_whole_run=t.get("tokens_per_second"), peak_gib=t.get("peak_gpu_gib"),
        first_step_s=t.get("first_step_seconds"), phases=t.get("phases"), batching=t.get("batching"),
        backend=m.get("hardware", {}).get("backend"), train_device=m.get("hardware", {}).get("device"),
        duration_s=m.get("duration_seconds"), used=used_settings(m), notes=m.get("notes", []),
        lengths=m.get("lengths", {}).get("tokens"), rows_used=m.get("dataset", {}).get("rows_used"),
        dataset_shape=m.get("dataset", {}).get("shape"),
        loss=[m.get("losses", {}).get("first_train"), m.get("losses", {}).get("final_train")],
        written=written(adapter))
    record["settings_diffs"] = settings_check(recipe.values, m, overridden) + adapter_check(adapter, ft)
    status = "ok"
    if letter == "C":
        merged = adapter / "merged"
        if not merged.is_dir() and ctx["left"]() > 90:
            # The merge's parity gate refused the 16-bit folder (its figures are in the notes): a short run's
            # adapter can be fainter than bf16 rounding. A float32 export shows whether the merge itself works.
            merged = ctx["work"] / f"{name}-merged-f32"
            cmd = [sys.executable, "-m", "medchat", "export", "--adapter", name, "--merged", str(merged), "--dtype",
                   "float32", "--offline", *(["--device", "cpu"] if args.device == "cpu" else [])]
            code, wall, out, tail = run_logged(cmd, ctx["env"], log, timeout=max(ctx["left"](), 30))
            record["merge_fallback"] = {"command": shlex.join(["medchat", *cmd[3:]]), "exit": code,
                                        "wall_s": round(wall, 1), "stdout": out.strip()[-500:],
                                        **({"stderr_tail": tail} if code else {"written": listing(merged)})}
        record["merged_check"] = check_merged(merged, ctx["env"], log, timeout=max(ctx["left"](), 30))
        status = status if record["merged_check"].get("loaded") else "merged: failed"
        if "merge_fallback" in record:
            status += " (16-bit merge refused by its parity gate; float32 export checked)"
    if letter == "E":
        record["serve"] = serve_and_ask(str(folder), name, ctx["env"], log, min(240, max(ctx["left"](), 30)),
                                        (["--device", "cpu"] if args.device == "cpu" else [])
                                        + shlex.split(args.serve_args))
        status = status if record["serve"].get("answered") else "serve: failed"
    if record["settings_diffs"]:
        status += " (settings differ)"
    record["status"] = status


# -------------------------------------------------------------------------------------------------
# The table

def _num(value: Any, fmt: str = "{:,.0f}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "–"


def table(records: list[dict[str, Any]]) -> str:
    head = ("| recipe | shape | steps | steady tok/s | peak GiB | LoRA r / alpha / rsLoRA | lr, schedule | seq | "
            "batch × accum | prompt style | targets | backend, quant, batching | written | checks | wall s, end to end | status |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in records:
        u = r.get("used") or {}
        w = r.get("written") or {}
        targets = u.get("target_modules") or []
        targets = "all 7 (attn + MLP)" if len(targets) == 7 else ",".join(targets)
        wrote = []
        if w:
            wrote.append(f"adapter {w.get('adapter_mib')} MiB ({len(w.get('adapter_files', []))} files)")
        if w.get("merged"):
            wrote.append(f"merged {w['merged']['mib']:,.0f} MiB")
        fallback = (r.get("merge_fallback") or {}).get("written")
        if fallback:
            wrote.append(f"float32 export {fallback['mib']:,.0f} MiB")
        if w.get("gguf"):
            wrote.append(f"gguf: {', '.join(w['gguf'])}")
        checks = []
        if "merged_check" in r:
            mc = r["merged_check"]
            checks.append(f"merged loads ({mc.get('architecture')}, q/k/v bias {mc.get('qkv_bias')})"
                          if mc.get("loaded") else "merged: not loaded")
        if "serve" in r:
            sv = r["serve"]
            checks.append(f"served: HTTP {sv.get('status')}, {(sv.get('usage') or {}).get('completion_tokens', '?')} "
                          f"tokens in {sv.get('answer_s')} s" if sv.get("answered") else "serve: no answer")
        if r.get("settings_diffs") == []:
            checks.append("settings = recipe")
        made = f" (making the model {(r.get('model') or {})['s']:.0f})" if (r.get("model") or {}).get("s") else ""
        lr = u.get("learning_rate")
        warm = f", warm-up {u.get('warmup_ratio')}" if u.get("warmup_ratio") else ""
        lines.append(
            f"| {r['recipe']} | {r['shape']} | {r.get('steps', r.get('steps_asked'))} | {_num(r.get('steady_tok_s'))} | "
            f"{_num(r.get('peak_gib'), '{:.1f}')} | "
            f"{u.get('lora_r', '–')} / {u.get('lora_alpha', '–')} / {'on' if u.get('use_rslora') else 'off'} | "
            f"{lr if lr is not None else '–'}, {u.get('lr_scheduler', '–')}{warm} | {u.get('max_seq_length', '–')} | "
            f"{u.get('batch_size', '–')} × {u.get('grad_accum', '–')} | {u.get('prompt_style', '–')} | {targets} | "
            f"{r.get('backend', '–')}, {u.get('quantize', '–')}, {r.get('batching', '–')} | {'; '.join(wrote) or '–'} | "
            f"{'; '.join(checks) or '–'} | {_num(r.get('wall_s'))}{made} | {r.get('status')} |")
    return "\n".join(lines)


def footnotes(records: list[dict[str, Any]]) -> str:
    out = []
    for r in records:
        if r.get("why") or r.get("settings_diffs"):
            out.append(f"- {r['recipe']}: {r.get('why') or ''} {'; '.join(r.get('settings_diffs') or [])}".rstrip())
        if r.get("stderr_tail"):
            out.append("  ```\n  " + "\n  ".join(r["stderr_tail"].splitlines()[-8:]) + "\n  ```")
        for key in ("merged_check", "serve"):
            if r.get(key) and r[key].get("why"):
                out.append(f"- {r['recipe']} {key}: {r[key]['why'][:400]}")
        if r.get("notes"):
            out.append(f"- {r['recipe']} (manifest notes): {'; '.join(r['notes'])}")
    return "\n".join(out)


# -------------------------------------------------------------------------------------------------

def preflight() -> dict[str, bool]:
    """Which of the libraries the recipes and checks rely on this Python can import (none is imported)."""
    return {m: importlib.util.find_spec(m) is not None
            for m in ("torch", "unsloth", "bitsandbytes", "trl", "peft", "fastapi", "uvicorn", "httpx")}


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--only", default=",".join(LETTERS), help="recipes to run, e.g. A,B,D (default: all five)")
    p.add_argument("--steps", default="",
                   help="optimizer steps: N for every recipe, or A=12,C=60 (default: "
                        + ",".join(f"{k}={v}" for k, v in DEFAULT_STEPS.items()) + ")")
    p.add_argument("--shape", choices=sorted(harness.SHAPES), default="",
                   help="run every recipe on this shape instead of its base's (tiny: a trial run)")
    p.add_argument("--device", choices=("auto", "cpu"), default="auto",
                   help="cpu: train and serve on the CPU (adds --device cpu --quantize none)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="a trial of the whole script: --shape tiny --device cpu --steps 2 (C at lr 1e-2)")
    p.add_argument("--models", default="/tmp/recipe-models",
                   help="folder of the random-init models, one per shape (made when missing; the 8B one is /tmp/l8b)")
    p.add_argument("--model-dir", action="append", default=[], metavar="SHAPE=DIR",
                   help="use (or make) this folder for a shape")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds for one recipe's `medchat finetune` (default 330; 1,200 with --cpu-smoke)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole call: a recipe that cannot start with 45 s left is skipped "
                        "(default 560, for a 10-minute GPU call; 3,600 with --cpu-smoke)")
    p.add_argument("--finetune-args", default="", help="more `medchat finetune` flags for every recipe (quoted)")
    p.add_argument("--serve-args", default="", help="more `medchat serve` flags for E's check (quoted)")
    p.add_argument("--home", default="", help="MEDCHAT_HOME for the runs (default: a new temporary folder)")
    p.add_argument("--table", metavar="FILE", help="also write the markdown table here")
    p.add_argument("--from-jsonl", nargs="+", metavar="FILE", help="print (and --table) the table of earlier records")
    p.add_argument("--load-check", metavar="DIR", help=argparse_suppress())
    args = p.parse_args(argv)
    if args.load_check:
        return load_check(args.load_check)
    if args.from_jsonl:
        records = [json.loads(line[len(harness.MARK):] if line.startswith(harness.MARK) else line)
                   for f in args.from_jsonl for line in Path(f).read_text().splitlines() if line.strip()]
        records = [r for r in records if r.get("bench") == "recipes" and "recipe" in r]
        return emit_table(records, args.table)
    if args.cpu_smoke:
        args.shape, args.device = args.shape or "tiny", "cpu"
        args.steps = args.steps or "2"
    args.timeout = args.timeout or (1200 if args.cpu_smoke else 330)
    args.budget = args.budget or (3600 if args.cpu_smoke else 560)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed call still stops its runs (finally blocks)
    started = time.perf_counter()
    letters = [x.strip().upper() for x in args.only.split(",") if x.strip()]
    if not letters or set(letters) - set(LETTERS):
        p.error(f"--only: recipes are {', '.join(LETTERS)}")
    args.model_dirs = {"8b": "/tmp/l8b"}
    for item in args.model_dir:
        shape, _, folder = item.partition("=")
        if shape not in harness.SHAPES or not folder:
            p.error(f"--model-dir: expected SHAPE=DIR with SHAPE one of {', '.join(harness.SHAPES)}")
        args.model_dirs[shape] = folder
    rec = harness.recorder("recipes", {k: v for k, v in vars(args).items() if k != "model_dirs"})
    if args.save and rec.out is None:
        rec.out = harness.results_dir() / "recipes.jsonl"
    home = Path(args.home or tempfile.mkdtemp(prefix="medchat-recipes-"))
    work = home / "bench"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MEDCHAT_HOME": str(home), "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    found = preflight()
    print(f"recipes {','.join(letters)}; MEDCHAT_HOME {home}; libraries: "
          + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in found.items()), flush=True)
    ctx = {"steps": parse_steps(args.steps or ",".join(f"{k}={v}" for k, v in DEFAULT_STEPS.items())),
           "stamp": time.strftime("%H%M%S"), "work": work, "home": home, "env": env, "rows": {},
           "models": Path(args.models), "left": lambda: args.budget - (time.perf_counter() - started)}
    records = []
    for letter in letters:
        print(f"recipe {letter}: {ctx['left']():.0f} s of the budget left", flush=True)
        result = run_recipe(letter, args, ctx)
        records.append(rec.emit(**result, libraries=found, medchat_home=str(home)))
        print(f"recipe {letter}: {result['status']} in {result['wall_s']:.0f} s", flush=True)
        if args.table:  # after every recipe: a call cut short still leaves the table of those that ran
            write_table(records, args.table)
    return emit_table(records, args.table)


def full_table(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no records\n"
    calls = {r.get("command", ""): r for r in records}  # one line per call (--from-jsonl joins several)
    head = "\n".join(f"- `{cmd}` — {(r.get('device') or {}).get('name', '?')}, commit {r.get('commit')}, {r.get('utc')}"
                     for cmd, r in calls.items())
    notes = footnotes(records)
    return f"{head}\n\n{table(records)}\n" + (f"\n{notes}\n" if notes else "")


def write_table(records: list[dict[str, Any]], path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(full_table(records), encoding="utf-8")


def emit_table(records: list[dict[str, Any]], path: str | None) -> int:
    print(full_table(records))
    if path:
        write_table(records, path)
    return 0 if records and all(r.get("status", "").startswith("ok") for r in records) else 1


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
