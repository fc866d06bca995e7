"""`medchat export --gguf OUT.gguf`: the adapter merged into its 16-bit base, as one GGUF file for
llama.cpp, Ollama and LM Studio, with an Ollama Modelfile beside it; and `--verify FILE`, the parity
gate on a file made elsewhere (a llama-quantize'd copy, say).

Order of work: load the base in float32 and attach the adapter; run the parity reference; merge;
save a staging folder; convert it with llama.cpp's converter into a hidden file beside the target;
load that back and pass the parity gate; only then rename it into place and write the Modelfile.
Any failure removes what was written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from medchat.errors import UsageError
from medchat.export import llamacpp
from medchat.export.merged import Prepared, gate, merge, prepare, record_export
from medchat.export.modelfile import modelfile
from medchat.paths import atomic_write_text
from medchat.store.manifest import ParityRecord

Say = Callable[[str], None]
SIXTEEN_BIT_FILE_TYPES = {0, 1, 32}  # GGUF general.file_type: all F32, mostly F16, mostly BF16
STAGE_FLOAT32_UP_TO = 3e9  # parameters; larger models are staged in bfloat16 (half the disk and memory)


def check_out_file(path: Path) -> Path:
    out = path.expanduser().absolute()
    if out.suffix.lower() != ".gguf":
        raise UsageError(f"--gguf takes a file name ending in .gguf, got {path}")
    if out.exists():
        raise UsageError(f"{out} already exists; choose a new file (an export never overwrites)")
    if not out.parent.is_dir():
        raise UsageError(f"the parent folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UsageError(f"cannot write into {out.parent}: permission denied")
    if modelfile_path(out).exists():
        raise UsageError(f"{modelfile_path(out)} already exists; choose a new file name (an export never overwrites)")
    return out


def modelfile_path(gguf_file: Path) -> Path:
    return gguf_file.with_suffix(".Modelfile")


def ollama_name(adapter_name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", adapter_name.lower()).strip("-.") or "medchat"


def run_instructions(gguf_file: Path, mf: Path, adapter_name: str) -> list[str]:
    name = ollama_name(adapter_name)
    return [
        f"llama.cpp: llama-cli -m {gguf_file} -cnv --jinja   (or: llama-server -m {gguf_file} --jinja)",
        f"Ollama:    ollama create {name} -f {mf} && ollama run {name}",
    ]


def export_gguf(
    adapter: str,
    out_file: Path,
    *,
    quant: str = "f16",
    model: str = "",
    device: str = "auto",
    offline: bool = False,
    system_prompt: str = "",
    generation: Any = None,
    say: Say = lambda _m: None,
) -> tuple[Path, Path, ParityRecord]:
    """Write the GGUF and its Modelfile; returns (gguf, Modelfile, parity figures)."""
    import torch

    from medchat.store import adapters as adapter_store

    quant = llamacpp.check_quant(quant)
    adapter_store.resolve_adapter(adapter)  # a missing adapter is reported before anything else
    out = check_out_file(Path(out_file))
    llamacpp.converter()  # a missing or mismatched converter is reported before any weights load

    prep = prepare(adapter, model=model, device=device, offline=offline, system_prompt=system_prompt, say=say)
    params = sum(p.numel() for p in prep.model.parameters())
    stage_dtype = torch.float32 if params <= STAGE_FLOAT32_UP_TO else torch.bfloat16
    merged = merge(prep, stage_dtype, say)
    eos_ids = [i for i in (merged.generation_config.eos_token_id, merged.config.eos_token_id) if i is not None]
    eos_id = (eos_ids[0][0] if isinstance(eos_ids[0], list) else eos_ids[0]) if eos_ids else None
    all_eos = eos_ids[0] if eos_ids and isinstance(eos_ids[0], list) else ([eos_id] if eos_id is not None else [])
    context = int(getattr(merged.config, "max_position_embeddings", 4096) or 4096)

    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.partial-", suffix=".gguf")
    os.close(fd)
    tmp_file = Path(tmp_name)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.stem}.staging-"))
    name = f"{Path(prep.resolved.base_id).name}-{prep.adapter_path.name}"
    stage = staging / name  # the converter names the model after its folder (general.name, ...)
    try:
        say(f"saving the merged model for conversion ({str(stage_dtype).replace('torch.', '')})")
        merged.save_pretrained(stage, safe_serialization=True)
        del merged
        prep.tokenizer.save_pretrained(stage)
        llamacpp.prepare_tokenizer_files(stage)
        tmp_file.unlink()
        llamacpp.convert(stage, tmp_file, quant, say, model_name=name)
        shutil.rmtree(staging, ignore_errors=True)

        figures = check_file(prep, tmp_file, out.name, eos_id=eos_id, say=say)
        text = modelfile(
            out.name, prep.tokenizer, prep.style, system_prompt=prep.system_prompt,
            stop=[prep.tokenizer.convert_ids_to_tokens(int(i)) for i in all_eos],
            temperature=getattr(generation, "temperature", 0.6), top_p=getattr(generation, "top_p", 0.95),
            num_predict=getattr(generation, "max_new_tokens", 1200), num_ctx=min(context, 8192),
        )
        os.chmod(tmp_file, 0o644)
        os.replace(tmp_file, out)
        try:
            atomic_write_text(modelfile_path(out), text, mode=0o644)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            tmp_file.unlink(missing_ok=True)
        raise
    record_export(prep, "gguf", out, quant, figures, say)
    return out, modelfile_path(out), figures


def check_file(prep: Prepared, path: Path, what: str, *, eos_id: int | None, say: Say) -> ParityRecord:
    """The parity gate for a GGUF file: readable, the metadata right, the tokenizer the base model's,
    greedy replies the adapter's."""
    meta = llamacpp.read_metadata(path)
    llamacpp.check_metadata(path, meta, template=prep.template, eos_id=eos_id, what=what)
    from medchat.export.parity import check_tokenizer

    say(f"loading {what} back through transformers' GGUF reader")
    tok = llamacpp.load_tokenizer(path)
    check_tokenizer(tok, prep.reference, what)  # before the weights: a foreign tokenizer fails fast
    loaded = llamacpp.load_model(path)
    sixteen_bit = int(meta.get("general.file_type", -1)) in SIXTEEN_BIT_FILE_TYPES
    return gate(prep, loaded, tok, what, sixteen_bit=sixteen_bit, say=say)


def verify(
    adapter: str,
    target: Path,
    *,
    model: str = "",
    device: str = "auto",
    offline: bool = False,
    system_prompt: str = "",
    say: Say = lambda _m: None,
) -> ParityRecord:
    """The parity gate on an existing GGUF file or merged folder; the figures go into the manifest."""
    from medchat.export.parity import ParityError, load_back_folder

    path = target.expanduser().absolute()
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    if path.is_file():
        llamacpp.read_metadata(path)  # a truncated file fails in a second, before the base model loads
    prep = prepare(adapter, model=model, device=device, offline=offline, system_prompt=system_prompt, say=say)
    eos = prep.model.generation_config.eos_token_id
    eos_id = (eos[0] if isinstance(eos, list) else eos) if eos is not None else None
    if path.is_file():
        figures = check_file(prep, path, path.name, eos_id=eos_id, say=say)
        kind, quant = "gguf", llamacpp.file_type_name(llamacpp.read_metadata(path))
    elif (path / "config.json").is_file():
        loaded, tok = load_back_folder(path)
        figures = gate(prep, loaded, tok, path.name, sixteen_bit=True, say=say)
        kind, quant = "merged", str(loaded.dtype).replace("torch.", "")
    else:
        raise ParityError(f"{path} is neither a GGUF file nor a model folder")
    record_export(prep, kind, path, quant, figures, say)
    return figures
