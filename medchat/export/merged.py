"""`medchat export --merged DIR`: fold a LoRA adapter into a 16-bit copy of its base model.

The result is a plain transformers folder (safetensors, tokenizer, chat template) that vLLM,
llama.cpp's converter and `from_pretrained` load without peft. Merging happens into 16-bit weights,
never into 4-bit ones (merging into quantized weights is what makes merged models lose the fine-tune).
The folder is written next to its target and renamed into place only when complete, after the
parity gate (medchat/export/parity.py) has loaded it back and found it answering like the adapter.
`medchat export --gguf` goes through the same merge, then llama.cpp's converter (export/gguf.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from medchat import __version__
from medchat.chatformat.think import OPEN
from medchat.errors import AdapterError, UsageError
from medchat.store import adapters as adapter_store
from medchat.store.manifest import ExportRecord, ParityRecord, read_manifest, write_manifest

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


@dataclass
class Prepared:
    """The adapter attached (unmerged) to its 16-bit base, loaded in float32, and what parity needs."""

    adapter_path: Path
    resolved: Any
    model: Any  # a PeftModel, float32
    tokenizer: Any
    style: str
    template: str | None  # the chat template the export carries (the style's, else the model's own)
    system_prompt: str
    reference: Any  # parity.Reference


def prepare(adapter: str, *, model: str, device: str, offline: bool, system_prompt: str, say: Say) -> Prepared:
    """Load the 16-bit base in float32 (merging and the parity reference both want full precision),
    attach the adapter, and render the parity prompts (the reference runs in ``merge`` or ``gate``)."""
    adapter_path = adapter_store.resolve_adapter(adapter)
    base_spec = model or adapter_store.adapter_base_model(adapter_path)
    if not base_spec:
        raise AdapterError(f"adapter {adapter_path.name} does not record its base model; pass --model")

    from medchat.export import parity
    from medchat.models.adapters import adapter_prompt_style, attach_adapter, check_adapter_base
    from medchat.models.catalog import resolve_model
    from medchat.models.loading import load_hf_model, pick_device

    device = pick_device(device)
    resolved = resolve_model(base_spec, device=device, offline=offline, progress=say, fallback=False)
    if (original := sixteen_bit_original(resolved.source)) != resolved.source:
        say(f"merging into the 16-bit {original}, not the 4-bit build {resolved.source}")
        resolved = resolve_model(original, device=device, offline=offline, progress=say, fallback=False)
    check_adapter_base(adapter_path, resolved)
    say(f"loading {resolved.name} in float32 on {device}")
    base, tokenizer = load_hf_model(resolved, device=device, dtype="float32", quantize="none")
    if getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False):
        raise UsageError(
            f"{resolved.name} is a quantized checkpoint; merging into quantized weights loses the fine-tune. "
            "Pass --model with the 16-bit base model"
        )
    peft_model = attach_adapter(base, adapter_path, resolved).eval()
    style = adapter_prompt_style(adapter_path, resolved) or "chat_template"
    template = chat_template_for_style(style)
    if template:
        tokenizer.chat_template = template
    manifest = read_manifest(adapter_path)
    system = (manifest.system_prompt if manifest and manifest.system_prompt else system_prompt)
    prompts = parity.render_prompts(tokenizer, style, system)
    ref = parity.Reference(prompts=prompts, prompt_ids=[parity.encode(tokenizer, p) for p in prompts])
    return Prepared(adapter_path, resolved, peft_model, tokenizer, style, tokenizer.chat_template, system, ref)


def merge(prep: Prepared, dtype: Any, say: Say) -> Any:
    from medchat.export.parity import run_reference

    run_reference(prep.model, prep.reference, say)  # while the adapter is still unmerged
    say(f"merging adapter {prep.adapter_path.name}")
    merged = prep.model.merge_and_unload()
    prep.model = None  # merge_and_unload folded the LoRA into the base's own weights
    return merged.to(dtype)


def record_export(prep: Prepared, kind: str, path: Path, quant: str, figures: ParityRecord, say: Say) -> None:
    """Add the export and its parity figures to the adapter's manifest (adapters in medchat's store only:
    a folder elsewhere, or a read-only one, keeps its files untouched)."""
    manifest = read_manifest(prep.adapter_path)
    in_store = prep.adapter_path.resolve().is_relative_to(adapter_store.store_dir().resolve())
    if manifest is None or not in_store:
        return
    manifest.exports.append(ExportRecord(
        kind=kind, path=str(path), quant=quant, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        medchat_version=__version__, base_model=prep.resolved.base_id, prompt_style=prep.style, parity=figures,
    ))
    try:
        write_manifest(prep.adapter_path, manifest)
    except OSError as exc:
        say(f"could not record the parity figures in {prep.adapter_path.name}'s manifest: {exc.strerror or exc}")


def gate(prep: Prepared, loaded: Any, loaded_tokenizer: Any, what: str, *, sixteen_bit: bool, say: Say) -> ParityRecord:
    from medchat.export import parity

    parity.check_tokenizer(loaded_tokenizer, prep.reference, what)
    if prep.model is not None:  # --verify: nothing was merged, the reference runs now
        parity.run_reference(prep.model, prep.reference, say)
    say(f"parity gate: comparing {what} with the adapter on its base")
    figures = parity.compare(loaded, prep.reference, sixteen_bit=sixteen_bit)
    parity.enforce(figures, what)
    say(f"parity: {parity.verdict_line(figures)}")
    return figures


def export_merged(
    adapter: str,
    merged_dir: Path,
    *,
    model: str = "",
    device: str = "auto",
    dtype: str = "auto",
    offline: bool = False,
    system_prompt: str = "",
    say: Say = lambda _m: None,
) -> Path:
    """Merge ``adapter`` into its base model and save it to ``merged_dir``, after the parity gate."""
    from medchat.export.parity import load_back_folder
    from medchat.models.loading import pick_device, pick_dtype

    adapter_store.resolve_adapter(adapter)  # a missing adapter is reported before anything else
    out = check_target(Path(merged_dir))
    if dtype not in {"auto", "bfloat16", "float16", "float32"}:  # the CLI's Choice already checks
        raise UsageError(f"--dtype must be auto, bfloat16, float16 or float32, got {dtype!r}")
    prep = prepare(adapter, model=model, device=device, offline=offline, system_prompt=system_prompt, say=say)
    merged = merge(prep, pick_dtype(dtype, pick_device(device)), say)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        say(f"saving to {out}")
        merged.save_pretrained(tmp, safe_serialization=True)
        prep.tokenizer.save_pretrained(tmp)
        note = {
            "exported_by": f"medchat {__version__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "base_model": prep.resolved.base_id,
            "adapter": str(prep.adapter_path),
            "adapter_name": prep.adapter_path.name,
            "prompt_style": prep.style,
            "dtype": str(getattr(merged, "dtype", "")).replace("torch.", ""),
        }
        del merged
        loaded, loaded_tok = load_back_folder(tmp)
        figures = gate(prep, loaded, loaded_tok, f"the merged folder {out.name}", sixteen_bit=True, say=say)
        del loaded
        note["parity"] = figures.model_dump()
        (tmp / EXPORT_NOTE).write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # checked empty above; rmdir refuses if something appeared since
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    record_export(prep, "merged", out, note["dtype"], figures, say)
    say(f"merged model written to {out}")
    return out
