"""What every benchmark script shares: timing, JSON records, results folders, random-init models.

* Timing: ``sync()`` waits for the GPU when CUDA is in use (a no-op otherwise, and torch is never imported
  for it); ``clock()`` is a synchronised stopwatch; ``timings(fn, runs, warmup)`` times a call repeatedly;
  ``median``, ``per_second``.
* Records: ``Recorder.emit(**figures)`` prints one ``RESULT {json}`` line per result (the GPU shell scripts
  grep for it) and appends it to a JSONL file with ``--out FILE`` or ``--save``. Every record carries the
  script, the command line, its settings (the parsed arguments), the device, library versions, the
  checkout's commit and the UTC time.
* Results: ``results_dir()`` is ``benchmarks/results/<date>-<device>/`` (``2026-11-22-h100``,
  ``2026-11-22-cpu``), made on first use.
* Models: ``make_model`` writes a random-init Llama (the 8B shape of Llama-3.1-8B / R1-Distill-Llama-8B, or
  a tiny one) with a small BPE tokenizer: random weights cost the same FLOPs and bytes as trained ones.
  ``fit_vocab`` makes such a model emit decodable text; ``load_model``, ``random_lora``, ``merge_adapter``,
  ``unit_norms`` and ``chat_prompt_ids`` are the pieces the decode scripts share.

Importing this module imports neither torch nor medchat; the functions that need them import them.
Scripts use it as ``import harness`` (``python benchmarks/SCRIPT.py`` puts this folder on ``sys.path``).

usage: python benchmarks/harness.py results-dir [--device DEVICE] [--date YYYY-MM-DD]
       python benchmarks/harness.py environment
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.metadata as _md
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
MARK = "RESULT "  # the prefix of a result line on stdout
RESERVED = ("bench", "settings", "command", "device", "versions", "commit", "utc")  # keys every record has
VERSIONED = ("medchat", "torch", "transformers", "peft", "trl", "accelerate", "torchao", "bitsandbytes", "unsloth",
             "textual")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QUESTION = "Why does iron deficiency lead to anaemia?"


# -------------------------------------------------------------------------------------------------
# Timing

def cuda_in_use() -> bool:
    """True when this process imported torch and CUDA is available (never imports torch itself)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available())


def sync() -> None:
    """Wait for queued GPU work, so that a wall-clock reading includes it; nothing on the CPU."""
    if cuda_in_use():
        sys.modules["torch"].cuda.synchronize()


class Clock:
    """A running stopwatch: ``elapsed()`` inside the block (not synchronised), ``seconds`` after it."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


@contextlib.contextmanager
def clock(synchronise: bool = True) -> Iterator[Clock]:
    """``with clock() as c: ...`` then ``c.seconds``: perf_counter, with the GPU synchronised at both ends."""
    if synchronise:
        sync()
    c = Clock()
    try:
        yield c
    finally:
        if synchronise:
            sync()
        c.seconds = c.elapsed()


def timings(fn: Callable[[], Any], runs: int = 1, warmup: int = 0, synchronise: bool = True) -> list[float]:
    """Seconds of each of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        with clock(synchronise) as c:
            fn()
        out.append(c.seconds)
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def per_second(count: float, seconds: float, digits: int = 1) -> float:
    return round(count / seconds, digits) if seconds > 0 else 0.0


def gpu_memory_gib(peak: bool = False) -> float | None:
    """GPU memory this process holds (or its peak), GiB; None without CUDA."""
    if not cuda_in_use():
        return None
    cuda = sys.modules["torch"].cuda
    return round((cuda.max_memory_allocated() if peak else cuda.memory_allocated()) / 2**30, 2)


def empty_cache() -> None:
    if cuda_in_use():
        sys.modules["torch"].cuda.empty_cache()


# -------------------------------------------------------------------------------------------------
# Environment: device, versions, commit

def _nvidia_smi() -> dict[str, Any] | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    if not line:
        return None
    name, mem, driver = (x.strip() for x in (line.split(",") + ["", ""])[:3])
    return {"name": name, "memory_gib": round(float(mem) / 1024, 1) if mem.replace(".", "").isdigit() else None,
            "driver": driver}


def device() -> dict[str, Any]:
    """The machine: its GPU (from torch when this process imported it, else nvidia-smi) or its CPU."""
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                            "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    if cuda_in_use():
        props = torch.cuda.get_device_properties(0)
        info.update(kind="cuda", name=torch.cuda.get_device_name(0), memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda)
        return info
    gpu = _nvidia_smi() if torch is None else None  # torch imported without CUDA: a CPU run, whatever is there
    if gpu:
        info.update(kind="cuda", **gpu)
    else:
        info.update(kind="cpu", name=_cpu_name())
    return info


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_label(info: dict[str, Any] | None = None) -> str:
    """A short name for folders: ``cpu``, or the GPU's model (``h100``, ``h200``, ``a100``, ``l40s``)."""
    info = info or device()
    if info.get("kind") != "cuda":
        return "cpu"
    name = str(info.get("name", "")).lower().replace("nvidia", "")
    found = re.search(r"[a-z]*\d+[a-z]*", name)
    return found[0] if found else "gpu"


def versions() -> dict[str, str]:
    """Python and the installed versions of the libraries that matter here (read without importing them)."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        with contextlib.suppress(_md.PackageNotFoundError):
            out[name] = _md.version(name)
    return out


def commit() -> str | None:
    """The checkout's commit (``+dirty`` when files differ from it); None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def command_line(argv: Sequence[str] | None = None) -> str:
    """How this script was run, as a shell line (the script's path relative to the checkout)."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        with contextlib.suppress(ValueError):
            argv[0] = str(Path(argv[0]).resolve().relative_to(ROOT))
    return " ".join(["python", *map(shlex.quote, argv)])


def today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")


# -------------------------------------------------------------------------------------------------
# Results

def results_dir(device_name: str | None = None, date: str | None = None, create: bool = True) -> Path:
    """``benchmarks/results/<date>-<device>/`` (UTC date; device from ``device_label()``)."""
    path = RESULTS / f"{date or today()}-{device_name or device_label()}"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


class Recorder:
    """One benchmark run's results: ``emit(**figures)`` prints ``RESULT {json}`` and appends it to ``out``.

    The environment (device, versions, commit) is read at the first ``emit``, after the script has
    imported torch, so that it names the GPU the figures came from."""

    def __init__(self, bench: str, settings: dict[str, Any] | None = None, *, out: Path | str | None = None,
                 save: bool = False, echo: bool = True, argv: Sequence[str] | None = None) -> None:
        self.bench = bench
        self.settings = {k: v for k, v in (settings or {}).items() if k not in ("out", "save")}
        self.out = Path(out) if out else None
        self.save = save and not out  # the file is named at the first emit, from the device
        self.echo = echo
        self.command = command_line(argv)
        self._env: dict[str, Any] | None = None
        self.records: list[dict[str, Any]] = []

    def environment(self) -> dict[str, Any]:
        if self._env is None:
            self._env = {"device": device(), "versions": versions(), "commit": commit()}
        return self._env

    def emit(self, **figures: Any) -> dict[str, Any]:
        figures = {(f"result_{k}" if k in RESERVED else k): v for k, v in figures.items()}
        record = {"bench": self.bench, **figures, "settings": self.settings, "command": self.command,
                  **self.environment(), "utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        line = json.dumps(record, default=str)
        if self.save and self.out is None:
            self.out = results_dir(device_label(record["device"])) / f"{self.bench}.jsonl"
        if self.echo:
            print(MARK + line, flush=True)
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            with self.out.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        self.records.append(record)
        return record


def parser(doc: str | None, **kwargs: Any) -> argparse.ArgumentParser:
    """An argument parser whose help is the script's docstring, with the shared ``--out``/``--save``."""
    lines = (doc or "").strip().splitlines()
    p = argparse.ArgumentParser(description=lines[0] if lines else None,
                                epilog="\n".join(lines[1:]).strip() or None,
                                formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    add_output_args(p)
    return p


def add_output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("results")
    g.add_argument("--out", metavar="FILE", help="also append each result as a JSON line to FILE")
    g.add_argument("--save", action="store_true",
                   help="also append each result to benchmarks/results/<date>-<device>/<script>.jsonl")
    g.add_argument("--note", default="", help="a label kept in each record's settings (which code, which call)")


def recorder(bench: str, args: argparse.Namespace | dict[str, Any], *, echo: bool = True) -> Recorder:
    """The Recorder for a script's parsed arguments (``--out`` / ``--save`` from ``parser``)."""
    settings = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    return Recorder(bench, settings, out=settings.get("out"), save=bool(settings.get("save")), echo=echo)


# -------------------------------------------------------------------------------------------------
# Random-init models (what ../shared/gpu/mkmodel.py made, seeded) and the pieces the decode scripts share

SHAPES: dict[str, dict[str, Any]] = {
    # Llama-3.1-8B / DeepSeek-R1-Distill-Llama-8B
    "8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
               rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
    # DeepSeek-R1-Distill-Qwen-1.5B (Qwen2: biases on q/k/v, untied 151,936-row output layer)
    "qwen1.5b": dict(arch="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                     num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=131072,
                     rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False),
    # Llama-3.2-3B (output layer tied to the embeddings, llama3 rope scaling)
    "3b": dict(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
               num_attention_heads=24, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
               rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
               rope_scaling={"rope_type": "llama3", "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192}),
    # two small layers over the tokenizer's own vocabulary: for trying a script on a CPU
    "tiny": dict(vocab_size=None, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096),
}
TOKENIZER_TEXT = (
    "The patient presents with fever, cough and shortness of breath.",
    "Iron deficiency reduces haemoglobin synthesis and oxygen delivery.",
    "Consider the differential diagnosis before ordering tests.",
)
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}### assistant:\n<think>\n{% endif %}")


def make_tokenizer(out: Path | str) -> Any:
    """A 2,000-token byte-level BPE tokenizer with a chat template that opens ``<think>``, saved to ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<think>", "</think>"]
    tok.train_from_iterator(list(TOKENIZER_TEXT) * 50,
                            trainers.BpeTrainer(vocab_size=2000, special_tokens=special,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                     eos_token="<|end_of_text|>", unk_token="<unk>", pad_token="<unk>")
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)
    return hf_tok


def make_model(out: Path | str, shape: str = "8b", *, device: str | None = None, seed: int = 0,
               fit: bool = False, unit_norms: bool = False) -> dict[str, Any]:
    """Write a random-init model of ``shape`` (``SHAPES``: Llama, or Qwen2 for ``arch="qwen2"``) in bfloat16,
    with its tokenizer, to ``out``.

    Every weight is drawn from N(0, 0.02) on ``device`` (default: CUDA when there is one), seeded, as
    ../shared/gpu/mkmodel.py did unseeded. ``fit`` also runs ``fit_vocab``; ``unit_norms`` sets the RMSNorm
    weights to 1 as in trained models (``set_unit_norms``: an adapter's effect then shows in the logits).
    Returns what was made."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    t0 = time.perf_counter()
    out = Path(out)
    tok = make_tokenizer(out)
    dims = dict(SHAPES[shape])
    arch = dims.pop("arch", "llama")
    dims["vocab_size"] = dims["vocab_size"] or len(tok)
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    cfg = config_class(**dims)
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    cfg.dtype = torch.bfloat16
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    try:
        with torch.device(device):
            torch.set_default_dtype(torch.bfloat16)
            model = model_class(cfg)
            for p in model.parameters():
                torch.nn.init.normal_(p, std=0.02)
            if unit_norms:
                set_unit_norms(model)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(out, max_shard_size="5GB")
    made = {"made": shape, "params": sum(p.numel() for p in model.parameters()), "drawn_on": device,
            "seed": seed, "folder": str(out), "unit_norms": unit_norms}
    del model
    if fit:
        made["fit_vocab"] = fit_vocab(out)
    made["s"] = round(time.perf_counter() - t0, 1)
    return made


def fit_vocab(folder: Path | str) -> dict[str, Any]:
    """Zero the output rows a random-init model's small tokenizer cannot decode (beyond its vocabulary,
    special tokens, bytes that are not whole characters), in place: greedy decoding then picks decodable
    text, never EOS, and every matrix keeps its size (the same bytes and kernels)."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    n_tok = len(tok)
    index = folder / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"] if index.exists() else {}
    # A tied output layer (the 3b shape) is the embedding matrix: its rows beyond the tokenizer are never input.
    head = "lm_head.weight" if "lm_head.weight" in weight_map or not weight_map else "model.embed_tokens.weight"
    shard = weight_map.get(head, "model.safetensors")
    tensors = load_file(folder / shard)
    if head not in tensors:
        head = "model.embed_tokens.weight"
    tensors[head][n_tok:] = 0
    # never EOS (every run decodes the same length) nor another special token (skipped when decoded)
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    # and never a lone byte that is not a whole character (random picks would never form valid UTF-8)
    special |= {i for i in range(n_tok) if "\ufffd" in tok.decode([i])}
    tensors[head][sorted(special)] = 0
    save_file(tensors, folder / shard, metadata={"format": "pt"})
    return {"zeroed_rows_from": n_tok, "rows_zeroed_below_vocab": len(special),
            "of": tensors[head].shape[0], "shard": shard, "matrix": head}


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(folder: str, *, device: str | None = None, unit_norms: bool = False, quantization_config: Any = None):
    """A model folder in bfloat16 on ``device`` (default: the GPU when there is one), in eval mode."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    device = device or torch_device()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16,
                                                 device_map={"": 0} if device == "cuda" else None,
                                                 quantization_config=quantization_config)
    if unit_norms:
        set_unit_norms(model)
    return model.eval()


def set_unit_norms(model: Any) -> None:
    """RMSNorm weights to 1, as in trained models (a random init draws them around 0.02, which makes every
    layer, and so every adapter, nearly invisible in the output)."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)


def random_lora(model: Any, *, seed: int = 0, r: int = 16, b_std: float | None = None):
    """``model`` with a random LoRA adapter (r ``r``, alpha ``r``, every linear layer) attached, not zero.
    ``b_std``: redraw the B matrices from N(0, b_std) (large enough to change a random model's tokens)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=r, init_lora_weights=False, target_modules=list(LORA_TARGETS))
    model = get_peft_model(model, cfg)
    if b_std is not None:
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, b_std)
    return model


def merge_adapter(model: Any) -> Any:
    """Fold a PEFT LoRA adapter into the base weights; returns the plain model (FastDecoder also merges a
    PEFT model itself while it fuses; the scripts merge first to time and check the two apart)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def chat_prompt_ids(tokenizer: Any, question: str = QUESTION) -> list[int]:
    """Token ids of one user turn through the tokenizer's chat template, with the generation prompt."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        return_dict=False)
    return list(ids if isinstance(ids, list) else ids["input_ids"])


def agree(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# -------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    rd = sub.add_parser("results-dir", help="print (and make) benchmarks/results/<date>-<device>/")
    rd.add_argument("--device", help="the device part of the name (default: this machine's, e.g. cpu, h100)")
    rd.add_argument("--date", help="the date part (default: today, UTC)")
    sub.add_parser("environment", help="print the device, versions and commit a record would carry")
    args = p.parse_args(argv)
    if args.what == "results-dir":
        print(results_dir(args.device, args.date))
    else:
        print(json.dumps({"device": device(), "versions": versions(), "commit": commit()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
