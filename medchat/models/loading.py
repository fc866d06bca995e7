"""Load a base model: pick device, dtype and backend, then transformers (4-bit or 16-bit) or Unsloth.

The one place medchat turns a resolved model spec into weights in memory. Chat backends, fine-tuning,
evaluation, export and bench all load through here. Safetensors only, never remote code; torch,
transformers and unsloth are imported inside the functions that need them.
"""

from __future__ import annotations

import os
from typing import Any

from medchat.errors import HardwareError, MedchatError, ModelUnavailable, out_of_memory
from medchat.models.catalog import ResolvedModel


def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise HardwareError("--device cuda was asked for, but torch sees no CUDA GPU")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def pick_dtype(requested: str, device: str):
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16  # measured faster than float32 on CPU for small models


def wants_4bit(quantize: str, device: str, resolved: ResolvedModel) -> bool:
    prequantized = "bnb-4bit" in resolved.source.lower()
    if prequantized:
        return False  # the checkpoint carries its own quantization config
    if quantize == "auto":
        return device == "cuda"
    return quantize == "4bit"


def unsloth_available() -> bool:
    """Unsloth is only considered on CUDA: on a CPU its import silently patches transformers and TRL."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None


def pick_backend(requested: str, device: str) -> str:
    if requested == "unsloth":
        if device != "cuda":
            raise HardwareError("the unsloth backend needs a CUDA GPU; use --backend hf on this machine")
        if not unsloth_available():
            raise HardwareError("unsloth is not installed; install medchat[gpu] or use --backend hf")
        return "unsloth"
    if requested == "auto":
        return "unsloth" if device == "cuda" and unsloth_available() else "hf"
    return requested


def load_hf_model(
    resolved: ResolvedModel,
    *,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str = "auto",
    for_training: bool = False,
) -> tuple[Any, Any]:
    """(model, tokenizer) through transformers, safetensors only, no remote code."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()  # progress bars would garble the TUI and `ask`
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    kwargs: dict[str, Any] = dict(dtype=torch_dtype, use_safetensors=True, trust_remote_code=False)
    if resolved.local_only:
        kwargs["local_files_only"] = True
    if wants_4bit(quantize, device, resolved):
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as exc:
            raise HardwareError("4-bit loading needs bitsandbytes: pip install 'medchat[quant]'") from exc
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype,
        )
    # Under torchrun / accelerate launch each process trains on its own GPU (LOCAL_RANK), a whole 4-bit copy.
    kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK") or 0)} if device == "cuda" else "cpu"
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.source, local_files_only=resolved.local_only)
        model = AutoModelForCausalLM.from_pretrained(resolved.source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - map load failures onto one clear line
        raise _load_error(resolved, exc) from exc
    ensure_pad_token(tokenizer)
    if not for_training:
        model.eval()
    return model, tokenizer


def ensure_pad_token(tokenizer: Any) -> None:
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token


def _load_error(resolved: ResolvedModel, exc: BaseException) -> MedchatError:
    if out_of_memory(exc):
        return HardwareError(f"out of memory loading {resolved.name}: try --quantize 4bit or a smaller model")
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "safetensors" in text.lower() and "use_safetensors" in text.lower():
        return ModelUnavailable(f"{resolved.name} has no safetensors weights; medchat does not load pickled weights")
    return ModelUnavailable(f"cannot load {resolved.name}: {text}")


def import_unsloth() -> None:
    """Import Unsloth, which patches transformers and TRL as it loads. A multi-GPU launch calls this before
    its process group starts, as Unsloth's own scripts are written: Unsloth's import-time work (patched
    trainers, generated code) then runs in each process on its own; with a group already up, each of
    those steps is an NCCL broadcast and barrier between the processes."""
    import unsloth  # noqa: F401


def load_unsloth_model(resolved: ResolvedModel, *, dtype: str, quantize: str, max_seq_length: int = 4096,
                       generic: bool = False):
    import unsloth  # noqa: F401  (first: it patches transformers)
    from unsloth import FastLanguageModel, FastModel

    load_4bit = quantize != "none"
    torch_dtype = None if dtype == "auto" else pick_dtype(dtype, "cuda")
    try:
        model, tokenizer = (FastModel if generic else FastLanguageModel).from_pretrained(
            resolved.source, max_seq_length=max_seq_length, dtype=torch_dtype, load_in_4bit=load_4bit
        )
    except Exception as exc:  # noqa: BLE001
        raise _load_error(resolved, exc) from exc
    ensure_pad_token(tokenizer)
    return model, tokenizer


def bf16_bytes(config: Any) -> int:
    """Size of the model's weights in 16 bits, from its config (no weights read)."""
    h = config.hidden_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    hd = getattr(config, "head_dim", None) or h // heads
    per_layer = h * (heads + 2 * kv) * hd + heads * hd * h + 3 * h * config.intermediate_size
    embed = config.vocab_size * h * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    return 2 * (config.num_hidden_layers * per_layer + embed)


def load_for_decoder(resolved: ResolvedModel, *, device: str, dtype: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) for medchat's own decode loop: 16-bit weights (a bitsandbytes 4-bit checkpoint
    stays 4-bit, for the decoder to dequantise). They load on the GPU when they fit with room to spare,
    else on the CPU (the decoder then moves them over one quantised matrix at a time)."""
    import torch

    prequantized = "bnb-4bit" in resolved.source.lower()
    where = device
    if device == "cuda" and not prequantized:
        free, _total = torch.cuda.mem_get_info()
        from transformers import AutoConfig

        model_cfg = AutoConfig.from_pretrained(resolved.source, local_files_only=resolved.local_only)
        if bf16_bytes(model_cfg) * 1.15 > free:
            where = "cpu"
    dtype = "bfloat16" if device == "cuda" else dtype
    return load_hf_model(resolved, device=where, dtype=dtype, quantize="auto" if prequantized else "none")
