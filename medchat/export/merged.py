"""`medchat export --merged DIR`: fold a LoRA adapter into a 16-bit copy of its base model.

The result is a plain transformers folder (safetensors, tokenizer, chat template) that vLLM,
llama.cpp's converter and `from_pretrained` load without peft. Merging happens into 16-bit weights,
never into 4-bit ones (merging into quantized weights is what makes merged models lose the fine-tune).
The folder is written next to its target and renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from medchat import __version__
from medchat.chatformat.think import OPEN
from medchat.errors import AdapterError, UsageError
from medchat.store import adapters as adapter_store
from medchat.store.manifest import read_manifest

Say = Callable[[str], None]
EXPORT_NOTE = "medchat-export.json"


def check_target(out_dir: Path) -> Path:
    """The target folder must not exist, or be an empty folder: an export never overwrites."""
    out = out_dir.expanduser().absolute()
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"{out} exists and is not a folder; choose a new --merged folder")
        if any(out.iterdir()):
            raise UsageError(f"{out} is not empty; choose a new --merged folder (an export never overwrites)")
    if not out.parent.is_dir():
        raise UsageError(f"the parent folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UsageError(f"cannot write into {out.parent}: permission denied")
    return out


def sixteen_bit_original(source: str) -> str:
    """A pre-quantized hub build -> the 16-bit original it was made from (same owner):
    ``unsloth/DeepSeek-R1-Distill-Llama-8B-unsloth-bnb-4bit`` -> ``unsloth/DeepSeek-R1-Distill-Llama-8B``.
    Local folders and other ids are returned unchanged."""
    if Path(source).exists():
        return source
    for suffix in ("-unsloth-bnb-4bit", "-bnb-4bit"):
        if source.endswith(suffix):
            return source[: -len(suffix)]
    return source


def chat_template_for_style(style_name: str) -> str | None:
    """A Jinja chat template that renders a plain prompt style exactly like medchat does, so servers
    that format chat requests with the tokenizer's template (vLLM) ask the model the way it was trained.
    None for "chat_template" (keep the tokenizer's own)."""
    from medchat.chatformat.prompt import get_style

    style = get_style(style_name)
    if style is None:
        return None
    before, _, after = style.question.partition("{question}")

    def lit(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)  # a valid Jinja string literal

    prefill = "{{- " + lit(OPEN + "\n") + " -}}" if style.think_prefill else ""
    return (
        f"{{{{- {lit(style.preamble)} -}}}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        f"{{{{- {lit(before)} + message['content'] | trim + {lit(after)} + {lit(style.response)} -}}}}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{{- message['content'] | trim + '\\n\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt and messages and messages[-1]['role'] == 'user' -%}"
        f"{prefill}"
        "{%- endif -%}"
    )


def export_chat_template(adapter: str, target: Path) -> Path:
    """Write the Jinja chat template matching the adapter's prompt style (for vLLM ``--chat-template``
    when serving the adapter itself with ``--lora-modules``)."""
    adapter_path = adapter_store.resolve_adapter(adapter)
    manifest = read_manifest(adapter_path)
    style = (manifest.prompt_style if manifest else "") or "chat_template"
    template = chat_template_for_style(style)
    if template is None:
        raise UsageError(
            f"adapter {adapter_path.name} was trained with the base model's own chat template; "
            "servers use it already, no --chat-template needed"
        )
    from medchat.paths import atomic_write_text

    out = target.expanduser().absolute()
    if out.exists():
        raise UsageError(f"{out} already exists; choose a new file (an export never overwrites)")
    atomic_write_text(out, template + "\n", mode=0o644)
    return out


def export_merged(
    adapter: str,
    merged_dir: Path,
    *,
    model: str = "",
    device: str = "auto",
    dtype: str = "auto",
    offline: bool = False,
    say: Say = lambda _m: None,
) -> Path:
    """Merge ``adapter`` into its base model and save it to ``merged_dir``; returns the folder."""
    adapter_path = adapter_store.resolve_adapter(adapter)
    out = check_target(Path(merged_dir))
    if dtype not in {"auto", "bfloat16", "float16", "float32"}:  # the CLI's Choice already checks
        raise UsageError(f"--dtype must be auto, bfloat16, float16 or float32, got {dtype!r}")
    base_spec = model or adapter_store.adapter_base_model(adapter_path)
    if not base_spec:
        raise AdapterError(f"adapter {adapter_path.name} does not record its base model; pass --model")

    from medchat.models.adapters import adapter_prompt_style, attach_adapter, check_adapter_base
    from medchat.models.catalog import resolve_model
    from medchat.models.loading import load_hf_model, pick_device

    device = pick_device(device)
    resolved = resolve_model(base_spec, device=device, offline=offline, progress=say, fallback=False)
    if (original := sixteen_bit_original(resolved.source)) != resolved.source:
        say(f"merging into the 16-bit {original}, not the 4-bit build {resolved.source}")
        resolved = resolve_model(original, device=device, offline=offline, progress=say, fallback=False)
    check_adapter_base(adapter_path, resolved)
    say(f"loading {resolved.name} in 16-bit on {device}")
    base, tokenizer = load_hf_model(resolved, device=device, dtype=dtype, quantize="none")
    if getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False):
        raise UsageError(
            f"{resolved.name} is a quantized checkpoint; merging into quantized weights loses the fine-tune. "
            "Pass --model with the 16-bit base model"
        )

    say(f"merging adapter {adapter_path.name}")
    merged = attach_adapter(base, adapter_path, resolved).merge_and_unload()

    style = adapter_prompt_style(adapter_path, resolved) or "chat_template"
    if template := chat_template_for_style(style):
        tokenizer.chat_template = template

    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        say(f"saving to {out}")
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        note = {
            "exported_by": f"medchat {__version__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "base_model": resolved.base_id,
            "adapter": str(adapter_path),
            "adapter_name": adapter_path.name,
            "prompt_style": style,
            "dtype": str(getattr(merged, "dtype", "")).replace("torch.", ""),
        }
        (tmp / EXPORT_NOTE).write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # checked empty above; rmdir refuses if something appeared since
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"merged model written to {out}")
    return out
