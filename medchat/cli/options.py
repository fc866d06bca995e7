"""Shared click options: model selection and sampling flags, mapped onto settings keys.

Every flag defaults to None ("not given"), so config files and MEDCHAT_* variables show through.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from medchat.config import Settings, load_settings

# flag name -> (settings key, click type, help)
MODEL_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--model", "model", str, "Base model: auto, a catalogue name, hub id, folder or .gguf file."),
    ("--adapter", "adapter", str, "LoRA adapter: a name from `medchat adapters list`, or a folder."),
    ("--backend", "backend", click.Choice(["auto", "unsloth", "hf"]), "Generation backend."),
    ("--decoder", "decoder", click.Choice(["auto", "fast", "generate"]), "Decode loop (fast: medchat's own)."),
    ("--device", "device", click.Choice(["auto", "cpu", "cuda"]), "Where the model runs."),
    ("--quantize", "quantize", click.Choice(["auto", "4bit", "none"]),
     "4bit: bitsandbytes NF4; auto: int4 (CUDA) or int8 (CPU) in the decode loop; none: 16-bit."),
    ("--dtype", "dtype", click.Choice(["auto", "bfloat16", "float16", "float32"]), "Compute dtype."),
    ("--endpoint", "endpoint", str, "Use an OpenAI-compatible server at this base URL instead."),
    ("--api-key", "api_key", str, "API key for --endpoint."),
]
GENERATION_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--temperature", "generation.temperature", click.FloatRange(min=0), "Sampling temperature (0 = greedy)."),
    ("--top-p", "generation.top_p", click.FloatRange(min=0, max=1, min_open=True), "Nucleus sampling mass."),
    ("--top-k", "generation.top_k", click.IntRange(min=0), "Top-k filter (0 = off)."),
    ("--max-new-tokens", "generation.max_new_tokens", click.IntRange(min=1), "Token budget per reply."),
    ("--repetition-penalty", "generation.repetition_penalty", click.FloatRange(min=0, min_open=True), "Repeat penalty."),
    ("--seed", "generation.seed", int, "Sampling seed (-1 = random)."),
    ("--think-budget", "generation.think_budget", click.IntRange(min=-1),
     "Reasoning tokens before </think> is forced (0 = no reasoning, -1 = no limit)."),
    ("--system", "system_prompt", str, "System prompt."),
]


def _flag_dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _apply(flags: list[tuple[str, str, Any, str]]) -> Callable:
    def decorator(fn: Callable) -> Callable:
        for flag, _key, typ, help_text in reversed(flags):
            fn = click.option(flag, _flag_dest(flag), type=typ, default=None, help=help_text)(fn)
        return fn

    return decorator


model_options = _apply(MODEL_FLAGS)
generation_options = _apply(GENERATION_FLAGS)
# For commands that always load a local model (`serve`, where --api-key means the key clients must send).
local_model_options = _apply([f for f in MODEL_FLAGS if f[0] not in ("--endpoint", "--api-key")])

offline_option = click.option(
    "--offline/--online", "offline", default=None, help="Never contact the model hub (cached models only)."
)


def settings_from(params: dict[str, Any], **extra: Any) -> Settings:
    """Build Settings from a command's keyword arguments (only the flags above are read)."""
    flat: dict[str, Any] = {}
    for flag, key, _typ, _help in MODEL_FLAGS + GENERATION_FLAGS:
        dest = _flag_dest(flag)
        if params.get(dest) is not None:
            flat[key] = params[dest]
    if params.get("offline") is not None:
        flat["offline"] = params["offline"]
    flat.update({k: v for k, v in extra.items() if v is not None})
    return load_settings(flat)
